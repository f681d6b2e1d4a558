// A model as a GGUF file llama.cpp reads (`gqa-wasm quantize`): the metadata its loader expects
// for the llama / qwen2 / qwen3 / smollm3 / gemma2 / gemma3 / granite / phi3 architectures, norms in F32 (Gemma's as 1 + w), linear weights and embeddings in F32, F16,
// BF16, Q8_0, Q4_0, Q5_0, IQ4_NL (quantized as ggml's reference quantizers do), Q4_K or Q6_K
// (scales fitted as llama.cpp fits them), or llama.cpp's Q4_K_M mix of them, q/k rows permuted the way
// llama.cpp's converter does for llama-style RoPE, llama3 rope scaling as rope_freqs.weight,
// LongRoPE as rope_factors_long / _short, and the tokenizer as tokenizer.ggml.* metadata.
import { f32ToBf16, f32ToF16 } from "../formats/half.ts";
import { GGML_TYPES, ggufHeader, writeGGUF, type GGMLType, type GGUFMetadataToWrite } from "../formats/gguf.ts";
import { K_MIX_FILE_TYPES, kMixTensorType, quantizeGGML, quantizeRows, quantRowBytes, QUANT_BLOCK_WEIGHTS, type QuantDtype, type WeightChoice } from "../formats/quant.ts";
import type { BufferDtype } from "../memory/wasm-buffer.ts";
import { ARCHITECTURES, ggufPermutesQK, ggufTensorName, globalTensorName, modelTensors, qkPermutedHeads } from "./architecture.ts";
import { ModelConfigError, type ModelConfig } from "./config.ts";
import { GEMMA_GGUF, gemmaAttentionScalar, LONGROPE_TENSORS, PRE_TOKENIZERS, ROPE_FACTORS_TENSOR, SMOLLM3_NOPE_INTERVAL, unpermutedRow } from "./gguf-model.ts";
import { ropeFrequencyFactors } from "./rope.ts";

/** The GGUF type a dtype writes (Q6_K_U8, Q5_K_U8, Q5_0_U8 and Q5_1_U8, in-memory forms of Q6_K, Q5_K, Q5_0 and Q5_1, have none). */
const GGML: Record<Exclude<BufferDtype, "q6_k_u8" | "q5_k_u8" | "q5_0_u8" | "q5_1_u8">, { type: GGMLType; fileType: number }> = {
  f32: { type: "F32", fileType: 0 }, f16: { type: "F16", fileType: 1 }, bf16: { type: "BF16", fileType: 32 },
  q8_0: { type: "Q8_0", fileType: 7 }, q4_0: { type: "Q4_0", fileType: 2 }, q5_0: { type: "Q5_0", fileType: 8 }, q4_1: { type: "Q4_1", fileType: 3 }, q5_1: { type: "Q5_1", fileType: 9 }, iq4_nl: { type: "IQ4_NL", fileType: 25 }, q2_k: { type: "Q2_K", fileType: 10 }, q3_k: { type: "Q3_K", fileType: 11 }, q4_k: { type: "Q4_K", fileType: 14 }, q5_k: { type: "Q5_K", fileType: 16 }, q6_k: { type: "Q6_K", fileType: 18 },
};

export interface GGUFExportOptions {
  /** "q4_k_m" / "q5_k_m": llama.cpp's mix (kMixTensorType; Q8_0 where it falls back to Q8_0). */
  dtype: WeightChoice;
  name?: string;
  /** tokenizer.json and tokenizer_config.json, as objects. */
  tokenizer?: { json: Record<string, unknown>; config: Record<string, unknown> };
  /**
   * A type per matrix instead of `dtype` (a K-quant mix): written by quantizeGGML; undefined keeps
   * `dtype`.
   */
  tensorType?: (name: string, shape: number[]) => "Q5_0" | "Q5_1" | "Q4_K" | "Q5_K" | "Q6_K" | undefined;
  /** general.file_type, if not the dtype's. */
  fileType?: number;
}

