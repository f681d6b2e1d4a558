import { fmadd, hmaxI32, hsum } from "../simd";
import { finish, gemvBlockRows } from "./dot-nt";
import { gemmPanel, KC, linear_panel_scratch_bytes, NB, PACKED_X_OFFSET, packRows } from "./linear";
import { dequantizeRowK, dotk_1x1, dotk_1x2, isKQuant, kquantRowBytes, QA_SUPER, quantizeSuper, superActivations, SUPER_BLOCK } from "./linear-kquant";
import { panelBytes, panelFormat, panelGemm, PANEL_ROWS } from "./linear-quant-panels";
import { LINEAR_ACCUMULATE, LINEAR_X_QUANTIZED, WEIGHT_FORMAT_COUNT, WEIGHT_IQ4_NL, WEIGHT_Q4_1, WEIGHT_Q5_1, WEIGHT_Q2_K, WEIGHT_Q3_K, WEIGHT_Q4_0, WEIGHT_Q4_K, WEIGHT_Q5_0, WEIGHT_Q5_0_U8, WEIGHT_Q5_1_U8, WEIGHT_Q5_K, WEIGHT_Q5_K_U8, WEIGHT_Q6_K, WEIGHT_Q6_K_U8, WEIGHT_Q8_0 } from "../abi";

// The linear layer y[M, N] = x[M, K] · Wᵀ (+ b), or y = (y + x · Wᵀ) (+ b) with `accumulate`, with block-quantized weights, W kept in GGUF's
// block layouts exactly as a .gguf file stores them (a row of K weights is ceil(K/32) blocks of
// 32; a row's last block is zero-padded when K is not a multiple of 32):
//   Q8_0: f16 scale d, then 32 x i8 q                         (34 bytes; w = d·q)
//   Q4_0: f16 scale d, then 16 bytes: weight j in the low nibble of byte j, weight j+16 in the
//         high nibble                                         (18 bytes; w = d·(q - 8))
//   Q5_0: f16 scale d, u32 qh (bit j: weight j's fifth bit), then Q4_0's 16 bytes of nibbles
//                                                             (22 bytes; w = d·(q - 16))
//   Q5_0_U8, Q5_1_U8: not GGUF types: Q5_0 / Q5_1 a byte a weight, f16 d (and m) then 32 bytes q in
//         0..31 (34 / 36 bytes), what a file's Q5_0 / Q5_1 load as: their values, 7-bit dots on bytes
//   IQ4_NL: Q4_0's layout, each nibble an index into 16 non-uniform levels (IQ4_LEVELS, -127..113)
//                                                             (18 bytes; w = d·levels[q])
//   Q4_1, Q5_1: f16 d, f16 min m, then Q4_0's nibbles / Q5_0's qh and nibbles
//                                                             (20 / 24 bytes; w = d·q + m)
// Q5_0 goes Q4_0's ways (its 0..31 is 7-bit too) with the fifth bits or'ed in (unsignedWeightsQ5)
// and a -16·sum correction. Q4_1 / Q5_1 go Q4_0's / Q5_0's ways with m·da·Σa added per block
// where those subtract an offset. IQ4_NL goes Q8_0's ways on its levels (one byte swizzle per 16
// weights makes them the signed bytes a Q8_0 block holds).
//
// Arithmetic, chosen by measurement: integer dot products on activations quantized per 32-block
// to 8 bits (one f32 scale per block), as llama.cpp does. Widening every weight to f32 for FMAs
// with f32 activations (i8 -> i16 -> i32 -> f32, one FMA per 4 weights) ran a Q8_0 GEMV
// 4096x4096 in 3.7-4.2 ms against 1.7-2.0 ms for this kernel (relaxed build, one thread, same
// session: 2.1x slower). With integers a block of 32 weights is four i32x4.dot_i16x8_s on
// activations kept as i16, the weights widened once per block. Q4_0 nibbles stay unsigned (0..15): the -8 offset comes in as
// -8 · the block's activation sum, precomputed with the activations.
// The relaxed build computes blocks with i16x8.relaxed_dot_i8x16_i7x16_s (x86's pmaddubsw, 16
// products a step), whose second operand must be 7-bit: Q4_0's nibbles as they are
// (blockDotQ4Relaxed), Q8_0's activations split into a⁺ and a⁻ (blockDotQ8Relaxed; Q8_0 GEMV
// 1536x576 +6-10%, SmolLM2 Q8_0 decode +3-10%). Every row of x goes through the GEMV's block dots
// (a batch of rows: each in turn over an L2-sized block of weight rows), so a row's bits do not
// depend on the rows beside it, up to
// linear_quant_f32_rows rows (12 for Q8_0, 32 for Q4_0 in the simd build): from there a call (a
// prefill chunk) dequantizes each weight once into an f32 panel for all its rows and runs the f32
// GEMM tiles on x as it is (linear.ts), as llama.cpp's GPU backends dequantize for large batches:
// integer block dots per row cost more instructions than f32 FMAs (SmolLM2 Q8_0 prefill
// 1.33-1.70x, Q4_0 1.04-1.25x, scratch/ab.ts). The relaxed build's formats of unsigned weights
// (Q4_0, Q5_0, Q4_1, Q5_1, the K-quants) have no such rows: from PANEL_ROWS rows they pack each block
// of weight columns once into integer panels and run 4x8 tiles of 7-bit dots on quantized x
// (linear-quant-panels.ts: GEMM 128x2048x2048 Q4_K 2.1x the f32 panels, Q5_0 1.65x, Q3_K / Q2_K 1.6x, Q4_0 1.42x
// the two-row integer tiles it had since the tenth round, which gave each row the bits it has
// alone). Q8_0's signed weights would take two 7-bit dots and a pair-add every 16 products (x's
// a⁺ and a⁻, or two weight planes), where the nibbles take one dot and an add: probed on the AMD
// EPYC VM, 61 against 117 G products/s, the f32 FMAs 34 (scratch/i8g/probe.ts): too little over
// the f32 panels (a two-row integer tile for Q8_0 ran 0.74x of them). Not used:
// i32x4.relaxed_dot_i8x16_i7x16_add_s, which Node 20's V8 computes wrongly: it ignores the
// accumulator and doubles the sums (a = -1, b = 2, c = 100 gives -16 on Node 20.20, 92 on Deno
// 2.9 and Bun 1.4), and Node 20 runs the relaxed build.
//
// Quantized activations (per x row, per block of 32, QA_BLOCK bytes): 64 bytes of 32 x i16 (simd
// build) or of a⁺ then a⁻, 32 x i8 each (relaxed build), 32 x i8 (relaxed Q4_0 / Q5_0 / Q4_1 / Q5_1, panels), an i32x4 [-8·sum,
// 0, 0, 0], the f32 scale, the i32 sums of the first and of the last 16, the scale times the sum
// (the last two for linear-kquant.ts). They are made by each call in its scratch, or once per x by
// quantize_activations (LINEAR_X_QUANTIZED).
// Output columns [nBegin, nEnd) can go to different threads: each column is computed the same
// way whatever the range, so splits give the same bits.

