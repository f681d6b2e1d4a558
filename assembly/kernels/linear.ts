import { BF16, F16, fmadd, hsum4x4, isBf16, widenRow } from "../simd";
import { LINEAR_ACCUMULATE } from "../abi";
import { dotnt_1x1_gemv, dotnt_1x1_gemv_bf16, dotnt_1x2_gemv, dotnt_1x4_gemv_bf16, finish, gemvBlockRows, splitEvenOdd } from "./dot-nt";

// Linear layer y[M, N] = x[M, K] · Wᵀ (+ b), or with `accumulate` y = (y + x · Wᵀ) (+ b) (a residual
// add fused into the store), W stored [N, K] (PyTorch / Hugging Face layout) in
// f32, bf16 or f16 (16-bit weights stay 16-bit in memory: decode streams half the bytes),
// so both operands are read along K: the dot-product microkernels need no packed copy of W.
// GEMM (M >= 4): K is cut into KC-float slices so that a 4-row x tile stays in L1 while NB rows
// of W (NB · KC · 4 bytes) stay in L2 for all row tiles; the last 1-3 rows are one partial tile,
// so callers need not pad M to a multiple of 4. 16-bit weights are first widened into an f32
// panel of those NB x KC weights in the call's scratch (linear_panel_scratch_bytes), once for
// all row tiles, instead of in registers once per tile: the same values in the same order, so
// the same bits, for a fraction of the conversions (linear-quant.ts dequantizes Q8_0 / Q4_0
// blocks into the same panels for gemmPanel). GEMV (M < 4): W streams once per x row, from four
// distant places at a time (gemvRows). Output columns [nBegin, nEnd) can go to different threads.

/** K slice and weight rows per panel (GEMM); KC is whole 32-blocks, so quantized rows slice on block bounds (linear-quant.ts). */
export const KC: i32 = 512;
export const NB: i32 = 64;

/** The linear layer with f32 weights. */
export function linear_f32(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linear<f32>(x, w, bias, y, M, N, K, nBegin, nEnd, (flags & LINEAR_ACCUMULATE) != 0, scratch);
}

/** The linear layer with bfloat16 weights (half the bytes to stream), widened in registers. */
export function linear_bf16(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linear<BF16>(x, w, bias, y, M, N, K, nBegin, nEnd, (flags & LINEAR_ACCUMULATE) != 0, scratch);
}

/** The linear layer with IEEE half (f16) weights, widened in registers. */
export function linear_f16(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linear<F16>(x, w, bias, y, M, N, K, nBegin, nEnd, (flags & LINEAR_ACCUMULATE) != 0, scratch);
}

/** Bytes of scratch a call takes: an f32 weight panel (GEMM of 16-bit weights) then x's packed rows (GEMM), or GEMV's x rows split for bf16 (splitEvenOdd). */
export function linear_panel_scratch_bytes(M: i32, K: i32): i32 {
  return M >= 4 ? <i32>(PACKED_X_OFFSET + packedRowsBytes(M, min(KC, K))) : M * K * 4;
}

/**
 * y[n] (+)= x·w_n for weight rows [n0, n1) (a block of gemvBlockRows): rows from the four
 * quarters of the block, four sequential streams from memory at once (64 rows of K = 576 bf16
 * are 72 KB apart), bf16 four rows a step, f32 and f16 two (dotnt_1x2_gemv: the first two
 * quarters' rows, then the last two's), the x row loaded once per step. From memory (a model's weights are
 * past the L2) four streams kept the prefetchers ahead where two rows 32 apart (short rows) or
 * four adjacent ones (long rows) left them behind: GEMV 1536x576 1.34x f32, 1.21x bf16; 896x4864
 * 1.3x f32, 1.35x bf16 (scratch/gemvab.ts, relaxed build; level from the L2). The block's last
 * 1-3 rows go one at a time; every row reduces as its one-row kernel does, so a split over
 * threads gives the same bits.
 */
