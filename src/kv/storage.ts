// How K/V rows are stored in pages: f32, bf16 (the high half of an f32, rounded to nearest
// even; half the bytes) or int8 with one f32 scale per (token, KV head) row (a quarter of the
// bytes, plus the scales). Kernels widen in registers; the host encodes on append and decodes
// for readLayer.

import { f32ToBf16 } from "../formats/half.ts";

export type KVDtype = "f32" | "bf16" | "int8";

/** Codes shared with the kernels (KV_F32, KV_BF16, KV_INT8 in assembly/kernels/attention.ts). */
export const KV_DTYPE_CODES: Record<KVDtype, number> = { f32: 0, bf16: 1, int8: 2 };

export const KV_ELEM_BYTES: Record<KVDtype, number> = { f32: 4, bf16: 2, int8: 1 };

/** Rows of `rowLen` elements in storage form: raw bytes, and for int8 one scale per row. */
export interface EncodedRows { data: Uint8Array; scales?: Float32Array }

export function encodeRows(dtype: KVDtype, x: Float32Array, rowLen: number): EncodedRows {
  if (dtype === "f32") return { data: new Uint8Array(x.buffer, x.byteOffset, x.byteLength) };
  if (dtype === "bf16") {
    const out = new Uint16Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = f32ToBf16(x[i]!);
    return { data: new Uint8Array(out.buffer) };
  }
  const rows = x.length / rowLen;
  const out = new Int8Array(x.length);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let i = r * rowLen; i < (r + 1) * rowLen; i++) m = Math.max(m, Math.abs(x[i]!));
    const scale = Math.fround(m / 127);
    scales[r] = scale;
    if (scale === 0) continue;
    for (let i = r * rowLen; i < (r + 1) * rowLen; i++) out[i] = Math.max(-127, Math.min(127, Math.round(x[i]! / scale)));
  }
  return { data: new Uint8Array(out.buffer), scales };
}

export function decodeRows(dtype: KVDtype, data: Uint8Array, scales: Float32Array | undefined, rowLen: number): Float32Array {
  if (dtype === "f32") return new Float32Array(data.slice().buffer);
  if (dtype === "bf16") {
    const src = new Uint16Array(data.slice().buffer);
    const out = new Float32Array(src.length);
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
    return out;
  }
  const src = new Int8Array(data.buffer, data.byteOffset, data.length);
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! * scales![Math.floor(i / rowLen)]!;
  return out;
}
