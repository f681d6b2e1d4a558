// Loads a Hugging Face model (a folder, a URL or files in memory) into a LanguageModel: checks
// config.json and every safetensors header first (inspectModel), then reads each weight file
// once and uploads its tensors, reporting progress; reads the tokenizer and generation defaults.
import { parseSafetensors, readBits16, readFloat32, type Safetensors } from "../formats/safetensors.ts";
import type { KVCacheOptions } from "../kv/kv-cache.ts";
import type { BufferDtype } from "../memory/wasm-buffer.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { ModelConfigError } from "./config.ts";
import { ggufTarget, openModelFiles, type ModelFiles, type ModelSource } from "./files.ts";
import { dequantizeGGML, isQuantDtype, quantizeRows, quantRowBytes, type QuantDtype } from "../formats/quant.ts";
import type { GGMLType } from "../formats/gguf.ts";
import { inspectGGUF, unpermuteRows } from "./gguf-model.ts";
import type { QuantizedTensor } from "./transformer.ts";
import { inspectModel, readJsonFile } from "./folder.ts";
import { LanguageModel, type GenerationDefaults } from "./language-model.ts";
import { TextTokenizer } from "./tokenizer.ts";
import { TransformerModel } from "./transformer.ts";

export interface LoadProgress {
  /** "read": weight files coming in; "upload": tensors going into wasm memory. */
  phase: "read" | "upload";
  doneBytes: number;
  totalBytes: number;
}

export interface LoadOptions {
  /**
   * How linear-layer weights and embeddings live in wasm memory: as stored (the default: 16-bit
   * files stay 16-bit), widened to f32, or quantized at load to q8_0 / q4_0 (GGUF's blocks).
   */
  dtype?: BufferDtype;
  onProgress?: (p: LoadProgress) => void;
  /** Options of the KV cache the model's generations share (pageSize, dtype, maxTokens, maxBytes). */
  cache?: Omit<KVCacheOptions, "layers">;
}

export async function loadModel(rt: Runtime, source: ModelSource, options: LoadOptions = {}): Promise<LanguageModel> {
  const gguf = ggufTarget(source);
  if (gguf) return loadGGUF(rt, gguf.files, gguf.name, options);
  const files = openModelFiles(source);
  const folder = await inspectModel(files);
  // The small files first: a bad tokenizer or generation config fails before any weight is read.
  const tokenizer = await readTokenizer(files);
  const defaults = await readGenerationDefaults(files, folder.configJson, tokenizer);
  const totalBytes = [...folder.fileBytes.values()].reduce((a, b) => a + b, 0);
  const progress = options.onProgress;
  let done = 0;
  const parsed = new Map<string, Safetensors>();
  for (const file of folder.fileBytes.keys()) {
    const before = done;
    const bytes = await files.bytes(file, (n) => progress?.({ phase: "read", doneBytes: before + n, totalBytes }));
    parsed.set(file, parseSafetensors(bytes, files.describe(file)));
    done = before + bytes.length;
    progress?.({ phase: "read", doneBytes: done, totalBytes });
  }
  const dtype = options.dtype ?? storedDtype(folder.tensors);
  const tensorBytes = [...folder.tensors.values()].reduce((s, t) => s + t.byteLength, 0);
  let uploaded = 0;
  const transformer = new TransformerModel(rt, folder.config, (name, want) => {
    const t = folder.tensors.get(name);
    if (!t) throw new ModelConfigError(`${files.location}: tensor '${name}' is missing`);
    // Stored as wanted (bf16 -> bf16, f16 -> f16): the bits as they are; otherwise via float32.
    const bits16 = t.dtype.toLowerCase() === want && want !== "f32";
    const data = bits16 ? readBits16(parsed.get(t.file)!, name) : readFloat32(parsed.get(t.file)!, name);
    const bad = firstNonFinite(data, bits16 ? (want as "bf16" | "f16") : "f32");
    if (bad >= 0) throw new ModelConfigError(`${files.describe(t.file)}: tensor '${name}' holds a non-finite value (NaN or infinity) at element ${bad}; the checkpoint is corrupt`);
    uploaded += t.byteLength;
    progress?.({ phase: "upload", doneBytes: uploaded, totalBytes: tensorBytes });
    return data;
  }, dtype);
  parsed.clear();
  return new LanguageModel(transformer, tokenizer, defaults, options.cache);
}

/**
 * The index of the first NaN or infinity, or -1: one pass while uploading, so that a corrupt
 * checkpoint fails at load instead of generating garbage. 16-bit data is checked on its bits
 * (exponent all ones).
 */