/**
 * One tensor of a planned GGUF file: made from the Hugging Face tensor `hf` (rows of
 * `rowElements` values, encoded row by row: `rowBytes` each) or, rope factors, from the config
 * (`data`). A permuted tensor's GGUF row r holds `hf`'s row unpermutedRow(r).
 */
interface PlannedTensor {
  name: string; shape: number[]; type: GGMLType; byteLength: number;
  hf?: string; norm?: boolean; rows: number; rowElements: number; rowBytes: number; permuteHeads?: number; data?: Uint8Array;
  /** Quantized by quantizeGGML (a mix's per-tensor type), else by quantizeRows (the file's dtype). */
  mixType?: boolean;
}

/** A model's GGUF file before its weights: metadata, and every tensor's type and size, in file order (checks what cannot be written). */
function planGGUF(config: ModelConfig, options: GGUFExportOptions): { metadata: GGUFMetadataToWrite; tensors: PlannedTensor[] } {
  const fail = (why: string) => new ModelConfigError(`gguf export: ${why}`);
  const arch = ARCHITECTURES[config.modelType].ggufArchitecture;
  if (!arch) throw fail(`${config.modelType}${config.modelType === "deci" ? " (per-layer KV heads)" : ""} has no llama.cpp architecture to write`);
  if (config.nopeLayers?.some((nope, i) => nope !== ((i + 1) % SMOLLM3_NOPE_INTERVAL === 0))) {
    throw fail(`no_rope_layers other than every ${SMOLLM3_NOPE_INTERVAL}th layer are not written (llama.cpp's smollm3 fixes that pattern)`);
  }
  const scaling = config.ropeScaling;
  if (scaling?.type === "dynamic") throw fail("dynamic rope scaling is not written (llama.cpp has no form of it)");
  if ((scaling?.type === "longrope") !== (arch === "phi3") && scaling) throw fail(`${scaling.type} rope scaling is not written for ${arch}${scaling.type === "longrope" ? " (llama.cpp's phi3 has LongRoPE)" : ""}`);
  if (config.rotaryDim !== config.headDim && ggufPermutesQK(arch)) throw fail(`partial_rotary_factor (RoPE on ${config.rotaryDim} of ${config.headDim} elements) is not written for ${arch} (llama.cpp's rotates whole heads)`);
  if (arch === "phi3" && config.numHeads * config.headDim !== config.hiddenSize) throw fail(`phi3 with head_dim ${config.headDim} x ${config.numHeads} heads other than hidden_size ${config.hiddenSize} is not written (llama.cpp's phi3 takes head_dim from them)`);
  const gemma = arch === "gemma2" || arch === "gemma3";
  if (gemma) {
    // What llama.cpp takes as constants for gemma2 / gemma3 (GEMMA_GGUF) must be what the config says.
    const g = GEMMA_GGUF[arch];
    if (config.slidingLayers?.some((s, i) => s !== ((i + 1) % g.slidingPattern !== 0))) throw fail(`sliding layers other than all but every ${g.slidingPattern}th are not written (llama.cpp's ${arch} fixes that pattern)`);
    if (config.localRopeTheta !== g.localRopeTheta) throw fail(`rope_local_base_freq ${config.localRopeTheta} is not written (llama.cpp's ${arch} uses ${g.localRopeTheta})`);
    const scalar = gemmaAttentionScalar(arch, config.numLayers, config.hiddenSize, config.numHeads, config.headDim);
    if (Math.abs(config.attentionScale! * Math.sqrt(scalar) - 1) > 1e-6) throw fail(`query_pre_attn_scalar ${1 / config.attentionScale! ** 2} is not written (llama.cpp's ${arch} uses ${scalar} for this shape)`);
    if (scaling && scaling.type !== "linear") throw fail(`${scaling.type} rope scaling is not written for ${arch} (linear is)`);
    // llama.cpp's gemma2 always caps scores (50 unless a key says otherwise); its gemma3 never does.
    if ((config.attentionSoftcap === undefined) !== (g.softcaps === undefined)) throw fail(`attn_logit_softcapping ${config.attentionSoftcap ?? "null"} is not written (llama.cpp's ${arch} ${g.softcaps ? "always caps scores" : "has none"})`);
    if (g.softcaps && config.finalSoftcap === undefined) throw fail(`final_logit_softcapping null is not written (llama.cpp's ${arch} always caps logits)`);
  }
  // Q4_K_M: a type per matrix, the rest Q8_0; the file type llama.cpp names MOSTLY_Q4_K_M.
  if (options.dtype === "q4_k_m" || options.dtype === "q5_k_m") {
    const layers = config.numLayers, tied = config.tieWordEmbeddings, mix = options.dtype;
    return planGGUF(config, { ...options, dtype: "q8_0", fileType: K_MIX_FILE_TYPES[mix], tensorType: (n, shape) => kMixTensorType(mix, n, shape, layers, tied) });
  }
  if (options.dtype === "q6_k_u8") throw fail("q6_k_u8 is how Q6_K lives in memory, not a GGUF type: write q6_k");
  if (options.dtype === "q5_0_u8") throw fail("q5_0_u8 is how Q5_0 lives in memory, not a GGUF type: write q5_0");
  if (options.dtype === "q5_1_u8") throw fail("q5_1_u8 is how Q5_1 lives in memory, not a GGUF type: write q5_1");
  if (options.dtype === "q5_k_u8") throw fail("q5_k_u8 is how Q5_K lives in memory, not a GGUF type: write q5_k");
  const { type } = GGML[options.dtype], fileType = options.fileType ?? GGML[options.dtype].fileType;
  const a = (key: string) => `${arch}.${key}`;
  const metadata: GGUFMetadataToWrite = {
    "general.architecture": { type: "string", value: arch },
    "general.name": { type: "string", value: options.name ?? "gqa-wasm export" },
    "general.file_type": { type: "u32", value: fileType },
    "general.quantization_version": { type: "u32", value: 2 },
    [a("context_length")]: { type: "u32", value: scaling?.type === "longrope" ? scaling.maxPositionEmbeddings : config.maxPositionEmbeddings },
    [a("embedding_length")]: { type: "u32", value: config.hiddenSize },
    [a("block_count")]: { type: "u32", value: config.numLayers },
    [a("feed_forward_length")]: { type: "u32", value: config.intermediateSize },
    [a("attention.head_count")]: { type: "u32", value: config.numHeads },
    [a("attention.head_count_kv")]: { type: "u32", value: config.kvHeadsPerLayer[0]! },
    [a("attention.layer_norm_rms_epsilon")]: { type: "f32", value: config.rmsNormEps },
    [a("rope.freq_base")]: { type: "f32", value: config.ropeTheta },
    [a("rope.dimension_count")]: { type: "u32", value: config.rotaryDim },
    [a("vocab_size")]: { type: "u32", value: config.vocabSize },
    ...(config.headDim * config.numHeads !== config.hiddenSize ? {
      [a("attention.key_length")]: { type: "u32", value: config.headDim }, [a("attention.value_length")]: { type: "u32", value: config.headDim },
    } : {}),
    ...(config.slidingWindow !== undefined && gemma ? { [a("attention.sliding_window")]: { type: "u32", value: config.slidingWindow } } : {}),
    // phi3: the window as llama.cpp's converter writes it (0: none; its phi3 ignores it either way).
    ...(arch === "phi3" ? { [a("attention.sliding_window")]: { type: "u32", value: config.slidingWindow ?? 0 } } : {}),
    ...(scaling?.type === "longrope" ? {
      [a("rope.scaling.original_context_length")]: { type: "u32", value: scaling.originalMaxPositionEmbeddings }, [a("rope.scaling.attn_factor")]: { type: "f32", value: scaling.attentionFactor },
    } : {}),
    ...(config.attentionSoftcap !== undefined ? { [a("attn_logit_softcapping")]: { type: "f32", value: config.attentionSoftcap } } : {}),
    ...(config.finalSoftcap !== undefined ? { [a("final_logit_softcapping")]: { type: "f32", value: config.finalSoftcap } } : {}),
    ...(arch === "granite" ? {
      [a("embedding_scale")]: { type: "f32", value: config.embeddingScale! }, [a("residual_scale")]: { type: "f32", value: config.residualScale! },
      [a("attention.scale")]: { type: "f32", value: config.attentionScale! }, [a("logit_scale")]: { type: "f32", value: 1 / config.logitScale! },
    } : {}),
    ...(config.ropeScaling?.type === "linear" ? {
      [a("rope.scaling.type")]: { type: "string", value: "linear" }, [a("rope.scaling.factor")]: { type: "f32", value: config.ropeScaling.factor },
    } : {}),
    ...(options.tokenizer ? tokenizerMetadata(options.tokenizer.json, options.tokenizer.config, config.vocabSize) : {}),
  };
  const tensors: PlannedTensor[] = [];
  // llama3 scaling (or factors read from a GGUF file) as llama.cpp's converter writes it: one
  // divisor per frequency in rope_freqs.weight, ahead of the model's tensors.
  const f32Tensor = (name: string, values: ArrayLike<number>): PlannedTensor => ({ name, shape: [values.length], type: "F32", byteLength: 4 * values.length, rows: 1, rowElements: values.length, rowBytes: 4 * values.length, data: new Uint8Array(Float32Array.from(values).buffer) });
  if (scaling?.type === "llama3" || scaling?.type === "factors") {
    tensors.push(f32Tensor(ROPE_FACTORS_TENSOR, scaling.type === "factors" ? scaling.factors : ropeFrequencyFactors(config.rotaryDim, config.ropeTheta, scaling)));
  }
  // LongRoPE: both lists, as llama.cpp's converter writes them.
  if (scaling?.type === "longrope") {
    tensors.push(f32Tensor(LONGROPE_TENSORS.long, scaling.longFactors));
    tensors.push(f32Tensor(LONGROPE_TENSORS.short, scaling.shortFactors));
  }
  for (const { name: hf, shape, kind } of modelTensors(config)) {
    // Rows: a matrix's; a permuted bias's single values (q/k biases move with their rows); else the whole vector.
    const heads = ggufPermutesQK(arch) ? qkPermutedHeads(hf, config) : undefined;
    const matrix = shape.length === 2, K = shape[shape.length - 1]!, elements = shape.reduce((a, b) => a * b, 1);
    const rows = matrix ? shape[0]! : heads ? elements : 1, rowElements = elements / rows;
    const special = matrix ? options.tensorType?.(hf, shape) : undefined;
    let ggml: GGMLType, rowBytes: number;
    if (special) ggml = special, rowBytes = (K / GGML_TYPES[special].block) * GGML_TYPES[special].bytes;
    else if (!matrix || type === "F32") ggml = "F32", rowBytes = 4 * rowElements;
    else if (type === "F16" || type === "BF16") ggml = type, rowBytes = 2 * rowElements;
    else {
      const dtype = options.dtype as QuantDtype, block = QUANT_BLOCK_WEIGHTS[dtype];
      if (K % block !== 0) throw fail(`${hf}: rows of ${K} are not whole ${dtype} blocks of ${block} (GGUF needs them)`);
      ggml = type, rowBytes = quantRowBytes(dtype, K);
    }
    if (special && K % GGML_TYPES[special].block !== 0) throw fail(`${hf}: rows of ${K} are not whole ${special} blocks of ${GGML_TYPES[special].block} (GGUF needs them)`);
    tensors.push({ name: ggufTensorName(hf, config.modelType), shape, type: ggml, byteLength: rows * rowBytes, hf, mixType: special !== undefined, norm: kind === "norm" && (ARCHITECTURES[config.modelType].normWeightOffset ?? 0) !== 0, rows, rowElements, rowBytes, permuteHeads: heads });
  }
  return { metadata, tensors };
}

