// A model as a GGUF file llama.cpp reads (`gqa-wasm quantize`): the metadata its loader expects
// for the llama / qwen2 / qwen3 / smollm3 / gemma2 / gemma3 / granite / phi3 architectures, norms in F32 (Gemma's as 1 + w), linear weights and embeddings in F32, F16,
// BF16, Q8_0, Q4_0, Q5_0, IQ4_NL (quantized as ggml's reference quantizers do), Q4_K or Q6_K
// (scales fitted as llama.cpp fits them), or llama.cpp's Q4_K_M mix of them, q/k rows permuted the way
// llama.cpp's converter does for llama-style RoPE, llama3 rope scaling as rope_freqs.weight,
// LongRoPE as rope_factors_long / _short, and the tokenizer as tokenizer.ggml.* metadata.
import { f32ToBf16, f32ToF16 } from "../formats/half.ts";
import { writeGGUF, type GGMLType, type GGUFMetadataToWrite, type GGUFTensorToWrite } from "../formats/gguf.ts";
import { K_MIX_FILE_TYPES, kMixTensorType, quantizeGGML, quantizeRows, quantRowBytes, QUANT_BLOCK_WEIGHTS, type QuantDtype, type WeightChoice } from "../formats/quant.ts";
import type { BufferDtype } from "../memory/wasm-buffer.ts";
import { ARCHITECTURES, ggufPermutesQK, ggufTensorName, globalTensorName, modelTensors, qkPermutedHeads } from "./architecture.ts";
import { ModelConfigError, type ModelConfig } from "./config.ts";
import { GEMMA_GGUF, gemmaAttentionScalar, LONGROPE_TENSORS, PRE_TOKENIZERS, ROPE_FACTORS_TENSOR, SMOLLM3_NOPE_INTERVAL, unpermutedRow } from "./gguf-model.ts";
import { ropeFrequencyFactors } from "./rope.ts";

const GGML: Record<BufferDtype, { type: GGMLType; fileType: number }> = {
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

/** The GGUF bytes of a model given as float32 tensors by Hugging Face name. */
export function exportGGUF(config: ModelConfig, tensor: (name: string) => Float32Array, options: GGUFExportOptions): Uint8Array {
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
    return exportGGUF(config, tensor, { ...options, dtype: "q8_0", fileType: K_MIX_FILE_TYPES[mix], tensorType: (n, shape) => kMixTensorType(mix, n, shape, layers, tied) });
  }
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
  const tensors: Record<string, GGUFTensorToWrite> = {};
  // llama3 scaling (or factors read from a GGUF file) as llama.cpp's converter writes it: one
  // divisor per frequency in rope_freqs.weight, ahead of the model's tensors.
  const f32Tensor = (values: ArrayLike<number>): GGUFTensorToWrite => ({ shape: [values.length], type: "F32", data: new Uint8Array(Float32Array.from(values).buffer) });
  if (scaling?.type === "llama3" || scaling?.type === "factors") {
    tensors[ROPE_FACTORS_TENSOR] = f32Tensor(scaling.type === "factors" ? scaling.factors : ropeFrequencyFactors(config.rotaryDim, config.ropeTheta, scaling));
  }
  // LongRoPE: both lists, as llama.cpp's converter writes them.
  if (scaling?.type === "longrope") {
    tensors[LONGROPE_TENSORS.long] = f32Tensor(scaling.longFactors);
    tensors[LONGROPE_TENSORS.short] = f32Tensor(scaling.shortFactors);
  }
  const normOffset = ARCHITECTURES[config.modelType].normWeightOffset ?? 0;
  for (const { name: hf, shape, kind } of modelTensors(config)) {
    let data = tensor(hf);
    // Gemma's norms as llama.cpp's converter writes them: 1 + w.
    if (kind === "norm" && normOffset !== 0) data = data.map((v) => v + normOffset);
    const heads = ggufPermutesQK(arch) ? qkPermutedHeads(hf, config) : undefined;
    if (heads) data = permuteRows(data, heads, shape.length === 2 ? shape[1]! : 1);
    const matrix = shape.length === 2;
    const K = shape[shape.length - 1]!;
    const special = matrix ? options.tensorType?.(hf, shape) : undefined;
    if (special) { tensors[ggufTensorName(hf, config.modelType)] = { shape, type: special, data: quantizeGGML(special, data, K) }; continue; }
    if (!matrix || type === "F32") { tensors[ggufTensorName(hf, config.modelType)] = { shape, type: "F32", data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }; continue; }
    if (type === "F16" || type === "BF16") {
      const narrow = type === "F16" ? f32ToF16 : f32ToBf16;
      const halves = new Uint16Array(data.length);
      for (let i = 0; i < data.length; i++) halves[i] = narrow(data[i]!);
      tensors[ggufTensorName(hf, config.modelType)] = { shape, type, data: new Uint8Array(halves.buffer) };
      continue;
    }
    const dtype = options.dtype as QuantDtype, block = QUANT_BLOCK_WEIGHTS[dtype];
    if (K % block !== 0) throw fail(`${hf}: rows of ${K} are not whole ${dtype} blocks of ${block} (GGUF needs them)`);
    const blocks = new Uint8Array((data.length / K) * quantRowBytes(dtype, K));
    quantizeRows(dtype, data, K, blocks);
    tensors[ggufTensorName(hf, config.modelType)] = { shape, type, data: blocks };
  }
  return writeGGUF(metadata, tensors);
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

/** A Hugging Face folder (any ModelSource) as GGUF bytes: its weights read as float32, its tokenizer when present. */
export async function folderToGGUF(source: import("./files.ts").ModelSource, options: Omit<GGUFExportOptions, "tokenizer">): Promise<Uint8Array> {
  const { openModelFiles } = await import("./files.ts");
  const { inspectModel, readJsonFile } = await import("./folder.ts");
  const { parseSafetensors, readFloat32 } = await import("../formats/safetensors.ts");
  const files = openModelFiles(source);
  const folder = await inspectModel(files);
  const parsed = new Map<string, import("../formats/safetensors.ts").Safetensors>();
  for (const file of folder.fileBytes.keys()) parsed.set(file, parseSafetensors(await files.bytes(file), files.describe(file)));
  const json = await readJsonFile(files, "tokenizer.json", "tokenizer.json") as Record<string, unknown> | undefined;
  const config = (await readJsonFile(files, "tokenizer_config.json", "tokenizer_config.json") ?? {}) as Record<string, unknown>;
  const template = await files.text("chat_template.jinja");
  if (template !== undefined) config.chat_template = template;
  return exportGGUF(folder.config, (name) => {
    const t = folder.tensors.get(name) ?? (name === globalTensorName("lmHead") ? folder.tensors.get(globalTensorName("embedding")) : undefined);
    if (!t) throw new ModelConfigError(`${files.location}: tensor '${name}' is missing`);
    return readFloat32(parsed.get(t.file)!, t.name);
  }, { ...options, tokenizer: json ? { json, config } : undefined });
}
