// The quality part of `npm run bench`: what quantization costs, as next-token statistics against
// the f32 model (gqa-wasm eval's measures: mean KL(f32 || quantized), top-1 agreement,
// perplexity) on a SmolLM2-135M-shaped model with trained-looking random weights (normal, per-row
// scales, rare 8x outliers: src/random.ts seededTrainedLike) and pseudo-random token ids.
// Variants: Q8_0, Q4_0 and IQ4_NL quantized at load, a Q4_K_M GGUF as `gqa-wasm quantize --dtype
// q4_k_m` writes it (llama.cpp's mix: for SmolLM2's 576-wide rows mostly Q5_0, with Q4_K / Q6_K
// in ffn_down and Q8_0), loaded as stored (its Q6_K as Q6_K_U8 and Q5_0 as Q5_0_U8, the same values), and a Q5_K_M GGUF (mostly Q5_1,
// Q5_K / Q6_K in ffn_down) loaded with dtype "stored" (every type as the file stores it).
import type { Runtime } from "../src/index.ts";
import { SMOLLM2_135M_SHAPE } from "../src/demo.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { evaluate } from "../src/model/eval.ts";
import { exportGGUF } from "../src/model/gguf-export.ts";
import { loadModel } from "../src/model/load.ts";
import { syntheticWeights } from "../src/model/synthetic.ts";
import { TransformerModel } from "../src/model/transformer.ts";

export interface QualityRow { model: string; variant: string; meanKl: number; top1Agreement: number; perplexity: number; referencePerplexity: number; tokens: number }

export async function qualityCases(rt: Runtime, quick: boolean): Promise<QualityRow[]> {
  const config = { ...SMOLLM2_135M_SHAPE, max_position_embeddings: 2048 };
  const cfg = parseModelConfig(config);
  const weights = syntheticWeights(cfg, { trainedLike: true });
  const tensor = (n: string) => weights.get(n)!;
  const ids = Array.from({ length: quick ? 128 : 256 }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);
  const ctx = 128;
  const reference = new TransformerModel(rt, cfg, tensor, "f32");
  const rows: QualityRow[] = [];
  try {
    const variants: [string, () => Promise<TransformerModel>][] = [
      ["Q8_0 (quantized at load)", async () => new TransformerModel(rt, cfg, tensor, "q8_0")],
      ["Q4_0 (quantized at load)", async () => new TransformerModel(rt, cfg, tensor, "q4_0")],
      ["IQ4_NL (quantized at load)", async () => new TransformerModel(rt, cfg, tensor, "iq4_nl")],
      ["Q4_K_M GGUF (llama.cpp's mix, loaded as stored)", async () => {
        const bytes = exportGGUF(cfg, tensor, { dtype: "q4_k_m" });
        return (await loadModel(rt, { "model.gguf": bytes })).transformer;
      }],
      ["Q5_K_M GGUF (llama.cpp's mix, dtype stored)", async () => {
        const bytes = exportGGUF(cfg, tensor, { dtype: "q5_k_m" });
        return (await loadModel(rt, { "model.gguf": bytes }, { dtype: "stored" })).transformer;
      }],
    ];
    for (const [variant, make] of variants) {
      const model = await make();
      try {
        const r = evaluate(model, ids, { ctx, reference });
        rows.push({ model: "SmolLM2-135M (trained-like)", variant, meanKl: r.meanKl!, top1Agreement: r.top1Agreement!, perplexity: r.perplexity, referencePerplexity: r.referencePerplexity!, tokens: r.scored });
      } finally { model.dispose(); }
    }
  } finally { reference.dispose(); }
  return rows;
}
