import { fmadd, hsum4x4, load1, load4 } from "../simd";

// The dot-product ("NT") microkernel family: C[r][c] = alpha · dot(a_r, b_c) over n elements,
// where every a row (f32) and b row (of element type B: f32, bf16 as u16, or i8, widened in
// registers) is contiguous (q·kᵀ scores, x·Wᵀ linear layers).
// One signature for the family: row pointers, length, destination with its row pitch in bytes,
// alpha, and whether to add to what the destination holds. Tiles: 4x2 (8 accumulators, six
// loads per eight FMAs), 4x1, 3x3, 2x4, 1x4, 1x1. Any n: a 4-float SIMD body plus a scalar tail. The 4-row
// tiles also take a row count: a tile of the last 1-3 rows of a matrix is computed on a0..a3 as
// given (the caller repeats a valid row for the missing ones) and stores only its first `rows`
// rows, so a matrix's row tail costs one tile, not one pass over b per row. The 4x2 and 1x4
// tiles can also store their columns apart (c1Offset, cStride; adjacent by default): the paged
// attention reads a page's keys from two or four places at once.

/** c = value, or with `accumulate` c += value (a K slice's partial sum, a fused residual add). */
// @ts-ignore: decorator
@inline export function finish(c: usize, value: f32, accumulate: bool): void {
  store<f32>(c, accumulate ? load<f32>(c) + value : value);
}

/** Element i of four T rows, widened to f32 lanes 0-3 (a tile's scalar tail). */
// @ts-ignore: decorator
@inline function lanes4<T>(a0: usize, a1: usize, a2: usize, a3: usize, i: usize): v128 {
  let x = f32x4.splat(load1<T>(a0, i));
  x = f32x4.replace_lane(x, 1, load1<T>(a1, i));
  x = f32x4.replace_lane(x, 2, load1<T>(a2, i));
  return f32x4.replace_lane(x, 3, load1<T>(a3, i));
}

/** A row's four results (lanes 0-3) at c, c + cStride, c + 2·cStride, c + 3·cStride: one vector store when side by side. */
// @ts-ignore: decorator
@inline function finish4(c: usize, cStride: usize, row: v128, accumulate: bool): void {
  if (cStride == 4) {
    if (accumulate) row = f32x4.add(row, v128.load(c));
    v128.store(c, row);
  } else {
    finish(c, f32x4.extract_lane(row, 0), accumulate);
    finish(c + cStride, f32x4.extract_lane(row, 1), accumulate);
    finish(c + 2 * cStride, f32x4.extract_lane(row, 2), accumulate);
    finish(c + 3 * cStride, f32x4.extract_lane(row, 3), accumulate);
  }
}