export function firstNonFinite(data: Float32Array | Uint16Array, dtype: "f32" | "bf16" | "f16"): number {
  if (data instanceof Float32Array) {
    for (let i = 0; i < data.length; i++) if (data[i]! - data[i]! !== 0) return i;
    return -1;
  }
  const mask = dtype === "bf16" ? 0x7f80 : 0x7c00;
  for (let i = 0; i < data.length; i++) if ((data[i]! & mask) === mask) return i;
  return -1;
}

/** 16-bit checkpoints stay 16-bit (decode reads every weight once per token); f32 stays f32. */
function storedDtype(tensors: Map<string, { dtype: string; name: string }>): BufferDtype {
  const t = tensors.get("model.layers.0.self_attn.q_proj.weight");
  return t?.dtype === "BF16" ? "bf16" : t?.dtype === "F16" ? "f16" : "f32";
}

async function readTokenizer(files: ModelFiles): Promise<TextTokenizer | undefined> {
  const json = await readJsonFile(files, "tokenizer.json", "tokenizer.json");
  if (json === undefined) return undefined;
  const config = await readJsonFile(files, "tokenizer_config.json", "tokenizer_config.json") ?? {};
  if (typeof config !== "object" || config === null) throw new ModelConfigError(`${files.describe("tokenizer_config.json")}: not a JSON object`);
  const template = await files.text("chat_template.jinja");
  return new TextTokenizer(json, config as Record<string, unknown>, files.describe("tokenizer.json"),
    template === undefined ? undefined : { text: template, source: files.describe("chat_template.jinja") }, files.describe("tokenizer_config.json"));
}

/** EOS/BOS ids and sampling defaults from generation_config.json, else config.json, else the tokenizer's EOS token. */
async function readGenerationDefaults(files: ModelFiles, cfg: Record<string, unknown>, tokenizer: TextTokenizer | undefined): Promise<GenerationDefaults> {
  const gen = (await readJsonFile(files, "generation_config.json", "generation_config.json") ?? {}) as Record<string, unknown>;
  const ids = (v: unknown): number[] => (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]).filter((x): x is number => Number.isInteger(x));
  let eosTokenIds = ids(gen.eos_token_id ?? cfg.eos_token_id);
  if (eosTokenIds.length === 0 && tokenizer?.eosToken !== undefined) {
    const id = tokenizer.tokenId(tokenizer.eosToken);
    if (id !== undefined) eosTokenIds = [id];
  }
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
  const sampling = gen.do_sample === true
    // Hugging Face's defaults when sampling: temperature 1, top-k 50, top-p 1.
    ? { temperature: num(gen.temperature) ?? 1, topK: num(gen.top_k) ?? 50, topP: num(gen.top_p) ?? 1 }
    : { temperature: 0 };
  const repetitionPenalty = num(gen.repetition_penalty);
  return {
    eosTokenIds, bosTokenId: ids(gen.bos_token_id ?? cfg.bos_token_id)[0],
    sampling: repetitionPenalty === undefined ? sampling : { ...sampling, repetitionPenalty },
    maxNewTokens: num(gen.max_new_tokens),
  };
}

/**
 * Loads a GGUF model (one file, or its -0000i-of-0000N splits). Q8_0 and Q4_0 tensors are kept
 * as their blocks (the kernels compute on them); F32, F16 and BF16 as they are; every other type
 * (Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) is dequantized and requantized at load to `options.dtype`
 * (default q8_0), whose error is far below the source type's own.
 */
