import { fmadd } from "../simd";
import { finish } from "./dot-nt";
import { blockBytes, halfAt, hasMin, isQ5_0, QA_BLOCK, QA_CORR, QA_DSUM, QA_I8, QA_SCALE, unsignedBlockWeights } from "./linear-quant";
import { isSixBit, lowBitScales, lowBitWeights, q4kScalesMins, q4kWeights, QA_SUPER, sixBitDAt, sixBitScalesAt, sixBitWeights, SUPER_I8, SUPER_SUM16, SUPER_SUM32, superBytes } from "./linear-kquant";
import { WEIGHT_Q2_K, WEIGHT_Q3_K, WEIGHT_Q4_0, WEIGHT_Q4_1, WEIGHT_Q4_K, WEIGHT_Q5_0, WEIGHT_Q5_0_U8, WEIGHT_Q5_1, WEIGHT_Q5_1_U8, WEIGHT_Q5_K, WEIGHT_Q5_K_U8, WEIGHT_Q6_K } from "../abi";

// Prefill-size linear layers on unsigned block weights in integers (relaxed build): Q2_K, Q3_K,
// Q4_K, Q5_K, Q6_K (and Q6_K_U8, its bytes unpacked) on x quantized per 256 (QA_SUPER, as their GEMV), Q4_0, Q5_0, Q4_1, Q5_1 on x
// quantized per 32 (QA_BLOCK). The weights of a block of columns are unpacked once per call into a
// packed panel, then tiles of 4 rows x 8 columns (two 4-column groups) run over it. A panel vector holds 4 consecutive
// weights of each of 4 columns (XNNPACK's "c4" layout), so one broadcast of 4 activation bytes and
// one i16x8.relaxed_dot_i8x16_i7x16_s (x86's pmaddubsw: activations signed, weights 0..31 the
// 7-bit operand) make 16 products, 2 sums of 2 a column, with no horizontal sums anywhere. The
// sums stay in 16 bits over 32 weights (pair sums <= 2·15·127 over 8 steps; weights to 31:
// <= 2·31·127 over 4 steps; Q6_K's to 63: <= 2·63·127, one step), then go to i32: Q4_K / Q5_K times the sub-block's 6-bit scale
// (i32x4.dot_i16x8_s), the mins per super-block 4 i16 dots of the columns' mins with x's sums of
// 32, converted once:
//   y += d·da · Σ_s sc_s·Σ q·a  -  dmin·da · Σ_s m_s·Σ a;
// Q2_K / Q3_K per group of 16 (4 steps; Q6_K's to i32 every step) times its scale, the
// offsets per super-block from x's sums of 16: Q2_K as Q4_K's with its mins, Q3_K
// d·da · (Σ_g s_g·Σ q·a - 4·Σ_g s_g·Σ a), Q6_K's the same with 32;
// the 32-blocks per block: y += d·da · (Σ q·a - 8·Σa or 16·Σa), or (Q4_1 / Q5_1) + m·da·Σa.
// The f32 GEMM on dequantized panels it replaces runs at the FMA peak (4 multiply-adds an
// instruction); the 7-bit dots make 16 (GEMM 128x2048x2048, scratch/q8k/kgemm.ts: Q4_K 9.0 ms
// against 18.7, Q5_0 11.5 against 19.0, Q3_K 11.8 against 19.2, Q2_K 12.1 against 19.6; Q4_0 10.4
// against 14.8 in the two-row integer tiles it had). Each output is the same integers as the
// GEMV's and its own f32 operations, whatever the columns or rows beside it, so column splits
// between threads keep the bits; a row's result differs from its GEMV's in the last bits (the GEMV
// sums partial lanes in f32).

/**
 * Bytes of one super-block of 4 packed columns: the weights (sub-block s, step t of 4 weights: 16
 * bytes, column c's 4 at 4c), then per sub-block the scales as i16 pairs [sc_c0, sc_c0, sc_c1, ...],
 * the mins of sub-blocks 2i, 2i+1 as i16 pairs per column, then d and dmin of the 4 columns as f32.
 */
const PANEL_SUPER: usize = 1248;
const P_SCALES: usize = 1024, P_MINS: usize = 1152, P_D: usize = 1216, P_DMIN: usize = 1232;

/** Bytes of a column block's panel, at most: the row tiles read it from the L2 while they sweep x. */
const PANEL_BUDGET: usize = 256 << 10;

/**
 * Rows of x from which a panel format's call packs panels (below: the GEMV's block dots per row,
 * each row the bits it has alone, so a server's decode steps of up to 11 sequences give each the
 * tokens it would get alone, as Q8_0's f32 threshold does; GEMM 2048x2048 Q4_K: at 4 rows 0.77 ms
 * in panels against 0.54-0.60 in the GEMV, at 8 rows about level).
 */
export const PANEL_ROWS: i32 = 12;

/** Weight formats with packed panels for PANEL_ROWS rows and more (relaxed build): the K-quants and the 32-blocks with unsigned weights. */
// @ts-ignore: decorator
@inline export function panelFormat(format: i32): bool {
  return ASC_FEATURE_RELAXED_SIMD && (superPanel(format) || format == WEIGHT_Q4_0 || isQ5_0(format) || hasMin(format));
}

