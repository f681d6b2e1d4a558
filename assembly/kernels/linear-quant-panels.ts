import { fmadd } from "../simd";
import { finish } from "./dot-nt";
import { halfAt } from "./linear-quant";
import { q4kScaleMin, q4kWeights, QA_SUPER, SUPER_I8, SUPER_SUM32, superBytes } from "./linear-kquant";
import { WEIGHT_Q4_K, WEIGHT_Q5_K } from "../abi";

// Prefill-size linear layers with Q4_K / Q5_K weights (relaxed build) in integers: x quantized
// per 256 (QA_SUPER, as the GEMV), the weights of a block of columns unpacked once per call into a
// packed panel, then tiles of 4 rows x 4 columns. A panel vector holds 4 consecutive weights of
// each of 4 columns (XNNPACK's "c4" layout), so one broadcast of 4 activation bytes and one
// i16x8.relaxed_dot_i8x16_i7x16_s (x86's pmaddubsw: activations signed, weights 0..31 the 7-bit
// operand) make 16 products, 2 sums of 2 a column, with no horizontal sums anywhere. The sums stay
// in 16 bits over a sub-block of 32 (Q4_K: 8 steps of pair sums <= 2·15·127; Q5_K's <= 2·31·127 over
// 4 steps), then i32x4.dot_i16x8_s by the sub-block's 6-bit scale adds each column's pair into i32;
// per super-block the mins are 4 i16 dots of the columns' mins with x's sums of 32, and the two
// convert to f32 once:   y += d·da · Σ_s sc_s·Σ q·a  -  dmin·da · Σ_s m_s·Σ a.
// The f32 GEMM on dequantized panels it replaces runs at the FMA peak (4 multiply-adds an
// instruction); the 7-bit dots make 16 (a Q4_K GEMM 128x2048x2048 9.0 ms against 18.7 ms,
// scratch/i8g). Each output is the same integers as the GEMV's and its own f32 operations, whatever
// the columns or rows beside it, so column splits between threads keep the bits; a row's result
// differs from its GEMV's in the last bits (the GEMV sums four partial lanes in f32).

/**
 * Bytes of one super-block of 4 packed columns: the weights (sub-block s, step t of 4 weights: 16
 * bytes, column c's 4 at 4c), then per sub-block the scales as i16 pairs [sc_c0, sc_c0, sc_c1, ...],
 * the mins of sub-blocks 2i, 2i+1 as i16 pairs per column, then d and dmin of the 4 columns as f32.
 */
const PANEL_SUPER: usize = 1248;
const P_SCALES: usize = 1024, P_MINS: usize = 1152, P_D: usize = 1216, P_DMIN: usize = 1232;

/** Bytes of a column block's panel, at most: the row tiles read it from the L2 while they sweep x. */
const PANEL_BUDGET: usize = 256 << 10;

/** Rows of x from which a Q4_K / Q5_K call packs panels (below: the GEMV's block dots per row). */
export const PANEL_ROWS: i32 = 8;

/** Weight formats with packed panels for PANEL_ROWS rows and more (relaxed build). */
// @ts-ignore: decorator
@inline export function panelFormat(format: i32): bool {
  return ASC_FEATURE_RELAXED_SIMD && (format == WEIGHT_Q4_K || format == WEIGHT_Q5_K);
}

/** Columns of a panel block for rows of nsb super-blocks: a multiple of 4 within PANEL_BUDGET. */
// @ts-ignore: decorator
@inline function panelColumns(nsb: i32): i32 {
  return max(4, <i32>(PANEL_BUDGET / (<usize>nsb * PANEL_SUPER)) & ~3);
}

/** Scratch bytes of a call's panel for rows of K weights (K a multiple of 256). */
export function panelBytes(K: i32): i32 {
  const nsb = K >> 8;
  return (panelColumns(nsb) >> 2) * nsb * <i32>PANEL_SUPER;
}

