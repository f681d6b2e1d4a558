// A GGUF file (llama.cpp's format, what most CPU users download) as a model source: its
// metadata becomes the same Hugging Face config the safetensors path parses (so the same
// bounds and checks apply), its tensor names map to Hugging Face's, llama.cpp's row
// permutation of q/k (for its RoPE layout) is undone, and its tokenizer metadata becomes a
// tokenizer.json for @huggingface/tokenizers (byte-level BPE with merges, or SentencePiece
// with scores turned into merges) with the chat template from tokenizer.chat_template.
import { GGUFError, readGGUFHeader, type GGUFHeader, type GGUFTensor, type GGUFValue } from "../formats/gguf.ts";
import { expectedTensors, ggufPermutesQK, ggufTensorName, minTensorCount, qkPermutedHeads, unusedLayerTensor } from "./architecture.ts";
import { ModelConfigError, parseModelConfig, type ModelConfig } from "./config.ts";
import type { ModelFiles } from "./files.ts";

export interface GGUFModelInfo {
  config: ModelConfig;
  /** The Hugging Face config.json the metadata says (what parseModelConfig read). */
  configJson: Record<string, unknown>;
  /** Hugging Face tensor name -> its GGUF tensor, the file (split) holding it, and whether its rows are permuted. */
  tensors: Map<string, { file: string; tensor: GGUFTensor; permutedHeads?: number }>;
  /** The split files, in order, with their sizes. */
  fileBytes: Map<string, number>;
  metadata: Map<string, GGUFValue>;
  /** tokenizer.json and tokenizer_config.json built from the metadata. */
  tokenizer?: { json: Record<string, unknown>; config: Record<string, unknown> };
  /**
   * Rope factor tensors, F32 [rotaryDim / 2] each, by name: rope_freqs.weight (Llama 3.1 / 3.2
   * files: llama.cpp's form of llama3 rope scaling), or rope_factors_long / rope_factors_short
   * (Phi-3.5, Phi-4-mini: LongRoPE). The config holds factors of 1 in their place (no scaling,
   * or LongRoPE's lists of 1) until the loader has read them (withRopeFactors).
   */
  ropeFactors: Map<string, { file: string; tensor: GGUFTensor }>;
}

/** llama.cpp's smollm3: layers i with (i + 1) % 4 == 0 are NoPE, a constant of its graph. */
export const SMOLLM3_NOPE_INTERVAL = 4;

/** The GGUF tensor of per-frequency rope factors. */
export const ROPE_FACTORS_TENSOR = "rope_freqs.weight";
/** LongRoPE's factors in llama.cpp's phi3 files. */
export const LONGROPE_TENSORS = { long: "rope_factors_long.weight", short: "rope_factors_short.weight" } as const;

const SPLIT = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/i;
export const GGUF_ARCHITECTURES = ["llama", "qwen2", "qwen3", "smollm3", "mistral", "gemma2", "gemma3", "granite", "phi3"] as const;

/**
 * What llama.cpp's gemma2 / gemma3 fix (no key holds them): which layers slide (all but every
 * `slidingPattern`-th), the window when no key gives one (Gemma 2's 4096; none: every layer full),
 * the theta of Gemma 3's sliding layers, the soft-caps when no key gives them (Gemma 2's), and
 * the layer count of the 27B, whose query_pre_attn_scalar is hidden / heads (head_dim otherwise).
 */
export const GEMMA_GGUF = {
  gemma2: { modelType: "gemma2", slidingPattern: 2, defaultWindow: 4096, localRopeTheta: undefined, softcaps: { attention: 50, final: 30 }, largeLayers: 46 },
  gemma3: { modelType: "gemma3_text", slidingPattern: 6, defaultWindow: undefined, localRopeTheta: 10000, softcaps: undefined, largeLayers: 62 },
} as const;

/** query_pre_attn_scalar as llama.cpp's gemma2 / gemma3 take it. */
export function gemmaAttentionScalar(arch: keyof typeof GEMMA_GGUF, layers: number, hidden: number, heads: number, headDim: number): number {
  return layers === GEMMA_GGUF[arch].largeLayers ? Math.floor(hidden / heads) : headDim;
}

