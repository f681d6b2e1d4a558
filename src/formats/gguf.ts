// GGUF (llama.cpp's model file), read with full validation: the header (magic, version 2 or 3,
// counts), every metadata value (typed, arrays included), every tensor's name, shape, type and
// offset — each size is checked against the bytes that remain before anything proportional to
// it is allocated — then the tensors against the data section: known types, whole blocks per
// row, aligned offsets, in bounds, no overlaps. Hostile files end with GGUFError, one line.
//
// Written by hand rather than with @huggingface/gguf: that reader fetches by URL ranges and
// trusts counts it reads (it allocates arrays of the sizes a file claims); here the header comes
// from any byte source (file, URL, R2 object, memory) and is validated like safetensors.

export class GGUFError extends Error {
  override name = "GGUFError";
}

/** ggml tensor types this runtime reads: block size (weights) and bytes per block. */
export const GGML_TYPES = {
  F32: { id: 0, block: 1, bytes: 4 },
  F16: { id: 1, block: 1, bytes: 2 },
  Q4_0: { id: 2, block: 32, bytes: 18 },
  Q4_1: { id: 3, block: 32, bytes: 20 },
  Q5_0: { id: 6, block: 32, bytes: 22 },
  Q5_1: { id: 7, block: 32, bytes: 24 },
  Q8_0: { id: 8, block: 32, bytes: 34 },
  Q2_K: { id: 10, block: 256, bytes: 84 },
  Q3_K: { id: 11, block: 256, bytes: 110 },
  Q4_K: { id: 12, block: 256, bytes: 144 },
  Q5_K: { id: 13, block: 256, bytes: 176 },
  Q6_K: { id: 14, block: 256, bytes: 210 },
  IQ4_NL: { id: 20, block: 32, bytes: 18 },
  IQ4_XS: { id: 23, block: 256, bytes: 136 },
  BF16: { id: 30, block: 1, bytes: 2 },
} as const;
export type GGMLType = keyof typeof GGML_TYPES;
/** ggml's other type ids, named in the error that refuses them (IQ1-IQ3's grids and ternary types). */
const UNREAD_TYPES: Record<number, string> = {
  9: "Q8_1", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 21: "IQ3_S", 22: "IQ2_S", 24: "I8", 25: "I16",
  26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0",
};
const TYPE_BY_ID = new Map(Object.entries(GGML_TYPES).map(([name, t]) => [t.id as number, name as GGMLType]));

export type GGUFValue = number | bigint | boolean | string | GGUFValue[];

export interface GGUFTensor {
  name: string;
  /** Hugging Face order: [rows, columns] for a matrix (GGUF stores ne0 = columns first). */
  shape: number[];
  type: GGMLType;
  /** Byte offset of the data in the file. */
  offset: number;
  byteLength: number;
}

export interface GGUFHeader {
  version: number;
  metadata: Map<string, GGUFValue>;
  tensors: Map<string, GGUFTensor>;
  alignment: number;
  /** Where the tensor data starts in the file. */
  dataOffset: number;
  /** Bytes of the header itself (everything before the padding and the data). */
  headerBytes: number;
}

/** Thrown while parsing when the bytes given end inside the header: read more and try again. */
export class GGUFNeedMore extends Error {
  constructor(readonly atLeast: number) { super(`the GGUF header needs at least ${atLeast} bytes`); }
}

const MAX_DIMS = 4;
const MAX_STRING = 64 << 20;
/** ggml's GGML_MAX_NAME: a tensor's name is shorter. */
const MAX_TENSOR_NAME = 64;

