import assert from "node:assert/strict";
import { Session } from "node:inspector/promises";
import { createKVCache, createRuntime, type Runtime } from "../src/index.ts";
import { randomArray } from "./helpers.ts";
import { base, models, randomWeights } from "./model-helpers.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { TransformerModel } from "../src/model/transformer.ts";
import { MAX_CALLS_PER_THREAD, MAX_CLAIMS } from "../src/threads/pool.ts";

// Threads share one memory and split calls into ranges; every range computes bit-identical
// results, so 1, 2 and 3 threads must agree exactly (the issue asks for 1e-6 relative).
describe("threads: a worker pool on one shared memory", function () {
  const runtimes: Runtime[] = [];
  before(async () => {
    for (const threads of [1, 2, 3]) runtimes.push(await createRuntime({ threads }));
  });
  after(async () => { for (const rt of runtimes) await rt.dispose(); });

  it("reports its thread count and why", () => {
    assert.deepEqual(runtimes.map((r) => r.threads), [1, 2, 3]);
    assert.match(runtimes[2]!.threadInfo, /3 threads \(asked; \d+ cores\)/);
  });

  const cases = [
    { name: "GQA decode 32/8/128, 700 keys", H: 32, KV: 8, D: 128, SQ: 1, SK: 700, causal: false },
    { name: "MHA decode 12/12/64", H: 12, KV: 12, D: 64, SQ: 1, SK: 300, causal: false },
    { name: "MQA decode 16/1/64", H: 16, KV: 1, D: 64, SQ: 1, SK: 300, causal: false },
    { name: "GQA decode 9/3/64, 200 keys (KV heads 1 : 2 on 2 threads)", H: 9, KV: 3, D: 64, SQ: 1, SK: 200, causal: true },
    { name: "causal prefill 9/3/64, 150 tokens", H: 9, KV: 3, D: 64, SQ: 150, SK: 150, causal: true },
    { name: "chunked prefill 14/2/40, 37 of 200", H: 14, KV: 2, D: 40, SQ: 37, SK: 200, causal: true },
  ];
  for (const c of cases) {
    it(`attention: ${c.name} is identical on 1, 2 and 3 threads, with no row lost or done twice`, () => {
      const q = randomArray(c.SQ * c.H * c.D, 1), k = randomArray(c.SK * c.KV * c.D, 2), v = randomArray(c.SK * c.KV * c.D, 3);
      const results = runtimes.map((rt) => {
        const qb = rt.upload(q), kb = rt.upload(k), vb = rt.upload(v), out = rt.alloc(q.length);
        out.array.fill(NaN);
        rt.attentionInto({ q: qb, k: kb, v: vb, out, numHeads: c.H, numKvHeads: c.KV, headDim: c.D, causal: c.causal });
        const r = out.toFloat32Array();
        for (const b of [qb, kb, vb, out]) b.free();
        return r;
      });
      assert.ok(results[0]!.every(Number.isFinite), "every output row was written");
      assert.deepEqual(results[1], results[0]);
      assert.deepEqual(results[2], results[0]);
    });
  }

  const splitKv: { name: string; H: number; KV: number; D: number; SQ: number; SK: number; causal: boolean; slidingWindow?: number }[] = [
    { name: "MQA decode 32/1/64, 2000 keys", H: 32, KV: 1, D: 64, SQ: 1, SK: 2000, causal: false },
    { name: "GQA 8/2/48 (fewer KV heads than threads), 3 new tokens of 1500, causal", H: 8, KV: 2, D: 48, SQ: 3, SK: 1500, causal: true },
    { name: "MQA 4/1/16, 5 new tokens of 600 (a part sees no key for early rows), causal", H: 4, KV: 1, D: 16, SQ: 5, SK: 600, causal: true },
    { name: "MQA 32/1/64, 2000 keys, sliding window 300 (most parts see no key)", H: 32, KV: 1, D: 64, SQ: 1, SK: 2000, causal: true, slidingWindow: 300 },
  ];
  for (const c of splitKv) {
    // The output is a convex combination of V rows, so rounding differences scale with |v|:
    // the documented tolerance is 1e-6 · max|v|.
    it(`split-KV decode (Flash-Decoding): ${c.name} agrees across thread counts within 1e-6 of max|v|`, () => {
      const args = { q: randomArray(c.SQ * c.H * c.D, 1, 2), k: randomArray(c.SK * c.KV * c.D, 2, 2), v: randomArray(c.SK * c.KV * c.D, 3), numHeads: c.H, numKvHeads: c.KV, headDim: c.D, causal: c.causal, slidingWindow: c.slidingWindow };
      const [one, ...more] = runtimes.map((rt) => rt.attention(args));
      const scale = args.v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      for (const r of more) {
        assert.ok(r.every(Number.isFinite), "every output row was written");
        let worst = 0;
        for (let i = 0; i < r.length; i++) worst = Math.max(worst, Math.abs(r[i]! - one![i]!));
        assert.ok(worst <= 1e-6 * scale, `max difference ${worst} vs scale ${scale}`);
      }
    });
  }

  it("split-KV through the paged int8 cache agrees with one thread within 1e-6 of max|v|", () => {
    const answers = [runtimes[0]!, runtimes[2]!].map((rt) => {
      const cache = createKVCache(rt, { layers: [{ numKvHeads: 1, headDim: 64 }], dtype: "int8" });
      const seq = cache.createSequence();
      cache.append(seq, 0, randomArray(1200 * 64, 7), randomArray(1200 * 64, 8));
      const out = cache.attention(seq, 0, { q: randomArray(16 * 64, 9), numHeads: 16 });
      cache.dispose();
      return out;
    });
    for (let i = 0; i < answers[0]!.length; i++) assert.ok(Math.abs(answers[1]![i]! - answers[0]![i]!) <= 1e-6, `element ${i}`); // |v| <= 1
  });

  it("linear: GEMM and GEMV are identical on 1, 2 and 3 threads", () => {
    for (const [M, N, K] of [[1, 1031, 512], [37, 300, 256]] as const) {
      const x = randomArray(M * K, 4), weight = randomArray(N * K, 5), bias = randomArray(N, 6);
      const ys = runtimes.map((rt) => rt.linear({ x, weight, bias, inFeatures: K, outFeatures: N }));
      assert.ok(ys[0]!.every(Number.isFinite));
      assert.deepEqual(ys[1], ys[0]);
      assert.deepEqual(ys[2], ys[0]);
    }
  });

  for (const dtype of ["bf16", "f16"] as const) it(`the paged KV cache gives the same answers on 3 threads (${dtype})`, () => {
    const answers = [runtimes[0]!, runtimes[2]!].map((rt) => {
      const cache = createKVCache(rt, { layers: [{ numKvHeads: 4, headDim: 64 }], dtype });
      const seq = cache.createSequence();
      cache.append(seq, 0, randomArray(500 * 4 * 64, 7), randomArray(500 * 4 * 64, 8));
      const out = [cache.attention(seq, 0, { q: randomArray(16 * 64, 9), numHeads: 16 }), cache.attention(seq, 0, { q: randomArray(40 * 16 * 64, 10), numHeads: 16 })];
      cache.dispose();
      return out;
    });
    assert.deepEqual(answers[1], answers[0]);
  });

  it("attention for a batch of sequences in one call: on 1 thread, or on 3 with a sequence per thread, each output equals its one-thread call", () => {
    const solo = new Map<number, Float32Array>();
    for (const rt of [runtimes[0]!, runtimes[2]!]) {
      const cache = createKVCache(rt, { layers: [{ numKvHeads: 3, headDim: 64 }], pageSize: 16 });
      const lengths = [1, 40, 700, 3];
      const seqs = lengths.map((n, i) => { const s = cache.createSequence(); cache.append(s, 0, randomArray(n * 3 * 64, 20 + i), randomArray(n * 3 * 64, 30 + i)); return s; });
      const rows = [1, 1, 1, 2];
      const qs = rows.map((r, i) => rt.upload(randomArray(r * 9 * 64, 40 + i)));
      const outs = rows.map((r) => rt.alloc(r * 9 * 64));
      cache.attentionBatchInto(seqs.map((seq, i) => ({ seq, q: qs[i]!, out: outs[i]! })), 0, { numHeads: 9 });
      seqs.forEach((seq, i) => {
        if (rt.threads === 1) {
          const alone = rt.alloc(rows[i]! * 9 * 64);
          cache.attentionInto(seq, 0, { q: qs[i]!, out: alone, numHeads: 9 });
          solo.set(i, alone.toFloat32Array());
          alone.free();
        }
        assert.deepEqual(outs[i]!.toFloat32Array(), solo.get(i), `sequence ${i} on ${rt.threads} thread(s)`);
      });
      for (const b of [...qs, ...outs]) b.free();
      cache.dispose();
    }
    // Fewer sequences than threads: each split as alone (their jobs run in rounds of 3), the bits of its own 3-thread call.
    const rt = runtimes[2]!;
    const cache = createKVCache(rt, { layers: [{ numKvHeads: 3, headDim: 64 }] });
    const seqs = [900, 50].map((n, i) => { const s = cache.createSequence(); cache.append(s, 0, randomArray(n * 3 * 64, 50 + i), randomArray(n * 3 * 64, 60 + i)); return s; });
    const qs = seqs.map((_, i) => rt.upload(randomArray(9 * 64, 70 + i))), outs = seqs.map(() => rt.alloc(9 * 64));
    cache.attentionBatchInto(seqs.map((seq, i) => ({ seq, q: qs[i]!, out: outs[i]! })), 0, { numHeads: 9 });
    seqs.forEach((seq, i) => {
      const alone = rt.alloc(9 * 64);
      cache.attentionInto(seq, 0, { q: qs[i]!, out: alone, numHeads: 9 });
      assert.deepEqual(outs[i]!.toFloat32Array(), alone.toFloat32Array(), `sequence ${i}, 2 sequences on 3 threads`);
      alone.free();
    });
    cache.dispose();
  });

  it("several linear layers in one call (one hand-off) give what each gives alone, on 1 and 3 threads", () => {
    for (const rt of [runtimes[0]!, runtimes[2]!]) {
      const x = rt.upload(randomArray(3 * 200, 1));
      const shapes = [[200, 300], [200, 40], [200, 40]] as const;
      for (const dtype of ["f32", "q8_0"] as const) {
        const weights = shapes.map(([k, n], i) => dtype === "f32" ? rt.upload(randomArray(n * k, 10 + i)) : rt.upload(randomArray(n * k, 10 + i), dtype, k));
        const together = shapes.map(([, n]) => rt.alloc(3 * n));
        rt.linearsInto(shapes.map(([k, n], i) => ({ x, weight: weights[i]!, out: together[i]!, inFeatures: k, outFeatures: n })));
        shapes.forEach(([k, n], i) => {
          const alone = rt.alloc(3 * n);
          rt.linearInto({ x, weight: weights[i]!, out: alone, inFeatures: k, outFeatures: n });
          assert.deepEqual(together[i]!.toFloat32Array(), alone.toFloat32Array(), `${dtype} layer ${i} on ${rt.threads} thread(s)`);
          alone.free();
        });
        for (const b of [...weights, ...together]) b.free();
      }
      // A call may not read what another call of the batch writes.
      const w = rt.upload(randomArray(40 * 200, 3)), w2 = rt.upload(randomArray(10 * 40, 4)), y = rt.alloc(3 * 40), z = rt.alloc(3 * 10);
      assert.throws(() => rt.linearsInto([
        { x, weight: w, out: y, inFeatures: 200, outFeatures: 40 },
        { x: y, weight: w2, out: z, inFeatures: 40, outFeatures: 10 },
      ]), /linearsInto: the output of call 0 overlaps call 1's input/);
      for (const b of [x, w, w2, y, z]) b.free();
    }
  });

  it("async calls await the workers and give the sync answers", async () => {
    const rt = runtimes[2]!;
    const args = { q: randomArray(64 * 8 * 32, 1), k: randomArray(64 * 2 * 32, 2), v: randomArray(64 * 2 * 32, 3), numHeads: 8, numKvHeads: 2, headDim: 32, causal: true };
    const pending = rt.attentionAsync(args);
    assert.throws(() => rt.attention(args), /runtime busy/);
    assert.deepEqual(await pending, runtimes[0]!.attention(args));
    const lin = { x: randomArray(8 * 300, 4), weight: randomArray(500 * 300, 5), inFeatures: 300, outFeatures: 500 };
    assert.deepEqual(await rt.linearAsync(lin), runtimes[0]!.linear(lin));
  });

  it("a worker that fails fails the call with its error, and the pool stays usable", () => {
    const rt = runtimes[1]!;
    const pool = (rt as unknown as { pool: { run(j: unknown[][], claims: Map<unknown, number>): void } }).pool;
    const beyond = rt.memory.byteLength + (1 << 20);
    // A linear call whose weights lie past the end of memory traps on thread 1.
    const job = (w: number) => ({ kernel: "linear_f32", args: [ok.ptr, w, 0, ok.ptr + 4096, 1, 8, 16, 0, 8, 0, 0] });
    const ok = rt.alloc(1 << 16);
    assert.throws(() => pool.run([[job(ok.ptr)], [job(beyond)]], new Map()), /threads: thread 1 failed: .*out of bounds/);
    ok.free();
    const args = { q: randomArray(32, 1), k: randomArray(64, 2), v: randomArray(64, 3), numHeads: 2, numKvHeads: 2, headDim: 16 };
    assert.deepEqual(rt.attention(args), runtimes[0]!.attention(args));
  });

  it("a kernel program: each phase sees every thread's results of the one before, across several hand-offs and past the claim counters, the same bits on 1, 2 and 3 threads", () => {
    // A residual chain like a model's layers: h = rmsnorm(x); y = W1·h; x += W2·y (fused), 2150
    // times: each phase reads what all threads wrote in the previous one. Its calls and barriers
    // per thread are more than one hand-off holds (MAX_CALLS_PER_THREAD), so the program goes in
    // several rounds; its linear calls share their columns as claims, more than a program has
    // counters (MAX_CLAIMS), so the last ones run on fixed ranges.
    const [rows, dim, hidden, steps] = [3, 40, 24, 2150];
    assert.ok(steps * 6 > MAX_CALLS_PER_THREAD && steps * 2 > MAX_CLAIMS);
    const x0 = randomArray(rows * dim, 1), w1 = randomArray(hidden * dim, 2, 0.3), w2 = randomArray(dim * hidden, 3, 0.3), g = randomArray(dim, 4);
    const results = runtimes.map((rt) => {
      const x = rt.upload(x0), h = rt.alloc(rows * dim), y = rt.alloc(rows * hidden), W1 = rt.upload(w1), W2 = rt.upload(w2), G = rt.upload(g);
      let hands = 0;
      const pool = rt.threads > 1 ? (rt as unknown as { pool: { runEncoded(...a: unknown[]): void } }).pool : undefined;
      const run = pool?.runEncoded.bind(pool);
      if (pool) pool.runEncoded = (...a) => { hands++; run!(...a); };
      rt.runProgram((p) => {
        for (let i = 0; i < steps; i++) {
          for (let r = 0; r < rows; r++) p.add(r, { kernel: "rmsnorm_f32", args: [x.ptr, G.ptr, h.ptr, dim, 1e-5, r, r + 1] });
          p.barrier();
          rt.linearCalls(p, { x: h, weight: W1, out: y, inFeatures: dim, outFeatures: hidden });
          p.barrier();
          rt.linearCalls(p, { x: y, weight: W2, out: x, inFeatures: hidden, outFeatures: dim, accumulate: true });
          p.barrier();
        }
        return () => undefined;
      });
      if (pool) { pool.runEncoded = run!; assert.ok(hands > 1 && hands < steps, `${hands} hand-offs for ${steps} steps`); }
      const out = x.toFloat32Array();
      for (const b of [x, h, y, W1, W2, G]) b.free();
      return out;
    });
    // The same chain step by step on one thread, with the residual added in JavaScript.
    const rt = runtimes[0]!;
    const x = rt.upload(x0), h = rt.alloc(rows * dim), y = rt.alloc(rows * hidden), d = rt.alloc(rows * dim), W1 = rt.upload(w1), W2 = rt.upload(w2), G = rt.upload(g);
    for (let i = 0; i < steps; i++) {
      rt.kernels.rmsnorm_f32(x.ptr, G.ptr, h.ptr, dim, 1e-5, 0, rows);
      rt.linearInto({ x: h, weight: W1, out: y, inFeatures: dim, outFeatures: hidden });
      rt.linearInto({ x: y, weight: W2, out: d, inFeatures: hidden, outFeatures: dim });
      const xs = x.array, ds = d.array;
      for (let j = 0; j < xs.length; j++) xs[j] = xs[j]! + ds[j]!;
    }
    const stepwise = x.toFloat32Array();
    for (const b of [x, h, y, d, W1, W2, G]) b.free();
    assert.ok(stepwise.every(Number.isFinite));
    assert.deepEqual(results[0], stepwise);
    assert.deepEqual(results[1], stepwise);
    assert.deepEqual(results[2], stepwise);
  });

  it("a kernel that fails in the middle of a program fails it (no thread left waiting at a barrier), and the pool stays usable", () => {
    const rt = runtimes[2]!;
    const beyond = rt.memory.byteLength + (1 << 20);
    const buf = rt.alloc(64), w = rt.upload(randomArray(64, 1));
    assert.throws(() => rt.runProgram((p) => {
      for (let i = 0; i < 5; i++) {
        for (let t = 0; t < 3; t++) p.add(t, { kernel: "rmsnorm_f32", args: [t === 1 && i === 2 ? beyond : buf.ptr, w.ptr, buf.ptr, 16, 1e-5, t, t + 1] });
        p.barrier();
      }
      return () => undefined;
    }), /threads: thread 1 failed: .*out of bounds/);
    const pool = (rt as unknown as { pool: { run(j: unknown[][], claims: Map<unknown, number>): void } }).pool;
    assert.throws(() => pool.run([["barrier"], [], []], new Map()), /thread 1 has 0 barriers, thread 0 1: every thread must meet every barrier/);
    buf.free(); w.free();
    const args = { q: randomArray(32, 1), k: randomArray(64, 2), v: randomArray(64, 3), numHeads: 2, numKvHeads: 2, headDim: 16 };
    assert.deepEqual(rt.attention(args), runtimes[0]!.attention(args));
  });

  const linearRope = models.find(([name]) => name.startsWith("llama with linear rope"))![1];
  // Qwen3 with attention_bias: q/k norms in the RoPE phase, q/k/v and o biases.
  const qwen3 = { ...linearRope, model_type: "qwen3", rope_scaling: null, head_dim: 16, attention_bias: true };
  // SmolLM3 with its second layer NoPE: that layer's RoPE calls left out of the program.
  const smollm3 = { ...linearRope, model_type: "smollm3", rope_scaling: null, no_rope_layers: [1, 0] };
  // Gemma 2: soft-capped scores and logits.
  const gemma2 = { ...linearRope, model_type: "gemma2", rope_scaling: null, head_dim: 16, sliding_window: 5, attn_logit_softcapping: 5, final_logit_softcapping: 3 };
  // Granite: scaled residual adds (by the next RMSNorm's threads) and logits.
  const granite = { ...linearRope, model_type: "granite", rope_scaling: null, embedding_multiplier: 12, residual_multiplier: 0.22, attention_multiplier: 0.0625, logits_scaling: 8 };
  // Mistral's window in every layer: prefill rows split between threads see the same key blocks.
  const mistral = { ...linearRope, model_type: "mistral", rope_scaling: null, sliding_window: 5 };
  // Gemma 3: output norms added by the next RMSNorm's threads, GeGLU, a sliding layer (window 5) with its own RoPE table.
  const gemma3 = { ...linearRope, model_type: "gemma3_text", rope_scaling: null, head_dim: 16, layer_types: ["sliding_attention", "full_attention"], sliding_window: 5 };
  // Phi-4-mini's form: fused qkv / gate_up as stored, RoPE on 12 of 16 elements, LongRoPE.
  const phi3 = { ...linearRope, model_type: "phi3", head_dim: 16, partial_rotary_factor: 0.75, original_max_position_embeddings: 64, rope_scaling: { type: "longrope", short_factor: [1, 1.2, 1.5, 2, 2.5, 3], long_factor: [1, 2, 4, 8, 16, 32] } };
  // Q4_K: rows of whole super-blocks (hidden 256, intermediate 512); the relaxed build's activation
  // super-blocks, quantized by the threads of the RMSNorm and of SwiGLU from what they made.
  const kquant = { hidden_size: 256, intermediate_size: 512 };
  for (const [dtype, config, what, sizes] of [["f32", linearRope, "llama"], ["q8_0", linearRope, "llama"], ["f32", qwen3, "qwen3"], ["f32", smollm3, "smollm3"], ["f32", gemma3, "gemma3_text"], ["q8_0", gemma3, "gemma3_text"], ["f32", mistral, "mistral"], ["f32", gemma2, "gemma2"], ["q8_0", granite, "granite"], ["f32", phi3, "phi3"], ["q8_0", phi3, "phi3"],
    ["q4_k", linearRope, "llama", kquant], ["q4_k_m", phi3, "phi3", kquant]] as const) {
    it(`a model's forward pass (one program per step) gives the same logits on 1, 2 and 3 threads, and allocates nothing per decode step (${what}, ${dtype})`, () => {
      // 4 KV heads: every thread count splits decode attention by heads (bit-identical); prefill
      // and a 3-sequence batch exercise the row splits.
      const cfg = parseModelConfig({ ...config, hidden_size: 64, intermediate_size: 96, ...sizes });
      const w = randomWeights(cfg);
      const runs = runtimes.map((rt) => {
        const model = new TransformerModel(rt, cfg, (n) => w.get(n)!, dtype);
        const cache = model.createCache({ pageSize: 8 });
        try {
          const seqs = [cache.createSequence(), cache.createSequence(), cache.createSequence()];
          const out: Float32Array[] = [model.forward(cache, seqs[0]!, Array.from({ length: 21 }, (_, i) => (i * 7) % 40))];
          out.push(model.forwardBatch(cache, [{ seq: seqs[1]!, tokens: [1, 2, 3, 4, 5] }, { seq: seqs[2]!, tokens: [9] }], { logits: "last" }));
          out.push(model.forward(cache, seqs[0]!, [3], { logits: "last" }));
          out.push(model.forward(cache, seqs[0]!, [4, 5, 6])); // every row's logits, a pass of few rows
          const before = { ...rt.stats() };
          for (let i = 0; i < 5; i++) out.push(model.forwardBatch(cache, seqs.map((seq, j) => ({ seq, tokens: [(i + j) % 40] })), { logits: "last" }));
          const after = rt.stats();
          // Pages aside (8-token pages fill), decode steps allocate nothing: activations are the RunState's, kernel scratch the arena's.
          assert.equal(after.scratchReservedBytes, before.scratchReservedBytes);
          return out;
        } finally { cache.dispose(); model.dispose(); }
      });
      assert.ok(runs[0]!.every((o) => o.every(Number.isFinite)));
      assert.deepEqual(runs[1], runs[0]);
      assert.deepEqual(runs[2], runs[0]);
    });
  }

  it("a kept decode program, run again at later steps, gives the bits of one built for each step: pages filling, block tables outgrown, the attention split changing, other sequences of the same shape, RoPE tables grown", () => {
    // 3 KV heads on 2 threads: decode attention splits by heads below 512 keys, by keys (two
    // parts, combined) from 512 on; the RoPE tables grow past 256 and 512 positions.
    const cfg = parseModelConfig({ ...base, model_type: "llama", hidden_size: 48, num_attention_heads: 6, num_key_value_heads: 3, max_position_embeddings: 2048 });
    const w = randomWeights(cfg);
    for (const rt of [runtimes[0]!, runtimes[1]!]) {
      const kept = new TransformerModel(rt, cfg, (n) => w.get(n)!), fresh = new TransformerModel(rt, cfg, (n) => w.get(n)!);
      const caches = [kept.createCache({ pageSize: 8 }), fresh.createCache({ pageSize: 8 })];
      let builds = 0, steps = 0;
      const build = (kept as unknown as { buildStep: (...a: unknown[]) => unknown }).buildStep.bind(kept);
      (kept as unknown as { buildStep: (...a: unknown[]) => unknown }).buildStep = (...a) => { builds++; return build(...a); };
      try {
        const seqs = caches.map((c) => [c.createSequence(), c.createSequence(), c.createSequence()]);
        /** The same pass on both models: the kept one reusing its programs, the other building each step's anew. */
        const both = (items: (s: typeof seqs[0]) => { seq: (typeof seqs)[0][0]; tokens: number[] }[]) => {
          steps++;
          (fresh as unknown as { dropSteps(): void }).dropSteps();
          const a = kept.forwardBatch(caches[0]!, items(seqs[0]!), { logits: "last" });
          const b = fresh.forwardBatch(caches[1]!, items(seqs[1]!), { logits: "last" });
          assert.ok(a.every(Number.isFinite));
          assert.deepEqual(a, b, `step ${steps}`);
        };
        both((s) => [{ seq: s[0]!, tokens: Array.from({ length: 500 }, (_, i) => (i * 7) % 40) }]);
        for (let i = 0; i < 20; i++) both((s) => [{ seq: s[0]!, tokens: [(i * 3) % 40] }]); // past 512 keys
        both((s) => [{ seq: s[1]!, tokens: [5, 6] }]);
        for (let i = 0; i < 70; i++) both((s) => [{ seq: s[1]!, tokens: [(i * 5) % 40] }]); // past 8 pages
        both((s) => [{ seq: s[2]!, tokens: [7, 8, 9] }]);
        for (let i = 0; i < 6; i++) both((s) => (i % 2 ? [{ seq: s[1]!, tokens: [i] }, { seq: s[2]!, tokens: [i + 1] }] : [{ seq: s[2]!, tokens: [i] }, { seq: s[0]!, tokens: [i + 2] }]));
        // Reused: a build for each new shape and each time a program stopped fitting, not one per step.
        assert.ok(builds >= 5 && builds < 15, `${builds} builds for ${steps} steps`);
        // The programs used most recently are the ones kept: a decode shape used between four new
        // shapes (prefill chunks of 2-5 tokens) is not built again (once built for this sequence's
        // longer block tables).
        both((s) => [{ seq: s[0]!, tokens: [1] }]);
        const before = builds;
        for (let n = 2; n <= 5; n++) {
          both((s) => [{ seq: s[0]!, tokens: [n] }]);
          both((s) => [{ seq: s[1]!, tokens: Array.from({ length: n }, (_, i) => i) }]);
        }
        both((s) => [{ seq: s[0]!, tokens: [1] }]);
        assert.equal(builds - before, 4);
      } finally {
        for (const c of caches) c.dispose();
        kept.dispose(); fresh.dispose();
      }
    }
  });

  it("resident logits: a view of the same values a copy gives, valid until the next pass", () => {
    const cfg = parseModelConfig({ ...base, model_type: "llama", num_key_value_heads: 2 });
    const w = randomWeights(cfg), rt = runtimes[1]!;
    const model = new TransformerModel(rt, cfg, (n) => w.get(n)!), cache = model.createCache();
    try {
      const [a, b] = [cache.createSequence(), cache.createSequence()];
      const copy = model.forward(cache, a, [1, 2, 3], { logits: "last" });
      const view = model.forward(cache, b, [1, 2, 3], { logits: "last", resident: true });
      assert.deepEqual(view, copy);
      assert.equal(view.buffer, rt.memory.f32.buffer);
      const next = model.forward(cache, b, [4], { logits: "last" });
      assert.deepEqual(view, next); // the view now shows the next pass's logits
      assert.throws(() => model.forward(cache, a, [4], { resident: true }), /forward: resident logits are the last rows' \(logits: "last"\)/);
      assert.equal(a.length(), 3); // nothing appended
    } finally { cache.dispose(); model.dispose(); }
  });

  it("a decode step allocates next to nothing on the JavaScript heap, on 1 and 2 threads (V8's sampling heap profiler, collected objects counted)", async () => {
    const cfg = parseModelConfig({ ...base, model_type: "llama", num_key_value_heads: 2, num_hidden_layers: 4, max_position_embeddings: 4096 });
    const w = randomWeights(cfg);
    for (const rt of runtimes.slice(0, 2)) {
      const model = new TransformerModel(rt, cfg, (n) => w.get(n)!, "q8_0"), cache = model.createCache();
      const session = new Session();
      session.connect();
      try {
        const seq = cache.createSequence(), token = [1], options = { logits: "last", resident: true } as const;
        model.forward(cache, seq, [1, 2, 3, 4, 5, 6, 7, 8], options);
        const steps = (n: number) => { for (let i = 0; i < n; i++) token[0] = rt.argmaxResident(model.forward(cache, seq, token, options))!; };
        // 200 steps at a time from 8 tokens, so that the block tables stay within what the kept
        // program holds (a table outgrown rebuilds it: twice as long each time).
        const run = () => { for (let r = 0; r < 5; r++) { cache.truncate(seq, 8); steps(200); } };
        run(); // V8's optimizing compiles
        await session.post("HeapProfiler.enable");
        await session.post("HeapProfiler.startSampling", { samplingInterval: 32, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true } as never);
        run();
        const { profile } = await session.post("HeapProfiler.stopSampling") as unknown as { profile: { head: HeapNode } };
        const bytes = (n: HeapNode): number => n.selfSize + n.children.reduce((sum, c) => sum + bytes(c), 0);
        // 3.7 KB a step here before the decode path stopped allocating; what is left: a page table's
        // growth every 32 tokens, and V8 boxing the RMSNorms' eps for the pool's generic call.
        const perStep = bytes(profile.head) / 1000;
        assert.ok(perStep < 1024, `${perStep.toFixed(0)} bytes a decode step on ${rt.threads} thread(s)`);
      } finally { session.disconnect(); cache.dispose(); model.dispose(); }
    }
  });

  it("threads: 'auto' picks the cores, dispose ends the workers and leaves one thread", async () => {
    const rt = await createRuntime({ threads: "auto" });
    assert.ok(rt.threads >= 1);
    assert.match(rt.threadInfo, /auto/);
    await rt.dispose();
    assert.equal(rt.threads, 1);
    const args = { q: randomArray(32, 1), k: randomArray(64, 2), v: randomArray(64, 3), numHeads: 2, numKvHeads: 2, headDim: 16 };
    assert.deepEqual(rt.attention(args), runtimes[0]!.attention(args));
    await assert.rejects(createRuntime({ threads: 0 }), /threads must be 'auto' or a positive integer, got number 0/);
  });
});

interface HeapNode { selfSize: number; children: HeapNode[] }