/** The file names of a GGUF model: the file itself, or every split of a -0000i-of-0000N.gguf set. */
export function ggufSplitNames(name: string): string[] {
  const m = SPLIT.exec(name);
  if (!m) return [name];
  const count = Number(m[3]);
  if (count < 1 || count > 999 || Number(m[2]) < 1 || Number(m[2]) > count) throw new ModelConfigError(`${name}: not a valid split name (-0000i-of-0000N.gguf)`);
  return Array.from({ length: count }, (_, i) => `${m[1]}-${String(i + 1).padStart(5, "0")}-of-${m[3]}.gguf`);
}

/** Reads every split's header (through head(), not the data) and describes the model. */
export async function inspectGGUF(files: ModelFiles, name: string): Promise<GGUFModelInfo> {
  const names = ggufSplitNames(name);
  const headers: GGUFHeader[] = [];
  const fileBytes = new Map<string, number>();
  for (const file of names) {
    const { size } = await files.head(file, 0);
    const header = await readGGUFHeader(async (n) => (await files.head(file, n)).bytes, size, files.describe(file)).catch((e) => {
      throw e instanceof GGUFError ? new ModelConfigError(e.message) : e;
    });
    headers.push(header);
    fileBytes.set(file, size);
  }
  return describeGGUF(files, names, headers, fileBytes);
}