/**
 * Whole rows of a planned tensor's float32 values (in the GGUF file's row order) as its bytes:
 * Gemma's norms as llama.cpp's converter writes them (1 + w), then F32, F16, BF16 or blocks
 * (quantized as ggml's reference quantizers and llama.cpp's fits do; blocks never span rows).
 */
function encodeRows(t: PlannedTensor, values: Float32Array, normOffset: number): Uint8Array {
  const data = t.norm ? values.map((v) => v + normOffset) : values;
  if (t.type === "F32") return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (t.type === "F16" || t.type === "BF16") {
    const narrow = t.type === "F16" ? f32ToF16 : f32ToBf16, halves = new Uint16Array(data.length);
    for (let i = 0; i < data.length; i++) halves[i] = narrow(data[i]!);
    return new Uint8Array(halves.buffer);
  }
  if (t.mixType) return quantizeGGML(t.type as "Q4_K", data, t.rowElements);
  const out = new Uint8Array((data.length / t.rowElements) * t.rowBytes);
  quantizeRows(t.type.toLowerCase() as QuantDtype, data, t.rowElements, out);
  return out;
}

/** The GGUF bytes of a model given as float32 tensors by Hugging Face name. */
export function exportGGUF(config: ModelConfig, tensor: (name: string) => Float32Array, options: GGUFExportOptions): Uint8Array {
  const { metadata, tensors } = planGGUF(config, options), normOffset = ARCHITECTURES[config.modelType].normWeightOffset ?? 0;
  return writeGGUF(metadata, Object.fromEntries(tensors.map((t) => {
    let data = t.data;
    if (!data) {
      const values = tensor(t.hf!);
      data = encodeRows(t, t.permuteHeads ? permuteRows(values, t.permuteHeads, t.rowElements) : values, normOffset);
    }
    return [t.name, { shape: t.shape, type: t.type, data }];
  })));
}

