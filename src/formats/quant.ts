// Block-quantized weight formats in GGUF's layouts, the host's half of them: sizes, and
// quantizing / dequantizing rows in JS (at load, and for the tests' references). The kernels
// that compute on them are assembly/kernels/linear-quant.ts; the bytes are the same.
//   Q8_0: f16 d, 32 x i8 q              (34 bytes per 32 weights; w = d·q)
//   Q4_0: f16 d, 16 bytes of nibbles    (18 bytes per 32 weights; w = d·(q - 8); weight j in the
//         low nibble of byte j, weight j+16 in the high nibble)
// A row of K weights is ceil(K/32) blocks; past K the last block holds zeros.
import { f16ToF32, f32ToF16 } from "./half.ts";

export type QuantDtype = "q8_0" | "q4_0";
export const QUANT_BLOCK = 32;
export const QUANT_BLOCK_BYTES: Record<QuantDtype, number> = { q8_0: 34, q4_0: 18 };
/** The kernels' code for each format (dequantize_rows). */
export const QUANT_KERNEL_CODE: Record<QuantDtype, number> = { q8_0: 0, q4_0: 1 };

export function isQuantDtype(dtype: string): dtype is QuantDtype {
  return dtype === "q8_0" || dtype === "q4_0";
}

/** Bytes of one row of K weights. */
export function quantRowBytes(dtype: QuantDtype, K: number): number {
  return Math.ceil(K / QUANT_BLOCK) * QUANT_BLOCK_BYTES[dtype];
}

/**
 * Quantizes `rows` rows of K floats into `out` (quantRowBytes each), as ggml's reference
 * quantizers do: Q8_0 d = max|x| / 127, q = round(x / d); Q4_0 d = (the x of largest |x|) / -8,
 * q = min(15, trunc(x / d + 8.5)). The scale is rounded to f16 after the q are computed.
 */
export function quantizeRows(dtype: QuantDtype, x: ArrayLike<number>, K: number, out: Uint8Array): void {
  const rows = x.length / K, nb = Math.ceil(K / QUANT_BLOCK), bb = QUANT_BLOCK_BYTES[dtype];
  if (!Number.isInteger(rows) || out.length !== rows * nb * bb) throw new RangeError(`quantizeRows: ${x.length} values are not whole rows of ${K}, or the output is not ${rows * nb * bb} bytes`);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const block = new Float32Array(QUANT_BLOCK);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const at = (r * nb + b) * bb, k0 = b * QUANT_BLOCK;
      block.fill(0);
      for (let i = 0; i < QUANT_BLOCK && k0 + i < K; i++) block[i] = x[r * K + k0 + i]!;
      if (dtype === "q8_0") {
        let amax = 0;
        for (const v of block) amax = Math.max(amax, Math.abs(v));
        const d = Math.fround(amax / 127), id = d ? Math.fround(1 / d) : 0;
        view.setUint16(at, f32ToF16(d), true);
        for (let i = 0; i < QUANT_BLOCK; i++) view.setInt8(at + 2 + i, roundAway(Math.fround(block[i]! * id)));
      } else {
        let amax = 0, max = 0;
        for (const v of block) if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; }
        const d = Math.fround(max / -8), id = d ? Math.fround(1 / d) : 0;
        view.setUint16(at, f32ToF16(d), true);
        for (let j = 0; j < 16; j++) {
          const q0 = Math.min(15, Math.trunc(Math.fround(Math.fround(block[j]! * id) + 8.5)));
          const q1 = Math.min(15, Math.trunc(Math.fround(Math.fround(block[j + 16]! * id) + 8.5)));
          out[at + 2 + j] = q0 | (q1 << 4);
        }
      }
    }
  }
}

/** The rows back as floats (what the kernels compute with). */
export function dequantizeRows(dtype: QuantDtype, bytes: Uint8Array, K: number): Float32Array {
  const nb = Math.ceil(K / QUANT_BLOCK), bb = QUANT_BLOCK_BYTES[dtype];
  const rows = bytes.length / (nb * bb);
  if (!Number.isInteger(rows)) throw new RangeError(`dequantizeRows: ${bytes.length} bytes are not whole rows of ${K} ${dtype} weights`);
  const out = new Float32Array(rows * K);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < K; k++) {
      const at = (r * nb + Math.floor(k / QUANT_BLOCK)) * bb, j = k % QUANT_BLOCK;
      const d = f16ToF32(view.getUint16(at, true));
      const q = dtype === "q8_0" ? view.getInt8(at + 2 + j) : (j < 16 ? bytes[at + 2 + j]! & 15 : bytes[at + 2 + j - 16]! >> 4) - 8;
      out[r * K + k] = Math.fround(d * q);
    }
  }
  return out;
}

/** C's roundf: halves away from zero. */
function roundAway(v: number): number {
  return v >= 0 ? Math.floor(v + 0.5) : -Math.floor(-v + 0.5);
}