/** The model that the headers of `names` (a file, or every split in order) describe. */
export function describeGGUF(files: ModelFiles, names: string[], headers: GGUFHeader[], fileBytes: Map<string, number>): GGUFModelInfo {
  const metadata = headers[0]!.metadata;
  const where = files.describe(names[0]!);
  const fail = (why: string) => new ModelConfigError(`${where}: ${why}`);
  if (names.length > 1) {
    const count = metadata.get("split.count");
    if (count !== undefined && count !== names.length) throw fail(`split.count is ${String(count)}, but the name says ${names.length} files`);
  }
  const byName = new Map<string, { file: string; tensor: GGUFTensor }>();
  headers.forEach((h, i) => {
    for (const [n, t] of h.tensors) {
      if (byName.has(n)) throw fail(`tensor ${n} is in two split files`);
      byName.set(n, { file: names[i]!, tensor: t });
    }
  });

  const str = (key: string) => { const v = metadata.get(key); return typeof v === "string" ? v : undefined; };
  const num = (key: string) => { const v = metadata.get(key); return typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : undefined; };
  const arch = str("general.architecture");
  if (!arch || !(GGUF_ARCHITECTURES as readonly string[]).includes(arch)) throw fail(`general.architecture ${JSON.stringify(arch ?? null)} is not supported (${GGUF_ARCHITECTURES.join(", ")})`);
  const embd = byName.get("token_embd.weight");
  if (!embd) throw fail("no token_embd.weight tensor");
  const headCount = num(`${arch}.attention.head_count`);
  const kv = metadata.get(`${arch}.attention.head_count_kv`);
  if (Array.isArray(kv)) throw fail(`${arch}.attention.head_count_kv is per layer, which ${arch} does not have`);
  const keyLength = num(`${arch}.attention.key_length`), valueLength = num(`${arch}.attention.value_length`);
  if (keyLength !== undefined && valueLength !== undefined && keyLength !== valueLength) throw fail(`key_length ${keyLength} and value_length ${valueLength} differ`);
  const scalingType = str(`${arch}.rope.scaling.type`);
  if (scalingType !== undefined && scalingType !== "none" && scalingType !== "linear") throw fail(`rope scaling ${scalingType} is not supported (linear)`);
  const gemma = arch === "gemma2" || arch === "gemma3" ? GEMMA_GGUF[arch] : undefined;
  // Rope factors: rope_freqs (llama3 scaling) in llama-style files; LongRoPE's pair in phi3's.
  const ropeFactors = new Map<string, { file: string; tensor: GGUFTensor }>();
  for (const n of [ROPE_FACTORS_TENSOR, LONGROPE_TENSORS.long, LONGROPE_TENSORS.short]) {
    const t = byName.get(n);
    if (!t) continue;
    if ((n === ROPE_FACTORS_TENSOR) === (arch === "phi3") || (n === ROPE_FACTORS_TENSOR && gemma)) throw fail(`${n} is not used by a ${arch} model`);
    ropeFactors.set(n, t);
  }
  if (ropeFactors.has(ROPE_FACTORS_TENSOR) && scalingType === "linear") throw fail(`${ROPE_FACTORS_TENSOR} and linear rope scaling together are not supported`);
  const longRope = ropeFactors.has(LONGROPE_TENSORS.long) || ropeFactors.has(LONGROPE_TENSORS.short);
  if (longRope && ropeFactors.size !== 2) throw fail(`${LONGROPE_TENSORS.long} and ${LONGROPE_TENSORS.short} come together; the file has one`);
  // The head size as the config will take it (Gemma's and Granite's attention scales derive from it).
  const hidden = num(`${arch}.embedding_length`), headDim = keyLength ?? (hidden ?? 0) / (headCount ?? 1);
  const layerCount = num(`${arch}.block_count`), swa = num(`${arch}.attention.sliding_window`) ?? gemma?.defaultWindow;
  // RoPE on the first rope.dimension_count elements of each head (Phi-4-mini: 96 of 128).
  const rotaryDim = num(`${arch}.rope.dimension_count`);
  // llama.cpp's llama-style files rotate whole heads (its permuted q/k rows assume it; it refuses others).
  if (rotaryDim !== undefined && rotaryDim !== headDim && ggufPermutesQK(arch)) throw fail(`${arch}.rope.dimension_count ${rotaryDim} is not the head size ${headDim} (llama.cpp's ${arch} rotates whole heads)`);
  const partialRotary = rotaryDim !== undefined && rotaryDim !== headDim ? rotaryDim / headDim : undefined;
  // LongRoPE's factor lists, 1 until the loader reads the file's (bounded: built only for a sane size).
  const half = (rotaryDim ?? headDim) / 2, ones = Number.isInteger(half) && half > 0 && half <= 2048 ? new Array<number>(half).fill(1) : undefined;
  const configJson: Record<string, unknown> = {
    model_type: gemma ? gemma.modelType : arch,
    hidden_size: hidden,
    intermediate_size: num(`${arch}.feed_forward_length`),
    num_hidden_layers: num(`${arch}.block_count`),
    num_attention_heads: headCount,
    num_key_value_heads: typeof kv === "number" ? kv : headCount,
    ...(keyLength !== undefined ? { head_dim: keyLength } : {}),
    vocab_size: embd.tensor.shape[0],
    rms_norm_eps: num(`${arch}.attention.layer_norm_rms_epsilon`) ?? 1e-5,
    rope_theta: num(`${arch}.rope.freq_base`) ?? 10000,
    max_position_embeddings: num(`${arch}.context_length`) ?? 2048,
    tie_word_embeddings: !byName.has("output.weight"),
    ...(scalingType === "linear" ? { rope_scaling: { type: "linear", factor: num(`${arch}.rope.scaling.factor`) } } : {}),
    ...(arch === "mistral" && num(`${arch}.attention.sliding_window`) ? { sliding_window: num(`${arch}.attention.sliding_window`) } : {}),
    ...((arch === "llama" || arch === "qwen3") && byName.has("blk.0.attn_q.bias") ? { attention_bias: true } : {}),
    ...(partialRotary !== undefined ? { partial_rotary_factor: partialRotary } : {}),
    // phi3: LongRoPE when the file has its factors (llama.cpp: attn_factor 1 unless a key gives it);
    // no sliding window (llama.cpp's phi3 ignores its sliding_window key).
    ...(longRope ? {
      original_max_position_embeddings: num(`${arch}.rope.scaling.original_context_length`) ?? num(`${arch}.context_length`),
      rope_scaling: { type: "longrope", short_factor: ones, long_factor: ones, attention_factor: num(`${arch}.rope.scaling.attn_factor`) ?? 1 },
    } : {}),
    // llama.cpp's smollm3 skips RoPE in every 4th layer (no key says so).
    ...(arch === "smollm3" ? { no_rope_layer_interval: SMOLLM3_NOPE_INTERVAL } : {}),
    // Granite's multipliers (llama.cpp's names: *_scale; no attention.scale: 1 / sqrt(head_dim), as llama.cpp).
    ...(arch === "granite" ? {
      embedding_multiplier: num("granite.embedding_scale") ?? 1, residual_multiplier: num("granite.residual_scale") ?? 1, logits_scaling: num("granite.logit_scale") ?? 1,
      attention_multiplier: num("granite.attention.scale") ?? 1 / Math.sqrt(headDim),
    } : {}),
    // Gemma 2 / 3: what llama.cpp fixes for them (GEMMA_GGUF).
    ...(gemma ? {
      ...(gemma.localRopeTheta !== undefined ? { rope_local_base_freq: gemma.localRopeTheta } : {}), sliding_window: swa,
      ...(typeof layerCount === "number" && Number.isInteger(layerCount) && layerCount > 0 && layerCount <= 1024
        ? { layer_types: Array.from({ length: layerCount }, (_, i) => (swa && (i + 1) % gemma.slidingPattern !== 0 ? "sliding_attention" : "full_attention")) } : {}),
      query_pre_attn_scalar: gemmaAttentionScalar(arch as keyof typeof GEMMA_GGUF, layerCount ?? 0, hidden ?? 0, headCount ?? 1, headDim),
      attn_logit_softcapping: gemma.softcaps ? num(`${arch}.attn_logit_softcapping`) ?? gemma.softcaps.attention : null,
      final_logit_softcapping: num(`${arch}.final_logit_softcapping`) ?? gemma.softcaps?.final ?? null,
    } : {}),
  };
  const config = parseModelConfig(configJson, `${where} (metadata)`);
  if (minTensorCount(config) > byName.size) throw fail(`${arch}.block_count is ${config.numLayers}, but the file holds only ${byName.size} tensors`);

  const permutes = ggufPermutesQK(arch);
  const tensors = new Map<string, { file: string; tensor: GGUFTensor; permutedHeads?: number }>();
  const missing: string[] = [];
  for (const [hf, shape] of expectedTensors(config)) {
    const gguf = ggufTensorName(hf, config.modelType);
    const t = byName.get(gguf);
    if (!t) { missing.push(gguf); continue; }
    if (t.tensor.shape.join("x") !== shape.join("x")) throw fail(`tensor ${gguf} has shape [${t.tensor.shape.join(", ")}], the metadata needs [${shape.join(", ")}]`);
    tensors.set(hf, { ...t, permutedHeads: permutes ? qkPermutedHeads(hf, config) : undefined });
  }
  const unused = unusedLayerTensor(config, byName.keys(), true);
  if (unused) throw fail(`tensor ${unused} is not one a ${arch} model of this metadata uses`);
  if (missing.length > 0) throw fail(`missing tensors ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}`);
  for (const [n, { tensor: { type, shape } }] of ropeFactors) {
    if (type !== "F32" || shape.length !== 1 || shape[0] !== config.rotaryDim / 2) {
      throw fail(`${n} is ${type} [${shape.join(", ")}], not the F32 [${config.rotaryDim / 2}] of one factor per rotated pair`);
    }
  }
  return { config, configJson, tensors, fileBytes, metadata, tokenizer: ggufTokenizer(metadata, where), ropeFactors };
}

