// The KV cache's page layout and the kernel that writes into it. A page holds `pageSize` tokens
// of one layer: K then V, each head-major [numKvHeads][pageSize][headDim] in the storage type;
// for int8, then the f32 scales of K and of V, each [numKvHeads][pageSize], 16-byte aligned.
// The storage codes come from the one kernel table (abi.ts, generated).
import { KV_BF16, KV_F16, KV_F32, KV_INT8 } from "../abi";

// @ts-ignore: decorator
@inline function kvElemBytes(dtype: i32): i32 { return dtype == KV_F32 ? 4 : dtype == KV_INT8 ? 1 : 2; }

/** Bytes of one page. */
export function kv_page_bytes(numKvHeads: i32, headDim: i32, pageSize: i32, dtype: i32): i32 {
  const data = 2 * numKvHeads * pageSize * headDim * kvElemBytes(dtype);
  return dtype == KV_INT8 ? kv_scale_offset(numKvHeads, headDim, pageSize) + 2 * numKvHeads * pageSize * 4 : data;
}

/** Byte offset of the int8 scales in a page (after K and V data, 16-byte aligned). */
export function kv_scale_offset(numKvHeads: i32, headDim: i32, pageSize: i32): i32 {
  return (2 * numKvHeads * pageSize * headDim + 15) & ~15;
}

/**
 * Stores rows [rowBegin, rowEnd) of K and V (f32, token-major [rows, numKvHeads, headDim], as the
 * projections leave them) at positions pos0 + row of a sequence whose block table (u32 page
 * addresses) is at `pages`, encoded as `dtype`: f16 rounded to nearest even and saturated at
 * ±65504 (see toF16); bf16 rounded to nearest even, NaN kept quiet; int8 per (token, head) row
 * with scale max|x| / 127 and q = round-half-up(x / scale) in double precision, as JavaScript's
 * Math.round (tests/kv-dtypes.test.ts checks the bits against that plain encoding).
 * The pages must exist; rows go to distinct slots, so row ranges may run on different threads.
 */
export function kv_write(k: usize, v: usize, rowBegin: i32, rowEnd: i32, numKvHeads: i32, headDim: i32, pages: usize, pageSize: i32, dtype: i32, pos0: i32): void {
  const elem = <usize>kvElemBytes(dtype);
  const headBytes = <usize>pageSize * <usize>headDim * elem;
  const vOffset = <usize>numKvHeads * headBytes;
  const scaleOffset = <usize>kv_scale_offset(numKvHeads, headDim, pageSize);
  const vScaleOffset = <usize>(numKvHeads * pageSize) << 2;
  const srcRow = <usize>headDim << 2;
  for (let r = rowBegin; r < rowEnd; r++) {
    const pos = pos0 + r;
    const page = <usize>load<u32>(pages + (<usize>(pos / pageSize) << 2));
    const slot = pos % pageSize;
    for (let h = 0; h < numKvHeads; h++) {
      const src = <usize>(r * numKvHeads + h) * srcRow;
      const dst = page + <usize>h * headBytes + <usize>slot * <usize>headDim * elem;
      if (dtype == KV_F32) {
        memory.copy(dst, k + src, srcRow);
        memory.copy(dst + vOffset, v + src, srcRow);
      } else if (dtype == KV_F16) {
        toF16(k + src, dst, headDim);
        toF16(v + src, dst + vOffset, headDim);
      } else if (dtype == KV_BF16) {
        toBf16(k + src, dst, headDim);
        toBf16(v + src, dst + vOffset, headDim);
      } else {
        const sc = page + scaleOffset + (<usize>(h * pageSize + slot) << 2);
        store<f32>(sc, toInt8(k + src, dst, headDim));
        store<f32>(sc + vScaleOffset, toInt8(v + src, dst + vOffset, headDim));
      }
    }
  }
}

/**
 * IEEE half, rounded to nearest even. Magnitudes that would round past the largest half (65504),
 * infinities included, are stored as ±65504: the kernels widen halves as finite numbers (one
 * multiply, simd.ts), so no value here may use the top exponent, except NaN (0x7e00, only from a
 * model already producing NaN, which the kernels then read as a large finite number).
 */
function toF16(src: usize, dst: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const b = load<u32>(src + (<usize>i << 2));
    const sign = (b >>> 16) & 0x8000, a = b & 0x7fffffff;
    let h: u32;
    if (a > 0x7f800000) h = 0x7e00;
    else if (a >= 0x477ff000) h = 0x7bff; // >= 65520: would round to infinity
    else if (a < 0x38800000) h = reinterpret<u32>(reinterpret<f32>(a) + 0.5) - 0x3f000000; // below 2^-14: a subnormal (or 0x400), rounded by the add
    else h = (a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13; // rebias 127 -> 15, round the 13 dropped bits
    store<u16>(dst + (<usize>i << 1), <u16>(sign | h));
  }
}

function toBf16(src: usize, dst: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const b = load<u32>(src + (<usize>i << 2));
    const h = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    store<u16>(dst + (<usize>i << 1), <u16>h);
  }
}

/** One row to int8; returns its scale. */
function toInt8(src: usize, dst: usize, n: i32): f32 {
  let m: f32 = 0;
  for (let i = 0; i < n; i++) m = max(m, abs(load<f32>(src + (<usize>i << 2))));
  const scale: f32 = m / 127;
  for (let i = 0; i < n; i++) {
    let q: f64 = 0;
    if (scale != 0) {
      const x = <f64>load<f32>(src + (<usize>i << 2)) / <f64>scale;
      const f = Math.floor(x);
      const r: f64 = x - f >= 0.5 ? f + 1 : f;
      q = min<f64>(127, max<f64>(-127, r));
    }
    store<i8>(dst + <usize>i, <i8><i32>q);
  }
  return scale;
}