// @ts-ignore: decorator
@inline export function dotnt_4x2<B>(
  a0: usize, a1: usize, a2: usize, a3: usize, b0: usize, b1: usize, n: i32,
  c: usize, ldc: usize, alpha: f32, accumulate: bool, rows: i32, c1Offset: usize = 4,
): void {
  let c00 = f32x4.splat(0), c10 = f32x4.splat(0), c20 = f32x4.splat(0), c30 = f32x4.splat(0);
  let c01 = f32x4.splat(0), c11 = f32x4.splat(0), c21 = f32x4.splat(0), c31 = f32x4.splat(0);
  const body = <usize>(n & ~3);
  for (let i: usize = 0; i < body; i += 4) {
    const o = i << 2;
    const k0 = load4<B>(b0, i), k1 = load4<B>(b1, i);
    let x = v128.load(a0 + o);
    c00 = fmadd(x, k0, c00); c01 = fmadd(x, k1, c01);
    x = v128.load(a1 + o);
    c10 = fmadd(x, k0, c10); c11 = fmadd(x, k1, c11);
    x = v128.load(a2 + o);
    c20 = fmadd(x, k0, c20); c21 = fmadd(x, k1, c21);
    x = v128.load(a3 + o);
    c30 = fmadd(x, k0, c30); c31 = fmadd(x, k1, c31);
  }
  let col0 = hsum4x4(c00, c10, c20, c30);
  let col1 = hsum4x4(c01, c11, c21, c31);
  for (let i = body, end = <usize>n; i < end; i++) {
    const x = lanes4<f32>(a0, a1, a2, a3, i);
    col0 = fmadd(x, f32x4.splat(load1<B>(b0, i)), col0);
    col1 = fmadd(x, f32x4.splat(load1<B>(b1, i)), col1);
  }
  col0 = f32x4.mul(col0, f32x4.splat(alpha));
  col1 = f32x4.mul(col1, f32x4.splat(alpha));
  finish(c, f32x4.extract_lane(col0, 0), accumulate);
  finish(c + c1Offset, f32x4.extract_lane(col1, 0), accumulate);
  if (rows > 1) {
    finish(c + ldc, f32x4.extract_lane(col0, 1), accumulate);
    finish(c + ldc + c1Offset, f32x4.extract_lane(col1, 1), accumulate);
  }
  if (rows > 2) {
    finish(c + 2 * ldc, f32x4.extract_lane(col0, 2), accumulate);
    finish(c + 2 * ldc + c1Offset, f32x4.extract_lane(col1, 2), accumulate);
  }
  if (rows > 3) {
    finish(c + 3 * ldc, f32x4.extract_lane(col0, 3), accumulate);
    finish(c + 3 * ldc + c1Offset, f32x4.extract_lane(col1, 3), accumulate);
  }
}

// @ts-ignore: decorator
@inline export function dotnt_4x1<B>(
  a0: usize, a1: usize, a2: usize, a3: usize, b0: usize, n: i32,
  c: usize, ldc: usize, alpha: f32, accumulate: bool, rows: i32,
): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  const body = <usize>(n & ~3);
  for (let i: usize = 0; i < body; i += 4) {
    const o = i << 2;
    const k0 = load4<B>(b0, i);
    c0 = fmadd(v128.load(a0 + o), k0, c0);
    c1 = fmadd(v128.load(a1 + o), k0, c1);
    c2 = fmadd(v128.load(a2 + o), k0, c2);
    c3 = fmadd(v128.load(a3 + o), k0, c3);
  }
  let col = hsum4x4(c0, c1, c2, c3);
  for (let i = body, end = <usize>n; i < end; i++) {
    col = fmadd(lanes4<f32>(a0, a1, a2, a3, i), f32x4.splat(load1<B>(b0, i)), col);
  }
  col = f32x4.mul(col, f32x4.splat(alpha));
  finish(c, f32x4.extract_lane(col, 0), accumulate);
  if (rows > 1) finish(c + ldc, f32x4.extract_lane(col, 1), accumulate);
  if (rows > 2) finish(c + 2 * ldc, f32x4.extract_lane(col, 2), accumulate);
  if (rows > 3) finish(c + 3 * ldc, f32x4.extract_lane(col, 3), accumulate);
}

/**
 * Three a rows against three b rows (9 accumulators, six loads per nine FMAs): a group of 3 query
 * heads (SmolLM2), or the last 3 rows of 7 (Qwen2.5-0.5B), without the repeated fourth row a
 * 4-row tile would compute. Column k's results land at c + k·cStride (row r: + r·ldc); each
 * result is reduced exactly as the 4-row tiles reduce it (the same hsum4x4 lane, the tail after).
 */