export const QK: i32 = 32;
export const QA_BLOCK: usize = 128;
const QA_NEG: usize = 32;
export const QA_I8: usize = 64;
export const QA_CORR: usize = 96;
export const QA_SCALE: usize = 112;
/** The i32 sums of the block's first and second 16 quantized activations (Q6_K's offsets). */
export const QA_SUM16: usize = 116;
/** The f32 scale times the sum of the 32 quantized activations (Q4_K's mins). */
export const QA_DSUM: usize = 124;

/**
 * Rows of x from which a call computes in f32 on weight panels dequantized once for all its rows
 * (the GEMM_F32 path below) instead of on activations quantized to 8 bits, per weight format (a
 * WEIGHT_* code): where it measured faster (GEMM 1536x576, relaxed build, scratch/gemmwab.ts:
 * Q8_0 1.0x at 8 rows, 1.13-1.23x at 12, 1.3-1.47x from 24; Q4_0, whose 7-bit dots are cheaper,
 * 0.87x at 16, 1.04-1.1x from 32, the simd build's). K-quants (linear-kquant.ts): as Q8_0. The
 * relaxed build's unsigned formats (Q4_0 / Q5_0 / Q4_1 / Q5_1 / the K-quants) never: packed integer
 * panels from PANEL_ROWS rows (linear-quant-panels.ts).
 */
// @ts-ignore: decorator
@inline export function linearQuantF32Rows(format: i32): i32 {
  if (panelFormat(format)) return i32.MAX_VALUE; // the relaxed build's packed integer panels from PANEL_ROWS (linear-quant-panels.ts)
  if (format == WEIGHT_Q4_0 || isQ5_0(format)) return 32; // (simd build)
  return 12; // Q8_0, IQ4_NL (Q8_0's dots), the other K-quants, the simd build's Q4_1 / Q5_1 and K-quants
}

/** The rows of x from which the linear kernel of weight format `format` (a WEIGHT_* code) computes in f32: x not quantized, no LINEAR_X_QUANTIZED. */
export function linear_quant_f32_rows(format: i32): i32 {
  return linearQuantF32Rows(format);
}

/** Bytes of scratch a call takes: the quantized activations of M rows of K, or (from the rows where either format computes in f32) as much as an f32 weight panel if more. */
export function linear_quant_scratch_bytes(M: i32, K: i32): i32 {
  // (Relaxed build, from PANEL_ROWS rows: and after them a packed panel.)
  const quantized = quantizedBytes(M, K) + (ASC_FEATURE_RELAXED_SIMD && M >= PANEL_ROWS ? panelBytes(K) : 0);
  let fewest = i32.MAX_VALUE;
  for (let format = 0; format < WEIGHT_FORMAT_COUNT; format++) fewest = min(fewest, linearQuantF32Rows(format));
  return M >= fewest ? max(quantized, linear_panel_scratch_bytes(M, K)) : quantized;
}

/** Bytes of M rows of K quantized: every row's 32-blocks, then (relaxed build, rows of whole super-blocks) their super-blocks (the K-quants'). */
// @ts-ignore: decorator
@inline function quantizedBytes(M: i32, K: i32): i32 {
  return M * ((K + QK - 1) / QK) * <i32>QA_BLOCK + (ASC_FEATURE_RELAXED_SIMD && K % SUPER_BLOCK == 0 ? M * (K / SUPER_BLOCK) * <i32>QA_SUPER : 0);
}

/**
 * The f16 at `p` as f32 (normal, subnormal and zero; scales are never inf/NaN in a valid file),
 * with no arithmetic on a subnormal f32. Loaded sign-extended and shifted, one mask keeps the sign
 * at bit 31 and the magnitude below; a normal's exponent is rebiased by an integer add, a
 * subnormal's mantissa converted and scaled by 2^-24 (exact), the two picked by a select (no
 * branch: a mispredicted branch per block cost Q4_0 GEMV 2.5x). K-quant super-block scales d are
 * mostly subnormal (ggml's Q6_K: 96% on weights of scale 0.02, Q5_K 55%): multiplying the bits as
 * an f32 by 2^112 (halfAtScaled) took a microcode assist each, Q6_K GEMV 2.5x and Q5_K 1.6x the time.
 */
// @ts-ignore: decorator
@inline export function halfAt(p: usize): f32 {
  const bits = (<i32>load<i16>(p) << 13) & 0x8fffe000;
  const subnormal = reinterpret<i32>(<f32>(bits & 0x7fffffff) * 7.275957614183426e-12) | (bits & 0x80000000); // 2^-37
  return reinterpret<f32>(select(bits + 0x38000000, subnormal, (bits & 0x0f800000) != 0));
}

/**
 * halfAt in two instructions: the bits as an f32 times 2^112 (subnormals included), for the
 * 32-block formats' dots, one scale per 32 weights, where halfAt's select took Q8_0 / Q4_0 GEMV
 * 1.2x the time. Their scales are max|x| / 127 (or / 8) of a block, subnormal only for blocks
 * within ±0.0078 (Q8_0, IQ4_NL; Q5_0 ±0.001, Q4_0 ±0.0005): rare in trained weights, correct but slower there.
 */
// @ts-ignore: decorator
@inline export function halfAtScaled(p: usize): f32 {
  return reinterpret<f32>((<i32>load<i16>(p) << 13) & 0x8fffe000) * 5.192296858534828e33; // 2^112
}

/**
 * round(x·id) half away from zero (C's roundf), lane by lane, as i32: floor(|v| + 0.5) with v's
 * sign, then to i32 by adding 1.5·2^23 (its low mantissa bits are then the integer, exactly, for
 * |q| < 2^22; here |q| <= 127): two instructions where trunc_sat takes ten on x86 (its NaN and
 * overflow handling).
 */