/** A metadata key from the file as an error message shows it: as it is when short and printable, else quoted and cut. */
function shownKey(key: string): string {
  return /^[\x21-\x7e]{1,80}$/.test(key) ? key : JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}...` : key);
}

/**
 * Parses the header from `bytes`, the first bytes of a file of `fileSize` bytes. Throws
 * GGUFNeedMore when the header goes on past `bytes` (and the file has more), GGUFError when the
 * file is not a valid GGUF.
 */
export function parseGGUFHeader(bytes: Uint8Array, fileSize: number, source = "model.gguf"): GGUFHeader {
  const fail = (why: string) => new GGUFError(`${source}: ${why}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n: number) => {
    if (at + n > fileSize) throw fail(`the file ends inside its header (${fileSize} bytes)`);
    if (at + n > bytes.length) throw new GGUFNeedMore(Math.min(fileSize, Math.max(at + n, 2 * bytes.length)));
  };
  const u32 = () => { need(4); const v = view.getUint32(at, true); at += 4; return v; };
  const u64 = (what: string) => {
    need(8);
    const v = view.getBigUint64(at, true);
    at += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fail(`${what} ${v} is too large`);
    return Number(v);
  };
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const string = (what: string) => {
    const n = u64(`the length of ${what}`);
    if (n > MAX_STRING || at + n > fileSize) throw fail(`${what} claims ${n} bytes`);
    need(n);
    try { return decoder.decode(bytes.subarray(at, at += n)); } catch { throw fail(`${what} is not UTF-8`); }
  };
  /** Remaining bytes bound any count: an item takes at least `minBytes`. */
  const count = (n: number, minBytes: number, what: string) => {
    if (n * minBytes > fileSize - at) throw fail(`${what} is ${n}, more than the ${fileSize - at} bytes left could hold`);
    return n;
  };
  const SIZES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const scalar = (type: number): GGUFValue => {
    need(SIZES[type]!);
    let v: GGUFValue;
    switch (type) {
      case 0: v = view.getUint8(at); break;
      case 1: v = view.getInt8(at); break;
      case 2: v = view.getUint16(at, true); break;
      case 3: v = view.getInt16(at, true); break;
      case 4: v = view.getUint32(at, true); break;
      case 5: v = view.getInt32(at, true); break;
      case 6: v = view.getFloat32(at, true); break;
      case 7: { const b = view.getUint8(at); if (b > 1) throw fail(`a bool holds ${b}`); v = b === 1; break; }
      case 10: v = view.getBigUint64(at, true); break;
      case 11: v = view.getBigInt64(at, true); break;
      default: v = view.getFloat64(at, true);
    }
    at += SIZES[type]!;
    return v;
  };
  const value = (type: number, key: string, depth: number): GGUFValue => {
    if (type in SIZES) return scalar(type);
    if (type === 8) return string(`the value of ${key}`);
    if (type === 9) {
      if (depth > 0) throw fail(`${key}: arrays of arrays are not supported`);
      const itemType = u32();
      if (!(itemType in SIZES) && itemType !== 8) throw fail(`${key}: array of unknown type ${itemType}`);
      const n = count(u64(`the length of ${key}`), itemType === 8 ? 8 : SIZES[itemType]!, `the length of ${key}`);
      const items = new Array<GGUFValue>(n);
      for (let i = 0; i < n; i++) items[i] = value(itemType, key, depth + 1);
      return items;
    }
    throw fail(`${key}: unknown value type ${type}`);
  };

  if (fileSize < 24 || bytes.length < 4) throw fail(`${fileSize} bytes is too short for a GGUF file`);
  if (u32() !== 0x46554747) throw fail("not a GGUF file (bad magic)");
  const version = u32();
  if (version !== 2 && version !== 3) throw fail(`GGUF version ${version} is not supported (2, 3)`);
  const tensorCount = u64("the tensor count");
  const kvCount = u64("the metadata count");
  count(tensorCount, 8 + 4 + 8 + 4 + 8, "the tensor count");
  count(kvCount, 8 + 4 + 1, "the metadata count");
  const metadata = new Map<string, GGUFValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = string("a metadata key");
    if (metadata.has(key)) throw fail(`metadata key ${shownKey(key)} appears twice`);
    metadata.set(key, value(u32(), shownKey(key), 0));
  }
  const alignment = metadata.has("general.alignment") ? metadata.get("general.alignment") : 32;
  if (typeof alignment !== "number" || !Number.isInteger(alignment) || alignment < 1 || alignment > 1 << 16 || (alignment & (alignment - 1)) !== 0) {
    throw fail(`general.alignment ${String(alignment)} is not a power of two up to 65536`);
  }
  const infos: { name: string; dims: number[]; type: GGMLType; offset: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = string("a tensor name");
    if (name.length >= MAX_TENSOR_NAME) throw fail(`tensor ${i}'s name has ${name.length} characters (ggml's are under ${MAX_TENSOR_NAME})`);
    // (Names go into error messages, which are one line.)
    if (/[\u0000-\u001f\u007f]/.test(name)) throw fail(`tensor ${i}'s name ${JSON.stringify(name)} holds a control character`);
    if (names.has(name)) throw fail(`tensor ${name} appears twice`);
    names.add(name);
    const nDims = u32();
    if (nDims < 1 || nDims > MAX_DIMS) throw fail(`tensor ${name} has ${nDims} dimensions (1 to ${MAX_DIMS})`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const n = u64(`a dimension of ${name}`);
      if (n < 1) throw fail(`tensor ${name} has a dimension of ${n}`);
      dims.push(n);
    }
    const typeId = u32();
    const type = TYPE_BY_ID.get(typeId);
    if (!type) {
      const known = UNREAD_TYPES[typeId];
      throw fail(`tensor ${name} is ${known ? `${known} (ggml type ${typeId})` : `of ggml type ${typeId}`}, which this runtime does not read (it reads ${Object.keys(GGML_TYPES).join(", ")}: a Q4_K_M, Q3_K_M or IQ4_XS file of the model, for one)`);
    }
    const offset = u64(`the offset of ${name}`);
    infos.push({ name, dims, type, offset });
  }
  const headerBytes = at;
  const dataOffset = Math.ceil(at / alignment) * alignment;
  if (dataOffset > fileSize) throw fail("the file ends before its tensor data");
  const dataBytes = fileSize - dataOffset;
  const tensors = new Map<string, GGUFTensor>();
  for (const { name, dims, type, offset } of infos) {
    const { block, bytes: blockBytes } = GGML_TYPES[type];
    const elements = dims.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(elements) || elements > dataBytes * (block / blockBytes) + 1) throw fail(`tensor ${name} [${dims.join(", ")}] is larger than the file`);
    if (dims[0]! % block !== 0) throw fail(`tensor ${name}: rows of ${dims[0]} are not whole ${type} blocks of ${block}`);
    const byteLength = (elements / block) * blockBytes;
    if (offset % alignment !== 0) throw fail(`tensor ${name} at offset ${offset} is not aligned to ${alignment}`);
    if (offset + byteLength > dataBytes) throw fail(`tensor ${name} (${byteLength} bytes at ${offset}) ends past the file's data (${dataBytes} bytes)`);
    tensors.set(name, { name, shape: [...dims].reverse(), type, offset: dataOffset + offset, byteLength });
  }
  const spans = [...tensors.values()].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]!.offset < spans[i - 1]!.offset + spans[i - 1]!.byteLength) throw fail(`tensors ${spans[i - 1]!.name} and ${spans[i]!.name} overlap`);
  }
  return { version, metadata, tensors, alignment, dataOffset, headerBytes };
}

