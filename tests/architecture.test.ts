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
  });

  it("GGUF names and roles map both ways; q/k permutation heads come from the roles", () => {
    const cfg = parseModelConfig({ ...base, model_type: "qwen2", num_key_value_heads: 2 });
    for (const t of modelTensors(cfg)) {
      assert.equal(ggufTensorName(t.name), t.gguf);
      assert.deepEqual(tensorRole(t.name), t.layer === undefined ? { role: t.role } : { role: t.role, layer: t.layer });
    }
    assert.equal(ggufTensorName("model.layers.0.something_else.weight"), "model.layers.0.something_else.weight");
    assert.equal(qkPermutedHeads(layerTensorName(0, "q"), cfg), 4);
    assert.equal(qkPermutedHeads(layerTensorName(1, "kBias"), cfg), 2);
    assert.equal(qkPermutedHeads(layerTensorName(1, "v"), cfg), undefined);
  });
});