// @ts-ignore: decorator
@inline export function roundHalfAway(x: v128, id: v128): v128 {
  const v = f32x4.mul(x, id);
  const r = f32x4.floor(f32x4.add(f32x4.abs(v), f32x4.splat(0.5)));
  const q = v128.or(r, v128.and(v, i32x4.splat(0x80000000)));
  return i32x4.sub(f32x4.add(q, f32x4.splat(12582912)), i32x4.splat(0x4b400000));
}

/**
 * Quantizes the n <= 32 floats at src into the activation block at blk: the scale
 * d = max|x| / 127 and q = round(x / d) (half away from zero, as ggml), zero past n.
 */
// @ts-ignore: decorator
@inline function quantizeBlock(src: usize, n: i32, blk: usize): void {
  let amax: f32 = 0;
  if (n == QK) {
    // |x| as bits (hmaxI32; a NaN still makes d NaN).
    let mx = i32x4.splat(0);
    for (let i: usize = 0; i < 32; i += 4) mx = i32x4.max_s(mx, f32x4.abs(v128.load(src + (i << 2))));
    amax = reinterpret<f32>(hmaxI32(mx));
  } else {
    for (let i = 0; i < n; i++) amax = max(amax, abs(load<f32>(src + (<usize>i << 2))));
  }
  const d = amax / 127;
  const id: f32 = d != 0 ? 1 / d : 0;
  let sum = 0;
  if (n == QK) {
    // Sixteen at a time: the same rounding as the scalar loop (a row's last, partial block), lane
    // by lane (all scalar, it was 4% of a Q8_0 decode step).
    const idv = f32x4.splat(id);
    for (let i: usize = 0; i < 32; i += 16) {
      const at = src + (i << 2);
      const q0 = roundHalfAway(v128.load(at), idv), q1 = roundHalfAway(v128.load(at, 16), idv);
      const q2 = roundHalfAway(v128.load(at, 32), idv), q3 = roundHalfAway(v128.load(at, 48), idv);
      const h0 = i16x8.narrow_i32x4_s(q0, q1), h1 = i16x8.narrow_i32x4_s(q2, q3);
      const q8 = i8x16.narrow_i16x8_s(h0, h1);
      if (ASC_FEATURE_RELAXED_SIMD) {
        v128.store(blk + i, i8x16.max_s(q8, i8x16.splat(0)));
        v128.store(blk + QA_NEG + i, i8x16.max_s(i8x16.neg(q8), i8x16.splat(0)));
      } else {
        v128.store(blk + (i << 1), h0);
        v128.store(blk + (i << 1), h1, 16);
      }
      v128.store(blk + QA_I8 + i, q8);
      const half = i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3));
      store<i32>(blk + QA_SUM16 + (i >> 2), i32x4.extract_lane(half, 0) + i32x4.extract_lane(half, 1) + i32x4.extract_lane(half, 2) + i32x4.extract_lane(half, 3));
    }
    sum = load<i32>(blk + QA_SUM16) + load<i32>(blk + QA_SUM16 + 4);
  } else {
    let firstHalf = 0;
    for (let i = 0; i < QK; i++) {
      if (i == 16) firstHalf = sum;
      let q = 0;
      if (i < n) {
        const v = load<f32>(src + (<usize>i << 2)) * id;
        // round half away from zero, like C's roundf
        q = <i32>(v >= 0 ? floor(v + 0.5) : -floor(-v + 0.5));
      }
      if (ASC_FEATURE_RELAXED_SIMD) {
        store<i8>(blk + <usize>i, <i8>max(q, 0));
        store<i8>(blk + QA_NEG + <usize>i, <i8>max(-q, 0));
      } else {
        store<i16>(blk + (<usize>i << 1), <i16>q);
      }
      store<i8>(blk + QA_I8 + <usize>i, <i8>q);
      sum += q;
    }
    store<i32>(blk + QA_SUM16, firstHalf);
    store<i32>(blk + QA_SUM16 + 4, sum - firstHalf);
  }
  v128.store(blk + QA_CORR, i32x4.replace_lane(i32x4.splat(0), 0, -8 * sum));
  store<f32>(blk + QA_SCALE, d);
  store<f32>(blk + QA_DSUM, d * <f32>sum);
}

/**
 * Quantizes blocks [blockBegin, blockEnd) of x [M, K] (ceil(K/32) blocks per row, numbered row
 * by row) into `qa` (linear_quant_scratch_bytes(M, K)), as the linear kernels read them with
 * LINEAR_X_QUANTIZED: threads quantize disjoint block ranges once for every call that shares x,
 * instead of each call (and each thread) quantizing all of x itself.
 */
export function quantize_activations(x: usize, M: i32, K: i32, qa: usize, blockBegin: i32, blockEnd: i32): void {
  const nb = (K + QK - 1) / QK;
  const end = min(blockEnd, M * nb);
  let b = max(blockBegin, 0);
  if (b >= end) return;
  // Block b is row b / nb, columns from (b % nb)·32: one division here, not two per block.
  let m = b / nb, k0 = (b - m * nb) * QK;
  // The super-blocks (relaxed build, the K-quants') after every row's 32-blocks, each made by
  // whoever makes its first 32-block, from x (which holds all of it: a thread that makes x quantizes whole super-blocks of it).
  const supers = ASC_FEATURE_RELAXED_SIMD && K % SUPER_BLOCK == 0, superBase = qa + <usize>M * <usize>nb * QA_BLOCK, perRow = K / SUPER_BLOCK;
  for (; b < end; b++) {
    const src = x + ((<usize>m * <usize>K + <usize>k0) << 2);
    if (supers && k0 % SUPER_BLOCK == 0) quantizeSuper(src, superBase + <usize>(m * perRow + k0 / SUPER_BLOCK) * QA_SUPER);
    quantizeBlock(src, min(QK, K - k0), qa + <usize>b * QA_BLOCK);
    k0 += QK;
    if (k0 >= K) { m++; k0 = 0; }
  }
}

/**
 * The high nibbles of 16 bytes. i8x16.shr_u has no x86 instruction: V8 shifts 16-bit lanes and
 * masks with a constant it builds again for every use (three instructions); shifting the lanes
 * here and masking with the low-nibble mask the block already holds saves them.
 */
