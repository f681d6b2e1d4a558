// Loads a model into a LanguageModel. A Hugging Face folder (a path, a URL or files in memory):
// config.json and every safetensors header first (inspectModel), then each weight file once,
// its tensors uploaded, with progress; the tokenizer and generation defaults. A GGUF file (or
// its splits): streamed, each tensor straight into wasm memory (loadGGUF).
import { GGUFError, readGGUFHeaderFromStream, type GGUFHeader, type GGUFTensor } from "../formats/gguf.ts";
import { dequantizeGGML, iq4xsToIq4nl, isQuantDtype, QUANT_BLOCK_BYTES, UNPACKED_FORMS, unfitRows, weightDtypeOf, type QuantDtype, type WeightChoice } from "../formats/quant.ts";
import { decodeFloat32 } from "../formats/safetensors.ts";
import type { KVCacheOptions } from "../kv/kv-cache.ts";
import { BUFFER_DTYPES, bufferBytes, WasmBuffer, type BufferDtype } from "../memory/wasm-buffer.ts";
import { WasmOutOfMemoryError } from "../errors.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { modelTensors } from "./architecture.ts";
import { ModelConfigError, withContextLength, type ModelConfig } from "./config.ts";
import { ggufTarget, openModelFiles, type ModelFiles, type ModelSource } from "./files.ts";
import { describeGGUF, ggufSplitNames, ggufStopTokenIds, unpermutedRow, withRopeFactors } from "./gguf-model.ts";
import { inspectModel, readJsonFile, type FolderTensor, type ModelFolder } from "./folder.ts";
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
   * files stay 16-bit; a GGUF file's block types the kernels compute on about as fast as Q8_0,
   * or at 2-3 bits, stay, Q6_K, Q5_K, Q5_0 and Q5_1 unpack to a byte a weight, the others become Q8_0:
   * KEPT_TYPES, conversionTarget), widened to f32, quantized at load
   * to one of the block dtypes (GGUF's blocks), "q4_k_m" / "q5_k_m": llama.cpp's mix, a type per
   * tensor (weightDtypeOf), or "stored": every GGUF block type the kernels compute on stays as
   * the file stores it (Q5_0, Q5_1, Q5_K and Q6_K too: the least memory, slower at one thread).
   */
  dtype?: WeightChoice | "stored";
  onProgress?: (p: LoadProgress) => void;
  /** Options of the KV cache the model's generations share (pageSize, dtype, maxTokens, maxBytes). */
  cache?: Omit<KVCacheOptions, "layers">;
  /**
   * The longest sequence the model runs, in tokens: by default max_position_embeddings, or for a
   * LongRoPE model (Phi-3.5, Phi-4-mini) its original_max_position_embeddings (4096), where its
   * short factors hold; longer, up to max_position_embeddings, it rotates by its long factors
   * (as llama.cpp picks them by its context size).
   */
  contextLength?: number;
}

export async function loadModel(rt: Runtime, source: ModelSource, options: LoadOptions = {}): Promise<LanguageModel> {
  const gguf = ggufTarget(source);
  if (gguf) return loadGGUF(rt, gguf.files, gguf.name, options);
  const files = openModelFiles(source);
  const folder = await inspectModel(files);
  // The small files first: a bad tokenizer or generation config fails before any weight is read.
  const tokenizer = await readTokenizer(files);
  const defaults = await readGenerationDefaults(files, folder.configJson, tokenizer);
  const config = withContextLength(folder.config, options.contextLength);
  const dtype = options.dtype === undefined || options.dtype === "stored" ? storedDtype(folder) : options.dtype;
  const owned: WasmBuffer[] = [];
  try {
    const tensors = await streamFolder(rt, folder, config, dtype, owned, options.onProgress);
    const transformer = new TransformerModel(rt, config, (name) => tensors.get(name)!, dtype);
    return new LanguageModel(transformer, tokenizer, defaults, options.cache);
  } catch (e) {
    for (const b of owned) if (!b.isFreed) b.free();
    throw e;
  }
}