/** llama.cpp's converter's row permutation: GGUF row r holds the Hugging Face row the loader's unpermutedRow(r) names. */
function permuteRows(data: Float32Array, heads: number, rowElements: number): Float32Array {
  const rows = data.length / rowElements, out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    const from = unpermutedRow(r, rows, heads);
    out.set(data.subarray(from * rowElements, (from + 1) * rowElements), r * rowElements);
  }
  return out;
}

/**
 * tokenizer.ggml.* from a tokenizer.json: byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM) as
 * "gpt2" with its merges and the llama.cpp pre-tokenizer name its splitting matches;
 * SentencePiece-style BPE with byte fallback as "llama", merge ranks as scores.
 */
function tokenizerMetadata(json: Record<string, unknown>, config: Record<string, unknown>, vocabSize: number): GGUFMetadataToWrite {
  const fail = (why: string) => new ModelConfigError(`gguf export: tokenizer.json: ${why}`);
  const model = json.model as { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[]; byte_fallback?: boolean } | undefined;
  if (model?.type !== "BPE" || !model.vocab || !model.merges) throw fail("only BPE tokenizers are written");
  const added = (json.added_tokens as { id: number; content: string; special: boolean }[] | undefined) ?? [];
  // One token per embedding row, as llama.cpp requires: ids the tokenizer does not use are
  // written as unused ([PADi], type 5).
  let size = vocabSize;
  for (const i of Object.values(model.vocab)) size = Math.max(size, i + 1);
  for (const t of added) size = Math.max(size, t.id + 1);
  if (size > vocabSize) throw fail(`it has ids up to ${size - 1}, past the model's ${vocabSize} embedding rows`);
  const tokens = new Array<string>(size).fill("");
  const types = new Array<number>(size).fill(1);
  for (const [t, id] of Object.entries(model.vocab)) tokens[id] = t;
  for (const t of added) { tokens[t.id] = t.content; types[t.id] = t.special ? 3 : 4; }
  tokens.forEach((t, i) => { if (t === "") { tokens[i] = `[PAD${i}]`; types[i] = 5; } });
  const merges = model.merges.map((m) => (Array.isArray(m) ? m.join(" ") : m));
  const idOf = (v: unknown) => { const s = typeof v === "string" ? v : (v as { content?: string } | null)?.content; return s === undefined ? undefined : tokens.indexOf(s); };
  const bos = idOf(config.bos_token), eos = idOf(config.eos_token);
  const common: GGUFMetadataToWrite = {
    "tokenizer.ggml.tokens": { type: "array", itemType: "string", value: tokens },
    "tokenizer.ggml.token_type": { type: "array", itemType: "i32", value: types },
    ...(bos !== undefined && bos >= 0 ? { "tokenizer.ggml.bos_token_id": { type: "u32", value: bos } } : {}),
    ...(eos !== undefined && eos >= 0 ? { "tokenizer.ggml.eos_token_id": { type: "u32", value: eos } } : {}),
    ...(typeof config.chat_template === "string" ? { "tokenizer.chat_template": { type: "string", value: config.chat_template } } : {}),
  };
  if (model.byte_fallback) {
    tokens.forEach((t, i) => { if (/^<0x[0-9A-F]{2}>$/.test(t)) types[i] = 6; });
    const scores = new Array<number>(size).fill(0);
    merges.forEach((m, rank) => { const merged = m.replace(" ", ""); if (Object.hasOwn(model.vocab!, merged)) scores[model.vocab![merged]!] = -rank; });
    // Llama 2's tokenizers prepend "▁" to the text (a normalizer, or a Metaspace pre-tokenizer); Gemma's do not.
    const prepends = /"Prepend"|"Metaspace"/.test(JSON.stringify(json.normalizer ?? null) + JSON.stringify(json.pre_tokenizer ?? null)) && !/"prepend_scheme":"never"|"add_prefix_space":false/.test(JSON.stringify(json.pre_tokenizer ?? null));
    return { ...common, "tokenizer.ggml.model": { type: "string", value: "llama" }, "tokenizer.ggml.scores": { type: "array", itemType: "f32", value: scores },
      "tokenizer.ggml.add_space_prefix": { type: "bool", value: prepends },
      "tokenizer.ggml.add_bos_token": { type: "bool", value: json.post_processor !== null && json.post_processor !== undefined } };
  }
  const pre = Object.entries(PRE_TOKENIZERS).find(([name, p]) => name !== "default" && JSON.stringify(preTokenizerList(json.pre_tokenizer)) === JSON.stringify(p))?.[0];
  if (!pre) throw fail(`its pre-tokenizer matches none that llama.cpp names (${Object.keys(PRE_TOKENIZERS).filter((n) => n !== "default").join(", ")})`);
  return { ...common, "tokenizer.ggml.model": { type: "string", value: "gpt2" }, "tokenizer.ggml.pre": { type: "string", value: pre },
    "tokenizer.ggml.merges": { type: "array", itemType: "string", value: merges } };
}