/**
 * The config with the rope factors read from the file (by tensor name): rope_freqs.weight as
 * { type: "factors" }, or LongRoPE's long and short lists. Each must be a finite positive number,
 * a frequency's divisor.
 */
export function withRopeFactors(config: ModelConfig, values: Map<string, Float32Array>, where: string): ModelConfig {
  for (const [n, v] of values) {
    const bad = v.findIndex((x) => !(Number.isFinite(x) && x > 0));
    if (bad >= 0) throw new ModelConfigError(`${where}: ${n} holds ${v[bad]} at element ${bad}; each factor must be a finite positive number`);
  }
  const freqs = values.get(ROPE_FACTORS_TENSOR), long = values.get(LONGROPE_TENSORS.long), short = values.get(LONGROPE_TENSORS.short);
  if (freqs) return { ...config, ropeScaling: { type: "factors", factors: Array.from(freqs) } };
  if (long && short && config.ropeScaling?.type === "longrope") return { ...config, ropeScaling: { ...config.ropeScaling, longFactors: Array.from(long), shortFactors: Array.from(short) } };
  return config;
}

/**
 * Where row `src` of a q/k tensor as llama.cpp's converter wrote it belongs in Hugging Face
 * order: within each head of `rows / heads` rows, GGUF row 2i + half is HF row half · headDim/2 + i.
 */
export function unpermutedRow(src: number, rows: number, heads: number): number {
  const headDim = rows / heads, h = Math.floor(src / headDim), j = src % headDim;
  return h * headDim + (j % 2) * (headDim / 2) + (j >> 1);
}

// ---------------------------------------------------------------- tokenizer