/**
 * A model's weight buffers, allocated before any byte is read (a model that does not fit fails
 * at once). Out of memory, the one line says what they take, and what 4-bit blocks (18 bytes per
 * 32 weights) would: whether a smaller dtype could load it.
 */
function allocWeights(rt: Runtime, specs: readonly { elements: number; dtype: BufferDtype; rowLength?: number; matrix: boolean }[], owned: WasmBuffer[], where: string): WasmBuffer[] {
  try {
    return specs.map((x) => { const b = rt.alloc(x.elements, x.dtype, x.rowLength); owned.push(b); return b; });
  } catch (e) {
    if (!(e instanceof WasmOutOfMemoryError)) throw e;
    const need = specs.reduce((n, x) => n + bufferBytes(x.dtype, x.elements, x.rowLength), 0);
    const fourBit = specs.reduce((n, x) => n + (x.matrix ? Math.ceil(x.elements / 32) * 18 : bufferBytes(x.dtype, x.elements, x.rowLength)), 0);
    const hint = need <= fourBit * 1.05 ? "" : fourBit < e.limitBytes
      ? `; as 4-bit blocks (dtype q4_0 or q4_k_m) they would take about ${gib(fourBit)}`
      : `; even as 4-bit blocks they would take about ${gib(fourBit)}, past the limit`;
    throw new WasmOutOfMemoryError(`${where}: the weights take ${gib(need)} of wasm memory as loaded: ${e.message}${hint}`, e.requestedBytes, e.memoryBytes, e.limitBytes);
  }
}