// @ts-ignore: decorator
@inline function gemvRows<W>(a0: usize, split: usize, w: usize, ldw: usize, yRow: usize, n0: i32, n1: i32, kLen: i32, accumulate: bool): void {
  const q = (n1 - n0) >> 2, dw = <usize>q * ldw, dy = <usize>q << 2;
  for (let n = n0; n < n0 + q; n++) {
    const b0 = w + <usize>n * ldw, c0 = yRow + (<usize>n << 2);
    if (isBf16<W>()) dotnt_1x4_gemv_bf16(a0, split, b0, b0 + dw, b0 + 2 * dw, b0 + 3 * dw, kLen, c0, c0 + dy, c0 + 2 * dy, c0 + 3 * dy, accumulate);
    else {
      dotnt_1x2_gemv<W>(a0, b0, b0 + dw, kLen, c0, c0 + dy, accumulate);
      dotnt_1x2_gemv<W>(a0, b0 + 2 * dw, b0 + 3 * dw, kLen, c0 + 2 * dy, c0 + 3 * dy, accumulate);
    }
  }
  for (let n = n0 + 4 * q; n < n1; n++) {
    if (isBf16<W>()) dotnt_1x1_gemv_bf16(a0, split, w + <usize>n * ldw, kLen, yRow + (<usize>n << 2), accumulate);
    else dotnt_1x1_gemv<W>(a0, w + <usize>n * ldw, kLen, yRow + (<usize>n << 2), accumulate);
  }
}

/** rows x kLen weights (rows ldw bytes apart) widened to f32 at `panel`, rows kLen·4 bytes apart. */
// @ts-ignore: decorator
@inline function widenPanel<W>(w: usize, ldw: usize, rows: i32, kLen: i32, panel: usize): void {
  for (let r = 0; r < rows; r++) widenRow<W>(w + <usize>r * ldw, kLen, panel + (<usize>r * <usize>kLen << 2));
}

/** Bytes of a K slice of M rows of x packed by packRows: 4-row tiles of kLen floats rounded up to 4. */
// @ts-ignore: decorator
@inline function packedRowsBytes(M: i32, kLen: i32): usize { return <usize>((M + TILE_ROWS - 1) / TILE_ROWS) * tileBytes(kLen); }

/** Rows of x a GEMM tile computes. */
const TILE_ROWS: i32 = 4;
/** Bytes of one packed tile of x: TILE_ROWS rows of kLen floats (rounded up to 4). */
// @ts-ignore: decorator
@inline function tileBytes(kLen: i32): usize { return <usize>((kLen + 3) & ~3) * <usize>TILE_ROWS << 2; }

/**
 * x[:, kOff..kOff + kLen) (rows ldx bytes apart) at dst as 4-row tiles (a tile's missing rows
 * repeat its last row): each 4 floats of the 4 rows together, 64 bytes (the last 1-3 floats
 * zero-padded), so a tile's loads are one address and offsets (V8 spends an instruction on every
 * distinct address: the 4x2 step took 6 of its 23 on them).
 */
// @ts-ignore: decorator
@inline export function packRows(x: usize, kOff: usize, ldx: usize, M: i32, kLen: i32, dst: usize): void {
  const body = kLen & ~3, tb = tileBytes(kLen), step = <usize>TILE_ROWS << 4;
  for (let m = 0; m < M; m += TILE_ROWS) {
    const t = dst + <usize>(m / TILE_ROWS) * tb;
    for (let r = 0; r < TILE_ROWS; r++) {
      const row = x + <usize>min(m + r, M - 1) * ldx + kOff, to = t + (<usize>r << 4);
      for (let i = 0; i < body; i += 4) v128.store(to + <usize>(i >> 2) * step, v128.load(row + (<usize>i << 2)));
      if (body < kLen) {
        const tail = to + <usize>(body >> 2) * step;
        v128.store(tail, f32x4.splat(0));
        for (let i = body; i < kLen; i++) store<f32>(tail + (<usize>(i - body) << 2), load<f32>(row + (<usize>i << 2)));
      }
    }
  }
}

