import { BF16, F16, widenRow } from "../simd";
import { LINEAR_ACCUMULATE } from "../abi";
import { dotnt_1x1_gemv, dotnt_1x1_gemv_bf16, dotnt_1x2_gemv, dotnt_1x4_gemv_bf16, dotnt_4x1, dotnt_4x2, gemvBlockRows, splitEvenOdd } from "./dot-nt";

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

/** Bytes of scratch a call with 16-bit weights takes: an f32 weight panel (GEMM), or GEMV's x rows split for bf16 (splitEvenOdd). */
export function linear_panel_scratch_bytes(M: i32, K: i32): i32 {
  return M >= 4 ? NB * min(KC, K) * 4 : M * K * 4;
}

/** bf16 (u16 storage) takes the even/odd GEMV kernel; f16 is i16, f32 is f32. */
// @ts-ignore: decorator
@inline function isBf16<W>(): bool { return sizeof<W>() == 2 && !isSigned<W>(); }

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

/**
 * Every 4-row tile of x (at column offset kOff) against weight rows [n0, n1) (row n at w + n·ldw),
 * kLen long; the last 1-3 rows as one partial tile (its missing rows repeat the last row).
 */
// @ts-ignore: decorator
@inline function gemmTiles<W>(x: usize, kOff: usize, ldx: usize, M: i32, w: usize, ldw: usize, y: usize, ldy: usize, n0: i32, n1: i32, kLen: i32, accumulate: bool): void {
  for (let m = 0; m < M; m += 4) {
    const rows = min(4, M - m);
    const a0 = x + <usize>m * ldx + kOff;
    const a1 = rows > 1 ? a0 + ldx : a0, a2 = rows > 2 ? a1 + ldx : a1, a3 = rows > 3 ? a2 + ldx : a2;
    const yRow = y + <usize>m * ldy;
    let n = n0;
    for (; n + 2 <= n1; n += 2) {
      const b0 = w + <usize>n * ldw;
      dotnt_4x2<W>(a0, a1, a2, a3, b0, b0 + ldw, kLen, yRow + (<usize>n << 2), ldy, 1, accumulate, rows);
    }
    if (n < n1) dotnt_4x1<W>(a0, a1, a2, a3, w + <usize>n * ldw, kLen, yRow + (<usize>n << 2), ldy, 1, accumulate, rows);
  }
}

/**
 * Every row tile of x (columns kOff.., kLen) against an f32 panel of weight rows [n0, n1) at
 * `panel` (row n at panel + (n - n0)·kLen·4): 16-bit weights widened there, or quantized blocks
 * dequantized there (linear-quant.ts).
 */
// @ts-ignore: decorator
@inline export function gemmPanel(x: usize, kOff: usize, ldx: usize, M: i32, panel: usize, y: usize, ldy: usize, n0: i32, n1: i32, kLen: i32, accumulate: bool): void {
  gemmTiles<f32>(x, kOff, ldx, M, panel - (<usize>n0 * <usize>kLen << 2), <usize>kLen << 2, y, ldy, n0, n1, kLen, accumulate);
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
  // bf16 GEMV: each x row split into even and odd elements once (in the call's
  // scratch, linear_panel_scratch_bytes), for all weight rows.
  const split = M < 4 && isBf16<W>();
  if (split) for (let m = 0; m < M; m++) splitEvenOdd(x + <usize>m * ldx, K, scratch + <usize>m * ldx);
  for (let k0 = 0; k0 < K; k0 += kc) {
    const kLen = min(kc, K - k0);
    const accumulate = k0 > 0 || addToY;
    const kOff = <usize>k0 << 2;
    const wOff = <usize>k0 * sizeof<W>();
    for (let n0 = nBegin; n0 < nEnd; n0 += nbl) {
      const n1 = min(n0 + nbl, nEnd);
      if (M < 4) {
        for (let m = 0; m < M; m++) gemvRows<W>(x + <usize>m * ldx + kOff, split ? scratch + <usize>m * ldx : 0, w + wOff, ldw, y + <usize>m * ldy, n0, n1, kLen, accumulate);
        continue;
      }
      if (sizeof<W>() == 2) {
        widenPanel<W>(w + <usize>n0 * ldw + wOff, ldw, n1 - n0, kLen, scratch);
        gemmPanel(x, kOff, ldx, M, scratch, y, ldy, n0, n1, kLen, accumulate);
      } else {
        gemmTiles<W>(x, kOff, ldx, M, w + wOff, ldw, y, ldy, n0, n1, kLen, accumulate);
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
