// The model part of `npm run bench`: decode and prefill tokens/s of synthetic models shaped like
// SmolLM2-135M and Qwen2.5-0.5B (random weights; f32, bf16, Q8_0, Q4_0), at contexts 512 and 2048,
// next to the bound set by the weight bytes every decoded token reads and the read-bandwidth
// probe. The cache is filled to the context with random K/V (the timing does not depend on the
// values); each timed call is rolled back so the context stays put.
import type { Runtime } from "../src/index.ts";
import { bufferBytes, type BufferDtype } from "../src/memory/wasm-buffer.ts";
import { SMOLLM2_135M_SHAPE } from "../src/demo.ts";
import { expectedTensors, modelTensors } from "../src/model/architecture.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { TransformerModel } from "../src/model/transformer.ts";
import { seededArray as random } from "../src/random.ts";
import { measure } from "./harness.ts";

export const QWEN25_05B_SHAPE = {
  model_type: "qwen2", hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14,
  num_key_value_heads: 2, vocab_size: 151936, rms_norm_eps: 1e-6, rope_theta: 1000000, max_position_embeddings: 32768,
  tie_word_embeddings: true,
};

export interface ModelRow {
  model: string;
  weights: BufferDtype;
  context: number;
  decodeMs: number;
  decodeTokensPerSecond: number;
  /** a 128-token chunk after context - 128 cached tokens */
  prefillTokensPerSecond: number;
  /** linear-layer and LM-head bytes one decoded token reads */
  weightBytesPerToken: number;
  /** K/V bytes one decoded token reads at this context (f32 cache) */
  kvBytesPerToken: number;
  readGBps: number;
  /** tokens/s if decode read the weights at the probe's bandwidth and did nothing else */
  weightBoundTokensPerSecond: number;
  fractionOfWeightBound: number;
  /** the same with the K/V bytes counted too */
  fractionOfWeightAndKvBound: number;
}

const PREFILL_CHUNK = 128;

export function modelCases(rt: Runtime, quick: boolean, readGBps: (bytes: number) => number): ModelRow[] {
  const rows: ModelRow[] = [];
  const models = quick ? [["SmolLM2-135M", SMOLLM2_135M_SHAPE] as const] : [["SmolLM2-135M", SMOLLM2_135M_SHAPE] as const, ["Qwen2.5-0.5B", QWEN25_05B_SHAPE] as const];
  const dtypes = quick ? (["bf16", "q4_0"] as const) : (["bf16", "f32", "q8_0", "q4_0"] as const);
  const contexts = quick ? [512] : [512, 2048];
  // DRAM bandwidth: a buffer far beyond the caches (the weights are hundreds of MB).
  const gbps = readGBps(256 << 20);
  for (const [name, shape] of models) {
    const cfg = parseModelConfig(shape);
    const shapes = expectedTensors(cfg);
    const elements = (n: string) => shapes.get(n)!.reduce((a, b) => a * b, 1);
    // What a decoded token reads: every linear weight, and the embedding as the tied LM head.
    const linear = modelTensors(cfg).filter((t) => t.kind === "linear" || (cfg.tieWordEmbeddings && t.role === "embedding")).map((t) => t.name);
    for (const dtype of dtypes) {
      let seed = 1;
      const model = new TransformerModel(rt, cfg, (n) => n.endsWith("norm.weight") ? new Float32Array(elements(n)).fill(1) : random(elements(n), seed++, 0.05), dtype);
      const cache = model.createCache();
      const seq = cache.createSequence();
      try {
        const weightBytes = linear.reduce((sum, n) => sum + bufferBytes(dtype, elements(n), shapes.get(n)![1]), 0);
        for (const context of contexts) {
          fillTo(cache, seq, cfg.kvHeadsPerLayer, cfg.headDim, context - PREFILL_CHUNK);
          const chunk = Array.from({ length: PREFILL_CHUNK }, (_, i) => (i * 7919) % cfg.vocabSize);
          const prefill = measure(() => { model.forward(cache, seq, chunk, { logits: "last" }); cache.truncate(seq, context - PREFILL_CHUNK); }, { maxTimeS: 1, minSamples: quick ? 2 : 3 });
          fillTo(cache, seq, cfg.kvHeadsPerLayer, cfg.headDim, context);
          const decode = measure(() => { model.forward(cache, seq, [42], { logits: "last" }); cache.truncate(seq, context); }, { maxTimeS: quick ? 1 : 3, minSamples: 10 });
          const kvBytes = context * cache.stats().bytesPerToken;
          const boundMs = weightBytes / (gbps * 1e6);
          rows.push({
            model: name, weights: dtype, context, decodeMs: decode.medianMs, decodeTokensPerSecond: 1000 / decode.medianMs,
            prefillTokensPerSecond: PREFILL_CHUNK / (prefill.medianMs / 1000),
            weightBytesPerToken: weightBytes, kvBytesPerToken: kvBytes, readGBps: gbps,
            weightBoundTokensPerSecond: 1000 / boundMs, fractionOfWeightBound: boundMs / decode.medianMs,
            fractionOfWeightAndKvBound: (weightBytes + kvBytes) / (gbps * 1e6) / decode.medianMs,
          });
        }
      } finally {
        cache.dispose();
        model.dispose();
      }
    }
  }
  return rows;
}

/** Appends random K/V to every layer until the sequence holds `length` tokens. */
function fillTo(cache: ReturnType<TransformerModel["createCache"]>, seq: ReturnType<ReturnType<TransformerModel["createCache"]>["createSequence"]>, kvHeads: number[], headDim: number, length: number): void {
  while (seq.length(0) < length) {
    const n = Math.min(512, length - seq.length(0));
    kvHeads.forEach((kv, layer) => cache.append(seq, layer, random(n * kv * headDim, 3 + layer, 0.5), random(n * kv * headDim, 5 + layer, 0.5)));
  }
}
