// Loads a Hugging Face model (a folder, a URL or files in memory) into a LanguageModel: checks
// config.json and every safetensors header first (inspectModel), then reads each weight file
// once and uploads its tensors, reporting progress; reads the tokenizer and generation defaults.
import { parseSafetensors, readBits16, readFloat32, type Safetensors } from "../formats/safetensors.ts";
import type { KVCacheOptions } from "../kv/kv-cache.ts";
import type { BufferDtype } from "../memory/wasm-buffer.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { ModelConfigError } from "./config.ts";
import { openModelFiles, type ModelFiles, type ModelSource } from "./files.ts";
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