// @ts-ignore: decorator
@inline export function highNibbles(q: v128): v128 {
  return v128.and(i16x8.shr_u(q, 4), i8x16.splat(0x0f));
}

/**
 * Q4_0 and Q5_0 store unsigned weights (0..15, 0..31) with an offset (8, 16) that -offset·Σa
 * undoes; both are 7-bit, the relaxed build's i8 x i7 dot operand as they are.
 */
// @ts-ignore: decorator
@inline function offsetWeights(format: i32): bool { return format == WEIGHT_Q4_0 || isQ5_0(format); }

/** Q5_0 and Q5_0_U8 (the same values, a byte each): weights 0..31 with the offset 16. */
// @ts-ignore: decorator
@inline export function isQ5_0(format: i32): bool { return format == WEIGHT_Q5_0 || format == WEIGHT_Q5_0_U8; }

/** Q4_1 and Q5_1: unsigned weights with a min per block (w = d·q + m), added as m·da·Σa. */
// @ts-ignore: decorator
@inline export function hasMin(format: i32): bool { return format == WEIGHT_Q4_1 || format == WEIGHT_Q5_1 || format == WEIGHT_Q5_1_U8; }

/** Q5_0_U8 and Q5_1_U8: a byte a weight (0..31) at unpackedAt(format), after d (and m). */
// @ts-ignore: decorator
@inline function isUnpacked(format: i32): bool { return format == WEIGHT_Q5_0_U8 || format == WEIGHT_Q5_1_U8; }

// @ts-ignore: decorator
@inline function unpackedAt(format: i32): usize { return format == WEIGHT_Q5_1_U8 ? 4 : 2; }

/** The formats of unsigned 4- or 5-bit weights (the relaxed build's 7-bit dot operand as they are). */
// @ts-ignore: decorator
@inline function unsignedWeights(format: i32): bool { return offsetWeights(format) || hasMin(format); }

/** Q5_0 and Q5_1: nibbles and a u32 of fifth bits. */
// @ts-ignore: decorator
@inline function fiveBit(format: i32): bool { return format == WEIGHT_Q5_0 || format == WEIGHT_Q5_1; }

/** Where a block's 16 bytes of nibbles start: after d (Q4_0, IQ4_NL), d and m (Q4_1), d and qh (Q5_0), d, m and qh (Q5_1). */
// @ts-ignore: decorator
@inline function nibblesAt(format: i32): usize {
  return format == WEIGHT_Q5_1 ? 8 : format == WEIGHT_Q5_0 ? 6 : format == WEIGHT_Q4_1 ? 4 : 2;
}

/** Where a Q5_0 / Q5_1 block's u32 of fifth bits sits (after d, or d and m). */
// @ts-ignore: decorator
@inline function qhAt(format: i32): usize { return format == WEIGHT_Q5_1 ? 4 : 2; }

/**
 * Weights 0-15 (high false) or 16-31 of a Q5_0 / Q5_1 block as unsigned bytes 0..31: the nibbles (byte
 * j: weight j low, j+16 high) with bit j of the block's u32 qh as 16. The qh byte of each weight
 * shuffled to its lane, its bit tested against the lane's mask.
 */
/** The qh byte of each lane: weights 0-15 (bytes 0, 1), then 16-31 (bytes 2, 3). */
const Q5_LANES = memory.data<u8>([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3], 16);

