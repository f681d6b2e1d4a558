// Synthetic models made in memory, as the files of a Hugging Face folder: config.json,
// model.safetensors with deterministic random weights, and a real byte-level BPE tokenizer
// (tokenizer.json, tokenizer_config.json with a ChatML chat template). They load through
// loadModel like a downloaded folder, on every host (no file system needed): the demo, the
// examples and the conformance suite run generation end to end with them. Random weights:
// the text means nothing, the path it takes and its speed do.
import { writeSafetensors, type SafetensorsDtype, type TensorToWrite } from "../formats/safetensors.ts";
import { seededArray, seededTrainedLike } from "../random.ts";
import { ARCHITECTURES, expectedTensors } from "./architecture.ts";
import { parseModelConfig, type ModelConfig } from "./config.ts";
import { byteChars } from "./tokenizer.ts";

/** ChatML special tokens (SmolLM2, Qwen2.5), ids 0, 1, 2. */
export const CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [string, string][] = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"]];
/** Vocabulary of the byte-level tokenizer: 3 special tokens, 256 bytes, 5 merges. */
export const BYTE_TOKENIZER_VOCAB = CHATML_SPECIAL_TOKENS.length + 256 + MERGES.length;
/** The ChatML template of SmolLM2-Instruct / Qwen2.5-Instruct, as tokenizer_config.json carries it. */
export const CHATML_TEMPLATE = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** A tiny Llama-style GQA chat model (8 query heads, 2 KV heads) over the byte-level tokenizer. */
export const TINY_CHAT_MODEL = {
  model_type: "llama", hidden_size: 64, intermediate_size: 160, num_hidden_layers: 4, num_attention_heads: 8,
  num_key_value_heads: 2, vocab_size: BYTE_TOKENIZER_VOCAB, rms_norm_eps: 1e-5, rope_theta: 10000,
  max_position_embeddings: 1024, tie_word_embeddings: true, eos_token_id: 2,
};

/** tokenizer.json and tokenizer_config.json of a byte-level BPE tokenizer (the GPT-2 / Llama-3 / Qwen2 kind). */
export function byteLevelTokenizer(options: { chatTemplate?: string | null } = {}): { "tokenizer.json": string; "tokenizer_config.json": string } {
  const vocab: Record<string, number> = {};
  CHATML_SPECIAL_TOKENS.forEach((t, i) => { vocab[t] = i; });
  for (const c of byteChars()) vocab[c] = Object.keys(vocab).length;
  for (const [a, b] of MERGES) vocab[a + b] = Object.keys(vocab).length;
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const template = options.chatTemplate === undefined ? CHATML_TEMPLATE : options.chatTemplate;
  return {
    "tokenizer.json": JSON.stringify({
      version: "1.0",
      added_tokens: CHATML_SPECIAL_TOKENS.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
      normalizer: null, pre_tokenizer: byteLevel, post_processor: null, decoder: byteLevel,
      model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges: MERGES.map((m) => m.join(" ")) },
    }),
    "tokenizer_config.json": JSON.stringify({ bos_token: null, eos_token: "<|im_end|>", ...(template === null ? {} : { chat_template: template }) }),
  };
}

/**
 * Deterministic random weights for a config: norms acting near 1, everything else uniform in ±scale;
 * or with `trainedLike`, normal with per-row scales and rare outliers (seededTrainedLike), the
 * statistics quantization error depends on.
 */
export function syntheticWeights(cfg: ModelConfig, options: { seed?: number; scale?: number; trainedLike?: boolean } = {}): Map<string, Float32Array> {
  const weights = new Map<string, Float32Array>();
  let seed = options.seed ?? 11;
  // Norms act near 1: Gemma's checkpoints store w of a norm by 1 + w.
  const normOffset = ARCHITECTURES[cfg.modelType].normWeightOffset ?? 0;
  for (const [name, shape] of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (name.endsWith("norm.weight")) weights.set(name, Float32Array.from(seededArray(n, seed++, 0.2), (x) => 1 - normOffset + x));
    else if (options.trainedLike) weights.set(name, seededTrainedLike(n, shape[shape.length - 1]!, seed++, name.includes("embed") ? 0.05 : options.scale ?? 0.02));
    else weights.set(name, seededArray(n, seed++, options.scale ?? 0.3));
  }
  return weights;
}

/**
 * The files of a model folder, in memory, ready for loadModel(rt, files): config.json,
 * model.safetensors (in `dtype`) and, unless `tokenizer` is false, the byte-level tokenizer.
 */
export function syntheticModelFiles(config: Record<string, unknown> = TINY_CHAT_MODEL, options: { dtype?: SafetensorsDtype; seed?: number; tokenizer?: boolean } = {}): Record<string, Uint8Array | string> {
  const tensors: Record<string, TensorToWrite> = {};
  const cfg = parseModelConfig(config);
  const weights = syntheticWeights(cfg, { seed: options.seed });
  for (const [name, shape] of expectedTensors(cfg)) tensors[name] = { dtype: options.dtype ?? "BF16", shape, data: weights.get(name)! };
  return {
    "config.json": JSON.stringify(config),
    "model.safetensors": writeSafetensors(tensors),
    ...(options.tokenizer === false ? {} : byteLevelTokenizer()),
  };
}
