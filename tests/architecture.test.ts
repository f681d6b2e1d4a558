import assert from "node:assert/strict";
import { ARCHITECTURES, ggufTensorName, layerTensorName, minTensorCount, modelTensors, qkPermutedHeads, tensorRole } from "../src/model/architecture.ts";
import { MODEL_TYPES, parseModelConfig } from "../src/model/config.ts";
import { base } from "./model-helpers.ts";

describe("architecture descriptor: every model type's tensors in one place", () => {
  it("names, shapes and roles per architecture (biases for qwen2, per-layer KV heads for deci, the LM head unless tied)", () => {
    assert.deepEqual(Object.keys(ARCHITECTURES).sort(), [...MODEL_TYPES].sort());
    const llama = parseModelConfig({ ...base, model_type: "llama", num_key_value_heads: 2 });
    const tensors = modelTensors(llama);
    assert.equal(tensors.length, 2 * 9 + 3);
    assert.equal(minTensorCount(llama), 2 * 9 + 2);
    assert.deepEqual(tensors[0], { name: "model.embed_tokens.weight", gguf: "token_embd.weight", shape: [40, 32], kind: "embedding", role: "embedding", inFeatures: 32 });
    assert.deepEqual(tensors.find((t) => t.name === layerTensorName(1, "k")), { name: "model.layers.1.self_attn.k_proj.weight", gguf: "blk.1.attn_k.weight", shape: [16, 32], kind: "linear", role: "k", layer: 1, inFeatures: 32 });
    const qwen = modelTensors(parseModelConfig({ ...base, model_type: "qwen2", num_key_value_heads: 2, tie_word_embeddings: true }));
    assert.equal(qwen.filter((t) => t.kind === "bias").length, 2 * 3);
    assert.ok(!qwen.some((t) => t.role === "lmHead"), "tied: no LM head tensor");
    const deci = parseModelConfig({ ...base, model_type: "deci", num_hidden_layers: 3, num_key_value_heads_per_layer: [4, 2, 1] });
    assert.deepEqual(modelTensors(deci).filter((t) => t.role === "v").map((t) => t.shape[0]), [32, 16, 8]);
    // Gemma 3: post_attention_layernorm is the attention output's norm there (Llama's is the MLP's input norm).
    const gemma = modelTensors(parseModelConfig({ ...base, model_type: "gemma3_text", num_key_value_heads: 1, head_dim: 16 }));
    const layer0 = (role: string) => gemma.find((t) => t.layer === 0 && t.role === role);
    assert.deepEqual([layer0("attnOutNorm")?.name, layer0("attnOutNorm")?.gguf], ["model.layers.0.post_attention_layernorm.weight", "blk.0.post_attention_norm.weight"]);
    assert.deepEqual([layer0("ffnNorm")?.name, layer0("ffnNorm")?.gguf], ["model.layers.0.pre_feedforward_layernorm.weight", "blk.0.ffn_norm.weight"]);
    assert.deepEqual([layer0("ffnOutNorm")?.name, layer0("ffnOutNorm")?.gguf], ["model.layers.0.post_feedforward_layernorm.weight", "blk.0.post_ffw_norm.weight"]);
    assert.equal(gemma.filter((t) => t.layer === 0).length, 13, "4 norms, q/k norms, 7 matrices");
    assert.ok(!gemma.some((t) => t.role === "lmHead"), "Gemma ties its embeddings by default");
    // The defaults of Hugging Face's Gemma2Config / Gemma3TextConfig where a config.json leaves a key out.
    const minimal = { hidden_size: 64, intermediate_size: 96, num_hidden_layers: 12, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 50 };
    const g2 = parseModelConfig({ ...minimal, model_type: "gemma2" }), g3 = parseModelConfig({ ...minimal, model_type: "gemma3_text" });
    assert.deepEqual([g2.ropeTheta, g2.localRopeTheta, g2.attentionSoftcap, g2.finalSoftcap, g2.slidingWindow, g2.attentionScale, g2.tieWordEmbeddings, g2.activation],
      [10000, undefined, 50, 30, 4096, 1 / 16, true, "gelu_tanh"]);
    assert.deepEqual(g2.slidingLayers, Array.from({ length: 12 }, (_, i) => i % 2 === 0));
    assert.deepEqual([g3.ropeTheta, g3.localRopeTheta, g3.attentionSoftcap, g3.finalSoftcap, g3.slidingWindow, g3.embeddingScale], [1e6, 10000, undefined, undefined, 4096, 8]);
    assert.deepEqual(g3.slidingLayers, Array.from({ length: 12 }, (_, i) => i !== 5 && i !== 11));
    const granite = parseModelConfig({ ...minimal, model_type: "granite" });
    assert.deepEqual([granite.embeddingScale, granite.residualScale, granite.attentionScale, granite.logitScale, granite.tieWordEmbeddings], [1, 1, 1, 1, false], "GraniteConfig's defaults");
  });

  it("GGUF names and roles map both ways; q/k permutation heads come from the roles", () => {
    const cfg = parseModelConfig({ ...base, model_type: "qwen2", num_key_value_heads: 2 });
    const gemma = parseModelConfig({ ...base, model_type: "gemma3_text", num_key_value_heads: 1, head_dim: 16 });
    for (const c of [cfg, gemma]) {
      for (const t of modelTensors(c)) {
        assert.equal(ggufTensorName(t.name, c.modelType), t.gguf);
        assert.deepEqual(tensorRole(t.name, c.modelType), t.layer === undefined ? { role: t.role } : { role: t.role, layer: t.layer });
      }
    }
    assert.equal(ggufTensorName("model.layers.0.something_else.weight", "llama"), "model.layers.0.something_else.weight");
    assert.equal(qkPermutedHeads(layerTensorName(0, "q"), cfg), 4);
    assert.equal(qkPermutedHeads(layerTensorName(1, "kBias"), cfg), 2);
    assert.equal(qkPermutedHeads(layerTensorName(1, "v"), cfg), undefined);
  });
});