/** The K-quants: panels of super-blocks on x quantized per 256 (the rest: of 32-blocks on x quantized per 32). */
// @ts-ignore: decorator
@inline export function superPanel(format: i32): bool { return format == WEIGHT_Q4_K || format == WEIGHT_Q5_K || format == WEIGHT_Q5_K_U8 || groupPanel(format); }

/** Q2_K / Q3_K / Q6_K / Q6_K_U8: super-blocks of 16 groups of 16 with a scale each (Q4_K / Q5_K: 8 sub-blocks of 32). */
// @ts-ignore: decorator
@inline function groupPanel(format: i32): bool { return format == WEIGHT_Q2_K || format == WEIGHT_Q3_K || isSixBit(format); }

/** Weights up to 31 (Q5_K, Q5_0, Q5_1): their 16-bit sums take 4 steps, 0..15's take 8. */
// @ts-ignore: decorator
@inline function fiveBits(format: i32): bool { return format == WEIGHT_Q5_K || format == WEIGHT_Q5_K_U8 || isQ5_0(format) || format == WEIGHT_Q5_1 || format == WEIGHT_Q5_1_U8; }

/**
 * Bytes of one 32-block of 4 packed columns: the weights (step t of 4 weights: 16 bytes, column
 * c's 4 at 4c), then d and (Q4_1 / Q5_1) m of the 4 columns as f32.
 */
const PANEL_BLOCK: usize = 160;
const B_D: usize = 128, B_M: usize = 144;

/**
 * Bytes of one Q2_K / Q3_K / Q6_K super-block of 4 packed columns: the weights as PANEL_SUPER's
 * (0..3, Q3_K's with the third bit 0..7, Q6_K's 0..63), the 16 group scales as i16 pairs per
 * column (Q2_K's 4-bit sc, Q3_K's s - 32, Q6_K's sc), the offsets' factors of groups 2i, 2i+1 as
 * i16 pairs per column (Q2_K's mins, the scales again for Q3_K's -4 and Q6_K's -32 offsets), then
 * d and (Q2_K) dmin of the 4 columns as f32.
 */
const PANEL_LOW: usize = 1440;
const L_SCALES: usize = P_SCALES, L_OFFSETS: usize = 1280, L_D: usize = 1408, L_DMIN: usize = 1424;

/** Bytes of 4 packed columns of rows of K weights. */
// @ts-ignore: decorator
@inline function groupBytes(K: i32, format: i32): usize {
  if (groupPanel(format)) return <usize>(K >> 8) * PANEL_LOW;
  return superPanel(format) ? <usize>(K >> 8) * PANEL_SUPER : <usize>((K + 31) >> 5) * PANEL_BLOCK;
}

/** Columns of a panel block: a multiple of 8 (a tile's two groups) within PANEL_BUDGET, at least 8 (4-column blocks ran every tile's columns twice: K = 8192 Q4_K 1.6x slower). */
// @ts-ignore: decorator
@inline function panelColumns(group: usize): i32 {
  return max(8, <i32>(PANEL_BUDGET / group) & ~7);
}

/** Scratch bytes of a call's tile accumulators and panel for rows of K weights, any panel format (at least two 4-column groups of the largest layout). */
export function panelBytes(K: i32): i32 {
  return <i32>TILE_ACC_BYTES + max(<i32>PANEL_BUDGET, 2 * max(<i32>groupBytes(K, WEIGHT_Q4_0), <i32>groupBytes(K, WEIGHT_Q2_K)));
}

/** 16 weights of each of 4 columns (v0..v3) as 4 panel steps at q: step t holds each column's weights 4t..4t+3 (a transpose of i32 lanes). */
// @ts-ignore: decorator
@inline function storeSteps(q: usize, v0: v128, v1: v128, v2: v128, v3: v128): void {
  const t0 = v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), t1 = v128.shuffle<i32>(v2, v3, 0, 4, 1, 5);
  const t2 = v128.shuffle<i32>(v0, v1, 2, 6, 3, 7), t3 = v128.shuffle<i32>(v2, v3, 2, 6, 3, 7);
  v128.store(q, v128.shuffle<i64>(t0, t1, 0, 2));
  v128.store(q, v128.shuffle<i64>(t0, t1, 1, 3), 16);
  v128.store(q, v128.shuffle<i64>(t2, t3, 0, 2), 32);
  v128.store(q, v128.shuffle<i64>(t2, t3, 1, 3), 48);
}

/** The packers' weight layouts (a constant at each call, so that the packing loops branch on none). */
const PACK_SUPER: i32 = 0, PACK_GROUPS: i32 = 1, PACK_BLOCKS: i32 = 2;

/**
 * 16 unsigned weights of a row whose block starts at wb: Q4_K / Q5_K sub-block s's part (0..15 /
 * 0..31), Q2_K / Q3_K / Q6_K group 2s + part (0..3 / 0..7: Q3_K's q - 4 plus 4 / 0..63), a
 * 32-block's half `part` (s unused).
 */
// @ts-ignore: decorator
@inline function panelSixteen(wb: usize, s: i32, part: i32, layout: i32, format: i32): v128 {
  if (layout == PACK_GROUPS) {
    if (isSixBit(format)) return sixBitWeights(wb, s, part, format);
    const q = lowBitWeights(wb, s >> 2, s & 3, part, format);
    return format == WEIGHT_Q3_K ? i8x16.add(q, i8x16.splat(4)) : q;
  }
  return layout == PACK_SUPER ? q4kWeights(wb, s, part, format) : unsignedBlockWeights(wb, part == 1, format);
}