// @ts-ignore: decorator
@inline function unsignedWeightsQ5(wb: usize, high: bool, format: i32): v128 {
  const q = v128.load(wb + nibblesAt(format));
  const nib = high ? highNibbles(q) : v128.and(q, i8x16.splat(0x0f));
  const qh = v128.load32_zero(wb + qhAt(format)), lanes = v128.load(Q5_LANES + (high ? 16 : 0));
  // The lane pattern from memory (one load): as a shuffle's constant, V8 built it anew in every
  // block (five instructions). The relaxed swizzle is one pshufb (its indices are all < 16).
  const bytes = ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(qh, lanes) : i8x16.swizzle(qh, lanes);
  const bit = i8x16(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  return v128.or(nib, v128.and(i8x16.eq(v128.and(bytes, bit), bit), i8x16.splat(0x10)));
}

/** Weights 0-15 (high false) or 16-31 of a Q4_0 / Q4_1 / Q5_0 / Q5_1 block as unsigned bytes (0..15, 0..31). */
// @ts-ignore: decorator
@inline export function unsignedBlockWeights(wb: usize, high: bool, format: i32): v128 {
  if (fiveBit(format)) return unsignedWeightsQ5(wb, high, format);
  if (isUnpacked(format)) return v128.load(wb + unpackedAt(format) + (high ? 16 : 0));
  const q = v128.load(wb + nibblesAt(format));
  return high ? highNibbles(q) : v128.and(q, i8x16.splat(0x0f));
}

/** IQ4_NL's 16 levels (ggml's kvalues_iq4nl), the table its nibbles index. */
const IQ4_LEVELS = memory.data<i8>([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], 16);

/**
 * Weights 0-15 (high false) or 16-31 of an IQ4_NL block as signed bytes: each nibble's level by
 * one byte swizzle (the table loaded from memory: as a constant V8 builds it anew every use).
 */
// @ts-ignore: decorator
@inline function iq4Weights(wb: usize, high: bool): v128 {
  const q = v128.load(wb + 2), levels = v128.load(IQ4_LEVELS);
  const nib = high ? highNibbles(q) : v128.and(q, i8x16.splat(0x0f));
  return ASC_FEATURE_RELAXED_SIMD ? i8x16.relaxed_swizzle(levels, nib) : i8x16.swizzle(levels, nib);
}

/** The weight block's 32 values as four i16x8 vectors (Q8_0, IQ4_NL: signed; the others unsigned 0..15 / 0..31). */
// @ts-ignore: decorator
@inline function weightsI16(wb: usize, format: i32, part: i32): v128 {
  if (format == WEIGHT_IQ4_NL) {
    const q = iq4Weights(wb, part >= 2);
    return (part & 1) == 0 ? i16x8.extend_low_i8x16_s(q) : i16x8.extend_high_i8x16_s(q);
  }
  if (fiveBit(format) || isUnpacked(format)) {
    const q = unsignedBlockWeights(wb, part >= 2, format);
    return (part & 1) == 0 ? i16x8.extend_low_i8x16_u(q) : i16x8.extend_high_i8x16_u(q);
  }
  if (format == WEIGHT_Q4_0 || format == WEIGHT_Q4_1) {
    const q = v128.load(wb + nibblesAt(format));
    const nib = part < 2 ? v128.and(q, i8x16.splat(0x0f)) : highNibbles(q);
    return (part & 1) == 0 ? i16x8.extend_low_i8x16_u(nib) : i16x8.extend_high_i8x16_u(nib);
  }
  const q = v128.load(wb + 2 + (part < 2 ? 0 : 16));
  return (part & 1) == 0 ? i16x8.extend_low_i8x16_s(q) : i16x8.extend_high_i8x16_s(q);
}

/** Integer dot of one weight block with one activation block, both in registers (i16x8), as i32x4 partial sums. */
// @ts-ignore: decorator
@inline function blockDotRegs(w0: v128, w1: v128, w2: v128, w3: v128, a0: v128, a1: v128, a2: v128, a3: v128, corr: v128, format: i32): v128 {
  let s = i32x4.dot_i16x8_s(w0, a0);
  s = i32x4.add(s, i32x4.dot_i16x8_s(w1, a1));
  s = i32x4.add(s, i32x4.dot_i16x8_s(w2, a2));
  s = i32x4.add(s, i32x4.dot_i16x8_s(w3, a3));
  // Q4_0 / Q5_0 weights are stored with +8 / +16: the -8·sum(a) / -16·sum(a) undoes it.
  return offsetWeights(format) ? i32x4.add(s, corr) : s;
}

/** Part 0..3 of an activation block as the block dot takes it: i16x8, or i8x16 (parts 0, 1) for the relaxed build's unsigned formats (Q8_0, IQ4_NL: a⁺ then a⁻). */
// @ts-ignore: decorator
@inline function activations(a: usize, part: i32, format: i32): v128 {
  if (unsignedWeights(format) && ASC_FEATURE_RELAXED_SIMD) return v128.load(a + QA_I8 + (<usize>(part & 1) << 4));
  return v128.load(a + (<usize>part << 4));
}

/** The -offset·sum vector of an activation block (Q4_0: -8·sum, Q5_0: -16·sum; Q8_0: none). */
// @ts-ignore: decorator
@inline function correction(a: usize, format: i32): v128 {
  if (isQ5_0(format)) return i32x4.shl(v128.load(a + QA_CORR), 1);
  return format == WEIGHT_Q4_0 ? v128.load(a + QA_CORR) : i32x4.splat(0);
}

/** Bytes of a block: Q8_0 and Q5_0_U8 34, Q5_1_U8 36, Q4_0 and IQ4_NL 18, Q4_1 20, Q5_0 22, Q5_1 24 (2 bytes of f16 each, 4 of fifth bits, 16 of nibbles). */
// @ts-ignore: decorator
@inline export function blockBytes(format: i32): usize {
  return format == WEIGHT_Q8_0 || format == WEIGHT_Q5_0_U8 ? 34 : format == WEIGHT_Q5_1_U8 ? 36 : nibblesAt(format) + 16;
}

/**
 * K weights of a row of 32-blocks, from its first block at `src`, as f32 at `dst`: d·q,
 * d·(nibble - 8), d·(q5 - 16), d·level, each one exact f32 product (an f16 times a small integer),
 * or d·q + m (Q4_1, Q5_1: the product exact, the sum rounded once), the values the host's readers
 * compute. Whole blocks 16 weights a step; a last partial block (K not a
 * multiple of 32) one weight at a time.
 */
// @ts-ignore: decorator
@inline export function dequantizeRow(src: usize, K: i32, dst: usize, format: i32): void {
  const bb = blockBytes(format), whole = K / QK;
  for (let b = 0; b < whole; b++) {
    const blk = src + <usize>b * bb, out = dst + (<usize>b << 7), d = f32x4.splat(halfAt(blk));
    const q = v128.load(blk + nibblesAt(format));
    let lo: v128, hi: v128; // weights 0-15 and 16-31 as i8x16
    if (hasMin(format)) {
      const minusM = f32x4.splat(-halfAt(blk + 2));
      lo = unsignedBlockWeights(blk, false, format);
      hi = unsignedBlockWeights(blk, true, format);
      scale16(lo, d, minusM, out);
      scale16(hi, d, minusM, out + 64);
      continue;
    }
    if (isQ5_0(format)) {
      lo = i8x16.sub(unsignedBlockWeights(blk, false, format), i8x16.splat(16));
      hi = i8x16.sub(unsignedBlockWeights(blk, true, format), i8x16.splat(16));
    } else if (format == WEIGHT_IQ4_NL) {
      lo = iq4Weights(blk, false);
      hi = iq4Weights(blk, true);
    } else if (format == WEIGHT_Q4_0) {
      lo = i8x16.sub(v128.and(q, i8x16.splat(0x0f)), i8x16.splat(8));
      hi = i8x16.sub(highNibbles(q), i8x16.splat(8));
    } else {
      lo = q;
      hi = v128.load(blk + 18);
    }
    dequantize16(lo, d, out);
    dequantize16(hi, d, out + 64);
  }
  const rest = K - whole * QK;
  if (rest == 0) return; // no block past the row's last is read
  const blk = src + <usize>whole * bb, d = halfAt(blk);
  for (let j = 0; j < rest; j++) {
    let w: f32;
    if (format == WEIGHT_Q8_0) {
      w = d * <f32>load<i8>(blk + 2 + <usize>j);
    } else if (isUnpacked(format)) {
      const q = <i32>load<u8>(blk + unpackedAt(format) + <usize>j);
      w = hasMin(format) ? d * <f32>q + halfAt(blk + 2) : d * <f32>(q - 16);
    } else {
      const byte = <i32>load<u8>(blk + nibblesAt(format) + <usize>(j & 15));
      let q = j < 16 ? byte & 15 : byte >> 4;
      if (fiveBit(format)) q |= (<i32>(load<u32>(blk + qhAt(format)) >> <u32>j) & 1) << 4;
      if (format == WEIGHT_IQ4_NL) w = d * <f32>load<i8>(IQ4_LEVELS + <usize>q);
      else if (hasMin(format)) w = d * <f32>q + halfAt(blk + 2);
      else w = d * <f32>(q - (format == WEIGHT_Q5_0 ? 16 : 8));
    }
    store<f32>(dst + (<usize>(whole * QK + j) << 2), w);
  }
}

/**
 * 16 integers (i8x16, |q| < 128) times the f32 vector f, minus `minus`, stored as 16 f32 at out:
 * Q4_1 / Q5_1's d·q + m (minus = -m) and the K-quants' d·sc·q - dmin·m, each product exact, the
 * difference rounded once, as the host's dequantizers compute it.
 */
// @ts-ignore: decorator
@inline export function scale16(q: v128, f: v128, minus: v128, out: usize): void {
  const lo = i16x8.extend_low_i8x16_s(q), hi = i16x8.extend_high_i8x16_s(q);
  v128.store(out, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), f), minus));
  v128.store(out + 16, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), f), minus));
  v128.store(out + 32, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), f), minus));
  v128.store(out + 48, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), f), minus));
}