// @ts-ignore: decorator
@inline export function dotnt_3x3<B>(
  a0: usize, a1: usize, a2: usize, b0: usize, b1: usize, b2: usize, n: i32,
  c: usize, ldc: usize, alpha: f32, accumulate: bool, cStride: usize = 4,
): void {
  let c00 = f32x4.splat(0), c10 = f32x4.splat(0), c20 = f32x4.splat(0);
  let c01 = f32x4.splat(0), c11 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c02 = f32x4.splat(0), c12 = f32x4.splat(0), c22 = f32x4.splat(0);
  const body = <usize>(n & ~3);
  for (let i: usize = 0; i < body; i += 4) {
    const o = i << 2;
    const k0 = load4<B>(b0, i), k1 = load4<B>(b1, i), k2 = load4<B>(b2, i);
    let x = v128.load(a0 + o);
    c00 = fmadd(x, k0, c00); c01 = fmadd(x, k1, c01); c02 = fmadd(x, k2, c02);
    x = v128.load(a1 + o);
    c10 = fmadd(x, k0, c10); c11 = fmadd(x, k1, c11); c12 = fmadd(x, k2, c12);
    x = v128.load(a2 + o);
    c20 = fmadd(x, k0, c20); c21 = fmadd(x, k1, c21); c22 = fmadd(x, k2, c22);
  }
  let col0 = hsum4x4(c00, c10, c20, c20);
  let col1 = hsum4x4(c01, c11, c21, c21);
  let col2 = hsum4x4(c02, c12, c22, c22);
  for (let i = body, end = <usize>n; i < end; i++) {
    const x = lanes4<f32>(a0, a1, a2, a2, i);
    col0 = fmadd(x, f32x4.splat(load1<B>(b0, i)), col0);
    col1 = fmadd(x, f32x4.splat(load1<B>(b1, i)), col1);
    col2 = fmadd(x, f32x4.splat(load1<B>(b2, i)), col2);
  }
  const av = f32x4.splat(alpha);
  col0 = f32x4.mul(col0, av); col1 = f32x4.mul(col1, av); col2 = f32x4.mul(col2, av);
  finish(c, f32x4.extract_lane(col0, 0), accumulate);
  finish(c + ldc, f32x4.extract_lane(col0, 1), accumulate);
  finish(c + 2 * ldc, f32x4.extract_lane(col0, 2), accumulate);
  finish(c + cStride, f32x4.extract_lane(col1, 0), accumulate);
  finish(c + cStride + ldc, f32x4.extract_lane(col1, 1), accumulate);
  finish(c + cStride + 2 * ldc, f32x4.extract_lane(col1, 2), accumulate);
  finish(c + 2 * cStride, f32x4.extract_lane(col2, 0), accumulate);
  finish(c + 2 * cStride + ldc, f32x4.extract_lane(col2, 1), accumulate);
  finish(c + 2 * cStride + 2 * ldc, f32x4.extract_lane(col2, 2), accumulate);
}

/**
 * Two a rows against four b rows (8 accumulators, six loads per eight FMAs): a group of 2 query
 * heads (Qwen3, Gemma 2 2B), which a 4-row tile would compute twice over. Row r's four results
 * land at c + r·ldc, + cStride apart; each reduced exactly as the other tiles reduce it (one
 * accumulator, hsum4x4's tree, the tail after).
 */
// @ts-ignore: decorator
@inline export function dotnt_2x4<B>(
  a0: usize, a1: usize, b0: usize, b1: usize, b2: usize, b3: usize, n: i32,
  c: usize, ldc: usize, alpha: f32, accumulate: bool, cStride: usize = 4,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c02 = f32x4.splat(0), c03 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0), c12 = f32x4.splat(0), c13 = f32x4.splat(0);
  const body = <usize>(n & ~3);
  for (let i: usize = 0; i < body; i += 4) {
    const x0 = v128.load(a0 + (i << 2)), x1 = v128.load(a1 + (i << 2));
    let k = load4<B>(b0, i);
    c00 = fmadd(x0, k, c00); c10 = fmadd(x1, k, c10);
    k = load4<B>(b1, i);
    c01 = fmadd(x0, k, c01); c11 = fmadd(x1, k, c11);
    k = load4<B>(b2, i);
    c02 = fmadd(x0, k, c02); c12 = fmadd(x1, k, c12);
    k = load4<B>(b3, i);
    c03 = fmadd(x0, k, c03); c13 = fmadd(x1, k, c13);
  }
  let row0 = hsum4x4(c00, c01, c02, c03), row1 = hsum4x4(c10, c11, c12, c13);
  for (let i = body, end = <usize>n; i < end; i++) {
    const bl = lanes4<B>(b0, b1, b2, b3, i);
    row0 = fmadd(f32x4.splat(load<f32>(a0 + (i << 2))), bl, row0);
    row1 = fmadd(f32x4.splat(load<f32>(a1 + (i << 2))), bl, row1);
  }
  finish4(c, cStride, f32x4.mul(row0, f32x4.splat(alpha)), accumulate);
  finish4(c + ldc, cStride, f32x4.mul(row1, f32x4.splat(alpha)), accumulate);
}

