// Tiny models for the model-runner tests: random weights, a float64 reference forward written
// from the Hugging Face modeling code, and model folders on disk.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeSafetensors, type TensorToWrite } from "../src/index.ts";
import { GGML_TYPES, parseGGUFHeader, writeGGUF, type GGMLType, type GGUFMetadataToWrite, type GGUFTensorToWrite } from "../src/formats/gguf.ts";
import { f32ToF16 } from "../src/formats/half.ts";
import { dequantizeGGML, type ReadableType } from "../src/formats/quant.ts";
export { referenceForward } from "./model-reference.ts";
import { expectedTensors } from "../src/model/architecture.ts";
import { parseModelConfig, type ModelConfig } from "../src/model/config.ts";
import { BYTE_TOKENIZER_VOCAB, byteLevelTokenizer, syntheticWeights } from "../src/model/synthetic.ts";

export type Weights = Map<string, Float32Array>;

/** syntheticWeights, with lm_head.weight naming the embedding when tied (as the reference forward reads it). */
export function randomWeights(cfg: ModelConfig): Weights {
  const w = syntheticWeights(cfg);
  if (cfg.tieWordEmbeddings) w.set("lm_head.weight", w.get("model.embed_tokens.weight")!);
  return w;
}

/** Tiny configs of every supported architecture, for the forward and CLI tests. */
export const base = { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 40, rms_norm_eps: 1e-5, max_position_embeddings: 512 };
export const models: [string, Record<string, unknown>][] = [
  ["llama GQA (4 heads, 2 KV heads)", { ...base, model_type: "llama", num_key_value_heads: 2 }],
  ["llama MQA with tied embeddings, an explicit head_dim and llama3 rope scaling", { ...base, model_type: "llama", num_key_value_heads: 1, head_dim: 16, tie_word_embeddings: true,
    rope_theta: 500000, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }],
  ["qwen2 with q/k/v biases", { ...base, model_type: "qwen2", num_key_value_heads: 2 }],
  ["qwen3 with q/k norms, tied embeddings and a head_dim wider than hidden / heads", { ...base, model_type: "qwen3", num_key_value_heads: 2, head_dim: 16, tie_word_embeddings: true }],
  ["llama with attention_bias (q/k/v and o_proj biases)", { ...base, model_type: "llama", num_key_value_heads: 2, attention_bias: true }],
  ["smollm3 with a NoPE layer (no_rope_layers) and tied embeddings", { ...base, model_type: "smollm3", num_key_value_heads: 2, no_rope_layers: [1, 0], tie_word_embeddings: true }],
  ["llama with linear rope scaling (factor 4)", { ...base, model_type: "llama", num_key_value_heads: 4, rope_scaling: { type: "linear", factor: 4 } }],
  ["mistral with a sliding window (5) shorter than the prompt", { ...base, model_type: "mistral", num_key_value_heads: 2, sliding_window: 5 }],
  ["gemma3_text: a sliding layer (window 5) with its own theta, q/k and output norms, GeGLU, scaled embeddings, query_pre_attn_scalar, tied", { ...base, model_type: "gemma3_text",
    num_key_value_heads: 1, head_dim: 16, layer_types: ["sliding_attention", "full_attention"], sliding_window: 5, query_pre_attn_scalar: 24, rope_theta: 1000000, rope_local_base_freq: 10000 }],
  ["gemma3_text with linear rope scaling (factor 8) on its global layer only, as Gemma 3 4B and up", { ...base, model_type: "gemma3_text", num_hidden_layers: 3,
    num_key_value_heads: 2, head_dim: 16, sliding_window_pattern: 3, sliding_window: 4, rope_theta: 1000000, rope_local_base_freq: 10000, rope_scaling: { rope_type: "linear", factor: 8 } }],
  ["gemma2: soft-capped scores (5) and logits (2), a sliding layer (window 5), output norms, GeGLU, tied", { ...base, model_type: "gemma2",
    num_key_value_heads: 2, head_dim: 16, sliding_window: 5, query_pre_attn_scalar: 16, attn_logit_softcapping: 5, final_logit_softcapping: 2 }],
  ["granite: embedding, residual, attention and logit multipliers, tied", { ...base, model_type: "granite", num_key_value_heads: 2, tie_word_embeddings: true,
    embedding_multiplier: 12, residual_multiplier: 0.22, attention_multiplier: 0.0625, logits_scaling: 8 }],
  ["phi3 as Phi-4-mini: fused qkv_proj and gate_up_proj, RoPE on 3/4 of each head, LongRoPE (its short factors, its attention factor), tied", { ...base, model_type: "phi3",
    num_key_value_heads: 2, partial_rotary_factor: 0.75, tie_word_embeddings: true, original_max_position_embeddings: 64, rope_scaling: { type: "longrope", short_factor: [1, 1.5, 2.5], long_factor: [1.2, 4, 16] } }],
  ["phi3 as Phi-3-mini-4k: MHA, a sliding window (5) shorter than the prompt", { ...base, model_type: "phi3", num_key_value_heads: 4, sliding_window: 5 }],
  ["deci with per-layer KV heads and DeciLM-7B's dynamic rope scaling", { ...base, model_type: "deci", num_hidden_layers: 3, num_key_value_heads_per_layer: [4, 2, 1], rope_scaling: { type: "dynamic", factor: 2 } }],
];

