import assert from "node:assert/strict";
import { createRuntime, type Runtime, type WasmBuffer } from "../src/index.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { TransformerModel } from "../src/model/transformer.ts";
import { models, randomWeights, referenceForward } from "./model-helpers.ts";

describe("model forward pass against a float64 reference", function () {
  this.timeout(60_000);
  let rt: Runtime;
  before(async () => { rt = await createRuntime(); });

  const tokens = [3, 17, 0, 39, 5, 5, 22, 8, 1, 30];
  for (const [name, raw] of models) {
    it(`${name}: logits at every position within 2e-3, prefill in chunks and decode through the paged cache`, () => {
      const cfg = parseModelConfig(raw);
      const w = randomWeights(cfg);
      const ref = referenceForward(cfg, w, tokens);
      const model = new TransformerModel(rt, cfg, (n) => w.get(n)!);
      const cache = model.createCache({ pageSize: 4 });
      try {
        const seq = cache.createSequence();
        const chunks = [tokens.slice(0, 6), tokens.slice(6, 7), tokens.slice(7, 8), tokens.slice(8)];
        let row = 0;
        for (const chunk of chunks) {
          const logits = model.forward(cache, seq, chunk);
          for (let i = 0; i < chunk.length; i++, row++) {
            const got = logits.subarray(i * cfg.vocabSize, (i + 1) * cfg.vocabSize);
            const err = Math.max(...ref[row]!.map((v, j) => Math.abs(v - got[j]!)));
            assert.ok(err <= 2e-3, `position ${row}: max |logit error| ${err}`);
          }
        }
        assert.equal(seq.length(0), tokens.length);
      } finally { cache.dispose(); model.dispose(); }
    });
  }

  it("a half-size KV cache: f16 logits within 5e-3 of the float64 reference (prefill in chunks, decode through the pages), several times closer than bf16's", () => {
    // (Seen: f16 1.9e-3, bf16 2.0e-2 at worst over the architectures.)
    const worst: Record<string, number> = {};
    for (const [name, raw] of models) {
      const cfg = parseModelConfig(raw);
      const w = randomWeights(cfg);
      const ref = referenceForward(cfg, w, tokens);
      const model = new TransformerModel(rt, cfg, (n) => w.get(n)!);
      for (const dtype of ["f16", "bf16"] as const) {
        const cache = model.createCache({ pageSize: 4, dtype });
        try {
          const seq = cache.createSequence();
          let row = 0, err = 0;
          for (const chunk of [tokens.slice(0, 6), tokens.slice(6, 7), tokens.slice(7, 8), tokens.slice(8)]) {
            const logits = model.forward(cache, seq, chunk);
            for (let i = 0; i < chunk.length; i++, row++) ref[row]!.forEach((v, j) => { err = Math.max(err, Math.abs(v - logits[i * cfg.vocabSize + j]!)); });
          }
          worst[dtype] = Math.max(worst[dtype] ?? 0, err);
          if (dtype === "f16") assert.ok(err <= 5e-3, `${name}: f16 KV, max |logit error| ${err}`);
        } finally { cache.dispose(); }
      }
      model.dispose();
    }
    assert.ok(worst.f16! * 4 <= worst.bf16!, `f16 ${worst.f16} vs bf16 ${worst.bf16}`);
  });

  it("bf16 weights stay 16-bit and the logits stay within 2e-2 of the f32 reference", () => {
    const cfg = parseModelConfig(models[0]![1]);
    const w = randomWeights(cfg);
    const ref = referenceForward(cfg, w, tokens);
    const model = new TransformerModel(rt, cfg, (n) => w.get(n)!, "bf16");
    const cache = model.createCache();
    try {
      const logits = model.forward(cache, cache.createSequence(), tokens);
      let err = 0;
      ref.forEach((r, i) => r.forEach((v, j) => { err = Math.max(err, Math.abs(v - logits[i * cfg.vocabSize + j]!)); }));
      assert.ok(err <= 2e-2, `max |logit error| ${err}`);
      assert.ok(err > 0, "16-bit weights change the logits a little");
    } finally { cache.dispose(); model.dispose(); }
  });

  it("q/k/v (with their biases) and gate/up are one buffer each after load, and one call on it gives the bits of a call per part; a part stored in another dtype keeps them apart", () => {
    const cfg = parseModelConfig(models.find(([name]) => name.startsWith("qwen2"))![1]);
    const w = randomWeights(cfg);
    type Fused = { layers: Record<string, WasmBuffer | undefined>[] };
    for (const dtype of ["f32", "q8_0"] as const) {
      const model = new TransformerModel(rt, cfg, (n) => w.get(n)!, dtype);
      try {
        const L = (model as unknown as Fused).layers[1]!;
        const [qkv, q, k, v, gateUp, gate, up] = ["qkv", "q", "k", "v", "gateUp", "gate", "up"].map((r) => L[r]!);
        assert.deepEqual([q.ptr, k.ptr - q.ptr, v.ptr - k.ptr, qkv.byteLength], [qkv.ptr, q.byteLength, k.byteLength, q.byteLength + k.byteLength + v.byteLength]);
        assert.deepEqual([gate.ptr, up.ptr - gate.ptr], [gateUp.ptr, gate.byteLength]);
        assert.equal(L.qkvBias!.length, q.length / cfg.hiddenSize + 2 * (k.length / cfg.hiddenSize));
        const x = rt.upload(Float32Array.from({ length: cfg.hiddenSize }, (_, i) => Math.sin(i))), hd = cfg.hiddenSize;
        const whole = rt.alloc(qkv.length / hd), part = rt.alloc(qkv.length / hd);
        rt.linearInto({ x, weight: qkv, bias: L.qkvBias, out: whole, inFeatures: hd, outFeatures: qkv.length / hd });
        let at = 0;
        for (const [wt, b] of [[q, L.qBias], [k, L.kBias], [v, L.vBias]] as const) {
          rt.linearInto({ x, weight: wt, bias: b, out: part.subarray(at, at + wt.length / hd), inFeatures: hd, outFeatures: wt.length / hd });
          at += wt.length / hd;
        }
        assert.deepEqual(whole.toFloat32Array(), part.toFloat32Array());
        for (const b of [x, whole, part]) b.free();
      } finally { model.dispose(); }
    }
    // v in Q4_0 among Q8_0 weights (as some GGUF files store it): q/k/v stay apart, gate/up fuse; the pass runs.
    const mixed = new TransformerModel(rt, cfg, (n) => (n.endsWith("v_proj.weight") ? rt.upload(w.get(n)!, "q4_0", cfg.hiddenSize) : w.get(n)!), "q8_0");
    const cache = mixed.createCache();
    try {
      const L = (mixed as unknown as Fused).layers[0]!;
      assert.equal(L.qkv, undefined);
      assert.equal(L.v!.dtype, "q4_0");
      assert.ok(L.gateUp);
      const seq = cache.createSequence();
      mixed.forward(cache, seq, tokens.slice(0, 4));
      assert.ok(mixed.forward(cache, seq, [7], { logits: "last" }).every(Number.isFinite));
    } finally { cache.dispose(); mixed.dispose(); }
  });

  it("rejects token ids outside the vocabulary, naming them", () => {
    const cfg = parseModelConfig(models[0]![1]);
    const w = randomWeights(cfg);
    const model = new TransformerModel(rt, cfg, (n) => w.get(n)!);
    const cache = model.createCache();
    try {
      assert.throws(() => model.forward(cache, cache.createSequence(), [1, 40]), /token id 40 is outside the vocabulary \[0, 40\)/);
    } finally { cache.dispose(); model.dispose(); }
  });
});