/** panelSixteen(s, part) in `layout` of the cols (<= 4) rows ldw bytes apart from w0 as 4 panel steps at q (the columns past cols zeros). */
// @ts-ignore: decorator
@inline function packSixteen(w0: usize, ldw: usize, cols: i32, s: i32, part: i32, q: usize, layout: i32, format: i32): void {
  const v0 = panelSixteen(w0, s, part, layout, format);
  const v1 = cols > 1 ? panelSixteen(w0 + ldw, s, part, layout, format) : i32x4.splat(0);
  const v2 = cols > 2 ? panelSixteen(w0 + 2 * ldw, s, part, layout, format) : i32x4.splat(0);
  const v3 = cols > 3 ? panelSixteen(w0 + 3 * ldw, s, part, layout, format) : i32x4.splat(0);
  storeSteps(q, v0, v1, v2, v3);
}

/** Bytes `from`..`from` + 3 of sm (0, 4, 8 or 12), signed, as i16 pairs [sc, sc], one an i32 lane: 4 columns' worth of them make a step of the panel's scales (storeSteps). */
// @ts-ignore: decorator
@inline function pairedScales(sm: v128, from: i32): v128 {
  const four = from == 0 ? sm
    : from == 4 ? i8x16.shuffle(sm, sm, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7)
    : from == 8 ? i8x16.shuffle(sm, sm, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11)
    : i8x16.shuffle(sm, sm, 12, 13, 14, 15, 12, 13, 14, 15, 12, 13, 14, 15, 12, 13, 14, 15);
  const wide = i16x8.extend_low_i8x16_s(four);
  return i8x16.shuffle(wide, wide, 0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7);
}

/** Columns [n0, min(n0 + 4, nEnd)) of Q4_K / Q5_K weights (rows of ldw bytes at w, nsb super-blocks) as panel super-blocks at dst; columns past nEnd are zeros. */
function packSuper(w: usize, ldw: usize, n0: i32, nEnd: i32, nsb: i32, dst: usize, format: i32): void {
  const bytes = superBytes(format), cols = min(4, nEnd - n0);
  for (let sb = 0; sb < nsb; sb++) {
    const p = dst + <usize>sb * PANEL_SUPER, o = <usize>sb * bytes;
    const w0 = w + <usize>n0 * ldw + o;
    for (let s = 0; s < 8; s++) for (let part = 0; part < 2; part++) packSixteen(w0, ldw, cols, s, part, p + (<usize>(s * 8 + part * 4) << 4), PACK_SUPER, format);
    // Each column's 8 scales as i16 pairs [sc, sc] (i32 lane s of its low and high halves), its
    // mins as i16 (i32 lane i: sub-blocks 2i, 2i + 1), then transposed to the panel's layout.
    const z = i32x4.splat(0);
    const s0 = q4kScalesMins(w0 + 4), s1 = cols > 1 ? q4kScalesMins(w0 + ldw + 4) : z;
    const s2 = cols > 2 ? q4kScalesMins(w0 + 2 * ldw + 4) : z, s3 = cols > 3 ? q4kScalesMins(w0 + 3 * ldw + 4) : z;
    storeSteps(p + P_SCALES, pairedScales(s0, 0), pairedScales(s1, 0), pairedScales(s2, 0), pairedScales(s3, 0));
    storeSteps(p + P_SCALES + 64, pairedScales(s0, 4), pairedScales(s1, 4), pairedScales(s2, 4), pairedScales(s3, 4));
    storeSteps(p + P_MINS, i16x8.extend_high_i8x16_u(s0), i16x8.extend_high_i8x16_u(s1), i16x8.extend_high_i8x16_u(s2), i16x8.extend_high_i8x16_u(s3));
    for (let c = 0; c < 4; c++) {
      const wb = w0 + <usize>c * ldw, live = c < cols;
      store<f32>(p + P_D + (<usize>c << 2), live ? halfAt(wb) : 0);
      store<f32>(p + P_DMIN + (<usize>c << 2), live ? halfAt(wb + 2) : 0);
    }
  }
}

/** The 16 group scales of a Q2_K / Q3_K / Q6_K / Q6_K_U8 super-block at wb, one a byte (as the dequantizer takes them). */
// @ts-ignore: decorator
@inline function groupScales(wb: usize, format: i32): v128 {
  return isSixBit(format) ? v128.load(wb + sixBitScalesAt(format)) : lowBitScales(wb, format);
}

/** The 16 groups' offset factors of the super-block at wb with group scales `scales`: Q2_K's mins (the high nibbles of its scale bytes), else the scales (Q3_K's -4, Q6_K's -32 offsets). */
// @ts-ignore: decorator
@inline function groupOffsets(wb: usize, scales: v128, format: i32): v128 {
  return format == WEIGHT_Q2_K ? i8x16.shr_u(v128.load(wb), 4) : scales;
}