/** Columns [n0, min(n0 + 4, nEnd)) of the weights (rows of ldw bytes at w, nsb super-blocks) as panel super-blocks at dst; columns past nEnd are zeros. */
function packColumns(w: usize, ldw: usize, n0: i32, nEnd: i32, nsb: i32, dst: usize, format: i32): void {
  const bytes = superBytes(format), cols = min(4, nEnd - n0);
  for (let sb = 0; sb < nsb; sb++) {
    const p = dst + <usize>sb * PANEL_SUPER, o = <usize>sb * bytes;
    const w0 = w + <usize>n0 * ldw + o;
    for (let s = 0; s < 8; s++) {
      for (let part = 0; part < 2; part++) {
        const v0 = q4kWeights(w0, s, part, format);
        const v1 = cols > 1 ? q4kWeights(w0 + ldw, s, part, format) : i32x4.splat(0);
        const v2 = cols > 2 ? q4kWeights(w0 + 2 * ldw, s, part, format) : i32x4.splat(0);
        const v3 = cols > 3 ? q4kWeights(w0 + 3 * ldw, s, part, format) : i32x4.splat(0);
        // Transposed as i32 lanes: step t holds lane t (weights 4t..4t+3) of each column.
        const t0 = v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), t1 = v128.shuffle<i32>(v2, v3, 0, 4, 1, 5);
        const t2 = v128.shuffle<i32>(v0, v1, 2, 6, 3, 7), t3 = v128.shuffle<i32>(v2, v3, 2, 6, 3, 7);
        const q = p + (<usize>(s * 8 + part * 4) << 4);
        v128.store(q, v128.shuffle<i64>(t0, t1, 0, 2));
        v128.store(q, v128.shuffle<i64>(t0, t1, 1, 3), 16);
        v128.store(q, v128.shuffle<i64>(t2, t3, 0, 2), 32);
        v128.store(q, v128.shuffle<i64>(t2, t3, 1, 3), 48);
      }
    }
    for (let c = 0; c < 4; c++) {
      const wb = w0 + <usize>c * ldw, live = c < cols;
      for (let s = 0; s < 8; s++) {
        const sm = live ? q4kScaleMin(wb + 4, s) : 0;
        const at = p + P_SCALES + (<usize>s << 4) + (<usize>c << 2);
        store<i16>(at, <i16>(sm & 255));
        store<i16>(at, <i16>(sm & 255), 2);
        store<i16>(p + P_MINS + (<usize>(s >> 1) << 4) + (<usize>c << 2) + (<usize>(s & 1) << 1), <i16>(sm >> 8));
      }
      store<f32>(p + P_D + (<usize>c << 2), live ? halfAt(wb) : 0);
      store<f32>(p + P_DMIN + (<usize>c << 2), live ? halfAt(wb + 2) : 0);
    }
  }
}

/** h plus the 16 products of x's 4 bytes at a (broadcast) with the panel vector w: 2 pair sums a column. */
// @ts-ignore: decorator
@inline function step4(h: v128, a: usize, w: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.add(h, i16x8.relaxed_dot_i8x16_i7x16_s(v128.load32_splat(a), w));
  return unreachable();
}

/** f plus one super-block of a row (its activation super-block at a; dots: Σ_s sc_s·Σ q·a per column): d·da times the dots, minus dmin·da times Σ_s m_s·Σ a. */
// @ts-ignore: decorator
@inline function superFinish(f: v128, dots: v128, a: usize, p: usize): v128 {
  let mins = i32x4.dot_i16x8_s(v128.load(p + P_MINS), v128.load32_splat(a + SUPER_SUM32));
  mins = i32x4.add(mins, i32x4.dot_i16x8_s(v128.load(p + P_MINS + 16), v128.load32_splat(a + SUPER_SUM32 + 4)));
  mins = i32x4.add(mins, i32x4.dot_i16x8_s(v128.load(p + P_MINS + 32), v128.load32_splat(a + SUPER_SUM32 + 8)));
  mins = i32x4.add(mins, i32x4.dot_i16x8_s(v128.load(p + P_MINS + 48), v128.load32_splat(a + SUPER_SUM32 + 12)));
  const da = f32x4.splat(load<f32>(a));
  f = fmadd(f32x4.convert_i32x4_s(dots), f32x4.mul(v128.load(p + P_D), da), f);
  return fmadd(f32x4.convert_i32x4_s(mins), f32x4.neg(f32x4.mul(v128.load(p + P_DMIN), da)), f);
}