/** One a row against four b rows; the four results land at c, c + cStride, c + 2·cStride, c + 3·cStride (side by side by default). */
// @ts-ignore: decorator
@inline export function dotnt_1x4<B>(
  a0: usize, b0: usize, b1: usize, b2: usize, b3: usize, n: i32,
  c: usize, alpha: f32, accumulate: bool, cStride: usize = 4,
): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  const body = <usize>(n & ~3);
  for (let i: usize = 0; i < body; i += 4) {
    const x = v128.load(a0 + (i << 2));
    c0 = fmadd(x, load4<B>(b0, i), c0);
    c1 = fmadd(x, load4<B>(b1, i), c1);
    c2 = fmadd(x, load4<B>(b2, i), c2);
    c3 = fmadd(x, load4<B>(b3, i), c3);
  }
  let row = hsum4x4(c0, c1, c2, c3);
  for (let i = body, end = <usize>n; i < end; i++) {
    row = fmadd(f32x4.splat(load<f32>(a0 + (i << 2))), lanes4<B>(b0, b1, b2, b3, i), row);
  }
  finish4(c, cStride, f32x4.mul(row, f32x4.splat(alpha)), accumulate);
}

/**
 * One a row, one b row. It reduces exactly as the larger tiles do (one accumulator, the same
 * horizontal sum, the tail added with fmadd after it), so a result does not depend on which
 * tile computed it: splitting work over ranges or threads gives bit-identical outputs.
 */
// @ts-ignore: decorator
@inline export function dotnt_1x1<B>(a0: usize, b0: usize, n: i32, c: usize, alpha: f32, accumulate: bool): void {
  let c0 = f32x4.splat(0);
  const body = <usize>(n & ~3);
  for (let i: usize = 0; i < body; i += 4) c0 = fmadd(v128.load(a0 + (i << 2)), load4<B>(b0, i), c0);
  let sum = hsum4x4(c0, c0, c0, c0);
  for (let i = body, end = <usize>n; i < end; i++) {
    sum = fmadd(f32x4.splat(load<f32>(a0 + (i << 2))), f32x4.splat(load1<B>(b0, i)), sum);
  }
  finish(c, f32x4.extract_lane(f32x4.mul(sum, f32x4.splat(alpha)), 0), accumulate);
}

// GEMV (decode): short weight rows stream from memory, so what matters is keeping the memory
// busy with few instructions per byte. bf16 rows, eight weights per load: a u32 lane holds two
// bf16 (w[2i] low, w[2i+1] high), so `lane << 16` is w[2i] as f32 and `(lane >>> 16) << 16` is
// w[2i+1]. Splitting the a row into its even and odd elements (once per row, shared by all the
// b rows) replaces widening each weight: per eight weights one load, three shifts and two FMAs.
// Not `lane & 0xFFFF0000`: its mask took a register, and TurboFan (Node 20) then kept one of the
// eight accumulators on the stack (that chain's every FMA waiting on a store and a load); the
// shifts need none: SmolLM2 bf16 decode 1.43x (scratch/ab.ts, the loop read in --print-wasm-code).

// @ts-ignore: decorator
@inline function evens(x0: v128, x1: v128): v128 { return v128.shuffle<f32>(x0, x1, 0, 2, 4, 6); }
// @ts-ignore: decorator
@inline function odds(x0: v128, x1: v128): v128 { return v128.shuffle<f32>(x0, x1, 1, 3, 5, 7); }
// @ts-ignore: decorator
@inline function lowBf16(w: v128): v128 { return i32x4.shl(w, 16); }
// @ts-ignore: decorator
@inline function highBf16(w: v128): v128 { return i32x4.shl(i32x4.shr_u(w, 16), 16); }