/** Columns [n0, min(n0 + 4, nEnd)) of Q2_K / Q3_K / Q6_K / Q6_K_U8 weights (rows of ldw bytes at w, nsb super-blocks) as panel super-blocks at dst; columns past nEnd are zeros. */
function packGroups(w: usize, ldw: usize, n0: i32, nEnd: i32, nsb: i32, dst: usize, format: i32): void {
  const bytes = superBytes(format), cols = min(4, nEnd - n0), three = format == WEIGHT_Q3_K, six = isSixBit(format);
  const dAt: usize = six ? sixBitDAt(format) : three ? 108 : 80;
  for (let sb = 0; sb < nsb; sb++) {
    const p = dst + <usize>sb * PANEL_LOW, w0 = w + <usize>n0 * ldw + <usize>sb * bytes;
    for (let s = 0; s < 8; s++) for (let part = 0; part < 2; part++) packSixteen(w0, ldw, cols, s, part, p + (<usize>(s * 8 + part * 4) << 4), PACK_GROUPS, format);
    // Each column's 16 group scales (Q2_K's 0..15, Q3_K's and Q6_K's signed) and offset factors
    // (Q2_K's mins, the high nibbles of its scale bytes; else the scales), transposed to the
    // panel's layout as packSuper's.
    const z = i32x4.splat(0), w1 = w0 + ldw, w2 = w1 + ldw, w3 = w2 + ldw;
    const s0 = groupScales(w0, format), s1 = cols > 1 ? groupScales(w1, format) : z;
    const s2 = cols > 2 ? groupScales(w2, format) : z, s3 = cols > 3 ? groupScales(w3, format) : z;
    storeSteps(p + L_SCALES, pairedScales(s0, 0), pairedScales(s1, 0), pairedScales(s2, 0), pairedScales(s3, 0));
    storeSteps(p + L_SCALES + 64, pairedScales(s0, 4), pairedScales(s1, 4), pairedScales(s2, 4), pairedScales(s3, 4));
    storeSteps(p + L_SCALES + 128, pairedScales(s0, 8), pairedScales(s1, 8), pairedScales(s2, 8), pairedScales(s3, 8));
    storeSteps(p + L_SCALES + 192, pairedScales(s0, 12), pairedScales(s1, 12), pairedScales(s2, 12), pairedScales(s3, 12));
    const f0 = groupOffsets(w0, s0, format), f1 = cols > 1 ? groupOffsets(w1, s1, format) : z;
    const f2 = cols > 2 ? groupOffsets(w2, s2, format) : z, f3 = cols > 3 ? groupOffsets(w3, s3, format) : z;
    storeSteps(p + L_OFFSETS, i16x8.extend_low_i8x16_s(f0), i16x8.extend_low_i8x16_s(f1), i16x8.extend_low_i8x16_s(f2), i16x8.extend_low_i8x16_s(f3));
    storeSteps(p + L_OFFSETS + 64, i16x8.extend_high_i8x16_s(f0), i16x8.extend_high_i8x16_s(f1), i16x8.extend_high_i8x16_s(f2), i16x8.extend_high_i8x16_s(f3));
    for (let c = 0; c < 4; c++) {
      const wb = w0 + <usize>c * ldw, live = c < cols;
      store<f32>(p + L_D + (<usize>c << 2), live ? halfAt(wb + dAt) : 0);
      store<f32>(p + L_DMIN + (<usize>c << 2), live && !three && !six ? halfAt(wb + 82) : 0);
    }
  }
}

/** Columns [n0, min(n0 + 4, nEnd)) of Q4_0 / Q5_0 / Q4_1 / Q5_1 weights (rows of ldw bytes at w, nb blocks) as panel blocks at dst; columns past nEnd are zeros. */
function packBlocks(w: usize, ldw: usize, n0: i32, nEnd: i32, nb: i32, dst: usize, format: i32): void {
  const bytes = blockBytes(format), cols = min(4, nEnd - n0);
  const mins = hasMin(format);
  for (let b = 0; b < nb; b++) {
    const p = dst + <usize>b * PANEL_BLOCK, w0 = w + <usize>n0 * ldw + <usize>b * bytes;
    for (let part = 0; part < 2; part++) packSixteen(w0, ldw, cols, 0, part, p + (<usize>part << 6), PACK_BLOCKS, format);
    for (let c = 0; c < 4; c++) {
      const wb = w0 + <usize>c * ldw, live = c < cols;
      store<f32>(p + B_D + (<usize>c << 2), live ? halfAt(wb) : 0);
      store<f32>(p + B_M + (<usize>c << 2), live && mins ? halfAt(wb + 2) : 0);
    }
  }
}

/** The 16 products of x's 4 bytes (broadcast in x4) with the panel vector w: 2 pair sums a column. */
// @ts-ignore: decorator
@inline function dot4(x4: v128, w: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.relaxed_dot_i8x16_i7x16_s(x4, w);
  return unreachable();
}