/**
 * Reads and parses the header through `read(length)` (the file's first `length` bytes): starts
 * with 1 MiB and doubles while the header goes on, never past the file.
 */
export async function readGGUFHeader(read: (length: number) => Promise<Uint8Array>, fileSize: number, source = "model.gguf"): Promise<GGUFHeader> {
  let length = Math.min(fileSize, 1 << 20);
  for (;;) {
    const bytes = await read(length);
    try {
      return parseGGUFHeader(bytes, fileSize, source);
    } catch (e) {
      if (!(e instanceof GGUFNeedMore) || e.atLeast <= bytes.length) throw e;
      length = Math.min(fileSize, Math.max(e.atLeast, 2 * length));
    }
  }
}

// ---------------------------------------------------------------- writing

export interface GGUFTensorToWrite {
  /** Hugging Face order ([rows, columns]). */
  shape: number[];
  type: GGMLType;
  /** The tensor's bytes in `type`'s layout. */
  data: Uint8Array;
}

export type GGUFMetadataToWrite = Record<string, { type: "u32" | "i32" | "f32" | "bool" | "string" | "u64"; value: number | boolean | string | bigint }
  | { type: "array"; itemType: "u32" | "i32" | "f32" | "string"; value: (number | string)[] }>;

/** A tensor of a GGUF file to write, as its header describes it. */
export interface GGUFTensorInfoToWrite {
  name: string;
  /** Hugging Face order ([rows, columns]). */
  shape: number[];
  type: GGMLType;
  byteLength: number;
}

/**
 * The front of a GGUF v3 file (llama.cpp reads it): metadata and tensor infos, zero-padded to the
 * data's alignment; each tensor's data then goes at dataStart + offsets[i] (each aligned), and the
 * file is `size` bytes.
 */