/** Lane r (0..3) of f. */
// @ts-ignore: decorator
@inline function laneOf(f: v128, r: i32): f32 {
  return r == 0 ? f32x4.extract_lane(f, 0) : r == 1 ? f32x4.extract_lane(f, 1) : r == 2 ? f32x4.extract_lane(f, 2) : f32x4.extract_lane(f, 3);
}

/** The first `rows` rows of column col (sums for rows 0..3 in its lanes) at c (rows ldc apart). */
// @ts-ignore: decorator
@inline function storeColumn(c: usize, ldc: usize, col: v128, rows: i32, accumulate: bool): void {
  for (let r = 0; r < rows; r++) finish(c + <usize>r * ldc, laneOf(col, r), accumulate);
}

/**
 * A packed tile of x (xp, packRows: 4 rows) against f32 weight rows b0 and b1 (or, one = true, b0
 * alone), kLen long: 8 accumulators, dot-nt 4x2's sums in its order (so its bits), the last 1-3
 * floats after the horizontal sums. (12 accumulators, 4x3 or 6x2, spill: V8 loads a step's every
 * vector before its FMAs, 1.8x slower.)
 */
// @ts-ignore: decorator
@inline function gemmTile(xp: usize, b0: usize, b1: usize, kLen: i32, c: usize, ldc: usize, accumulate: bool, rows: i32, one: bool): void {
  let c00 = f32x4.splat(0), c10 = f32x4.splat(0), c20 = f32x4.splat(0), c30 = f32x4.splat(0);
  let c01 = f32x4.splat(0), c11 = f32x4.splat(0), c21 = f32x4.splat(0), c31 = f32x4.splat(0);
  const body = <usize>(kLen & ~3);
  for (let o: usize = 0, end = body << 2; o < end; o += 16) {
    const xo = xp + (o << 2), k0 = v128.load(b0 + o);
    if (one) {
      c00 = fmadd(v128.load(xo), k0, c00); c10 = fmadd(v128.load(xo, 16), k0, c10);
      c20 = fmadd(v128.load(xo, 32), k0, c20); c30 = fmadd(v128.load(xo, 48), k0, c30);
      continue;
    }
    const k1 = v128.load(b1 + o);
    let x = v128.load(xo);
    c00 = fmadd(x, k0, c00); c01 = fmadd(x, k1, c01);
    x = v128.load(xo, 16);
    c10 = fmadd(x, k0, c10); c11 = fmadd(x, k1, c11);
    x = v128.load(xo, 32);
    c20 = fmadd(x, k0, c20); c21 = fmadd(x, k1, c21);
    x = v128.load(xo, 48);
    c30 = fmadd(x, k0, c30); c31 = fmadd(x, k1, c31);
  }
  let col0 = hsum4x4(c00, c10, c20, c30), col1 = one ? col0 : hsum4x4(c01, c11, c21, c31);
  for (let i = body, end = <usize>kLen; i < end; i++) {
    const t = xp + (body << 4) + ((i - body) << 2);
    const x = f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(load<f32>(t)), 1, load<f32>(t, 16)), 2, load<f32>(t, 32)), 3, load<f32>(t, 48));
    col0 = fmadd(x, f32x4.splat(load<f32>(b0 + (i << 2))), col0);
    if (!one) col1 = fmadd(x, f32x4.splat(load<f32>(b1 + (i << 2))), col1);
  }
  storeColumn(c, ldc, col0, rows, accumulate);
  if (!one) storeColumn(c + 4, ldc, col1, rows, accumulate);
}

/**
 * Every 4-row tile of packed x (xp: packRows of M rows, kLen) against f32 weight rows [n0, n1)
 * (row n at w + n·ldw), two at a time (a last one alone).
 */