/** h plus the 16 products of x's 4 bytes (broadcast in x4) with the panel vector w: 2 pair sums a column. */
// @ts-ignore: decorator
@inline function step4(h: v128, x4: v128, w: v128): v128 { return i16x8.add(h, dot4(x4, w)); }

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
 * The tiles' accumulators, in the call's scratch before its panel: 8 i32x4 (row r's column group
 * g at (2r + g)·16: a super-block's scaled integer dots) then 8 f32x4 (the outputs so far). A 4x8
 * tile's 16-bit sums take all the registers there are (V8 on x64 allocates 15 vectors).
 */
const TILE_ACC_BYTES: usize = 256, ACC_F: usize = 128;

// @ts-ignore: decorator
@inline function zeroAccumulators(at: usize, rows: i32): void {
  for (let i: usize = 0, end = <usize>rows << 5; i < end; i += 16) v128.store(at + i, i32x4.splat(0));
}

/** acc[i] += the i16 sums h times the run's scales sc (i32x4.dot_i16x8_s: one lane a column). */
// @ts-ignore: decorator
@inline function flushRun(acc: usize, i: usize, h: v128, sc: v128): void {
  v128.store(acc + (i << 4), i32x4.add(v128.load(acc + (i << 4)), i32x4.dot_i16x8_s(h, sc)));
}

/**
 * rows (1 or 4, a constant) rows of x (activation super-blocks from a, rows ldqa apart) times 8
 * panel columns, the 4-column groups at p and p + gs (gs = 0: the last 4 columns, computed twice,
 * stored once), over nsb super-blocks of a K-quant panel format, into y (rows ldy apart, cols <= 8
 * columns): a step broadcasts each row's 4 bytes once for both groups (6 loads to 8 dots where 4
 * columns took 10 to 8: GEMM 128x2048x2048 Q4_K 1.2x, Q4_0 1.1x, Q4_1 1.08x, scratch/kab.ts; the
 * formats flushed every 4 steps, Q5_K / Q5_0 / Q5_1 / Q2_K / Q3_K, level). Runs of 16-bit sums (Q4_K's
 * and Q5_K's 8 sub-blocks of 32, Q2_K's and Q3_K's 16 groups of 16; pair sums <= 2·15·127, Q5_K's
 * <= 2·31·127 over half a sub-block), each times its run's scales in an i16 dot into acc, then
 * superFinish / groupFinish per super-block (Q6_K: sixBitTile).
 */
// @ts-ignore: decorator
@inline function superTile(a: usize, ldqa: usize, p: usize, gs: usize, nsb: i32, y: usize, ldy: usize, cols: i32, addToY: bool, rows: i32, format: i32, acc: usize): void {
  const five = format == WEIGHT_Q5_K, low = groupPanel(format);
  // Flushes a super-block: Q5_K's sub-blocks in halves (weights to 31: 4 steps in 16 bits).
  const flushes = five || low ? 16 : 8, steps: usize = five || low ? 4 : 8;
  const stride = low ? PANEL_LOW : PANEL_SUPER; // the scales at P_SCALES (= L_SCALES) in both
  const accF = acc + ACC_F;
  zeroAccumulators(accF, rows);
  for (let sb = 0; sb < nsb; sb++) {
    const ps = p + <usize>sb * stride, a0 = a + <usize>sb * QA_SUPER, a1 = a0 + ldqa, a2 = a1 + ldqa, a3 = a2 + ldqa;
    zeroAccumulators(acc, rows);
    let q = ps, x0 = a0 + SUPER_I8, x1 = a1 + SUPER_I8, x2 = a2 + SUPER_I8, x3 = a3 + SUPER_I8;
    for (let r = 0; r < flushes; r++) {
      let h0 = i32x4.splat(0), h1 = i32x4.splat(0), h2 = i32x4.splat(0), h3 = i32x4.splat(0);
      let g0 = i32x4.splat(0), g1 = i32x4.splat(0), g2 = i32x4.splat(0), g3 = i32x4.splat(0);
      // A step an iteration: two spilled the 16-bit sums (0.9x, scratch/i8g2).
      for (let t: usize = 0; t < steps; t++) {
        const wA = v128.load(q), wB = v128.load(q + gs);
        let s = v128.load32_splat(x0); h0 = step4(h0, s, wA); g0 = step4(g0, s, wB);
        if (rows > 1) {
          s = v128.load32_splat(x1); h1 = step4(h1, s, wA); g1 = step4(g1, s, wB);
          s = v128.load32_splat(x2); h2 = step4(h2, s, wA); g2 = step4(g2, s, wB);
          s = v128.load32_splat(x3); h3 = step4(h3, s, wA); g3 = step4(g3, s, wB);
        }
        q += 16; x0 += 4; x1 += 4; x2 += 4; x3 += 4;
      }
      const at = P_SCALES + (<usize>(five ? r >> 1 : r) << 4);
      const scA = v128.load(ps + at), scB = v128.load(ps + gs + at);
      flushRun(acc, 0, h0, scA); flushRun(acc, 1, g0, scB);
      if (rows > 1) {
        flushRun(acc, 2, h1, scA); flushRun(acc, 3, g1, scB); flushRun(acc, 4, h2, scA); flushRun(acc, 5, g2, scB);
        flushRun(acc, 6, h3, scA); flushRun(acc, 7, g3, scB);
      }
    }
    for (let i: usize = 0; i < <usize>rows << 1; i++) {
      const ar = a0 + (i >> 1) * ldqa, pg = ps + (i & 1) * gs, f = accF + (i << 4), dots = v128.load(acc + (i << 4));
      v128.store(f, low ? groupFinish(v128.load(f), dots, ar, pg, format) : superFinish(v128.load(f), dots, ar, pg));
    }
  }
  storeTile(y, ldy, accF, cols, addToY, rows);
}

/**
 * superTile for Q6_K / Q6_K_U8 panels (weights to 63: pair sums <= 2·63·127, so a run of 16-bit
 * sums lasts 2 steps), rows (1 or 2) rows at a time: each run's sums times its group's scales
 * (i32x4.dot_i16x8_s) into i32 accumulators held in registers for the whole super-block, then
 * groupFinish (the -32 offsets). Four rows' runs would need 16 registers with their
 * accumulators; through acc in memory (superTile's way) V8's code took ~115 instructions a 256
 * products against Q4_K's ~73, and one step's sums to i32 at once, a multiply more a step (the
 * multiplies share one port here: 1.3x slower).
 */
// @ts-ignore: decorator
@inline function sixBitTile(a: usize, ldqa: usize, p: usize, gs: usize, nsb: i32, y: usize, ldy: usize, cols: i32, addToY: bool, rows: i32, acc: usize): void {
  const accF = acc + ACC_F;
  zeroAccumulators(accF, rows);
  for (let sb = 0; sb < nsb; sb++) {
    const ps = p + <usize>sb * PANEL_LOW, pB = ps + gs, a0 = a + <usize>sb * QA_SUPER, a1 = a0 + ldqa;
    let q = ps, x0 = a0 + SUPER_I8, x1 = a1 + SUPER_I8;
    let d0 = i32x4.splat(0), e0 = i32x4.splat(0), d1 = i32x4.splat(0), e1 = i32x4.splat(0);
    // Run r: steps 2r, 2r + 1 (half of group r >> 1; two runs an iteration, their scales loaded
    // once: 1.5x slower, V8 spilled).
    for (let r: usize = 0; r < 32; r++) {
      const at = L_SCALES + ((r >> 1) << 4), scA = v128.load(ps + at), scB = v128.load(pB + at);
      let wA = v128.load(q), wB = v128.load(q + gs);
      let s = v128.load32_splat(x0);
      let h0 = dot4(s, wA), g0 = dot4(s, wB), h1 = h0, g1 = g0;
      if (rows > 1) { s = v128.load32_splat(x1); h1 = dot4(s, wA); g1 = dot4(s, wB); }
      wA = v128.load(q, 16); wB = v128.load(q + gs, 16);
      s = v128.load32_splat(x0, 4); h0 = step4(h0, s, wA); g0 = step4(g0, s, wB);
      d0 = i32x4.add(d0, i32x4.dot_i16x8_s(h0, scA)); e0 = i32x4.add(e0, i32x4.dot_i16x8_s(g0, scB));
      if (rows > 1) {
        s = v128.load32_splat(x1, 4); h1 = step4(h1, s, wA); g1 = step4(g1, s, wB);
        d1 = i32x4.add(d1, i32x4.dot_i16x8_s(h1, scA)); e1 = i32x4.add(e1, i32x4.dot_i16x8_s(g1, scB));
      }
      q += 32; x0 += 8; x1 += 8;
    }
    v128.store(accF, groupFinish(v128.load(accF), d0, a0, ps, WEIGHT_Q6_K));
    v128.store(accF, groupFinish(v128.load(accF, 16), e0, a0, pB, WEIGHT_Q6_K), 16);
    if (rows > 1) {
      v128.store(accF, groupFinish(v128.load(accF, 32), d1, a1, ps, WEIGHT_Q6_K), 32);
      v128.store(accF, groupFinish(v128.load(accF, 48), e1, a1, pB, WEIGHT_Q6_K), 48);
    }
  }
  storeTile(y, ldy, accF, cols, addToY, rows);
}

/** The tile's rows (1, 2 or 4) of cols <= 8 outputs from the accumulators at accF into y (rows ldy apart). */
// @ts-ignore: decorator
@inline function storeTile(y: usize, ldy: usize, accF: usize, cols: i32, addToY: bool, rows: i32): void {
  for (let r: usize = 0; r < <usize>rows; r++) {
    const yr = y + r * ldy, fr = accF + (r << 5);
    storeColumns(yr, v128.load(fr), min(4, cols), addToY);
    if (cols > 4) storeColumns(yr + 16, v128.load(fr, 16), cols - 4, addToY);
  }
}

/** f plus one Q2_K / Q3_K / Q6_K super-block of a row (its activation super-block at a; dots: Σ_g sc_g·Σ q·a per column). */
// @ts-ignore: decorator
@inline function groupFinish(f: v128, dots: v128, a: usize, p: usize, format: i32): v128 {
  let offsets = i32x4.dot_i16x8_s(v128.load(p + L_OFFSETS), v128.load32_splat(a + SUPER_SUM16));
  for (let i: usize = 1; i < 8; i++) offsets = i32x4.add(offsets, i32x4.dot_i16x8_s(v128.load(p + L_OFFSETS + (i << 4)), v128.load32_splat(a + SUPER_SUM16 + (i << 2))));
  const da = f32x4.splat(load<f32>(a));
  if (format == WEIGHT_Q3_K || isSixBit(format)) return fmadd(f32x4.convert_i32x4_s(i32x4.sub(dots, i32x4.shl(offsets, format == WEIGHT_Q3_K ? 2 : 5))), f32x4.mul(v128.load(p + L_D), da), f);
  f = fmadd(f32x4.convert_i32x4_s(dots), f32x4.mul(v128.load(p + L_D), da), f);
  return fmadd(f32x4.convert_i32x4_s(offsets), f32x4.neg(f32x4.mul(v128.load(p + L_DMIN), da)), f);
}

/**
 * Row r's 16-bit sums of a block, h for the column group at pA and g for the one at pB (its
 * activation block at a), pair-added: a first half kept in acc, the last finished into accF with
 * the row's x terms (da, the offset or Σa) loaded once for both groups.
 */
// @ts-ignore: decorator
@inline function blockSums(acc: usize, accF: usize, r: usize, h: v128, g: v128, a: usize, pA: usize, pB: usize, half: i32, last: bool, format: i32): void {
  const i = acc + (r << 5), f = accF + (r << 5);
  let dotsA = i32x4.extadd_pairwise_i16x8_s(h), dotsB = i32x4.extadd_pairwise_i16x8_s(g);
  if (half > 0) { dotsA = i32x4.add(dotsA, v128.load(i)); dotsB = i32x4.add(dotsB, v128.load(i, 16)); }
  if (!last) { v128.store(i, dotsA); v128.store(i, dotsB, 16); return; }
  // QA_CORR holds -8·Σa (Q4_0's offset); Q5_0's is twice it. Q4_1 / Q5_1: m·da·Σa (QA_DSUM).
  const da = f32x4.splat(load<f32>(a + QA_SCALE)), mins = hasMin(format);
  const xs = mins ? f32x4.splat(load<f32>(a + QA_DSUM)) : i32x4.splat(isQ5_0(format) ? load<i32>(a + QA_CORR) << 1 : load<i32>(a + QA_CORR));
  v128.store(f, blockFinish(v128.load(f), dotsA, da, xs, pA, format));
  v128.store(f, blockFinish(v128.load(f, 16), dotsB, da, xs, pB, format), 16);
}

/**
 * rows (1 or 4) rows of x (activation 32-blocks from a, rows ldqa apart) times 8 panel columns
 * (groups at p and p + gs, as superTile) over nb blocks, into y: per block the integer dot (Q5_0 /
 * Q5_1: two halves' 16-bit sums, added in i32) plus the offset's -8·Σa / -16·Σa (Q4_0, Q5_0), times
 * d·da; Q4_1 / Q5_1 add m·da·Σa.
 */
// @ts-ignore: decorator
@inline function blockTile(a: usize, ldqa: usize, p: usize, gs: usize, nb: i32, y: usize, ldy: usize, cols: i32, addToY: bool, rows: i32, format: i32, acc: usize): void {
  const five = fiveBits(format), halves = five ? 2 : 1, steps: usize = five ? 4 : 8;
  const accF = acc + ACC_F;
  zeroAccumulators(accF, rows);
  for (let b = 0; b < nb; b++) {
    const pb = p + <usize>b * PANEL_BLOCK, a0 = a + <usize>b * QA_BLOCK, a1 = a0 + ldqa, a2 = a1 + ldqa, a3 = a2 + ldqa, pB = pb + gs;
    let q = pb, x0 = a0 + QA_I8, x1 = a1 + QA_I8, x2 = a2 + QA_I8, x3 = a3 + QA_I8;
    for (let half = 0; half < halves; half++) {
      let h0 = i32x4.splat(0), h1 = i32x4.splat(0), h2 = i32x4.splat(0), h3 = i32x4.splat(0);
      let g0 = i32x4.splat(0), g1 = i32x4.splat(0), g2 = i32x4.splat(0), g3 = i32x4.splat(0);
      for (let t: usize = 0; t < steps; t++) {
        const wA = v128.load(q), wB = v128.load(q + gs);
        let s = v128.load32_splat(x0); h0 = step4(h0, s, wA); g0 = step4(g0, s, wB);
        if (rows > 1) {
          s = v128.load32_splat(x1); h1 = step4(h1, s, wA); g1 = step4(g1, s, wB);
          s = v128.load32_splat(x2); h2 = step4(h2, s, wA); g2 = step4(g2, s, wB);
          s = v128.load32_splat(x3); h3 = step4(h3, s, wA); g3 = step4(g3, s, wB);
        }
        q += 16; x0 += 4; x1 += 4; x2 += 4; x3 += 4;
      }
      // The first half's sums (weights to 31) wait in acc; the block's whole sums finish at once.
      const last = half == halves - 1;
      blockSums(acc, accF, 0, h0, g0, a0, pb, pB, half, last, format);
      if (rows > 1) {
        blockSums(acc, accF, 1, h1, g1, a1, pb, pB, half, last, format);
        blockSums(acc, accF, 2, h2, g2, a2, pb, pB, half, last, format);
        blockSums(acc, accF, 3, h3, g3, a3, pb, pB, half, last, format);
      }
    }
  }
  storeTile(y, ldy, accF, cols, addToY, rows);
}

/** f plus one block of a row (dots: Σ q·a per column; da its scale; xs Q4_0's / Q5_0's offset as i32, Q4_1's / Q5_1's Σa as f32): Q4_0 / Q5_0 (dots + offset)·d·da, Q4_1 / Q5_1 dots·d·da + m·da·Σa. */
// @ts-ignore: decorator
@inline function blockFinish(f: v128, dots: v128, da: v128, xs: v128, pb: usize, format: i32): v128 {
  const mins = hasMin(format);
  f = fmadd(f32x4.convert_i32x4_s(mins ? dots : i32x4.add(dots, xs)), f32x4.mul(v128.load(pb + B_D), da), f);
  return mins ? fmadd(v128.load(pb + B_M), xs, f) : f;
}

// The tiles as functions of their own per row count and format (V8 allocates registers per function).
function q4kTile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { superTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 4, WEIGHT_Q4_K, acc); }
function q4kTile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { superTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, WEIGHT_Q4_K, acc); }
function q5kTile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { superTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 4, WEIGHT_Q5_K, acc); }
function q5kTile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { superTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, WEIGHT_Q5_K, acc); }
function q2kTile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { superTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 4, WEIGHT_Q2_K, acc); }
function q2kTile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { superTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, WEIGHT_Q2_K, acc); }
function q3kTile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { superTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 4, WEIGHT_Q3_K, acc); }
function q3kTile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { superTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, WEIGHT_Q3_K, acc); }
// (Q6_K's and Q6_K_U8's panels are the same: one tile for both.)
function q6kTile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void {
  sixBitTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 2, acc);
  sixBitTile(a + 2 * ldqa, ldqa, p, gs, n, y + 2 * ldy, ldy, cols, addToY, 2, acc);
}
function q6kTile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { sixBitTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, acc); }
function q4_0Tile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { blockTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 4, WEIGHT_Q4_0, acc); }
function q4_0Tile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { blockTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, WEIGHT_Q4_0, acc); }
function q5_0Tile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { blockTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 4, WEIGHT_Q5_0, acc); }
function q5_0Tile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { blockTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, WEIGHT_Q5_0, acc); }
function q4_1Tile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { blockTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 4, WEIGHT_Q4_1, acc); }
function q4_1Tile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { blockTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, WEIGHT_Q4_1, acc); }
function q5_1Tile4(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { blockTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 4, WEIGHT_Q5_1, acc); }
function q5_1Tile1(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, acc: usize): void { blockTile(a, ldqa, p, gs, n, y, ldy, cols, addToY, 1, WEIGHT_Q5_1, acc); }