export function ggufHeader(metadata: GGUFMetadataToWrite, tensors: readonly GGUFTensorInfoToWrite[], alignment = 32): { bytes: Uint8Array; offsets: number[]; size: number } {
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (b: Uint8Array) => { parts.push(b); size += b.length; };
  const num = (bytes: number, set: (v: DataView) => void) => { const b = new Uint8Array(bytes); set(new DataView(b.buffer)); push(b); };
  const u32 = (v: number) => num(4, (d) => d.setUint32(0, v, true));
  const u64 = (v: number | bigint) => num(8, (d) => d.setBigUint64(0, BigInt(v), true));
  const str = (s: string) => { const b = new TextEncoder().encode(s); u64(b.length); push(b); };
  const TYPE_CODES = { u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10 } as const;
  const scalar = (type: "u32" | "i32" | "f32" | "bool" | "string" | "u64", v: number | boolean | string | bigint) => {
    if (type === "u32") u32(v as number);
    else if (type === "i32") num(4, (d) => d.setInt32(0, v as number, true));
    else if (type === "f32") num(4, (d) => d.setFloat32(0, v as number, true));
    else if (type === "bool") push(new Uint8Array([v ? 1 : 0]));
    else if (type === "u64") u64(v as number | bigint);
    else str(v as string);
  };
  u32(0x46554747);
  u32(3);
  u64(tensors.length);
  u64(Object.keys(metadata).length);
  for (const [key, m] of Object.entries(metadata)) {
    str(key);
    u32(TYPE_CODES[m.type]);
    if (m.type === "array") {
      u32(TYPE_CODES[m.itemType]);
      u64(m.value.length);
      for (const item of m.value) scalar(m.itemType, item);
    } else scalar(m.type, m.value);
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    str(t.name);
    u32(t.shape.length);
    for (const d of [...t.shape].reverse()) u64(d);
    u32(GGML_TYPES[t.type].id);
    offsets.push(offset);
    u64(offset);
    offset = Math.ceil((offset + t.byteLength) / alignment) * alignment;
  }
  const dataStart = Math.ceil(size / alignment) * alignment;
  const bytes = new Uint8Array(dataStart);
  let at = 0;
  for (const p of parts) { bytes.set(p, at); at += p.length; }
  return { bytes, offsets: offsets.map((o) => dataStart + o), size: dataStart + offset };
}

/** A GGUF v3 file (llama.cpp reads it) in memory: ggufHeader, then each tensor's data. */
export function writeGGUF(metadata: GGUFMetadataToWrite, tensors: Record<string, GGUFTensorToWrite>, alignment = 32): Uint8Array {
  const entries = Object.entries(tensors);
  const header = ggufHeader(metadata, entries.map(([name, t]) => ({ name, shape: t.shape, type: t.type, byteLength: t.data.length })), alignment);
  const out = new Uint8Array(header.size);
  out.set(header.bytes);
  entries.forEach(([, t], i) => out.set(t.data, header.offsets[i]!));
  return out;
}

/**
 * Reads the header from the front of a stream of chunks (`size` bytes in all): chunks are kept
 * until the header parses. Returns it with the bytes read so far (the header and whatever data
 * came with the last chunk); the rest of the stream is left to the caller.
 */
export async function readGGUFHeaderFromStream(size: number, chunks: AsyncIterator<Uint8Array>, source = "model.gguf"): Promise<{ header: GGUFHeader; prefix: Uint8Array }> {
  // Chunks are kept as they come and joined only for a parse attempt (small network chunks would
  // otherwise be copied again with every one that arrives).
  let parts: Uint8Array[] = [], have = 0, want = Math.min(size, 24);
  for (;;) {
    while (have < want) {
      const r = await chunks.next();
      if (r.done) throw new GGUFError(`${source}: the file ends inside its header (${have} bytes)`);
      parts.push(r.value);
      have += r.value.length;
    }
    const prefix = parts.length === 1 ? parts[0]! : new Uint8Array(have);
    if (parts.length > 1) { let at = 0; for (const p of parts) { prefix.set(p, at); at += p.length; } }
    parts = [prefix];
    try {
      return { header: parseGGUFHeader(prefix, size, source), prefix };
    } catch (e) {
      if (!(e instanceof GGUFNeedMore)) throw e;
      // Parsing again costs the header so far: ask for at least twice as much each time.
      want = Math.min(size, Math.max(e.atLeast, 2 * have));
    }
  }
}