// @ts-ignore: decorator
@inline function gemmTiles(xp: usize, M: i32, w: usize, ldw: usize, y: usize, ldy: usize, n0: i32, n1: i32, kLen: i32, accumulate: bool): void {
  const tb = tileBytes(kLen);
  for (let m = 0; m < M; m += TILE_ROWS) {
    const rows = min(TILE_ROWS, M - m), xt = xp + <usize>(m / TILE_ROWS) * tb, yRow = y + <usize>m * ldy;
    let n = n0;
    for (; n + 2 <= n1; n += 2) {
      const b0 = w + <usize>n * ldw;
      gemmTile(xt, b0, b0 + ldw, kLen, yRow + (<usize>n << 2), ldy, accumulate, rows, false);
    }
    if (n < n1) gemmTile(xt, w + <usize>n * ldw, 0, kLen, yRow + (<usize>n << 2), ldy, accumulate, rows, true);
  }
}

/** Where a GEMM call's packed x goes in its scratch: after an f32 panel of NB x KC weights. */
export const PACKED_X_OFFSET: usize = <usize>NB * <usize>KC * 4;

/**
 * Every row tile of packed x (packRows at scratch + PACKED_X_OFFSET) against an f32 panel of
 * weight rows [n0, n1) at `panel` (row n at panel + (n - n0)·kLen·4): 16-bit weights widened
 * there, or quantized blocks dequantized there (linear-quant.ts).
 */
// @ts-ignore: decorator
@inline export function gemmPanel(xp: usize, M: i32, panel: usize, y: usize, ldy: usize, n0: i32, n1: i32, kLen: i32, accumulate: bool): void {
  gemmTiles(xp, M, panel - (<usize>n0 * <usize>kLen << 2), <usize>kLen << 2, y, ldy, n0, n1, kLen, accumulate);
}

// @ts-ignore: decorator
@inline function linear<W>(
  x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, addToY: bool, scratch: usize,
): void {
  const ldx = <usize>K << 2;
  const ldw = <usize>K * sizeof<W>();
  const ldy = <usize>N << 2;
  const kc = M >= 4 ? KC : K;
  const nbl = M < 4 ? gemvBlockRows(ldw, M, nEnd - nBegin) : NB;
  // bf16 GEMV (the even/odd kernel): each x row split into even and odd elements once (in the
  // call's scratch, linear_panel_scratch_bytes), for all weight rows.
  const split = M < 4 && isBf16<W>();
  if (split) for (let m = 0; m < M; m++) splitEvenOdd(x + <usize>m * ldx, K, scratch + <usize>m * ldx);
  for (let k0 = 0; k0 < K; k0 += kc) {
    const kLen = min(kc, K - k0);
    const accumulate = k0 > 0 || addToY;
    const kOff = <usize>k0 << 2;
    const wOff = <usize>k0 * sizeof<W>();
    const xp = scratch + PACKED_X_OFFSET;
    if (M >= 4) packRows(x, kOff, ldx, M, kLen, xp);
    for (let n0 = nBegin; n0 < nEnd; n0 += nbl) {
      const n1 = min(n0 + nbl, nEnd);
      if (M < 4) {
        for (let m = 0; m < M; m++) gemvRows<W>(x + <usize>m * ldx + kOff, split ? scratch + <usize>m * ldx : 0, w + wOff, ldw, y + <usize>m * ldy, n0, n1, kLen, accumulate);
        continue;
      }
      if (sizeof<W>() == 2) {
        widenPanel<W>(w + <usize>n0 * ldw + wOff, ldw, n1 - n0, kLen, scratch);
        gemmPanel(xp, M, scratch, y, ldy, n0, n1, kLen, accumulate);
      } else {
        gemmTiles(xp, M, w + wOff, ldw, y, ldy, n0, n1, kLen, accumulate);
      }
    }
  }
  if (bias != 0) {
    for (let m = 0; m < M; m++) {
      const yRow = y + <usize>m * ldy;
      let n = nBegin;
      for (; n + 4 <= nEnd; n += 4) {
        const o = <usize>n << 2;
        v128.store(yRow + o, f32x4.add(v128.load(yRow + o), v128.load(bias + o)));
      }
      for (; n < nEnd; n++) {
        const o = <usize>n << 2;
        store<f32>(yRow + o, load<f32>(yRow + o) + load<f32>(bias + o));
      }
    }
  }
}