/** 16 signed bytes times d, stored as 16 f32 at `out`. */
// @ts-ignore: decorator
@inline function dequantize16(q: v128, d: v128, out: usize): void {
  const lo = i16x8.extend_low_i8x16_s(q), hi = i16x8.extend_high_i8x16_s(q);
  v128.store(out, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), d));
  v128.store(out + 16, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), d));
  v128.store(out + 32, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), d));
  v128.store(out + 48, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), d));
}

/**
 * Relaxed build, Q4_0: i16x8.relaxed_dot_i8x16_i7x16_s with the nibbles (0..15) as the 7-bit
 * operand (exact on every engine: a pair of products is at most 2·127·15), two per block instead
 * of four widenings and four dot products. The i32x4 form would also add, but Node 20's V8
 * computes that one wrongly (it ignores the accumulator and doubles the sums), so the pairs are
 * added with extadd_pairwise.
 */
// @ts-ignore: decorator
@inline function blockDotQ4Relaxed(q: v128, a0: v128, a1: v128, corr: v128): v128 {
  return nibbleDotRelaxed(v128.and(q, i8x16.splat(0x0f)), highNibbles(q), a0, a1, corr);
}

/** blockDotQ4Relaxed on a block's nibbles already split (low: weights 0-15, high: 16-31; Q5_0 / Q5_1: with their fifth bits). */
// @ts-ignore: decorator
@inline function nibbleDotRelaxed(low: v128, high: v128, a0: v128, a1: v128, corr: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    const pairs = i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(a0, low), i16x8.relaxed_dot_i8x16_i7x16_s(a1, high));
    return i32x4.add(i32x4.extadd_pairwise_i16x8_s(pairs), corr);
  }
  return unreachable();
}

/**
 * One output: dot(activation row qa, weight row w) over nb blocks, two a step. Four a step with
 * their scales computed in one vector held more values than the registers: TurboFan loads all of
 * a step's blocks up front, and it spilled them to the stack (Q8_0 GEMV 1536x576 ran 8-12%
 * slower, relaxed and simd builds). The products and their order are the same, so are the bits.
 */
// @ts-ignore: decorator
@inline function dotq_1x1(qa: usize, w: usize, nb: i32, format: i32): f32 {
  const bb = blockBytes(format);
  let acc = f32x4.splat(0);
  let mins: f32 = 0; // Q4_1 / Q5_1: Σ m·da·Σa, block by block
  let b = 0;
  for (; b + 2 <= nb; b += 2) {
    const wb = w + <usize>b * bb, a = qa + <usize>b * QA_BLOCK;
    const s0 = f32x4.splat(halfAtScaled(wb) * load<f32>(a + QA_SCALE));
    const s1 = f32x4.splat(halfAtScaled(wb + bb) * load<f32>(a + QA_BLOCK + QA_SCALE));
    acc = fmadd(f32x4.convert_i32x4_s(blockDotAt(wb, a, format)), s0, acc);
    acc = fmadd(f32x4.convert_i32x4_s(blockDotAt(wb + bb, a + QA_BLOCK, format)), s1, acc);
    if (hasMin(format)) { mins += blockMin(wb, a); mins += blockMin(wb + bb, a + QA_BLOCK); }
  }
  for (; b < nb; b++) {
    const wb = w + <usize>b * bb, a = qa + <usize>b * QA_BLOCK;
    acc = fmadd(f32x4.convert_i32x4_s(blockDotAt(wb, a, format)), f32x4.splat(halfAtScaled(wb) * load<f32>(a + QA_SCALE)), acc);
    if (hasMin(format)) mins += blockMin(wb, a);
  }
  return hasMin(format) ? hsum(acc) + mins : hsum(acc);
}

/** A Q4_1 / Q5_1 block's min times its activation block's scale and sum: m·da·Σa. */
// @ts-ignore: decorator
@inline function blockMin(wb: usize, a: usize): f32 {
  return halfAtScaled(wb + 2) * load<f32>(a + QA_DSUM);
}

/**
 * Two outputs: one activation row against two weight rows anywhere (two of the GEMV's four
 * streams), each activation block loaded once for both; each output computed exactly as
 * dotq_1x1 computes it. Two rows, not four: with four rows' weights, the activations and four
 * accumulators live at once, TurboFan kept two accumulators on the stack (each FMA then waiting
 * on a store and a load); two at a time spill nothing: SmolLM2 Q8_0 decode 1.05x at 1 thread
 * (twice), Q4_0 level (scratch/ab.ts).
 */
// @ts-ignore: decorator
@inline function dotq_1x2(qa: usize, w0: usize, w1: usize, nb: i32, format: i32, y0: usize, y1: usize, addToY: bool): void {
  const bb = blockBytes(format);
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  let mins0: f32 = 0, mins1: f32 = 0;
  for (let b = 0; b < nb; b++) {
    const a = qa + <usize>b * QA_BLOCK, o = <usize>b * bb;
    const a0 = activations(a, 0, format), a1 = activations(a, 1, format), a2 = activations(a, 2, format), a3 = activations(a, 3, format);
    const corr = correction(a, format), da = load<f32>(a + QA_SCALE);
    acc0 = fmadd(f32x4.convert_i32x4_s(blockDotRow(w0 + o, a0, a1, a2, a3, corr, format)), f32x4.splat(halfAtScaled(w0 + o) * da), acc0);
    acc1 = fmadd(f32x4.convert_i32x4_s(blockDotRow(w1 + o, a0, a1, a2, a3, corr, format)), f32x4.splat(halfAtScaled(w1 + o) * da), acc1);
    if (hasMin(format)) { mins0 += blockMin(w0 + o, a); mins1 += blockMin(w1 + o, a); }
  }
  finish(y0, hasMin(format) ? hsum(acc0) + mins0 : hsum(acc0), addToY);
  finish(y1, hasMin(format) ? hsum(acc1) + mins1 : hsum(acc1), addToY);
}