/** One tile of `rows` (4, or 1) rows x 8 columns (groups at p, p + gs) in the format's tile function (n: super-blocks or blocks a row). */
// @ts-ignore: decorator
@inline function tile(a: usize, ldqa: usize, p: usize, gs: usize, n: i32, y: usize, ldy: usize, cols: i32, addToY: bool, four: bool, format: i32, acc: usize): void {
  if (isSixBit(format)) { if (four) q6kTile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q6kTile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); return; }
  switch (format) {
    case WEIGHT_Q4_K: if (four) q4kTile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q4kTile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); break;
    case WEIGHT_Q5_K: case WEIGHT_Q5_K_U8: if (four) q5kTile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q5kTile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); break;
    case WEIGHT_Q2_K: if (four) q2kTile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q2kTile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); break;
    case WEIGHT_Q3_K: if (four) q3kTile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q3kTile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); break;
    case WEIGHT_Q4_0: if (four) q4_0Tile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q4_0Tile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); break;
    case WEIGHT_Q5_0: case WEIGHT_Q5_0_U8: if (four) q5_0Tile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q5_0Tile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); break;
    case WEIGHT_Q4_1: if (four) q4_1Tile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q4_1Tile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); break;
    default: if (four) q5_1Tile4(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc); else q5_1Tile1(a, ldqa, p, gs, n, y, ldy, cols, addToY, acc);
  }
}