export interface FolderOptions {
  shards?: number;
  /** leave this tensor out */
  drop?: string;
  dtype?: "F32" | "BF16" | "F16";
  /** the weights to write (random ones of the config's shapes otherwise) */
  weights?: Weights;
  /** take the tensor shapes from this config instead (to write a broken config over good tensors) */
  tensorsOf?: Record<string, unknown>;
}

/** A model folder: config.json and safetensors (one file or shards with an index). */
export function writeModelFolder(config: Record<string, unknown>, opts: FolderOptions = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "gqa-model-"));
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const cfg = parseModelConfig(opts.tensorsOf ?? config);
  const weights = opts.weights ?? randomWeights(cfg);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, shape] of expectedTensors(cfg)) {
    if (name !== opts.drop) tensors[name] = { dtype: opts.dtype ?? "F32", shape, data: weights.get(name)! };
  }
  const names = Object.keys(tensors);
  const shards = opts.shards ?? 1;
  if (shards === 1) writeFileSync(join(dir, "model.safetensors"), writeSafetensors(tensors));
  else {
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < shards; s++) {
      const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
      const part = Object.fromEntries(names.filter((_, i) => i % shards === s).map((n) => [n, tensors[n]!]));
      for (const n of Object.keys(part)) weightMap[n] = file;
      writeFileSync(join(dir, file), writeSafetensors(part));
    }
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
  return dir;
}

/** The byte-level BPE tokenizer of src/model/synthetic.ts, written into `dir`. */
export function writeTokenizer(dir: string, opts: { chatTemplate?: string | null } = {}): void {
  for (const [name, text] of Object.entries(byteLevelTokenizer(opts))) writeFileSync(join(dir, name), text);
}

export { CHATML_SPECIAL_TOKENS as SPECIAL_TOKENS, BYTE_TOKENIZER_VOCAB as TOKENIZER_VOCAB } from "../src/model/synthetic.ts";

/** A llama GQA config whose vocabulary is the test tokenizer's. */
export const textModel = { ...base, model_type: "llama", num_key_value_heads: 2, vocab_size: BYTE_TOKENIZER_VOCAB };

/**
 * A SentencePiece-style tokenizer.json (Llama 2 / Mistral / TinyLlama): BPE over "▁"-joined
 * text with byte fallback (<0xNN> tokens), a Metaspace-like normalizer and decoder, and a
 * template post-processor that adds <s>. 3 special tokens, 256 byte tokens, 14 pieces.
 */
