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
