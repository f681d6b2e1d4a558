import { fmadd } from "../simd";

// The machine's limits for the roofline: how fast this build can read memory, and how many
// FLOPs it can issue with operands in registers.

/** Reads `bytes` (a multiple of 64) from ptr, `reps` times; returns a sum so the loads stay. */
export function probe_read(ptr: usize, bytes: i32, reps: i32): f32 {
  let a = f32x4.splat(0), b = f32x4.splat(0), c = f32x4.splat(0), d = f32x4.splat(0);
  const end = ptr + <usize>bytes;
  for (let rep = 0; rep < reps; rep++) {
    for (let p = ptr; p < end; p += 64) {
      a = f32x4.add(a, v128.load(p));
      b = f32x4.add(b, v128.load(p, 16));
      c = f32x4.add(c, v128.load(p, 32));
      d = f32x4.add(d, v128.load(p, 48));
    }
  }
  const s = f32x4.add(f32x4.add(a, b), f32x4.add(c, d));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

/** 12 independent multiply-add chains, `iters` times: 96 · iters FLOPs (a*b + c = 2 per lane). */
export function probe_fma(iters: i32): f32 {
  const m = f32x4.splat(0.999), k = f32x4.splat(0.001);
  let a0 = f32x4.splat(1), a1 = f32x4.splat(2), a2 = f32x4.splat(3), a3 = f32x4.splat(4);
  let a4 = f32x4.splat(5), a5 = f32x4.splat(6), a6 = f32x4.splat(7), a7 = f32x4.splat(8);
  let a8 = f32x4.splat(9), a9 = f32x4.splat(10), a10 = f32x4.splat(11), a11 = f32x4.splat(12);
  for (let i = 0; i < iters; i++) {
    a0 = fmadd(a0, m, k); a1 = fmadd(a1, m, k); a2 = fmadd(a2, m, k); a3 = fmadd(a3, m, k);
    a4 = fmadd(a4, m, k); a5 = fmadd(a5, m, k); a6 = fmadd(a6, m, k); a7 = fmadd(a7, m, k);
    a8 = fmadd(a8, m, k); a9 = fmadd(a9, m, k); a10 = fmadd(a10, m, k); a11 = fmadd(a11, m, k);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7)));
  const t = f32x4.add(s, f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11)));
  return f32x4.extract_lane(t, 0) + f32x4.extract_lane(t, 3);
}

/**
 * The packed integer panels' inner step (linear-quant-panels.ts) at its peak: a 7-bit dot of 16
 * byte products added into 16-bit sums, in 12 independent chains (each step's bytes are the chain's
 * sums, so nothing is loop-invariant and 12 cover the dot's latency), `iters` times: 384 · iters
 * operations (a product and an add each). Relaxed build (the simd build has no 7-bit dot: i16 dots
 * of 8 products instead).
 */
export function probe_dot_i7(iters: i32): i32 {
  const w = i8x16(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1);
  let a0 = i8x16.splat(1), a1 = i8x16.splat(2), a2 = i8x16.splat(3), a3 = i8x16.splat(4), a4 = i8x16.splat(5), a5 = i8x16.splat(6);
  let a6 = i8x16.splat(7), a7 = i8x16.splat(8), a8 = i8x16.splat(9), a9 = i8x16.splat(10), a10 = i8x16.splat(11), a11 = i8x16.splat(12);
  for (let i = 0; i < iters; i++) {
    a0 = dot7(a0, w); a1 = dot7(a1, w); a2 = dot7(a2, w); a3 = dot7(a3, w); a4 = dot7(a4, w); a5 = dot7(a5, w);
    a6 = dot7(a6, w); a7 = dot7(a7, w); a8 = dot7(a8, w); a9 = dot7(a9, w); a10 = dot7(a10, w); a11 = dot7(a11, w);
  }
  const s = i16x8.add(i16x8.add(i16x8.add(a0, a1), i16x8.add(a2, a3)), i16x8.add(i16x8.add(a4, a5), i16x8.add(a6, a7)));
  const t = i16x8.add(s, i16x8.add(i16x8.add(a8, a9), i16x8.add(a10, a11)));
  return i16x8.extract_lane_s(t, 0) + i16x8.extract_lane_s(t, 7);
}

// @ts-ignore: decorator
@inline function dot7(h: v128, w: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.add(h, i16x8.relaxed_dot_i8x16_i7x16_s(h, w));
  return i32x4.add(h, i32x4.dot_i16x8_s(h, w));
}