/**
 * An f32 row's elements, each group of 8 as its 4 even then its 4 odd elements (what evens and
 * odds give): done once per row for all the bf16 weight rows it meets (the bf16 GEMV kernels'
 * `split`), instead of two shuffles per 8 weights per row. Only the whole groups.
 */
// @ts-ignore: decorator
@inline export function splitEvenOdd(a0: usize, n: i32, out: usize): void {
  for (let i: usize = 0, end = <usize>(n & ~7); i < end; i += 8) {
    const xa = v128.load(a0 + (i << 2)), xb = v128.load(a0 + (i << 2), 16);
    v128.store(out + (i << 2), evens(xa, xb));
    v128.store(out + (i << 2), odds(xa, xb), 16);
  }
}

/**
 * GEMV weight rows per column block (rows ldw bytes long) for `rows` rows of x and a call's `span`
 * columns: the block's four quarters are the four streams the GEMV kernels read side by side.
 * One row of x: the whole span, so the four streams run from the call's start to its end (every
 * new block restarts them, ~0.7 us each from memory: SmolLM2 decode 1.06x bf16, 1.09x f32 over
 * 256-row blocks at 1 and 2 threads, scratch/ab.ts). More rows (sequences decoding together):
 * 256 rows, fewer when that passes 512 KB, so that the next x row finds the block still in the L2.
 */
// @ts-ignore: decorator
@inline export function gemvBlockRows(ldw: usize, rows: i32, span: i32): i32 {
  if (rows == 1) return max(1, span);
  return <i32>min<usize>(256, max<usize>(16, (<usize>(512 << 10) / ldw) & ~3));
}

/**
 * GEMV rows of f32 or f16 weights: one a row against two b rows anywhere (two of the GEMV's four
 * streams from memory), 8 elements a step in two accumulators per row, the a row loaded once for
 * both. Two rows, not four: four rows' eight accumulators, eight weight vectors and the a row
 * did not fit V8's vector registers, and TurboFan kept two accumulators on the stack (each FMA
 * then waiting on a store and a load); two at a time: SmolLM2 decode 1.11-1.14x f32, 1.11x f16
 * at 1 thread (scratch/ab.ts). dotnt_1x1_gemv reduces a row exactly as this does.
 */
// @ts-ignore: decorator
@inline export function dotnt_1x2_gemv<B>(a0: usize, b0: usize, b1: usize, n: i32, c0: usize, c1: usize, accumulate: bool): void {
  let p0 = f32x4.splat(0), q0 = f32x4.splat(0), p1 = f32x4.splat(0), q1 = f32x4.splat(0);
  const body8 = <usize>(n & ~7);
  let i: usize = 0;
  for (; i < body8; i += 8) {
    const a = a0 + (i << 2);
    const x0 = v128.load(a), x1 = v128.load(a, 16);
    p0 = fmadd(x0, load4<B>(b0, i), p0); q0 = fmadd(x1, load4<B>(b0, i + 4), q0);
    p1 = fmadd(x0, load4<B>(b1, i), p1); q1 = fmadd(x1, load4<B>(b1, i + 4), q1);
  }
  gemvRowEnd<B>(a0, b0, n, c0, accumulate, i, p0, q0);
  gemvRowEnd<B>(a0, b1, n, c1, accumulate, i, p1, q1);
}

/** One row of dotnt_1x2_gemv, reduced as there. */
// @ts-ignore: decorator
@inline export function dotnt_1x1_gemv<B>(a0: usize, b0: usize, n: i32, c: usize, accumulate: bool): void {
  let p = f32x4.splat(0), q = f32x4.splat(0);
  const body8 = <usize>(n & ~7);
  let i: usize = 0;
  for (; i < body8; i += 8) {
    const a = a0 + (i << 2);
    p = fmadd(v128.load(a), load4<B>(b0, i), p); q = fmadd(v128.load(a, 16), load4<B>(b0, i + 4), q);
  }
  gemvRowEnd<B>(a0, b0, n, c, accumulate, i, p, q);
}