const gib = (bytes: number) => (bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`);

/** How one safetensors tensor of a folder reaches the model: converted a group of rows at a time into its buffer (or, norms and biases, an f32 array). */
interface FolderPlan {
  info: FolderTensor; target: WasmBuffer | Float32Array;
  /** Elements per row. */
  K: number;
  groups: RowGroups;
}

/** Source bytes staged per tensor before they are converted (whole rows; at least one). */
const FOLDER_GROUP_BYTES = 4 << 20;

/** A tensor's bytes arriving in order, staged into groups of whole rows (FOLDER_GROUP_BYTES at most, a row at least). */
export interface RowGroups {
  rows: number; rowBytes: number; groupRows: number;
  /** The bytes of the group being filled, and how many of the tensor's bytes have come. */
  staged: Uint8Array; filled: number;
}

export function rowGroups(rows: number, byteLength: number): RowGroups {
  const rowBytes = byteLength / rows;
  return { rows, rowBytes, groupRows: Math.max(1, Math.floor(FOLDER_GROUP_BYTES / rowBytes)), staged: new Uint8Array(0), filled: 0 };
}

/** The next bytes of a tensor (in order) into its row groups: `complete(row0, rows, staged)` for each group filled. */
export function stageRows(g: RowGroups, bytes: Uint8Array, complete: (row0: number, rows: number, staged: Uint8Array) => void): void {
  for (let k = 0; k < bytes.length;) {
    const row0 = Math.floor(g.filled / g.rowBytes) - Math.floor(g.filled / g.rowBytes) % g.groupRows; // the group's first row
    const rowsHere = Math.min(g.groupRows, g.rows - row0), groupBytes = rowsHere * g.rowBytes;
    if (g.staged.length !== groupBytes) g.staged = new Uint8Array(groupBytes);
    const at = g.filled - row0 * g.rowBytes, n = Math.min(bytes.length - k, groupBytes - at);
    g.staged.set(bytes.subarray(k, k + n), at);
    k += n;
    g.filled += n;
    if (at + n === groupBytes) complete(row0, rowsHere, g.staged);
  }
}

/** A checkpoint tensor's NaN or infinity, in one line. */
export function nonFiniteError(where: string, tensor: string, element: number): ModelConfigError {
  return new ModelConfigError(`${where}: tensor '${tensor}' holds a non-finite value (NaN or infinity) at element ${element}; the checkpoint is corrupt`);
}

/**
 * Reads each safetensors file of a folder once, as a stream, into the model's tensors: every
 * buffer allocated before any byte is read (a model that does not fit fails at once), then each
 * tensor's rows converted a group at a time as they arrive (to the weight dtype, quantized as
 * ggml does, or as stored: the bits copied) and checked for NaN and infinity. No file, and no
 * tensor, is ever whole in JavaScript: shards of more than 4 GB (Phi-4-mini's, Llama 3.2 3B's)
 * load, in bounded memory. Norms and biases come back as f32 arrays (the model adds Gemma's 1 to its norms).
 */
async function streamFolder(rt: Runtime, folder: ModelFolder, config: ModelConfig, dtype: WeightChoice, owned: WasmBuffer[], onProgress?: (p: LoadProgress) => void): Promise<Map<string, WasmBuffer | Float32Array>> {
  const { files } = folder;
  // Matrices into wasm buffers of their dtype (all allocated first), norms and biases into f32 arrays.
  const specs = modelTensors(config).map((t) => {
    const info = folder.tensors.get(t.name)!;
    const matrix = t.kind === "linear" || t.kind === "embedding", K = info.shape[info.shape.length - 1] ?? 1;
    const elements = info.shape.reduce((a, b) => a * b, 1), rows = matrix ? info.shape[0]! : 1;
    const want = matrix ? weightDtypeOf(dtype, t.name, K, config) : "f32";
    const unfit = isQuantDtype(want) ? unfitRows(want, K, t.name) : undefined;
    if (unfit) throw new ModelConfigError(unfit);
    return { info, matrix, K, elements, rows, dtype: want, rowLength: isQuantDtype(want) ? K : undefined };
  });
  const buffers = allocWeights(rt, specs.filter((x) => x.matrix), owned, files.location);
  const plans: FolderPlan[] = specs.map(({ info, matrix, K, elements, rows }) => {
    const target = matrix ? buffers.shift()! : new Float32Array(elements);
    return { info, target, K: matrix ? K : elements, groups: rowGroups(rows, info.byteLength) };
  });
  const totalBytes = [...folder.fileBytes.values()].reduce((a, b) => a + b, 0), tensorBytes = plans.reduce((n, p) => n + p.info.byteLength, 0);
  let done = 0, uploaded = 0;
  for (const file of folder.fileBytes.keys()) {
    const dispatch = spanFeeder(plans.filter((p) => p.info.file === file), (p) => p.info.byteOffset, (p) => p.info.byteLength, (p, bytes) => {
      stageRows(p.groups, bytes, (row0, rows, staged) => storeRows(rt, p, row0, rows, staged, files.describe(file)));
      if (p.groups.filled === p.info.byteLength) { uploaded += p.info.byteLength; onProgress?.({ phase: "upload", doneBytes: uploaded, totalBytes: tensorBytes }); }
    });
    const { chunks } = await files.open(file);
    try {
      for (let r = await chunks.next(); !r.done; r = await chunks.next()) {
        dispatch(r.value);
        done += r.value.length;
        onProgress?.({ phase: "read", doneBytes: done, totalBytes });
      }
    } finally {
      await chunks.return?.();
    }
  }
  for (const p of plans) if (p.groups.filled !== p.info.byteLength) throw new ModelConfigError(`${files.describe(p.info.file)}: tensor '${p.info.name}' got ${p.groups.filled} of its ${p.info.byteLength} bytes`);
  return new Map(plans.map((p) => [p.info.name, p.target]));
}

/**
 * A file read as a stream of chunks, handed out to the tensors in it: each gets, in order, the
 * pieces of the chunks that hold its bytes (`at` bytes into it). Tensors are the file's spans of
 * [offset, offset + byteLength); chunks come in file order from offset 0.
 */
export function spanFeeder<T>(tensors: readonly T[], offset: (t: T) => number, byteLength: (t: T) => number, take: (t: T, bytes: Uint8Array, at: number) => void): (chunk: Uint8Array) => void {
  const spans = [...tensors].sort((x, y) => offset(x) - offset(y));
  let pos = 0, first = 0;
  return (chunk) => {
    const end = pos + chunk.length;
    while (first < spans.length && offset(spans[first]!) + byteLength(spans[first]!) <= pos) first++;
    for (let j = first; j < spans.length && offset(spans[j]!) < end; j++) {
      const t = spans[j]!, from = Math.max(pos, offset(t)), to = Math.min(end, offset(t) + byteLength(t));
      if (from < to) take(t, chunk.subarray(from - pos, to - pos), from - offset(t));
    }
    pos = end;
  };
}

/** A complete group of rows (their bytes `staged`) into the target: the bits as they are (a 16-bit buffer of the file's dtype), else through f32. */
function storeRows(rt: Runtime, p: FolderPlan, row0: number, rows: number, staged: Uint8Array, where: string): void {
  const { info, target } = p, offset = row0 * p.K, count = rows * p.K;
  const bits16 = target instanceof WasmBuffer && target.dtype === info.dtype.toLowerCase() && info.dtype !== "F32";
  const data = bits16 ? new Uint16Array(staged.slice().buffer) : decodeFloat32(info.dtype, staged);
  const bad = firstNonFinite(data, bits16 ? (target.dtype as "bf16" | "f16") : "f32");
  if (bad >= 0) throw nonFiniteError(where, info.name, offset + bad);
  if (target instanceof Float32Array) target.set(data, offset);
  else if (bits16) new Uint16Array(rt.memory.memory.buffer, target.ptr + offset * 2, count).set(data);
  else target.set(data, offset);
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

/** 16-bit checkpoints stay 16-bit (decode reads every weight once per token); f32 stays f32: as the first linear weight is stored. */
function storedDtype(folder: ModelFolder): BufferDtype {
  const first = modelTensors(folder.config).find((t) => t.kind === "linear")!;
  const stored = folder.tensors.get(first.name)?.dtype;
  return stored === "BF16" ? "bf16" : stored === "F16" ? "f16" : "f32";
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
 * Loads a GGUF model (one file, or its -0000i-of-0000N splits) by streaming each file once:
 * the header from the front, then every tensor's bytes straight into its buffer in wasm memory
 * as they arrive, so no whole copy of the file is ever held in JS (the 128 MB Worker). F32, F16,
 * BF16 and the block types kept as stored (KEPT_TYPES) are copied as they are (q/k rows to their
 * unpermuted places); every other type is staged one tensor at a time and converted, a group of
 * rows at a time, to `options.dtype` or by default conversionTarget's type (Q8_0, whose error is
 * far below the source type's own; IQ4_XS block for block to IQ4_NL). Every buffer is allocated before any byte is read, so a model
 * that does not fit fails at once; a failure frees them all.
 */
async function loadGGUF(rt: Runtime, files: ModelFiles, name: string, options: LoadOptions): Promise<LanguageModel> {
  const names = ggufSplitNames(name);
  const opened: { file: string; size: number; header: GGUFHeader; prefix: Uint8Array; chunks: AsyncIterator<Uint8Array> }[] = [];
  const closeAll = async () => { for (const o of opened) await o.chunks.return?.(); };
  try {
    for (const file of names) {
      const { size, chunks } = await files.open(file);
      const { header, prefix } = await readGGUFHeaderFromStream(size, chunks, files.describe(file)).catch(async (e) => {
        await chunks.return?.();
        throw e instanceof GGUFError ? new ModelConfigError(e.message) : e;
      });
      opened.push({ file, size, header, prefix, chunks });
    }
  } catch (e) { await closeAll(); throw e; }
  const owned: WasmBuffer[] = [];
  try {
    const info = describeGGUF(files, names, opened.map((o) => o.header), new Map(opened.map((o) => [o.file, o.size])));
    const where = files.describe(name);
    const tokenizer = info.tokenizer
      ? new TextTokenizer(info.tokenizer.json, info.tokenizer.config, `${where} (tokenizer metadata)`, undefined, `${where} (tokenizer.chat_template)`)
      : undefined;
    const id = (key: string) => { const v = info.metadata.get(key); return typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : undefined; };
    const defaults: GenerationDefaults = { eosTokenIds: ggufStopTokenIds(info.metadata), bosTokenId: id("tokenizer.ggml.bos_token_id"), sampling: { temperature: 0 } };

    // Float files stay as they are; in a quantized file, matrices of the types kept as stored
    // (KEPT_TYPES) stay, the others convert (conversionTarget); with options.dtype, every matrix
    // not already of that type becomes it. The model's dtype names the most bytes' type, as loaded.
    const matrices = [...info.tensors.values()].filter((t) => t.tensor.shape.length === 2).map((t) => t.tensor);
    const floatFile = isFloatFile(matrices.map((t) => t.type));
    // The dtype of a matrix (rows of K) that is not kept as stored.
    // "stored": every type the kernels compute on stays; the others convert as by default.
    const keepAll = options.dtype === "stored", choice = keepAll ? undefined : options.dtype as WeightChoice | undefined;
    const keeps = (type: string) => COMPUTED_TYPES.has(type) && (keepAll || KEPT_TYPES.has(type));
    const targetOf = (hf: string, K: number, type: string): BufferDtype => (choice !== undefined ? weightDtypeOf(choice, hf, K, info.config) : floatFile ? (type.toLowerCase() as BufferDtype) : conversionTarget(type));
    const bytesByType = new Map<string, number>();
    for (const t of matrices) bytesByType.set(t.type, (bytesByType.get(t.type) ?? 0) + t.byteLength);
    const dominant = [...bytesByType.entries()].sort((x, y) => y[1] - x[1])[0]![0].toLowerCase();
    const kept = BUFFER_DTYPES.includes(dominant as BufferDtype) && (!COMPUTED_TYPES.has(dominant.toUpperCase()) || keeps(dominant.toUpperCase()));
    const dtype: WeightChoice = choice ?? (kept ? (dominant as BufferDtype) : conversionTarget(dominant.toUpperCase()));

    const specs = [...info.tensors].map(([hf, t]) => {
      const { tensor } = t;
      const matrix = tensor.shape.length === 2, K = tensor.shape[tensor.shape.length - 1]!;
      const elements = tensor.shape.reduce((x, y) => x * y, 1);
      const asStored = choice === undefined ? keeps(tensor.type) : COMPUTED_TYPES.has(tensor.type) && targetOf(hf, K, tensor.type) === tensor.type.toLowerCase();
      const bufferDtype: BufferDtype = !matrix ? "f32" : asStored ? (tensor.type.toLowerCase() as QuantDtype) : targetOf(hf, K, tensor.type);
      const unfit = isQuantDtype(bufferDtype) ? unfitRows(bufferDtype, K, hf) : undefined;
      if (unfit) throw new ModelConfigError(`${where}: ${unfit}`);
      return { hf, t, matrix, K, elements, dtype: bufferDtype, rowLength: isQuantDtype(bufferDtype) ? K : undefined };
    });
    // Rope factors (Llama 3.1 / 3.2's rope_freqs, Phi's LongRoPE pair): read with the rest and taken into the config.
    const factorSpecs = [...info.ropeFactors].map(([hf, t]) => ({ hf, t, matrix: false, elements: t.tensor.shape[0]!, dtype: "f32" as BufferDtype, rowLength: undefined }));
    const buffers = allocWeights(rt, [...specs, ...factorSpecs], owned, where);
    const plans: TensorPlan[] = specs.map(({ hf, t: { file, tensor, permutedHeads }, matrix, K, elements, dtype: bufferDtype }, i) => ({
      hf, file, tensor, buffer: buffers[i]!, copy: bufferDtype.toUpperCase() === tensor.type, K: matrix ? K : 1, rows: matrix ? tensor.shape[0]! : elements,
      srcRowBytes: matrix ? tensor.byteLength / tensor.shape[0]! : tensor.byteLength / elements, permutedHeads, filled: 0,
    }));
    const ropeFactors: TensorPlan[] = factorSpecs.map(({ hf, t: { file, tensor } }, i) => ({ hf, file, tensor, buffer: buffers[specs.length + i]!, copy: true, K: 1, rows: tensor.shape[0]!, srcRowBytes: 4, filled: 0 }));
    plans.push(...ropeFactors);
    const totalBytes = opened.reduce((sum, o) => sum + o.size, 0);
    let done = 0;
    for (const o of opened) {
      const mine = plans.filter((p) => p.file === o.file);
      const dispatch = spanFeeder(mine, (p) => p.tensor.offset, (p) => p.tensor.byteLength, (p, bytes, at) => writeTensorBytes(rt, p, bytes, at, where));
      const feed = (chunk: Uint8Array) => {
        dispatch(chunk);
        done += chunk.length;
        options.onProgress?.({ phase: "read", doneBytes: done, totalBytes });
      };
      feed(o.prefix);
      for (let r = await o.chunks.next(); !r.done; r = await o.chunks.next()) feed(r.value);
    }
    for (const p of plans) if (p.filled !== p.tensor.byteLength) throw new ModelConfigError(`${where}: tensor '${p.tensor.name}' got ${p.filled} of its ${p.tensor.byteLength} bytes`);
    options.onProgress?.({ phase: "upload", doneBytes: totalBytes, totalBytes });
    const config = withContextLength(withRopeFactors(info.config, new Map(ropeFactors.map((p) => [p.hf, p.buffer.toFloat32Array()])), where), options.contextLength);
    for (const p of ropeFactors) p.buffer.free();
    const byName = new Map(plans.filter((p) => !ropeFactors.includes(p)).map((p) => [p.hf, p.buffer]));
    const transformer = new TransformerModel(rt, config, (hf) => byName.get(hf)!, dtype);
    return new LanguageModel(transformer, tokenizer, defaults, options.cache);
  } catch (e) {
    for (const b of owned) if (!b.isFreed) b.free();
    throw e;
  } finally {
    await closeAll();
  }
}

/** Where one GGUF tensor goes: its buffer, and whether its bytes are copied or converted. */
interface TensorPlan {
  hf: string; file: string; tensor: GGUFTensor; buffer: WasmBuffer;
  /** The file's bytes are the buffer's (else staged, then converted). */
  copy: boolean;
  K: number; rows: number; srcRowBytes: number; permutedHeads?: number;
  filled: number; staged?: Uint8Array;
}

/** `bytes` of a tensor, `at` bytes into it: copied into place, or staged and converted once complete. */
function writeTensorBytes(rt: Runtime, p: TensorPlan, bytes: Uint8Array, at: number, where: string): void {
  p.filled += bytes.length;
  if (p.copy) {
    const u8 = rt.memory.u8, base = p.buffer.ptr;
    if (!p.permutedHeads) u8.set(bytes, base + at);
    else {
      for (let k = 0; k < bytes.length;) {
        const row = Math.floor((at + k) / p.srcRowBytes), inRow = (at + k) % p.srcRowBytes, n = Math.min(bytes.length - k, p.srcRowBytes - inRow);
        u8.set(bytes.subarray(k, k + n), base + unpermutedRow(row, p.rows, p.permutedHeads) * p.srcRowBytes + inRow);
        k += n;
      }
    }
    if (p.filled === p.tensor.byteLength) checkFinite(rt, p, where);
    return;
  }
  p.staged ??= new Uint8Array(p.tensor.byteLength);
  p.staged.set(bytes, at);
  if (p.filled < p.tensor.byteLength) return;
  // Complete: convert and store a group of rows at a time (bounded temporaries).
  const GROUP = 256, direct = DIRECT_CONVERSIONS[p.tensor.type];
  for (let r0 = 0; r0 < p.rows; r0 += GROUP) {
    const r1 = Math.min(p.rows, r0 + GROUP);
    if (direct && p.buffer.dtype === direct.to) {
      const converted = direct.convert(p.staged.subarray(r0 * p.srcRowBytes, r1 * p.srcRowBytes), (r1 - r0) * p.K), rowBytes = converted.length / (r1 - r0);
      for (let r = r0; r < r1; r++) rt.memory.u8.set(converted.subarray((r - r0) * rowBytes, (r - r0 + 1) * rowBytes), p.buffer.ptr + (p.permutedHeads ? unpermutedRow(r, p.rows, p.permutedHeads) : r) * rowBytes);
      continue;
    }
    const floats = dequantizeGGML(p.tensor.type as never, p.staged.subarray(r0 * p.srcRowBytes, r1 * p.srcRowBytes), (r1 - r0) * p.K);
    const bad = firstNonFinite(floats, "f32");
    if (bad >= 0) throw new ModelConfigError(`${where}: tensor '${p.tensor.name}' holds a non-finite value (NaN or infinity) at element ${r0 * p.K + bad}; the file is corrupt`);
    if (!p.permutedHeads) p.buffer.set(floats, r0 * p.K);
    else for (let r = r0; r < r1; r++) p.buffer.set(floats.subarray((r - r0) * p.K, (r - r0 + 1) * p.K), unpermutedRow(r, p.rows, p.permutedHeads) * p.K);
  }
  p.staged = undefined;
  if (direct && p.buffer.dtype === direct.to) checkFinite(rt, p, where);
}

/** A copied tensor is checked in place: NaN or infinity (f32, 16-bit) or a non-finite block scale (quantized types). */
function checkFinite(rt: Runtime, p: TensorPlan, where: string): void {
  const b = p.buffer, bytes = new Uint8Array(rt.memory.memory.buffer, b.ptr, b.byteLength);
  const bad = isQuantDtype(b.dtype) ? firstNonFiniteScale(bytes, b.dtype)
    : b.dtype === "f32" ? firstNonFinite(new Float32Array(bytes.buffer, bytes.byteOffset, b.length), "f32")
    : firstNonFinite(new Uint16Array(bytes.buffer, bytes.byteOffset, b.length), b.dtype as "bf16" | "f16");
  if (bad >= 0) throw new ModelConfigError(`${where}: tensor '${p.tensor.name}' holds a non-finite ${isQuantDtype(b.dtype) ? "scale in block" : "value at element"} ${bad}; the file is corrupt`);
}

/** The block-quantized GGUF types the kernels compute on as stored. */
const COMPUTED_TYPES = new Set(["Q8_0", "Q4_0", "Q5_0", "Q4_1", "Q5_1", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]);
/**
 * Those kept as stored by default: each type whose kernel is about as fast as Q8_0's, the 2-3-bit
 * ones (Q2_K, Q3_K: 0.96x / 1.5x Q8_0's time in the relaxed build, 1.8x / 2.3x in the simd
 * build, but a file of them was chosen for its size, which Q8_0
 * would triple). Q5_0 becomes Q5_0_U8, its bits unpacked to a byte a weight (exactly: requantized
 * to Q8_0 a Qwen2.5-0.5B-shaped Q4_K_M file's greedy tokens matched native llama.cpp's 0 of 64,
 * its own values 64): Q8_0's bytes, whose GEMV on 7-bit dots without unpacking takes 0.52-0.61x
 * Q5_0's time where Q5_0's fifth bits took as many instructions as its dots (SmolLM2 shapes,
 * scratch/q5ab.ts); llama.cpp's Q4_K_M falls back to Q5_0 wherever rows are not whole 256-blocks
 * (SmolLM2's 576, Qwen2.5-0.5B's 896: most of their matrices); Q5_1 (Q5_K_M's fallback) likewise
 * becomes Q5_1_U8 (Q4_1's arithmetic on bytes; Q5_1's own kernel took 1.55x Q8_0's time), and Q5_K
 * Q5_K_U8 (Q4_K's super-block dots on bytes, Q8_0's 272 bytes per 256: GEMV 0.64-0.95x Q8_0's time,
 * integer panels 1.5x Q8_0's f32 ones; Q5_K's own kernel took 1.2x Q8_0's, and requantized to Q8_0 it
 * lost its values). Q6_K becomes
 * Q6_K_U8, its bits unpacked to a byte a weight (conversionTarget): its values exactly, in
 * Q8_0's bytes and GEMV time, where Q6_K's own GEMV took 2x (its bit unpacking; a Q4_K_M twin
 * with its Q6_K kept decoded 11-25% slower at two threads) and Q8_0 in its place went through
 * the f32 panels in prefill, where Q6_K_U8 has integer panels (GEMM 128x2048x2048 23.5 -> 14.2
 * ms; a Llama-3.2-1B-shaped Q4_K_M twin's prefill 1.13x, scratch/q6ab.ts) and the file's own
 * values (KL to native llama.cpp's next-token distributions 5.0e-2 kept against 7.2e-2 as Q8_0).
 */
const KEPT_TYPES = new Set(["Q8_0", "Q4_0", "Q4_1", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K"]);

/** Conversions block for block, bytes to bytes: IQ4_XS's levels as they are, its scales to f16; Q6_K's, Q5_K's, Q5_0's and Q5_1's bits unpacked (UNPACKED_FORMS). */
const DIRECT_CONVERSIONS: Record<string, { to: QuantDtype; convert: (bytes: Uint8Array, elements: number) => Uint8Array } | undefined> = {
  IQ4_XS: { to: "iq4_nl", convert: iq4xsToIq4nl },
  ...Object.fromEntries(Object.entries(UNPACKED_FORMS).map(([type, { to, unpack }]) => [type, { to, convert: unpack }])),
};

/**
 * What a matrix of a type not kept converts to at load (no dtype given): block for block where
 * DIRECT_CONVERSIONS can (IQ4_XS to IQ4_NL, its scales rounded to f16; Q6_K, Q5_K, Q5_0 and Q5_1
 * to their bytes unpacked, exactly), every other type to Q8_0.
 */
export function conversionTarget(type: string): QuantDtype {
  return DIRECT_CONVERSIONS[type]?.to ?? "q8_0";
}

/** Every matrix of one float type: the file's matrices stay as they are. */
function isFloatFile(matrixTypes: readonly string[]): boolean {
  return matrixTypes.every((t) => t === matrixTypes[0] && (t === "F32" || t === "F16" || t === "BF16"));
}

/**
 * The matrix types of a GGUF file that loading it without `dtype` converts (conversionTarget),
 * with their counts (a float file's matrices all stay as they are; a quantized file's other types convert).
 */
export function ggufConversions(matrixTypes: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  if (!isFloatFile(matrixTypes)) for (const t of matrixTypes) if (!KEPT_TYPES.has(t)) out.set(t, (out.get(t) ?? 0) + 1);
  return out;
}

/** The byte offsets of a block's f16 scales: d (Q8_0, Q4_0, Q5_0, Q5_0_U8, IQ4_NL), d and m (Q4_1, Q5_1, Q5_1_U8), d and dmin (Q4_K, Q5_K, Q5_K_U8; Q2_K's after its quants), d after the quants (Q6_K, Q6_K_U8: after its scales). */
const SCALE_OFFSETS: Record<QuantDtype, number[]> = { q8_0: [0], q4_0: [0], q5_0: [0], q4_1: [0, 2], q5_1: [0, 2], iq4_nl: [0], q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208], q6_k_u8: [272], q5_0_u8: [0], q5_1_u8: [0, 2], q5_k_u8: [0, 2] };

/** The first block of quantized data with an infinite or NaN f16 scale, or -1. */
function firstNonFiniteScale(bytes: Uint8Array, dtype: QuantDtype): number {
  const bb = QUANT_BLOCK_BYTES[dtype], offsets = SCALE_OFFSETS[dtype];
  for (let b = 0, at = 0; at < bytes.length; b++, at += bb) for (const o of offsets) if ((bytes[at + o + 1]! & 0x7c) === 0x7c) return b;
  return -1;
}