/** Lane c (0..3) of f. */
// @ts-ignore: decorator
@inline function laneOf(f: v128, c: i32): f32 {
  return c == 0 ? f32x4.extract_lane(f, 0) : c == 1 ? f32x4.extract_lane(f, 1) : c == 2 ? f32x4.extract_lane(f, 2) : f32x4.extract_lane(f, 3);
}

/** The cols (<= 4) outputs at y: f, or with addToY y + f (as finish, lane by lane). */
// @ts-ignore: decorator
@inline function storeColumns(y: usize, f: v128, cols: i32, addToY: bool): void {
  if (cols == 4) v128.store(y, addToY ? f32x4.add(v128.load(y), f) : f);
  else for (let c = 0; c < cols; c++) finish(y + (<usize>c << 2), laneOf(f, c), addToY);
}

/**
 * rows (1 or 4, a constant) rows of x (activation super-blocks from a, rows ldqa apart) times the
 * 4 panel columns at p over nsb super-blocks, into y (rows ldy apart, cols <= 4 columns).
 */
// @ts-ignore: decorator
@inline function panelTile(a: usize, ldqa: usize, p: usize, nsb: i32, y: usize, ldy: usize, cols: i32, addToY: bool, rows: i32, format: i32): void {
  // Q5_K's weights reach 31: its 16-bit sums take 4 steps, Q4_K's 8 (a sub-block).
  const five = format == WEIGHT_Q5_K;
  let f0 = f32x4.splat(0), f1 = f32x4.splat(0), f2 = f32x4.splat(0), f3 = f32x4.splat(0);
  for (let sb = 0; sb < nsb; sb++) {
    const ps = p + <usize>sb * PANEL_SUPER, a0 = a + <usize>sb * QA_SUPER, a1 = a0 + ldqa, a2 = a1 + ldqa, a3 = a2 + ldqa;
    let i0 = i32x4.splat(0), i1 = i32x4.splat(0), i2 = i32x4.splat(0), i3 = i32x4.splat(0);
    for (let s = 0; s < 8; s++) {
      const sc = v128.load(ps + P_SCALES + (<usize>s << 4)), pw = ps + (<usize>s << 7), o = SUPER_I8 + (<usize>s << 5);
      let h0 = i32x4.splat(0), h1 = i32x4.splat(0), h2 = i32x4.splat(0), h3 = i32x4.splat(0);
      for (let t: usize = 0; t < 8; t++) {
        const w = v128.load(pw + (t << 4)), at = o + (t << 2);
        h0 = step4(h0, a0 + at, w);
        if (rows > 1) { h1 = step4(h1, a1 + at, w); h2 = step4(h2, a2 + at, w); h3 = step4(h3, a3 + at, w); }
        if (five && t == 3) { // Q5_K: flush the first half's sums
          i0 = i32x4.add(i0, i32x4.dot_i16x8_s(h0, sc)); h0 = i32x4.splat(0);
          if (rows > 1) {
            i1 = i32x4.add(i1, i32x4.dot_i16x8_s(h1, sc)); i2 = i32x4.add(i2, i32x4.dot_i16x8_s(h2, sc)); i3 = i32x4.add(i3, i32x4.dot_i16x8_s(h3, sc));
            h1 = i32x4.splat(0); h2 = i32x4.splat(0); h3 = i32x4.splat(0);
          }
        }
      }
      i0 = i32x4.add(i0, i32x4.dot_i16x8_s(h0, sc));
      if (rows > 1) { i1 = i32x4.add(i1, i32x4.dot_i16x8_s(h1, sc)); i2 = i32x4.add(i2, i32x4.dot_i16x8_s(h2, sc)); i3 = i32x4.add(i3, i32x4.dot_i16x8_s(h3, sc)); }
    }
    f0 = superFinish(f0, i0, a0, ps);
    if (rows > 1) { f1 = superFinish(f1, i1, a1, ps); f2 = superFinish(f2, i2, a2, ps); f3 = superFinish(f3, i3, a3, ps); }
  }
  storeColumns(y, f0, cols, addToY);
  if (rows > 1) { storeColumns(y + ldy, f1, cols, addToY); storeColumns(y + 2 * ldy, f2, cols, addToY); storeColumns(y + 3 * ldy, f3, cols, addToY); }
}