/**
 * y[M, nBegin..nEnd) (+)= x · Wᵀ for a panel format's weights (rows of ldw bytes at w, K weights)
 * on x quantized at qa (linear_quant_scratch_bytes' layout: every row's 32-blocks, then the rows'
 * super-blocks): column blocks packed into the panel scratch (panelBytes: the tiles' accumulators,
 * then the panel), then 4-row tiles (a last 1-3 rows one at a time) over each block's 8-column
 * pairs of groups (a last group alone).
 */
export function panelGemm(qa: usize, w: usize, ldw: usize, y: usize, ldy: usize, M: i32, nBegin: i32, nEnd: i32, K: i32, addToY: bool, scratch: usize, format: i32): void {
  const isSuper = superPanel(format), n = isSuper ? K >> 8 : (K + 31) >> 5;
  const ldqa = isSuper ? <usize>n * QA_SUPER : <usize>n * QA_BLOCK;
  const a0 = isSuper ? qa + <usize>M * <usize>((K + 31) >> 5) * QA_BLOCK : qa; // the super-blocks after every row's 32-blocks
  const group = groupBytes(K, format), cols = panelColumns(group);
  const acc = scratch, panel = scratch + TILE_ACC_BYTES;
  for (let n0 = nBegin; n0 < nEnd; n0 += cols) {
    const n1 = min(n0 + cols, nEnd);
    for (let c = n0; c < n1; c += 4) {
      const dst = panel + <usize>((c - n0) >> 2) * group;
      if (groupPanel(format)) packGroups(w, ldw, c, n1, n, dst, format);
      else if (isSuper) packSuper(w, ldw, c, n1, n, dst, format);
      else packBlocks(w, ldw, c, n1, n, dst, format);
    }
    for (let m = 0; m < M;) {
      const four = m + 4 <= M;
      for (let c = n0; c < n1; c += 8) {
        const p = panel + <usize>((c - n0) >> 2) * group, gs = c + 4 < n1 ? group : 0;
        tile(a0 + <usize>m * ldqa, ldqa, p, gs, n, y + <usize>m * ldy + (<usize>c << 2), ldy, min(8, n1 - c), addToY, four, format, acc);
      }
      m += four ? 4 : 1;
    }
  }
}
