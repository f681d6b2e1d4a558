// How K/V rows are stored in pages: f32; f16 (IEEE half, rounded to nearest even, saturated at
// ±65504; half the bytes, as llama.cpp's default cache); bf16 (the high half of an f32, rounded
// to nearest even: f32's range, 8 bits of precision to f16's 11); or int8 with one f32 scale per
// (token, KV head) row (a quarter of the bytes, plus the scales). The kv_write kernel encodes
// (assembly/kernels/kv-pages.ts), the attention kernels widen in registers, and the host
// decodes for readLayer.

import { f16ToF32 } from "../formats/half.ts";
import { CODES } from "../runtime/kernel-exports.ts";

export const KV_DTYPES = ["f32", "f16", "bf16", "int8"] as const;
export type KVDtype = (typeof KV_DTYPES)[number];

/** The kernels' storage codes (the one kernel table's CODES). */
export const KV_DTYPE_CODES: Record<KVDtype, number> = { f32: CODES.KV_F32, f16: CODES.KV_F16, bf16: CODES.KV_BF16, int8: CODES.KV_INT8 };

export const KV_ELEM_BYTES: Record<KVDtype, number> = { f32: 4, f16: 2, bf16: 2, int8: 1 };

/** Rows of `rowLen` elements in storage form: raw bytes, and for int8 one scale per row. */
export interface EncodedRows { data: Uint8Array; scales?: Float32Array }

export function decodeRows(dtype: KVDtype, data: Uint8Array, scales: Float32Array | undefined, rowLen: number): Float32Array {
  if (dtype === "f32") return new Float32Array(data.slice().buffer);
  if (dtype === "f16") {
    // As the kernels widen: IEEE half, except that the top exponent (which kv_write writes only
    // for NaN, see toF16) reads as the finite 2^16 · (1 + mantissa), not as infinity or NaN.
    const src = new Uint16Array(data.slice().buffer);
    return Float32Array.from(src, (h) => (h & 0x7c00) === 0x7c00 ? (h & 0x8000 ? -1 : 1) * 2 ** 16 * (1 + (h & 0x3ff) / 1024) : f16ToF32(h));
  }
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
