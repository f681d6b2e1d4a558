// One set of conformance cases for every host (Node, Deno, Bun; the browser and workerd next):
// plain TypeScript on the public API, no host built-ins, so any JavaScript engine can run it.
import { createKVCache, loadModel, maxAbsDiff, parseModelConfig, referenceAttention, referenceLinear, type Runtime } from "../../src/index.ts";
import { syntheticModelFiles, syntheticWeights, TINY_CHAT_MODEL } from "../../src/model/synthetic.ts";
import { folderToGGUF } from "../../src/model/gguf-export.ts";
import { greedyByRecomputing, referenceForward } from "../model-reference.ts";
import { seededArray as random } from "../../src/random.ts";

export interface Case { name: string; run(rt: Runtime): void | Promise<void> }


function check(ok: boolean, message: string): void {
  if (!ok) throw new Error(message);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function attentionCase(H: number, KV: number, D: number, SQ: number, SK: number, causal: boolean): Case {
  return {
    name: `attention ${H}/${KV}/${D} seqQ ${SQ} seqK ${SK}${causal ? " causal" : ""}`,
    run(rt) {
      const args = { q: random(SQ * H * D, 1), k: random(SK * KV * D, 2), v: random(SK * KV * D, 3), numHeads: H, numKvHeads: KV, headDim: D, causal };
      const ref = referenceAttention(args);
      const err = maxAbsDiff(rt.attention(args), ref);
      check(err <= 2e-4 * maxAbs(ref), `max error ${err}`);
    },
  };
}

export const CASES: Case[] = [
  attentionCase(32, 32, 128, 1, 300, false), // MHA decode
  attentionCase(32, 8, 128, 1, 300, false), // GQA decode
  attentionCase(16, 1, 64, 1, 300, false), // MQA decode
  attentionCase(9, 3, 64, 70, 70, true), // GQA prefill
  attentionCase(14, 2, 67, 9, 130, true), // chunked prefill, odd head_dim
  {
    name: "linear GEMV and GEMM with bias",
    run(rt) {
      for (const [M, N, K] of [[1, 257, 300], [9, 33, 130]] as const) {
        const x = random(M * K, 4), w = random(N * K, 5), b = random(N, 6);
        const ref = referenceLinear(x, w, b, K, N);
        const err = maxAbsDiff(rt.linear({ x, weight: w, bias: b, inFeatures: K, outFeatures: N }), ref);
        check(err <= 2e-4 * maxAbs(ref), `${M}x${N}x${K}: max error ${err}`);
      }
    },
  },
  {
    // Engines may differ in their integer dot products (the relaxed build's Q8_0 and Q4_0 blocks
    // use i16x8.relaxed_dot_i8x16_i7x16_s): the error stays the quantization's, and a row gives the
    // same bits alone as among six (batched decode, prefill tiles).
    name: "quantized linear layers (Q8_0, Q4_0): GEMV and GEMM near the float64 reference, a row the same alone and in a batch",
    run(rt) {
      const N = 37, K = 300, x = random(6 * K, 21), w = random(N * K, 22);
      const ref = referenceLinear(x, w, undefined, K, N);
      for (const [dtype, tolerance] of [["q8_0", 0.02], ["q4_0", 0.25]] as const) {
        const weight = rt.upload(w, dtype, K), x1 = rt.upload(x.subarray(0, K)), xb = rt.upload(x), one = rt.alloc(N), six = rt.alloc(6 * N);
        try {
          rt.linearInto({ x: x1, weight, out: one, inFeatures: K, outFeatures: N });
          rt.linearInto({ x: xb, weight, out: six, inFeatures: K, outFeatures: N });
          const a = one.toFloat32Array(), b = six.toFloat32Array();
          const err = maxAbsDiff(b, ref);
          check(err <= tolerance * maxAbs(ref), `${dtype}: max error ${err} against ${maxAbs(ref)}`);
          check(a.every((v, i) => v === b[i]), `${dtype}: row 0 alone differs from row 0 of six`);
        } finally { for (const buf of [weight, x1, xb, one, six]) buf.free(); }
      }
    },
  },
  {
    name: "KV cache decode (f32, bf16, int8 pages) equals attention on the stored K/V",
    run(rt) {
      for (const dtype of ["f32", "bf16", "int8"] as const) {
        const cache = createKVCache(rt, { layers: [{ numKvHeads: 2, headDim: 64 }, { numKvHeads: 1, headDim: 64 }], dtype });
        try {
          const seq = cache.createSequence();
          for (const [layer, kv] of [[0, 2], [1, 1]] as const) {
            cache.append(seq, layer, random(100 * kv * 64, 7 + layer), random(100 * kv * 64, 8 + layer));
            const q = random(8 * 64, 9);
            const stored = cache.readLayer(seq, layer);
            const ref = referenceAttention({ q, k: stored.k, v: stored.v, numHeads: 8, numKvHeads: kv, headDim: 64, causal: true });
            const err = maxAbsDiff(cache.attention(seq, layer, { q, numHeads: 8 }), ref);
            check(err <= 2e-4 * maxAbs(ref), `${dtype} layer ${layer}: max error ${err}`);
          }
          const copy = cache.restore(cache.snapshot(seq));
          check(maxAbsDiff(cache.readLayer(copy, 0).k, cache.readLayer(seq, 0).k) === 0, `${dtype}: snapshot round trip`);
        } finally { cache.dispose(); }
      }
    },
  },
  {
    name: "tiny GQA model from files in memory: logits match a float64 reference, greedy generation through the cache equals recomputing, text streams",
    async run(rt) {
      const config = { ...TINY_CHAT_MODEL, num_hidden_layers: 2 };
      const model = await loadModel(rt, syntheticModelFiles(config, { dtype: "F32" }));
      try {
        const prompt = model.encode("the theme");
        const cfg = parseModelConfig(config);
        const weights = syntheticWeights(cfg);
        weights.set("lm_head.weight", weights.get("model.embed_tokens.weight")!);
        const ref = referenceForward(cfg, weights, prompt);
        const forward = (ids: number[]) => {
          const cache = model.transformer.createCache();
          try { return model.transformer.forward(cache, cache.createSequence(), ids); } finally { cache.dispose(); }
        };
        const logits = forward(prompt), V = config.vocab_size;
        ref.forEach((row, i) => {
          const err = maxAbsDiff(logits.subarray(i * V, (i + 1) * V), row);
          check(err <= 2e-3, `position ${i}: max logit error ${err}`);
        });
        const generation = model.generate("the theme", { maxNewTokens: 8, temperature: 0, stopTokens: [] });
        let streamed = "";
        for await (const step of generation) streamed += step.text;
        const r = await generation.done;
        check(r.tokens.length === 8, `${r.tokens.length} tokens`);
        check(streamed === r.text && r.text === model.tokenizer!.decode(r.tokens), "streamed text = result text = decoded tokens");
        const recomputed = greedyByRecomputing(model.transformer, prompt, 8);
        check(r.tokens.every((t, i) => t === recomputed[i]), `cache ${r.tokens} and recompute ${recomputed} disagree`);
      } finally { model.dispose(); }
    },
  },
  {
    name: "a GGUF file (Q8_0, written in memory, streamed in as a ReadableStream) gives the logits of the same model quantized at load from safetensors",
    async run(rt) {
      const files = syntheticModelFiles(TINY_CHAT_MODEL, { dtype: "F32" });
      const bytes = await folderToGGUF(files, { dtype: "q8_0" });
      let at = 0;
      // Chunks of 1000 bytes: tensors and block rows cut anywhere, as a network would deliver them.
      const stream = new ReadableStream<Uint8Array>({ pull(c) { if (at >= bytes.length) c.close(); else { c.enqueue(bytes.slice(at, at + 1000)); at += 1000; } } });
      const [gguf, folder] = [await loadModel(rt, { "tiny.gguf": { stream, size: bytes.length } }), await loadModel(rt, files, { dtype: "q8_0" })];
      try {
        const ids = gguf.encode("The keys and values");
        check(ids.join() === folder.encode("The keys and values").join(), "the GGUF's tokenizer encodes as tokenizer.json");
        const [a, b] = [gguf, folder].map((m) => { const c = m.transformer.createCache(); const l = m.transformer.forward(c, c.createSequence(), ids); c.dispose(); return l; });
        check(a!.every((v, i) => v === b![i]), "the same logits, bit for bit");
      } finally { gguf.dispose(); folder.dispose(); }
    },
  },
  {
    name: "bad input is a clear error and the runtime stays usable",
    run(rt) {
      let message = "";
      try { rt.attention({ q: new Float32Array(12), k: new Float32Array(8), v: new Float32Array(8), numHeads: 3, numKvHeads: 2, headDim: 4 }); } catch (e) { message = (e as Error).message; }
      check(/numHeads \(3\) must be a multiple of numKvHeads \(2\)/.test(message), `got '${message}'`);
      attentionCase(4, 2, 8, 1, 5, false).run(rt);
    },
  },
];

/** Runs every case, printing one line each and the closing counts; returns the failures. */
export async function runCases(rt: Runtime, label: string, print: (line: string) => void): Promise<{ passed: number; failed: number }> {
  let passed = 0, failed = 0;
  for (const c of CASES) {
    try {
      await c.run(rt);
      passed++;
      print(`  ok   ${label}: ${c.name}`);
    } catch (e) {
      failed++;
      print(`  FAIL ${label}: ${c.name}: ${(e as Error).message}`);
    }
  }
  return { passed, failed };
}