/**
 * The tokens whose text llama.cpp takes as ending a generation, whatever the file's eos / eot ids
 * say (Gemma's <end_of_turn>, where the file's eos is <eos>; ChatML's <|im_end|>; Llama 3's
 * <|eot_id|> ...): a file read here stops where llama.cpp stops.
 */
const END_OF_GENERATION_TEXTS = new Set(["<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
  "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>"]);

/** A GGUF file's stop tokens: its eos, eot and eom ids and the tokens of END_OF_GENERATION_TEXTS (not <|end|> beside harmony's <|return|> and <|call|>). */
export function ggufStopTokenIds(metadata: Map<string, GGUFValue>): number[] {
  const tokens = metadata.get("tokenizer.ggml.tokens");
  const list = Array.isArray(tokens) ? tokens : [];
  const id = (key: string) => { const v = metadata.get(key); return typeof v === "number" && Number.isInteger(v) && v >= 0 && v < list.length ? v : undefined; };
  const ids = new Set([id("tokenizer.ggml.eos_token_id"), id("tokenizer.ggml.eot_token_id"), id("tokenizer.ggml.eom_token_id")].filter((x): x is number => x !== undefined));
  const byText = new Map<string, number>();
  list.forEach((t, i) => { if (typeof t === "string" && END_OF_GENERATION_TEXTS.has(t) && !byText.has(t)) byText.set(t, i); });
  if (byText.has("<|return|>") && byText.has("<|call|>")) byText.delete("<|end|>");
  for (const i of byText.values()) ids.add(i);
  return [...ids].sort((a, b) => a - b);
}