/** A weight block (at wb) against an activation block (at a), as i32x4 partial sums. */
// @ts-ignore: decorator
@inline function blockDotAt(wb: usize, a: usize, format: i32): v128 {
  return blockDotRow(wb, activations(a, 0, format), activations(a, 1, format), activations(a, 2, format), activations(a, 3, format), correction(a, format), format);
}

/**
 * Relaxed build, Q8_0: the same 7-bit dot on the activations' positive and negative parts (a =
 * a⁺ - a⁻, both 0..127), subtracted in 16 bits: each dot is exact (at most 2·128·127 in
 * magnitude) and so is their difference w·a, which fits, though the subtraction may wrap on the
 * way. Four dots, two subtractions and two pair-adds per block where widening the weights took
 * four widenings, four dot products and three adds.
 */
// @ts-ignore: decorator
@inline function blockDotQ8Relaxed(q0: v128, q1: v128, pos0: v128, pos1: v128, neg0: v128, neg1: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    const p0 = i16x8.sub(i16x8.relaxed_dot_i8x16_i7x16_s(q0, pos0), i16x8.relaxed_dot_i8x16_i7x16_s(q0, neg0));
    const p1 = i16x8.sub(i16x8.relaxed_dot_i8x16_i7x16_s(q1, pos1), i16x8.relaxed_dot_i8x16_i7x16_s(q1, neg1));
    return i32x4.add(i32x4.extadd_pairwise_i16x8_s(p0), i32x4.extadd_pairwise_i16x8_s(p1));
  }
  return unreachable();
}

/**
 * One weight block against activations already in registers (a0..a3: i16x8; in the relaxed build
 * Q4_0's a0, a1: i8x16, Q8_0's a⁺ (a0, a1) and a⁻ (a2, a3) as i8x16; corr: the -8·sum vector).
 */
// @ts-ignore: decorator
@inline function blockDotRow(wb: usize, a0: v128, a1: v128, a2: v128, a3: v128, corr: v128, format: i32): v128 {
  if ((fiveBit(format) || isUnpacked(format)) && ASC_FEATURE_RELAXED_SIMD) return nibbleDotRelaxed(unsignedBlockWeights(wb, false, format), unsignedBlockWeights(wb, true, format), a0, a1, corr);
  if ((format == WEIGHT_Q4_0 || format == WEIGHT_Q4_1) && ASC_FEATURE_RELAXED_SIMD) return blockDotQ4Relaxed(v128.load(wb + nibblesAt(format)), a0, a1, corr);
  if (format == WEIGHT_IQ4_NL && ASC_FEATURE_RELAXED_SIMD) return blockDotQ8Relaxed(iq4Weights(wb, false), iq4Weights(wb, true), a0, a1, a2, a3);
  if (ASC_FEATURE_RELAXED_SIMD) return blockDotQ8Relaxed(v128.load(wb + 2), v128.load(wb + 18), a0, a1, a2, a3);
  return blockDotRegs(weightsI16(wb, format, 0), weightsI16(wb, format, 1), weightsI16(wb, format, 2), weightsI16(wb, format, 3), a0, a1, a2, a3, corr, format);
}

/** Bytes of K weights of a row (K whole blocks, or for the K-quants whole super-blocks, or the whole row). */
// @ts-ignore: decorator
@inline function rowBytes(K: i32, format: i32): usize {
  return isKQuant(format) ? kquantRowBytes(K, format) : <usize>((K + QK - 1) / QK) * blockBytes(format);
}

/**
 * The linear layer for every block-quantized format (a WEIGHT_* code): the f32 GEMM on dequantized
 * panels from linearQuantF32Rows rows, else integer dots on quantized x (the relaxed build's
 * packed panels for unsigned weights from PANEL_ROWS rows, the GEMV otherwise); the block
 * arithmetic is this file's for 32-blocks,
 * linear-kquant.ts's for super-blocks, linear-quant-panels.ts's for the packed panels.
 */
