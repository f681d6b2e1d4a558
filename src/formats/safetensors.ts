// Safetensors, read and written by us with full validation: an 8-byte little-endian header
// length, a JSON header { name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {} },
// then the data, which the tensors must cover exactly (no overlap, no hole). Any malformed file
// throws SafetensorsError naming the file, the tensor and what is wrong.
import { SafetensorsError } from "../errors.ts";
import { f16ToF32, f32ToBf16, f32ToF16 } from "./half.ts";

export type SafetensorsDtype = "F32" | "F16" | "BF16";
const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };
/** Dtypes the format knows but gqa-wasm does not load (a clear error rather than "unknown"). */
const KNOWN_DTYPES = ["F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2"];
/** Headers larger than this are refused before parsing (the format's own reference limit). */
const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Offset of the tensor's first byte in the file's bytes. */
  byteOffset: number;
  byteLength: number;
}

export interface Safetensors {
  source: string;
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
  bytes: Uint8Array;
}

export function parseSafetensors(bytes: Uint8Array, source = "safetensors"): Safetensors {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${source}: expected the file's bytes as a Uint8Array`);
  const headerLength = readHeaderLength(bytes.subarray(0, 8), bytes.length, source);
  const { metadata, tensors } = parseHeader(bytes.subarray(8, 8 + headerLength), bytes.length, source);
  return { source, metadata, tensors, bytes };
}

/**
 * The header length from a file's first 8 bytes, checked against the file's size: read this,
 * then that many bytes, then parseHeader — no need to read a large file's data.
 */
export function readHeaderLength(first8: Uint8Array, fileSize: number, source = "safetensors"): number {
  const fail = (why: string) => new SafetensorsError(`${source}: ${why}`);
  if (first8.length < 8 || fileSize < 8) throw fail(`${Math.min(first8.length, fileSize)} bytes is too short for the 8-byte header length`);
  const headerLength = Number(new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true));
  if (headerLength < 2) throw fail(`header length ${headerLength} is too small for a JSON object`);
  if (headerLength > MAX_HEADER_BYTES) throw fail(`header length ${headerLength} exceeds ${MAX_HEADER_BYTES} bytes`);
  if (8 + headerLength > fileSize) throw fail(`header length ${headerLength} runs past the end of the file (${fileSize} bytes)`);
  return headerLength;
}

/** Parses and validates the JSON header of a file of `fileSize` bytes (offsets are absolute). */
export function parseHeader(headerBytes: Uint8Array, fileSize: number, source = "safetensors"): Pick<Safetensors, "metadata" | "tensors"> {
  const fail = (why: string) => new SafetensorsError(`${source}: ${why}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw fail(`the header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) throw fail("the header is not a JSON object");
  const dataStart = 8 + headerBytes.length;
  const dataLength = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) throw fail("__metadata__ is not an object");
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") throw fail(`__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const t = (why: string) => fail(`tensor '${name}': ${why}`);
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) throw t("entry is not an object");
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== "string") throw t("dtype is missing");
    if (!(dtype in DTYPE_BYTES)) {
      throw t(KNOWN_DTYPES.includes(dtype) ? `dtype ${dtype} is not supported (F32, F16, BF16)` : `unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) throw t(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || offsets.some((o) => !Number.isSafeInteger(o) || o < 0)) {
      throw t(`data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw t(`data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLength) throw t(`data_offsets [${begin}, ${end}] run past the data (${dataLength} bytes)`);
    const elements = shape.reduce((a: number, b: number) => a * b, 1);
    const need = elements * DTYPE_BYTES[dtype as SafetensorsDtype];
    if (end - begin !== need) throw t(`data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${shape.join(", ")}] of ${dtype} needs ${need}`);
    tensors.set(name, { name, dtype: dtype as SafetensorsDtype, shape: shape as number[], byteOffset: dataStart + begin, byteLength: end - begin });
  }
  // The tensors must tile the data exactly: sorted by offset, each starts where the last ended.
  let at = dataStart;
  for (const info of [...tensors.values()].sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength)) {
    if (info.byteOffset < at) throw fail(`tensor '${info.name}' overlaps the tensor before it`);
    if (info.byteOffset > at) throw fail(`the data has a hole of ${info.byteOffset - at} bytes before tensor '${info.name}'`);
    at += info.byteLength;
  }
  if (at !== fileSize) throw fail(`${fileSize - at} bytes after the last tensor belong to no tensor`);
  return { metadata, tensors };
}

/** The named tensor's info, or an error naming it and the file. */
export function tensorInfo(file: Safetensors, name: string): TensorInfo {
  const info = file.tensors.get(name);
  if (!info) throw new SafetensorsError(`${file.source}: tensor '${name}' is missing`);
  return info;
}

/** The tensor's elements as float32 (F16 and BF16 widened). */
export function readFloat32(file: Safetensors, name: string): Float32Array {
  const info = tensorInfo(file, name);
  return decodeFloat32(info.dtype, file.bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength));
}

/** Elements stored as `dtype` (a whole number of them) as float32 (F16 and BF16 widened); a new array. */
export function decodeFloat32(dtype: SafetensorsDtype, bytes: Uint8Array): Float32Array {
  const raw = bytes.slice(); // aligned copy
  if (dtype === "F32") return new Float32Array(raw.buffer);
  const halves = new Uint16Array(raw.buffer);
  const out = new Float32Array(halves.length);
  if (dtype === "BF16") {
    // bfloat16 is the high half of a float32.
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < halves.length; i++) bits[i] = halves[i]! << 16;
  } else {
    for (let i = 0; i < halves.length; i++) out[i] = f16ToF32(halves[i]!);
  }
  return out;
}

/** A 16-bit (F16 or BF16) tensor's raw bits, copied out of the file. */
export function readBits16(file: Safetensors, name: string): Uint16Array {
  const info = tensorInfo(file, name);
  if (info.dtype === "F32") throw new SafetensorsError(`${file.source}: tensor '${name}' is F32, not 16-bit`);
  return new Uint16Array(file.bytes.slice(info.byteOffset, info.byteOffset + info.byteLength).buffer);
}

export interface TensorToWrite { dtype: SafetensorsDtype; shape: number[]; data: Float32Array }

/** Serialises tensors (converted from float32 to their dtype) in name order. */
export function writeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const name of Object.keys(tensors).sort()) {
    const { dtype, shape, data } = tensors[name]!;
    const elements = shape.reduce((a, b) => a * b, 1);
    if (elements !== data.length) throw new RangeError(`writeSafetensors: '${name}' has ${data.length} values for shape [${shape.join(", ")}]`);
    let bytes: Uint8Array;
    if (dtype === "F32") bytes = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    else {
      const narrow = dtype === "BF16" ? f32ToBf16 : f32ToF16;
      bytes = new Uint8Array(Uint16Array.from(data, (x) => narrow(x)).buffer);
    }
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
