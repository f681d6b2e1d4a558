import assert from "node:assert/strict";
import { createRuntime, referenceAttention, type Runtime } from "../src/index.ts";
import { expectedTensors, parseModelConfig, type ModelConfig } from "../src/model/config.ts";
import { ropeInverseFrequencies } from "../src/model/rope.ts";
import { TransformerModel } from "../src/model/transformer.ts";
import { randomArray } from "./helpers.ts";

type Weights = Map<string, Float32Array>;

function randomWeights(cfg: ModelConfig): Weights {
  const w: Weights = new Map();
  let seed = 11;
  for (const [name, shape] of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    w.set(name, name.endsWith("norm.weight") ? Float32Array.from(randomArray(n, seed++, 0.2), (x) => 1 + x) : randomArray(n, seed++, 0.3));
  }
  if (cfg.tieWordEmbeddings) w.set("lm_head.weight", w.get("model.embed_tokens.weight")!);
  return w;
}

/** The decoder in plain float64, written from the Hugging Face modeling code, not from ours. */
function referenceForward(cfg: ModelConfig, w: Weights, tokens: number[]): number[][] {
  const { hiddenSize: hd, numHeads: H, headDim: D, intermediateSize: ff, vocabSize: V, rmsNormEps: eps } = cfg;
  const n = tokens.length;
  const get = (name: string) => w.get(name)!;
  const rms = (x: number[], g: Float32Array) => { const ms = x.reduce((s, v) => s + v * v, 0) / x.length; return x.map((v, i) => (v / Math.sqrt(ms + eps)) * g[i]!); };
  const matvec = (x: number[], W: Float32Array, out: number, b?: Float32Array) =>
    Array.from({ length: out }, (_, o) => x.reduce((s, v, i) => s + v * W[o * x.length + i]!, b ? b[o]! : 0));
  const inv = ropeInverseFrequencies(D, cfg.ropeTheta, cfg.ropeScaling);
  const rope = (vec: number[], heads: number, pos: number) => {
    const out = vec.slice();
    for (let h = 0; h < heads; h++) for (let i = 0; i < D / 2; i++) {
      const a = vec[h * D + i]!, b = vec[h * D + i + D / 2]!, ang = pos * inv[i]!;
      out[h * D + i] = a * Math.cos(ang) - b * Math.sin(ang);
      out[h * D + i + D / 2] = b * Math.cos(ang) + a * Math.sin(ang);
    }
    return out;
  };
  let x = tokens.map((t) => Array.from(get("model.embed_tokens.weight").subarray(t * hd, (t + 1) * hd)));
  cfg.kvHeadsPerLayer.forEach((KV, l) => {
    const p = `model.layers.${l}`;
    const h = x.map((r) => rms(r, get(`${p}.input_layernorm.weight`)));
    const bias = (k: string) => (cfg.attentionBias ? get(`${p}.self_attn.${k}_proj.bias`) : undefined);
    const q = h.map((r, i) => rope(matvec(r, get(`${p}.self_attn.q_proj.weight`), H * D, bias("q")), H, i));
    const k = h.map((r, i) => rope(matvec(r, get(`${p}.self_attn.k_proj.weight`), KV * D, bias("k")), KV, i));
    const v = h.map((r) => matvec(r, get(`${p}.self_attn.v_proj.weight`), KV * D, bias("v")));
    const attn = referenceAttention({ q: q.flat(), k: k.flat(), v: v.flat(), numHeads: H, numKvHeads: KV, headDim: D, causal: true });
    x = x.map((r, i) => {
      const o = matvec(Array.from(attn.subarray(i * H * D, (i + 1) * H * D)), get(`${p}.self_attn.o_proj.weight`), hd);
      const x1 = r.map((val, j) => val + o[j]!);
      const h2 = rms(x1, get(`${p}.post_attention_layernorm.weight`));
      const g = matvec(h2, get(`${p}.mlp.gate_proj.weight`), ff), u = matvec(h2, get(`${p}.mlp.up_proj.weight`), ff);
      const d = matvec(g.map((gv, j) => (gv / (1 + Math.exp(-gv))) * u[j]!), get(`${p}.mlp.down_proj.weight`), hd);
      return x1.map((val, j) => val + d[j]!);
    });
  });
  return x.map((r) => matvec(rms(r, get("model.norm.weight")), get("lm_head.weight"), V));
}

const base = { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 40, rms_norm_eps: 1e-5, max_position_embeddings: 512 };
const models: [string, Record<string, unknown>][] = [
  ["llama GQA (4 heads, 2 KV heads)", { ...base, model_type: "llama", num_key_value_heads: 2 }],
  ["llama MQA with tied embeddings, an explicit head_dim and llama3 rope scaling", { ...base, model_type: "llama", num_key_value_heads: 1, head_dim: 16, tie_word_embeddings: true,
    rope_theta: 500000, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }],
  ["qwen2 with q/k/v biases", { ...base, model_type: "qwen2", num_key_value_heads: 2 }],
  ["deci with per-layer KV heads", { ...base, model_type: "deci", num_hidden_layers: 3, num_key_value_heads_per_layer: [4, 2, 1] }],
];

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