async function loadGGUF(rt: Runtime, files: ModelFiles, name: string, options: LoadOptions): Promise<LanguageModel> {
  const info = await inspectGGUF(files, name);
  const where = files.describe(name);
  const tokenizer = info.tokenizer
    ? new TextTokenizer(info.tokenizer.json, info.tokenizer.config, `${where} (tokenizer metadata)`, undefined, `${where} (tokenizer.chat_template)`)
    : undefined;
  const id = (key: string) => { const v = info.metadata.get(key); return typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : undefined; };
  const eos = [id("tokenizer.ggml.eos_token_id"), id("tokenizer.ggml.eot_token_id")].filter((x): x is number => x !== undefined);
  const defaults: GenerationDefaults = { eosTokenIds: [...new Set(eos)], bosTokenId: id("tokenizer.ggml.bos_token_id"), sampling: { temperature: 0 } };
  const totalBytes = [...info.fileBytes.values()].reduce((a, b) => a + b, 0);
  const progress = options.onProgress;
  const data = new Map<string, Uint8Array>();
  let done = 0;
  for (const file of info.fileBytes.keys()) {
    const before = done;
    const bytes = await files.bytes(file, (n) => progress?.({ phase: "read", doneBytes: before + n, totalBytes }));
    if (bytes.length !== info.fileBytes.get(file)) throw new ModelConfigError(`${files.describe(file)}: the file changed while it was read`);
    data.set(file, bytes);
    done = before + bytes.length;
  }
  // Float files stay as they are; in a quantized file, tensors of types the kernels do not
  // compute on become Q8_0 (or options.dtype). The model's dtype names the most bytes' type.
  const matrices = [...info.tensors.values()].filter((t) => t.tensor.shape.length === 2).map((t) => t.tensor);
  const floatFile = matrices.every((t) => t.type === matrices[0]!.type && (t.type === "F32" || t.type === "F16" || t.type === "BF16"));
  const target: BufferDtype = options.dtype ?? (floatFile ? (matrices[0]!.type.toLowerCase() as BufferDtype) : "q8_0");
  const bytesByType = new Map<string, number>();
  for (const t of matrices) bytesByType.set(t.type, (bytesByType.get(t.type) ?? 0) + t.byteLength);
  const dominant = [...bytesByType.entries()].sort((a, b) => b[1] - a[1])[0]![0].toLowerCase();
  const dtype: BufferDtype = options.dtype ?? ((["f32", "f16", "bf16", "q8_0", "q4_0"] as string[]).includes(dominant) ? (dominant as BufferDtype) : "q8_0");
  const tensorBytes = [...info.tensors.values()].reduce((s, t) => s + t.tensor.byteLength, 0);
  let uploaded = 0;
  const transformer = new TransformerModel(rt, info.config, (hf, want): Float32Array | Uint16Array | QuantizedTensor => {
    const { file, tensor, permutedHeads } = info.tensors.get(hf)!;
    const bytes = data.get(file)!.subarray(tensor.offset, tensor.offset + tensor.byteLength);
    const K = tensor.shape[tensor.shape.length - 1]!, elements = tensor.shape.reduce((a, b) => a * b, 1);
    const fix = <T extends Uint8Array | Uint16Array | Float32Array>(x: T, rowElements: number): T => (permutedHeads ? unpermuteRows(x, permutedHeads, rowElements) : x);
    uploaded += tensor.byteLength;
    progress?.({ phase: "upload", doneBytes: uploaded, totalBytes: tensorBytes });
    const native = tensor.type === "Q8_0" || tensor.type === "Q4_0" ? (tensor.type.toLowerCase() as QuantDtype) : undefined;
    if (native && tensor.shape.length === 2 && (options.dtype === undefined || options.dtype === native)) {
      const bad = firstNonFiniteScale(bytes, native);
      if (bad >= 0) throw new ModelConfigError(`${where}: tensor '${tensor.name}' has a non-finite scale in block ${bad}; the file is corrupt`);
      return { dtype: native, blocks: fix(bytes.slice(), quantRowBytes(native, K)) };
    }
    if ((want === "bf16" || want === "f16") && tensor.type === want.toUpperCase()) {
      const bits = new Uint16Array(elements);
      new Uint8Array(bits.buffer).set(bytes);
      const bad = firstNonFinite(bits, want);
      if (bad >= 0) throw new ModelConfigError(`${where}: tensor '${tensor.name}' holds a non-finite value at element ${bad}`);
      return fix(bits, K);
    }
    const floats = dequantizeGGML(tensor.type as Exclude<GGMLType, never>, bytes, elements);
    const bad = firstNonFinite(floats, "f32");
    if (bad >= 0) throw new ModelConfigError(`${where}: tensor '${tensor.name}' holds a non-finite value (NaN or infinity) at element ${bad}; the file is corrupt`);
    if (tensor.shape.length === 2 && isQuantDtype(target)) {
      const blocks = new Uint8Array((elements / K) * quantRowBytes(target, K));
      quantizeRows(target, floats, K, blocks);
      return { dtype: target, blocks: fix(blocks, quantRowBytes(target, K)) };
    }
    return fix(floats, tensor.shape.length === 2 ? K : 1);
  }, dtype);
  data.clear();
  return new LanguageModel(transformer, tokenizer, defaults, options.cache);
}

/** The first block of Q8_0 / Q4_0 data whose f16 scale is infinite or NaN, or -1. */
function firstNonFiniteScale(bytes: Uint8Array, dtype: QuantDtype): number {
  const bb = quantRowBytes(dtype, 32);
  for (let b = 0, at = 0; at < bytes.length; b++, at += bb) if ((bytes[at + 1]! & 0x7c) === 0x7c) return b;
  return -1;
}