function preTokenizerList(pre: unknown): unknown[] {
  if (pre && typeof pre === "object" && (pre as { type?: string }).type === "Sequence") return (pre as { pretokenizers: unknown[] }).pretokenizers;
  return pre ? [pre] : [];
}

/**
 * A Hugging Face folder (any ModelSource) written as a GGUF file through `write(bytes, position)`:
 * the header first, then each tensor's rows as they arrive, in loading's row groups (a few MiB of
 * the folder's bytes), converted and encoded (q/k rows to their permuted places); every file read
 * once, so memory stays a few groups whatever the model's size. Returns the file's size.
 */
export async function writeFolderGGUF(source: import("./files.ts").ModelSource, options: Omit<GGUFExportOptions, "tokenizer">, write: (bytes: Uint8Array, position: number) => Promise<void>): Promise<number> {
  const { openModelFiles } = await import("./files.ts");
  const { inspectModel, readJsonFile } = await import("./folder.ts");
  const { decodeFloat32 } = await import("../formats/safetensors.ts");
  const { firstNonFinite, nonFiniteError, rowGroups, spanFeeder, stageRows } = await import("./load.ts");
  const files = openModelFiles(source);
  const folder = await inspectModel(files);
  const json = await readJsonFile(files, "tokenizer.json", "tokenizer.json") as Record<string, unknown> | undefined;
  const tokConfig = (await readJsonFile(files, "tokenizer_config.json", "tokenizer_config.json") ?? {}) as Record<string, unknown>;
  const template = await files.text("chat_template.jinja");
  if (template !== undefined) tokConfig.chat_template = template;
  const config = folder.config, normOffset = ARCHITECTURES[config.modelType].normWeightOffset ?? 0;
  const { metadata, tensors } = planGGUF(config, { ...options, tokenizer: json ? { json, config: tokConfig } : undefined });
  const header = ggufHeader(metadata, tensors);
  await write(header.bytes, 0);
  // Each folder tensor feeds the planned tensors made from it (a tied LM head: the embedding).
  const uses = new Map<import("./folder.ts").FolderTensor, { t: PlannedTensor; at: number; destination: Int32Array | undefined }[]>();
  for (const [i, t] of tensors.entries()) {
    if (t.data) { await write(t.data, header.offsets[i]!); continue; }
    const info = folder.tensors.get(t.hf!) ?? (t.hf === globalTensorName("lmHead") ? folder.tensors.get(globalTensorName("embedding")) : undefined);
    if (!info) throw new ModelConfigError(`${files.location}: tensor '${t.hf}' is missing`);
    // A permuted tensor's folder row j goes to GGUF row r with unpermutedRow(r) = j.
    let destination: Int32Array | undefined;
    if (t.permuteHeads) { destination = new Int32Array(t.rows); for (let r = 0; r < t.rows; r++) destination[unpermutedRow(r, t.rows, t.permuteHeads)] = r; }
    uses.set(info, [...(uses.get(info) ?? []), { t, at: header.offsets[i]!, destination }]);
  }
  const plans = [...uses].map(([info, users]) => ({ info, users, groups: rowGroups(users[0]!.t.rows, info.byteLength) }));
  for (const file of folder.fileBytes.keys()) {
    const pending: Promise<void>[] = [];
    const where = files.describe(file);
    const dispatch = spanFeeder(plans.filter((p) => p.info.file === file), (p) => p.info.byteOffset, (p) => p.info.byteLength, (p, bytes) => stageRows(p.groups, bytes, (row0, rows, staged) => {
      const values = decodeFloat32(p.info.dtype, staged), bad = firstNonFinite(values, "f32");
      if (bad >= 0) throw nonFiniteError(where, p.info.name, row0 * p.users[0]!.t.rowElements + bad);
      for (const { t, at, destination } of p.users) {
        if (!destination) { pending.push(write(encodeRows(t, values, normOffset), at + row0 * t.rowBytes)); continue; }
        for (let r = 0; r < rows; r++) pending.push(write(encodeRows(t, values.subarray(r * t.rowElements, (r + 1) * t.rowElements), normOffset), at + destination[row0 + r]! * t.rowBytes));
      }
    }));
    const { chunks } = await files.open(file);
    try {
      for (let r = await chunks.next(); !r.done; r = await chunks.next()) {
        try { dispatch(r.value); } finally { await Promise.all(pending.splice(0)); }
      }
    } finally {
      await chunks.return?.();
    }
  }
  for (const p of plans) if (p.groups.filled !== p.info.byteLength) throw new ModelConfigError(`${files.describe(p.info.file)}: tensor '${p.info.name}' got ${p.groups.filled} of its ${p.info.byteLength} bytes`);
  // The last tensor's padding, so that the file is whole.
  const last = tensors.length - 1, end = last >= 0 ? header.offsets[last]! + tensors[last]!.byteLength : header.bytes.length;
  if (end < header.size) await write(new Uint8Array(header.size - end), end);
  return header.size;
}

/** A Hugging Face folder (any ModelSource) as GGUF bytes in memory (writeFolderGGUF). */
export async function folderToGGUF(source: import("./files.ts").ModelSource, options: Omit<GGUFExportOptions, "tokenizer">): Promise<Uint8Array> {
  let out = new Uint8Array(0);
  const size = await writeFolderGGUF(source, options, async (bytes, position) => {
    if (position + bytes.length > out.length) { const grown = new Uint8Array(Math.max(position + bytes.length, 2 * out.length)); grown.set(out); out = grown; }
    out.set(bytes, position);
  });
  return out.length === size ? out : out.slice(0, size);
}