/** Pre-tokenizer regexes of llama.cpp's `tokenizer.ggml.pre` types (as their tokenizer.json files split). */
export const PRE_TOKENIZERS: Record<string, unknown[]> = {
  "gpt-2": [{ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }],
  default: [{ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }],
  smollm: [{ type: "Digits", individual_digits: true }, { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }],
  "llama-bpe": [
    { type: "Split", pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: "Isolated", invert: false },
    { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
  // o200k (Phi-4-mini): upper-case runs with their lower-case tails, digits in threes, "/" kept after punctuation.
  "gpt-4o": [
    { type: "Split", pattern: { Regex: "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: "Isolated", invert: false },
    { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
  qwen2: [
    { type: "Split", pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: "Isolated", invert: false },
    { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
  ],
};

/** tokenizer.json + tokenizer_config.json from `tokenizer.ggml.*` metadata (undefined when there is none). */
export function ggufTokenizer(metadata: Map<string, GGUFValue>, where: string): { json: Record<string, unknown>; config: Record<string, unknown> } | undefined {
  const model = metadata.get("tokenizer.ggml.model");
  if (model === undefined) return undefined;
  const fail = (why: string) => new ModelConfigError(`${where}: ${why}`);
  const tokens = metadata.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== "string")) throw fail("tokenizer.ggml.tokens is not a list of strings");
  const list = tokens as string[];
  const types = metadata.get("tokenizer.ggml.token_type");
  const typeOf = (i: number) => (Array.isArray(types) && typeof types[i] === "number" ? types[i] as number : 1);
  const id = (key: string) => { const v = metadata.get(key); return typeof v === "number" && v >= 0 && v < list.length ? v : undefined; };
  const bos = id("tokenizer.ggml.bos_token_id"), eos = id("tokenizer.ggml.eos_token_id"), unk = id("tokenizer.ggml.unknown_token_id");
  const addBos = metadata.get("tokenizer.ggml.add_bos_token");
  // No prototype: tokens such as "constructor" or "__proto__" are ordinary keys.
  const vocab: Record<string, number> = Object.create(null);
  list.forEach((t, i) => { if (!Object.hasOwn(vocab, t)) vocab[t] = i; });
  // Control (3) and user-defined (4) tokens are matched whole, as added tokens.
  const added = list.flatMap((content, i) => (typeOf(i) === 3 || typeOf(i) === 4 ? [{ id: i, content, single_word: false, lstrip: false, rstrip: false, normalized: typeOf(i) === 4, special: typeOf(i) === 3 }] : []));
  const withBos = (single: unknown[]) => ({ type: "TemplateProcessing", single, pair: [], special_tokens: bos === undefined ? {} : { [list[bos]!]: { id: list[bos]!, ids: [bos], tokens: [list[bos]!] } } });
  let json: Record<string, unknown>;
  if (model === "gpt2") {
    const merges = metadata.get("tokenizer.ggml.merges");
    if (!Array.isArray(merges) || merges.some((m) => typeof m !== "string")) throw fail("tokenizer.ggml.merges is not a list of strings");
    const pre = (metadata.get("tokenizer.ggml.pre") as string | undefined) ?? "default";
    const pretokenizers = PRE_TOKENIZERS[pre];
    if (!pretokenizers) throw fail(`tokenizer.ggml.pre ${JSON.stringify(pre)} is not supported (${Object.keys(PRE_TOKENIZERS).join(", ")})`);
    const useBos = addBos === true && bos !== undefined;
    json = {
      version: "1.0", truncation: null, padding: null, added_tokens: added, normalizer: null,
      pre_tokenizer: { type: "Sequence", pretokenizers },
      post_processor: useBos ? withBos([{ SpecialToken: { id: list[bos!]!, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }]) : { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: pre === "llama-bpe", vocab, merges },
    };
  } else if (model === "llama") {
    const scores = metadata.get("tokenizer.ggml.scores");
    if (!Array.isArray(scores) || scores.length !== list.length || scores.some((s) => typeof s !== "number")) throw fail("tokenizer.ggml.scores is not one number per token");
    const useBos = addBos !== false && bos !== undefined, spacePrefix = metadata.get("tokenizer.ggml.add_space_prefix") !== false;
    json = {
      version: "1.0", truncation: null, padding: null, added_tokens: added,
      // add_space_prefix (default true; Gemma's files say false): "▁" before the text, stripped when decoding.
      normalizer: { type: "Sequence", normalizers: [...(spacePrefix ? [{ type: "Prepend", prepend: "▁" }] : []), { type: "Replace", pattern: { String: " " }, content: "▁" }] },
      pre_tokenizer: null,
      post_processor: useBos ? withBos([{ SpecialToken: { id: list[bos!]!, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }]) : null,
      decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }, ...(spacePrefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : [])] },
      model: { type: "BPE", dropout: null, unk_token: unk === undefined ? null : list[unk], continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: sentencePieceMerges(list, scores as number[], typeOf, where) },
    };
  } else {
    throw fail(`tokenizer.ggml.model ${JSON.stringify(model)} is not supported (gpt2, llama)`);
  }
  const template = metadata.get("tokenizer.chat_template");
  const config: Record<string, unknown> = {
    ...(bos !== undefined ? { bos_token: list[bos] } : {}), ...(eos !== undefined ? { eos_token: list[eos] } : {}),
    ...(typeof template === "string" ? { chat_template: template } : {}),
  };
  return { json, config };
}

/**
 * BPE merges of a SentencePiece vocabulary, as Hugging Face's converter makes them: every split
 * of a normal token into two tokens of the vocabulary, ordered by the merged token's score.
 * Splitting costs the square of a token's length, and the tokens come from the file: tokens
 * longer than MAX_MERGED_TOKEN characters get no merges (real vocabularies' longest are runs of
 * a few dozen spaces), and the whole derivation has a budget of characters.
 */
const MAX_MERGED_TOKEN = 64;
const MERGE_BUDGET_CHARS = 64 << 20;
function sentencePieceMerges(tokens: string[], scores: number[], typeOf: (i: number) => number, where: string): [string, string][] {
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => { if (!ids.has(t)) ids.set(t, i); });
  const merges: { l: string; r: string; score: number; li: number; ri: number }[] = [];
  let budget = MERGE_BUDGET_CHARS;
  tokens.forEach((piece, i) => {
    if (typeOf(i) !== 1 || piece.length < 2 || piece.length > MAX_MERGED_TOKEN) return;
    const chars = [...piece];
    if ((budget -= chars.length * chars.length) < 0) throw new ModelConfigError(`${where}: tokenizer.ggml.tokens is too large to derive SentencePiece merges from`);
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join(""), r = chars.slice(k).join("");
      const li = ids.get(l), ri = ids.get(r);
      if (li !== undefined && ri !== undefined) merges.push({ l, r, score: scores[i]!, li, ri });
    }
  });
  merges.sort((a, b) => b.score - a.score || a.li - b.li || a.ri - b.ri);
  return merges.map((m) => [m.l, m.r]);
}