// @ts-ignore: decorator
@inline function linearQuant(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize, format: i32): void {
  const nb = (K + QK - 1) / QK;
  const ldw = rowBytes(K, format);
  const ldqa = <usize>nb * QA_BLOCK;
  const ldy = <usize>N << 2;
  const addToY = (flags & LINEAR_ACCUMULATE) != 0;
  if (M >= linearQuantF32Rows(format)) {
    // GEMM_F32: with this many rows, decoding a weight once into f32 for all of them costs less
    // than integer block dots per row, whose four 7-bit dots, subtractions and pair-adds per
    // block are nearly twice the instructions of f32 FMAs (wasm has no int8 dot with accumulate
    // that Node 20 computes right). The same panels as 16-bit weights (linear.ts), so the same
    // f32 tiles; x as it is (more exact than quantized), the scratch the call's own panel.
    if ((flags & LINEAR_X_QUANTIZED) != 0) unreachable(); // the scratch is shared quantized x
    const ldx = <usize>K << 2;
    for (let k0 = 0; k0 < K; k0 += KC) { // KC is whole blocks and super-blocks
      const kLen = min(KC, K - k0), wOff = rowBytes(k0, format), xp = scratch + PACKED_X_OFFSET;
      packRows(x, <usize>k0 << 2, ldx, M, kLen, xp);
      for (let n0 = nBegin; n0 < nEnd; n0 += NB) {
        const n1 = min(n0 + NB, nEnd);
        for (let n = n0; n < n1; n++) {
          const src = w + <usize>n * ldw + wOff, dst = scratch + (<usize>(n - n0) * <usize>kLen << 2);
          if (isKQuant(format)) dequantizeRowK(src, kLen, dst, format);
          else dequantizeRow(src, kLen, dst, format);
        }
        gemmPanel(xp, M, scratch, y, ldy, n0, n1, kLen, k0 > 0 || addToY);
      }
    }
  } else {
    // x quantized: at x (LINEAR_X_QUANTIZED, shared by the calls), or by this call into its scratch;
    // a packed panel after it in the call's own scratch.
    const quantizedX = (flags & LINEAR_X_QUANTIZED) != 0;
    if (!quantizedX) quantize_activations(x, M, K, scratch, 0, M * nb);
    const qa = quantizedX ? x : scratch;
    if (panelFormat(format) && M >= PANEL_ROWS) {
      panelGemm(qa, w, ldw, y, ldy, M, nBegin, nEnd, K, addToY, quantizedX ? scratch : scratch + <usize>quantizedBytes(M, K), format);
    } else {
      // GEMV, for every row of x below linearQuantF32Rows (below PANEL_ROWS for the relaxed build's panel formats:
      // a decode step, a batch of sequences decoding together): weight rows in blocks
      // (gemvBlockRows), each block's rows from its four quarters, the first two quarters' rows
      // then the last two's (dotq_1x2): four sequential streams from memory at once. From memory (weights past the L2, as a model's are) four
      // streams kept the prefetchers ahead where two streams 8 rows apart left them behind: Q8_0
      // GEMV 1536x576 1.2-1.5x, Q4_0 1.35-1.6x (scratch/gemvab.ts, relaxed build; level from the
      // L2). A second row of x reads the block again from the L2: a batch of 4 / 8 SmolLM2 decode
      // rows ran 1.28x / 1.41x (Q8_0) and 1.19x / 1.25x (Q4_0) faster so than through 4-row tiles
      // over one weight row at a time (their one stream, and each row's block dot all the same).
      const rowsPerBlock = gemvBlockRows(ldw, M, nEnd - nBegin);
      for (let n0 = nBegin; n0 < nEnd; n0 += rowsPerBlock) {
        const n1 = min(n0 + rowsPerBlock, nEnd), q = (n1 - n0) >> 2, dw = <usize>q * ldw, dy = <usize>q << 2;
        for (let m = 0; m < M; m++) {
          // (K-quants in the relaxed build: the row's activation super-blocks, after every row's 32-blocks.)
          const qaRow = superActivations(format) ? qa + <usize>M * ldqa + <usize>m * <usize>(K / SUPER_BLOCK) * QA_SUPER : qa + <usize>m * ldqa, yRow = y + <usize>m * ldy;
          for (let n = n0; n < n0 + q; n++) {
            const w0 = w + <usize>n * ldw, y0 = yRow + (<usize>n << 2);
            if (isKQuant(format)) {
              dotk_1x2(qaRow, w0, w0 + dw, K / SUPER_BLOCK, format, y0, y0 + dy, addToY);
              dotk_1x2(qaRow, w0 + 2 * dw, w0 + 3 * dw, K / SUPER_BLOCK, format, y0 + 2 * dy, y0 + 3 * dy, addToY);
            } else {
              dotq_1x2(qaRow, w0, w0 + dw, nb, format, y0, y0 + dy, addToY);
              dotq_1x2(qaRow, w0 + 2 * dw, w0 + 3 * dw, nb, format, y0 + 2 * dy, y0 + 3 * dy, addToY);
            }
          }
          for (let n = n0 + 4 * q; n < n1; n++) {
            const wn = w + <usize>n * ldw;
            finish(yRow + (<usize>n << 2), isKQuant(format) ? dotk_1x1(qaRow, wn, K / SUPER_BLOCK, format) : dotq_1x1(qaRow, wn, nb, format), addToY);
          }
        }
      }
    }
  }
  if (bias != 0) {
    for (let r = 0; r < M; r++) {
      const yRow = y + <usize>r * ldy;
      for (let n = nBegin; n < nEnd; n++) {
        const o = <usize>n << 2;
        store<f32>(yRow + o, load<f32>(yRow + o) + load<f32>(bias + o));
      }
    }
  }
}

/**
 * The linear layer with Q8_0 weights; `scratch`: linear_quant_scratch_bytes(M, K), the call's own
 * (it quantizes x there), or with LINEAR_X_QUANTIZED x already quantized there by
 * quantize_activations (shared by threads and calls, read only).
 */
export function linear_q8_0(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q8_0);
}

/** The linear layer with Q4_0 weights; `scratch` as linear_q8_0's. */
export function linear_q4_0(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q4_0);
}

/** The linear layer with Q5_0 weights; `scratch` as linear_q8_0's. */
export function linear_q5_0(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q5_0);
}

/** The linear layer with Q4_1 weights; `scratch` as linear_q8_0's. */
export function linear_q4_1(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q4_1);
}

/** The linear layer with Q5_1 weights; `scratch` as linear_q8_0's. */
export function linear_q5_1(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q5_1);
}

/** The linear layer with IQ4_NL weights; `scratch` as linear_q8_0's. */
export function linear_iq4_nl(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_IQ4_NL);
}

/** The linear layer with Q2_K weights (K a multiple of 256); `scratch` as linear_q8_0's. */
export function linear_q2_k(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q2_K);
}

/** The linear layer with Q3_K weights (K a multiple of 256); `scratch` as linear_q8_0's. */
export function linear_q3_k(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q3_K);
}

/** The linear layer with Q4_K weights (K a multiple of 256); `scratch` as linear_q8_0's. */
export function linear_q4_k(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q4_K);
}

/** The linear layer with Q5_K weights (K a multiple of 256); `scratch` as linear_q8_0's. */
export function linear_q5_k(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q5_K);
}

/** The linear layer with Q5_K_U8 weights (Q5_K a byte a weight; K a multiple of 256); `scratch` as linear_q8_0's. */
export function linear_q5_k_u8(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q5_K_U8);
}

/** The linear layer with Q6_K weights (K a multiple of 256); `scratch` as linear_q8_0's. */
export function linear_q6_k(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q6_K);
}

/** The linear layer with Q5_0_U8 weights (Q5_0 a byte a weight); `scratch` as linear_q8_0's. */
export function linear_q5_0_u8(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q5_0_U8);
}

/** The linear layer with Q5_1_U8 weights (Q5_1 a byte a weight); `scratch` as linear_q8_0's. */
export function linear_q5_1_u8(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q5_1_U8);
}

/** The linear layer with Q6_K_U8 weights (Q6_K a byte a weight; K a multiple of 256); `scratch` as linear_q8_0's. */
export function linear_q6_k_u8(x: usize, w: usize, bias: usize, y: usize, M: i32, N: i32, K: i32, nBegin: i32, nEnd: i32, flags: i32, scratch: usize): void {
  linearQuant(x, w, bias, y, M, N, K, nBegin, nEnd, flags, scratch, WEIGHT_Q6_K_U8);
}