// The tiles as functions of their own per row count and format (V8 allocates registers per function).
function q4kTile4(a: usize, ldqa: usize, p: usize, nsb: i32, y: usize, ldy: usize, cols: i32, addToY: bool): void { panelTile(a, ldqa, p, nsb, y, ldy, cols, addToY, 4, WEIGHT_Q4_K); }
function q4kTile1(a: usize, ldqa: usize, p: usize, nsb: i32, y: usize, ldy: usize, cols: i32, addToY: bool): void { panelTile(a, ldqa, p, nsb, y, ldy, cols, addToY, 1, WEIGHT_Q4_K); }
function q5kTile4(a: usize, ldqa: usize, p: usize, nsb: i32, y: usize, ldy: usize, cols: i32, addToY: bool): void { panelTile(a, ldqa, p, nsb, y, ldy, cols, addToY, 4, WEIGHT_Q5_K); }
function q5kTile1(a: usize, ldqa: usize, p: usize, nsb: i32, y: usize, ldy: usize, cols: i32, addToY: bool): void { panelTile(a, ldqa, p, nsb, y, ldy, cols, addToY, 1, WEIGHT_Q5_K); }

/**
 * y[M, nBegin..nEnd) (+)= x · Wᵀ for Q4_K / Q5_K weights (rows of ldw bytes at w, nsb super-blocks)
 * on x's activation super-blocks at qa (rows nsb·QA_SUPER apart): column blocks packed into the
 * panel scratch (panelBytes), then 4-row tiles (a last 1-3 rows one at a time) over each block's
 * 4-column groups.
 */
export function panelGemm(qa: usize, w: usize, ldw: usize, y: usize, ldy: usize, M: i32, nBegin: i32, nEnd: i32, nsb: i32, addToY: bool, panel: usize, format: i32): void {
  const ldqa = <usize>nsb * QA_SUPER, group = <usize>nsb * PANEL_SUPER, cols = panelColumns(nsb), five = format == WEIGHT_Q5_K;
  for (let n0 = nBegin; n0 < nEnd; n0 += cols) {
    const n1 = min(n0 + cols, nEnd);
    for (let n = n0; n < n1; n += 4) packColumns(w, ldw, n, n1, nsb, panel + <usize>((n - n0) >> 2) * group, format);
    let m = 0;
    for (; m + 4 <= M; m += 4) {
      for (let n = n0; n < n1; n += 4) {
        const a = qa + <usize>m * ldqa, p = panel + <usize>((n - n0) >> 2) * group, yt = y + <usize>m * ldy + (<usize>n << 2);
        if (five) q5kTile4(a, ldqa, p, nsb, yt, ldy, min(4, n1 - n), addToY);
        else q4kTile4(a, ldqa, p, nsb, yt, ldy, min(4, n1 - n), addToY);
      }
    }
    for (; m < M; m++) {
      for (let n = n0; n < n1; n += 4) {
        const a = qa + <usize>m * ldqa, p = panel + <usize>((n - n0) >> 2) * group, yt = y + <usize>m * ldy + (<usize>n << 2);
        if (five) q5kTile1(a, ldqa, p, nsb, yt, ldy, min(4, n1 - n), addToY);
        else q4kTile1(a, ldqa, p, nsb, yt, ldy, min(4, n1 - n), addToY);
      }
    }
  }
}