/** The end of a GEMV row from element i (a multiple of 8): a group of 4, the reduction, the scalar tail. */
// @ts-ignore: decorator
@inline function gemvRowEnd<B>(a0: usize, b0: usize, n: i32, c: usize, accumulate: bool, i: usize, p: v128, q: v128): void {
  if (i < <usize>(n & ~3)) { p = fmadd(v128.load(a0 + (i << 2)), load4<B>(b0, i), p); i += 4; }
  const s = f32x4.add(p, q);
  let sum = hsum4x4(s, s, s, s);
  for (let end = <usize>n; i < end; i++) sum = fmadd(f32x4.splat(load<f32>(a0 + (i << 2))), f32x4.splat(load1<B>(b0, i)), sum);
  finish(c, f32x4.extract_lane(sum, 0), accumulate);
}

/**
 * GEMV rows of bf16 weights: dotnt_1x2_gemv's steps on four b rows (with no mask or widening
 * constant they fit the registers) and the a row split into even and odd elements (split): per
 * 8 weights one load, three shifts and two FMAs per row.
 */
// @ts-ignore: decorator
@inline export function dotnt_1x4_gemv_bf16(a0: usize, split: usize, b0: usize, b1: usize, b2: usize, b3: usize, n: i32, c0: usize, c1: usize, c2: usize, c3: usize, accumulate: bool): void {
  let e0 = f32x4.splat(0), o0 = f32x4.splat(0), e1 = f32x4.splat(0), o1 = f32x4.splat(0);
  let e2 = f32x4.splat(0), o2 = f32x4.splat(0), e3 = f32x4.splat(0), o3 = f32x4.splat(0);
  const body8 = <usize>(n & ~7);
  let i: usize = 0;
  for (; i < body8; i += 8) {
    const a = split + (i << 2), o = i << 1;
    const x0 = v128.load(a), x1 = v128.load(a, 16);
    let w = v128.load(b0 + o); e0 = fmadd(x0, lowBf16(w), e0); o0 = fmadd(x1, highBf16(w), o0);
    w = v128.load(b1 + o); e1 = fmadd(x0, lowBf16(w), e1); o1 = fmadd(x1, highBf16(w), o1);
    w = v128.load(b2 + o); e2 = fmadd(x0, lowBf16(w), e2); o2 = fmadd(x1, highBf16(w), o2);
    w = v128.load(b3 + o); e3 = fmadd(x0, lowBf16(w), e3); o3 = fmadd(x1, highBf16(w), o3);
  }
  gemvRowEnd<u16>(a0, b0, n, c0, accumulate, i, e0, o0);
  gemvRowEnd<u16>(a0, b1, n, c1, accumulate, i, e1, o1);
  gemvRowEnd<u16>(a0, b2, n, c2, accumulate, i, e2, o2);
  gemvRowEnd<u16>(a0, b3, n, c3, accumulate, i, e3, o3);
}

/** One row of dotnt_1x4_gemv_bf16, reduced as there. */
// @ts-ignore: decorator
@inline export function dotnt_1x1_gemv_bf16(a0: usize, split: usize, b0: usize, n: i32, c: usize, accumulate: bool): void {
  let e = f32x4.splat(0), o = f32x4.splat(0);
  const body8 = <usize>(n & ~7);
  let i: usize = 0;
  for (; i < body8; i += 8) {
    const a = split + (i << 2), w = v128.load(b0 + (i << 1));
    e = fmadd(v128.load(a), lowBf16(w), e); o = fmadd(v128.load(a, 16), highBf16(w), o);
  }
  gemvRowEnd<u16>(a0, b0, n, c, accumulate, i, e, o);
}