export const SENTENCEPIECE_VOCAB = 3 + 256 + 14;
export function writeSentencePieceTokenizer(dir: string, options: { spacePrefix?: boolean } = {}): void {
  // Llama 2's prepend "▁" to the text (and strip it when decoding); Gemma's do not.
  const prefix = options.spacePrefix ?? true;
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = Object.keys(vocab).length;
  for (const p of ["▁", "e", "h", "l", "o", "w", "r", "d", "H", "▁w", "▁H", "ll", "▁He", "llo"]) vocab[p] = Object.keys(vocab).length;
  const merges = ["▁ w", "▁ H", "l l", "▁H e", "ll o"];
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({
    version: "1.0",
    added_tokens: ["<unk>", "<s>", "</s>"].map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: prefix ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] } : { type: "Replace", pattern: { String: " " }, content: "▁" },
    pre_tokenizer: null,
    post_processor: { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }], pair: [], special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } } },
    decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, ...(prefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : [])] },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges },
  }));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<s>", eos_token: "</s>", add_bos_token: true }));
}

/** Where each GGML type's f16 scales sit in its block, with values that keep random blocks' weights small (|w| below ~1). */
const RANDOM_BLOCK_SCALES: Partial<Record<GGMLType, [number, number][]>> = {
  Q8_0: [[0, 0.004]], Q4_0: [[0, 0.01]], Q4_1: [[0, 0.01], [2, -0.08]], Q5_0: [[0, 0.01]], Q5_1: [[0, 0.01], [2, -0.16]], IQ4_NL: [[0, 0.001]],
  Q2_K: [[80, 0.005], [82, 0.01]], Q3_K: [[108, 0.003]], Q4_K: [[0, 0.004], [2, 0.01]], Q5_K: [[0, 0.004], [2, 0.01]], Q6_K: [[208, 0.002]], IQ4_XS: [[0, 0.0001]],
};

/**
 * A GGUF file's metadata as writeGGUF takes it (integers as u32 unless their key names a float,
 * arrays of strings, f32 scores or i32).
 */
export function metadataOf(metadata: Map<string, unknown>): GGUFMetadataToWrite {
  const out: GGUFMetadataToWrite = {};
  for (const [key, value] of metadata) {
    if (typeof value === "string") out[key] = { type: "string", value };
    else if (typeof value === "boolean") out[key] = { type: "bool", value };
    else if (typeof value === "number") out[key] = { type: Number.isInteger(value) && !/eps|freq|factor/.test(key) ? "u32" : "f32", value };
    else if (Array.isArray(value)) out[key] = { type: "array", itemType: typeof value[0] === "string" ? "string" : key.endsWith("scores") ? "f32" : "i32", value: value as (string | number)[] };
  }
  return out;
}

/**
 * A GGUF model whose matrices are random blocks of the types `typeOf` gives them (in tensor
 * order; seeded), every other tensor as `gguf` holds it: files of types no writer here makes.
 * Also the matrices' values as floats (ggml's dequantizers), by tensor name.
 */
export function withRandomBlocks(gguf: Uint8Array, typeOf: (index: number) => GGMLType, seed = 1): { file: Uint8Array; values: Map<string, Float32Array> } {
  const h = parseGGUFHeader(gguf, gguf.length);
  const rand = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
  const tensors: Record<string, GGUFTensorToWrite> = {}, values = new Map<string, Float32Array>();
  let i = 0;
  for (const [name, t] of h.tensors) {
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (t.shape.length !== 2) { tensors[name] = { shape: t.shape, type: t.type, data: gguf.subarray(t.offset, t.offset + t.byteLength) }; continue; }
    const type = typeOf(i++), { block, bytes } = GGML_TYPES[type], n = elements / block;
    const data = Uint8Array.from({ length: n * bytes }, () => Math.floor(rand() * 256)), view = new DataView(data.buffer);
    for (let b = 0; b < n; b++) for (const [o, d] of RANDOM_BLOCK_SCALES[type]!) view.setUint16(b * bytes + o, f32ToF16(d), true);
    tensors[name] = { shape: t.shape, type, data };
    values.set(name, dequantizeGGML(type as ReadableType, data, elements));
  }
  return { file: writeGGUF(metadataOf(h.metadata), tensors), values };
}
