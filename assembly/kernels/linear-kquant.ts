import { fmadd, hsum } from "../simd";
import { finish } from "./dot-nt";
import { halfAt, halfAtScaled, highNibbles, QA_BLOCK, QA_DSUM, QA_I8, QA_SCALE, QA_SUM16, roundHalfAway, scale16 } from "./linear-quant";
import { WEIGHT_Q2_K, WEIGHT_Q3_K, WEIGHT_Q4_K, WEIGHT_Q5_K, WEIGHT_Q5_K_U8, WEIGHT_Q6_K, WEIGHT_Q6_K_U8 } from "../abi";

// The linear layer with K-quant weights, kept in GGUF's super-blocks of 256 weights exactly as a
// .gguf file stores them (a row is K / 256 super-blocks; GGUF allows no partial one):
//   Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales sc and mins m of the 8 sub-blocks of 32, then
//         128 bytes of nibbles: sub-blocks 2i and 2i+1 share 32 bytes, low nibbles then high
//                                                            (144 bytes; w = d·sc·q - dmin·m)
//   Q5_K: Q4_K's d, dmin and scales, 32 bytes qh (bit s of byte l: weight l of sub-block s's
//         fifth bit), then Q4_K's nibbles                   (176 bytes; q in 0..31)
//   Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 x i8 scales (one per 16
//         weights), f16 d                                    (210 bytes; w = d·sc·(q - 32))
//   Q2_K: 16 bytes of a 16-weight group's 4-bit scale sc (low) and min m (high), 64 bytes of 2-bit
//         q (byte l of half n: weights 128n + 32j + l at bits 2j), f16 d, f16 dmin
//                                                            (84 bytes; w = d·sc·q - dmin·m)
//   Q3_K: 32 bytes of third bits (weight 128n + 32j + l: bit 4n + j of byte l), Q2_K's 2-bit q,
//         12 bytes of 16 6-bit scales s (low 4 bits in bytes 0-7, high 2 in 8-11), f16 d
//                                                            (110 bytes; w = d·(s - 32)·(q - 4), q in 0..7)
//   Q6_K_U8: Q6_K unpacked, what a file's Q6_K loads as: 256 bytes q (0..63, weight i at byte i),
//         Q6_K's 16 i8 scales, its f16 d                      (274 bytes; w = d·sc·(q - 32))
//   Q5_K_U8: Q5_K unpacked, what a file's Q5_K loads as: Q4_K's d, dmin and scales, then 256 bytes q
//         (0..31, weight j of sub-block s at byte 32s + j)   (272 bytes, Q8_0's; w = d·sc·q - dmin·m)
// Q6_K's bits cost its GEMV about as much again as its dots (1x2048x8192 2.0x Q8_0's time, where
// Q6_K_U8 reads Q8_0's bytes and takes its time), and its 6-bit values fit the 7-bit dots of the
// integer panels (Q8_0's signed bytes do not: f32 panels, 2.6x Q4_K's time at 128x2048x8192).
// Q4_K_M / Q5_K_M files (llama.cpp's most downloaded mixes) are Q4_K or Q5_K and Q6_K where rows
// are whole super-blocks. Computed on as stored, they take 0.56 / 0.69 / 0.82 bytes per weight
// where converting them to Q8_0 at load took 1.06, and a decode step reads that much less (the
// loader keeps Q5_K and Q6_K only when asked: computing on their bits costs more than the bytes
// saved at one or two threads here; in the relaxed build a Llama-3.2-1B-shaped Q4_K_M model with
// its Q6_K kept decoded level at one thread, 11-25% slower at two, a Q5_K_M one 7% slower at one
// thread, level at two, scratch/q6ab). Q5_K's fifth bits (32 bytes, bit s of byte l for weight l of sub-block s) are
// or'ed in as 16 by a constant i16 shift and a mask per 16 weights.
//
// Arithmetic: the activations quantized per 32 as for Q8_0 / Q4_0 (linear-quant.ts, the same
// blocks and quantize_activations), one K-quant sub-block of 32 against one activation block:
// the weights' integers (0..3 up to 0..63: all 7-bit, the relaxed build's i8 x i7 dot takes them
// as they are) times the activations' exactly in i32, then the scales in f32, per sub-block of 32
// (Q4_K, Q5_K) or group of 16 (Q2_K, Q3_K, Q6_K: the two halves of an activation block):
//   Q4_K, Q5_K: d·sc·da · Σ q·a  -  dmin·m·da · Σ a
//   Q2_K:       d·sc·da · Σ q·a  -  dmin·m·da · Σ a   (per 16)
//   Q3_K:       d·(s - 32)·da · (Σ q·a - 4 · Σ a)     (per 16, q with its third bit, 0..7)
//   Q6_K:       d·sc·da · (Σ q·a - 32 · Σ a)          (per 16)
// the offsets' terms four groups a vector. The relaxed build's GEMV reads x quantized per 256
// instead, as llama.cpp's Q8_K (QA_SUPER, after every row's 32-blocks): one activation scale a
// super-block, so its sub-block dots add up in integers, each times its scale
// (i32x4.dot_i16x8_s), and convert once, the offsets one or two i16 dots with the sums:
//   Q4_K, Q5_K: d·da · Σ_s sc_s·Σ q·a  -  dmin·da · Σ_s m_s·Σ a      (sums of 32)
//   Q6_K:       d·da · (Σ_g sc_g·Σ q·a  -  32 · Σ_g sc_g·Σ a)          (sums of 16)
//   Q3_K:       d·da · (Σ_g s_g·Σ q·a  -  4 · Σ_g s_g·Σ a)             (s = its 6-bit scale - 32)
//   Q2_K:       d·da · Σ_g sc_g·Σ q·a  -  dmin·da · Σ_g m_g·Σ a
// (GEMV 1x4096x4096 against the per-32 form: Q4_K from memory 1.2x, Q6_K 1.4x, Q3_K 1.4x, Q2_K
// 1.6x; the error against float64 the same).
// The linear kernels (linear_q2_k .. linear_q6_k) are linear-quant.ts's driver with these dots and
// dequantizeRowK: from linearQuantF32Rows rows the f32 GEMM on panels dequantized exactly as the
// host does, below it the GEMV; output columns can go to different threads with the same bits.

/** Weights per K-quant super-block. */
export const SUPER_BLOCK: i32 = 256;

/**
 * One activation super-block (relaxed build, every K-quant): 256 values of x quantized with
 * one scale, llama.cpp's Q8_K form: the f32 scale at 0, the 8 sums of 32 as i16 at SUPER_SUM32
 * (Q4_K's mins), the 16 sums of 16 at SUPER_SUM16 (Q6_K's, Q3_K's and Q2_K's offsets), the 256 values as i8 at
 * SUPER_I8. With one scale a super-block, its sub-block dots add up in integers (each times its
 * scale, i32x4.dot_i16x8_s) and convert to f32 once, where per-32 activations took a convert, a
 * broadcast and an FMA per sub-block (a Q4_K GEMV 1x4096x4096 from memory 1.2x, scratch/q8k).
 */
export const QA_SUPER: usize = 320;
export const SUPER_SUM32: usize = 16, SUPER_SUM16: usize = 32, SUPER_I8: usize = 64;

/** Every K-quant in the relaxed build computes on activation super-blocks (QA_SUPER). */
// @ts-ignore: decorator
@inline export function superActivations(format: i32): bool { return ASC_FEATURE_RELAXED_SIMD && isKQuant(format); }

/**
 * Quantizes the 256 floats at src into the activation super-block at dst: d = max|x| / 127,
 * q = round(x / d) half away from zero (roundHalfAway, as the 32-blocks).
 */
export function quantizeSuper(src: usize, dst: usize): void {
  let mx = i32x4.splat(0);
  for (let i: usize = 0; i < 256; i += 4) mx = i32x4.max_s(mx, f32x4.abs(v128.load(src + (i << 2))));
  const m2 = i32x4.max_s(mx, v128.shuffle<i32>(mx, mx, 2, 3, 0, 1));
  const amax = f32x4.extract_lane(i32x4.max_s(m2, v128.shuffle<i32>(m2, m2, 1, 0, 3, 2)), 0);
  const d = amax / 127;
  const idv = f32x4.splat(d != 0 ? 1 / d : 0);
  for (let s: usize = 0; s < 8; s++) {
    let sum32 = 0;
    for (let g = s << 1; g < (s << 1) + 2; g++) {
      const at = src + (g << 6);
      const q0 = roundHalfAway(v128.load(at), idv), q1 = roundHalfAway(v128.load(at, 16), idv);
      const q2 = roundHalfAway(v128.load(at, 32), idv), q3 = roundHalfAway(v128.load(at, 48), idv);
      v128.store(dst + SUPER_I8 + (g << 4), i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)));
      const sums = i32x4.add(i32x4.add(q0, q1), i32x4.add(q2, q3));
      const sum16 = i32x4.extract_lane(sums, 0) + i32x4.extract_lane(sums, 1) + i32x4.extract_lane(sums, 2) + i32x4.extract_lane(sums, 3);
      store<i16>(dst + SUPER_SUM16 + (g << 1), <i16>sum16);
      sum32 += sum16;
    }
    store<i16>(dst + SUPER_SUM32 + (s << 1), <i16>sum32);
  }
  store<f32>(dst, d);
}

/** Lane s of eight i16 as all eight (a constant shuffle per sub-block). */
// @ts-ignore: decorator
@inline function lane16(v: v128, s: i32): v128 {
  switch (s) {
    case 0: return i16x8.shuffle(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
    case 1: return i16x8.shuffle(v, v, 1, 1, 1, 1, 1, 1, 1, 1);
    case 2: return i16x8.shuffle(v, v, 2, 2, 2, 2, 2, 2, 2, 2);
    case 3: return i16x8.shuffle(v, v, 3, 3, 3, 3, 3, 3, 3, 3);
    case 4: return i16x8.shuffle(v, v, 4, 4, 4, 4, 4, 4, 4, 4);
    case 5: return i16x8.shuffle(v, v, 5, 5, 5, 5, 5, 5, 5, 5);
    case 6: return i16x8.shuffle(v, v, 6, 6, 6, 6, 6, 6, 6, 6);
    default: return i16x8.shuffle(v, v, 7, 7, 7, 7, 7, 7, 7, 7);
  }
}

/**
 * Sub-block s (weights w0: 0-15, w1: 16-31, unsigned <= 31) against the activation super-block's
 * 32 values at a, times its scale (lane s of sc): i32x4 partial sums added into acc. Pair sums of
 * the 7-bit dot are <= 2·127·31, two of them add in 16 bits; times a 6-bit scale in i32.
 */
// @ts-ignore: decorator
@inline function superDot(w0: v128, w1: v128, a: usize, sc: v128, s: i32, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    const pairs = i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(a), w0), i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(a, 16), w1));
    return i32x4.add(acc, i32x4.dot_i16x8_s(pairs, lane16(sc, s)));
  }
  return unreachable();
}

/**
 * Q5_K's fifth bits for weights 16·part.. of half h's sub-blocks (16 bytes of qh), placed so that
 * sub-block 4h + t's bit sits at bit 4 + t (the first half's moved up 4: a constant shift); Q4_K: none.
 */
// @ts-ignore: decorator
@inline function fifthPlane(wb: usize, h: i32, part: i32, five: bool): v128 {
  if (!five) return i32x4.splat(0);
  const v = v128.load(wb + 16 + (<usize>part << 4));
  return h == 0 ? i16x8.shl(v, 4) : v;
}

/**
 * 16 weights (unsigned, <= 31) of sub-block t (0-3) of a half: the low nibbles of the 16 bytes q
 * for even t, the high ones for odd t, Q5_K's fifth bits (plane hv) or'ed in.
 */
// @ts-ignore: decorator
@inline function subWeights(q: v128, hv: v128, t: i32, five: bool): v128 {
  const w = (t & 1) == 0 ? v128.and(q, i8x16.splat(0x0f)) : highNibbles(q);
  return five ? v128.or(w, fifthBits(hv, 4 + t)) : w;
}

/**
 * acc plus one Q4_K / Q5_K super-block (at wb) against the activation super-block at ab: the 8
 * scaled sub-block dots in integers, times d·da once; the mins, -dmin·da · Σ m·Σa, one i16 dot.
 */
// @ts-ignore: decorator
@inline function q4kSuperBlockI(wb: usize, ab: usize, acc: v128, format: i32): v128 {
  const sm = q4kScalesMins(wb + 4);
  const sc = i16x8.extend_low_i8x16_u(sm), mn = i16x8.extend_high_i8x16_u(sm);
  const five = format == WEIGHT_Q5_K, qs = wb + (five ? 48 : 16), a0 = ab + SUPER_I8;
  let ai = i32x4.splat(0);
  if (format == WEIGHT_Q5_K_U8) {
    // A byte a weight: each sub-block's 32 bytes as they are.
    for (let h = 0; h < 2; h++) {
      const q = wb + 16 + (<usize>h << 7), a = a0 + (<usize>h << 7);
      ai = h == 0 ? superDot(v128.load(q), v128.load(q + 16), a, sc, 0, ai) : superDot(v128.load(q), v128.load(q + 16), a, sc, 4, ai);
      ai = h == 0 ? superDot(v128.load(q + 32), v128.load(q + 48), a + 32, sc, 1, ai) : superDot(v128.load(q + 32), v128.load(q + 48), a + 32, sc, 5, ai);
      ai = h == 0 ? superDot(v128.load(q + 64), v128.load(q + 80), a + 64, sc, 2, ai) : superDot(v128.load(q + 64), v128.load(q + 80), a + 64, sc, 6, ai);
      ai = h == 0 ? superDot(v128.load(q + 96), v128.load(q + 112), a + 96, sc, 3, ai) : superDot(v128.load(q + 96), v128.load(q + 112), a + 96, sc, 7, ai);
    }
  } else for (let h = 0; h < 2; h++) {
    // The two halves spelled out (constant sub-block numbers for the scale lanes).
    const q = qs + (<usize>h << 6), a = a0 + (<usize>h << 7), h0 = fifthPlane(wb, h, 0, five), h1 = fifthPlane(wb, h, 1, five);
    let q0 = v128.load(q), q1 = v128.load(q + 16);
    let w0 = subWeights(q0, h0, 0, five), w1 = subWeights(q1, h1, 0, five);
    ai = h == 0 ? superDot(w0, w1, a, sc, 0, ai) : superDot(w0, w1, a, sc, 4, ai);
    w0 = subWeights(q0, h0, 1, five); w1 = subWeights(q1, h1, 1, five);
    ai = h == 0 ? superDot(w0, w1, a + 32, sc, 1, ai) : superDot(w0, w1, a + 32, sc, 5, ai);
    q0 = v128.load(q + 32); q1 = v128.load(q + 48);
    w0 = subWeights(q0, h0, 2, five); w1 = subWeights(q1, h1, 2, five);
    ai = h == 0 ? superDot(w0, w1, a + 64, sc, 2, ai) : superDot(w0, w1, a + 64, sc, 6, ai);
    w0 = subWeights(q0, h0, 3, five); w1 = subWeights(q1, h1, 3, five);
    ai = h == 0 ? superDot(w0, w1, a + 96, sc, 3, ai) : superDot(w0, w1, a + 96, sc, 7, ai);
  }
  const da = load<f32>(ab);
  acc = fmadd(f32x4.convert_i32x4_s(ai), f32x4.splat(superScale(wb, format) * da), acc);
  return fmadd(f32x4.convert_i32x4_s(i32x4.dot_i16x8_s(mn, v128.load(ab + SUPER_SUM32))), f32x4.splat(-superScale(wb + 2, format) * da), acc);
}

/**
 * A super-block's f16 scale d or dmin at p, in the GEMV. On weights of scale 0.02 Q5_K's d
 * (max scale / 63 of sub-block scales of range / 31) is subnormal for 55% of super-blocks and
 * Q6_K's for 96%: halfAt. Q4_K's for 0.7%, Q2_K's and Q3_K's never: halfAtScaled's multiply,
 * whose rare assist costs less than halfAt's select in every super-block (a Llama-3.2-1B
 * twin's Q4_K_M decode 1.04x).
 */
// @ts-ignore: decorator
@inline function superScale(p: usize, format: i32): f32 { return format == WEIGHT_Q5_K || format == WEIGHT_Q5_K_U8 || isSixBit(format) ? halfAt(p) : halfAtScaled(p); }

// @ts-ignore: decorator
@inline export function superBytes(format: i32): usize {
  return format == WEIGHT_Q4_K ? 144 : format == WEIGHT_Q5_K ? 176 : format == WEIGHT_Q2_K ? 84 : format == WEIGHT_Q3_K ? 110 : format == WEIGHT_Q6_K ? 210 : format == WEIGHT_Q5_K_U8 ? 272 : 274;
}

/** Q6_K and Q6_K_U8: groups of 16 with an i8 scale, w = d·sc·(q - 32), q in 0..63. */
// @ts-ignore: decorator
@inline export function isSixBit(format: i32): bool { return format == WEIGHT_Q6_K || format == WEIGHT_Q6_K_U8; }

/** Byte offsets of a six-bit super-block's 16 scales and its d. */
// @ts-ignore: decorator
@inline export function sixBitScalesAt(format: i32): usize { return format == WEIGHT_Q6_K ? 192 : 256; }
// @ts-ignore: decorator
@inline export function sixBitDAt(format: i32): usize { return format == WEIGHT_Q6_K ? 208 : 272; }

/** The super-block formats (rows of whole 256-blocks), whose dots and dequantizer are this file's. */
// @ts-ignore: decorator
@inline export function isKQuant(format: i32): bool { return format == WEIGHT_Q4_K || format == WEIGHT_Q5_K || format == WEIGHT_Q5_K_U8 || isSixBit(format) || isLowBit(format); }

/** Q2_K and Q3_K: 2-bit values (Q3_K's with a third bit) in groups of 16 with a scale each (Q2_K: and a min). */
// @ts-ignore: decorator
@inline function isLowBit(format: i32): bool { return format == WEIGHT_Q2_K || format == WEIGHT_Q3_K; }

/** Q4_K and Q5_K: sub-blocks of 32 with a scale and a min (the rest, Q6_K: groups of 16, scales only). */
// @ts-ignore: decorator
@inline function hasMins(format: i32): bool { return format == WEIGHT_Q4_K || format == WEIGHT_Q5_K || format == WEIGHT_Q5_K_U8; }

/**
 * Q5_K's fifth bits of sub-block s as 16 (bit 4) in 16 bytes of qh (bit s of each byte): an i16
 * shift brings bit s to bit 4 of its own byte, the mask drops what crossed from the byte beside.
 */
// @ts-ignore: decorator
@inline function fifthBits(qh: v128, s: i32): v128 {
  return v128.and(s <= 4 ? i16x8.shl(qh, 4 - s) : i16x8.shr_u(qh, s - 4), i8x16.splat(0x10));
}

/** Bytes of one row of K weights (K a multiple of 256). */
// @ts-ignore: decorator
@inline export function kquantRowBytes(K: i32, format: i32): usize { return <usize>(K / SUPER_BLOCK) * superBytes(format); }

/**
 * A Q4_K super-block's 8 sub-block scales (bytes 0-7) and 8 mins (bytes 8-15), unpacked from their
 * 12 bytes at p (6 bits each: sub-blocks 0-3 in the low 6 bits of bytes 0-3 and 4-7, sub-blocks
 * 4-7 as the nibbles of bytes 8-11 with their top 2 bits in the top bits of bytes 0-7).
 */
// @ts-ignore: decorator
@inline export function q4kScalesMins(p: usize): v128 {
  const v = v128.load(p); // bytes 12-15 (the nibbles') are not used
  const x = v128.shuffle<u8>(v, v, 0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11);
  const top = v128.shuffle<u8>(v, v, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7);
  const low = v128.or(v128.and(x, i8x16(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0)), v128.and(highNibbles(x), i8x16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15)));
  // A byte's top 2 bits to bits 4-5 (i16 shift: the mask drops the bits from the byte above).
  return v128.or(low, v128.and(i16x8.shr_u(top, 2), i8x16(0, 0, 0, 0, 0x30, 0x30, 0x30, 0x30, 0, 0, 0, 0, 0x30, 0x30, 0x30, 0x30)));
}

/** The f32 at `off` in four consecutive activation blocks from a. */
// @ts-ignore: decorator
@inline function gather4(a: usize, off: usize): v128 {
  let v = f32x4.splat(load<f32>(a + off));
  v = f32x4.replace_lane(v, 1, load<f32>(a + QA_BLOCK + off));
  v = f32x4.replace_lane(v, 2, load<f32>(a + 2 * QA_BLOCK + off));
  return f32x4.replace_lane(v, 3, load<f32>(a + 3 * QA_BLOCK + off));
}

/**
 * acc plus one Q4_K super-block (at wb) of a row against the 8 activation blocks from a0, whose
 * scales (da) and scaled sums (da·Σa) come gathered as daLo/daHi and dsLo/dsHi (sub-blocks 0-3,
 * 4-7; shared by the rows of a GEMV step): the mins, -dmin·m · da·Σa lane by lane, and each
 * sub-block's integer dot times d·sc·da (d·sc exact), in a fixed order whatever rows are
 * computed together.
 */
// @ts-ignore: decorator
@inline function q4kSuperBlock(wb: usize, a0: usize, daLo: v128, daHi: v128, dsLo: v128, dsHi: v128, acc: v128, format: i32): v128 {
  const sm = q4kScalesMins(wb + 4);
  const d = f32x4.splat(superScale(wb, format)), negDmin = f32x4.splat(-superScale(wb + 2, format));
  const scales = i16x8.extend_low_i8x16_u(sm), mins = i16x8.extend_high_i8x16_u(sm);
  const fLo = f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(scales)), d), daLo);
  const fHi = f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(scales)), d), daHi);
  acc = fmadd(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(mins)), negDmin), dsLo, acc);
  acc = fmadd(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(mins)), negDmin), dsHi, acc);
  // Sub-blocks 2i and 2i+1: the low and high nibbles of the same 32 bytes (Q5_K: with their
  // fifth bits, the half's qh shifted so that sub-block 4h + t's bit sits at 4 + t). A loop over the two
  // halves: spelled out whole, TurboFan hoisted every load of the super-block (both rows'), and
  // spilled ~120 vectors a loop.
  const five = format == WEIGHT_Q5_K, qs = wb + (five ? 48 : 16);
  let f = fLo;
  if (format == WEIGHT_Q5_K_U8) {
    for (let h = 0; h < 2; h++) {
      const q = wb + 16 + (<usize>h << 7), a = a0 + (<usize>h << 2) * QA_BLOCK;
      acc = fmadd(f32x4.convert_i32x4_s(dot32(v128.load(q), v128.load(q + 16), a)), v128.shuffle<f32>(f, f, 0, 0, 0, 0), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot32(v128.load(q + 32), v128.load(q + 48), a + QA_BLOCK)), v128.shuffle<f32>(f, f, 1, 1, 1, 1), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot32(v128.load(q + 64), v128.load(q + 80), a + 2 * QA_BLOCK)), v128.shuffle<f32>(f, f, 2, 2, 2, 2), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot32(v128.load(q + 96), v128.load(q + 112), a + 3 * QA_BLOCK)), v128.shuffle<f32>(f, f, 3, 3, 3, 3), acc);
      f = fHi;
    }
    return acc;
  }
  for (let h = 0; h < 2; h++) {
    const q = qs + (<usize>h << 6), a = a0 + (<usize>h << 2) * QA_BLOCK, h0 = fifthPlane(wb, h, 0, five), h1 = fifthPlane(wb, h, 1, five);
    let q0 = v128.load(q), q1 = v128.load(q + 16);
    acc = fmadd(f32x4.convert_i32x4_s(dot32(subWeights(q0, h0, 0, five), subWeights(q1, h1, 0, five), a)), v128.shuffle<f32>(f, f, 0, 0, 0, 0), acc);
    acc = fmadd(f32x4.convert_i32x4_s(dot32(subWeights(q0, h0, 1, five), subWeights(q1, h1, 1, five), a + QA_BLOCK)), v128.shuffle<f32>(f, f, 1, 1, 1, 1), acc);
    q0 = v128.load(q + 32); q1 = v128.load(q + 48);
    acc = fmadd(f32x4.convert_i32x4_s(dot32(subWeights(q0, h0, 2, five), subWeights(q1, h1, 2, five), a + 2 * QA_BLOCK)), v128.shuffle<f32>(f, f, 2, 2, 2, 2), acc);
    acc = fmadd(f32x4.convert_i32x4_s(dot32(subWeights(q0, h0, 3, five), subWeights(q1, h1, 3, five), a + 3 * QA_BLOCK)), v128.shuffle<f32>(f, f, 3, 3, 3, 3), acc);
    f = fHi;
  }
  return acc;
}

/** Q4_K sub-block s's scale (low byte) and min (high byte), one at a time (dequantizing; q4kScalesMins unpacks all 8). */
// @ts-ignore: decorator
@inline export function q4kScaleMin(p: usize, s: i32): i32 {
  if (s < 4) return (<i32>load<u8>(p + <usize>s) & 63) | ((<i32>load<u8>(p + <usize>s + 4) & 63) << 8);
  const a = <i32>load<u8>(p + <usize>s + 4), lo = <i32>load<u8>(p + <usize>s - 4), hi = <i32>load<u8>(p + <usize>s);
  return ((a & 15) | ((lo >> 6) << 4)) | (((a >> 4) | ((hi >> 6) << 4)) << 8);
}

/** 16 weights (part 0: weights 0-15, 1: 16-31) of Q4_K / Q5_K / Q5_K_U8 sub-block s of the super-block at wb, unsigned bytes 0..15 / 0..31. */
// @ts-ignore: decorator
@inline export function q4kWeights(wb: usize, s: i32, part: i32, format: i32): v128 {
  if (format == WEIGHT_Q5_K_U8) return v128.load(wb + 16 + (<usize>s << 5) + (<usize>part << 4));
  const five = format == WEIGHT_Q5_K;
  const q = v128.load(wb + (five ? 48 : 16) + (<usize>(s >> 1) << 5) + (<usize>part << 4));
  const nibbles = (s & 1) == 0 ? v128.and(q, i8x16.splat(0x0f)) : highNibbles(q);
  return five ? v128.or(nibbles, fifthBits(v128.load(wb + 16 + (<usize>part << 4)), s)) : nibbles;
}

/**
 * 16 weights of Q6_K sub-block s (0..7) of the super-block at wb, unsigned bytes 0..63: sub-blocks
 * 4n..4n+3 are half n; t = s & 3 takes low (t < 2) or high nibbles of 32 bytes at 64n + 32·(t & 1),
 * and bits 2t, 2t+1 of the half's 32 high-bit bytes. (i16 shifts: the mask drops what crosses bytes.)
 */
// @ts-ignore: decorator
@inline export function q6kWeights(wb: usize, s: i32, part: i32): v128 {
  const n = <usize>(s >> 2), t = s & 3, o = <usize>part << 4;
  const ql = v128.load(wb + (n << 6) + (<usize>(t & 1) << 5) + o);
  const qh = v128.load(wb + 128 + (n << 5) + o);
  const low = t < 2 ? v128.and(ql, i8x16.splat(0x0f)) : highNibbles(ql);
  return v128.or(low, v128.and(i16x8.shl(i16x8.shr_u(qh, <i32>(t << 1)), 4), i8x16.splat(0x30)));
}

/** 16 weights (part 0: 0-15, 1: 16-31) of sub-block s of a Q6_K or Q6_K_U8 super-block at wb, 0..63. */
// @ts-ignore: decorator
@inline export function sixBitWeights(wb: usize, s: i32, part: i32, format: i32): v128 {
  return format == WEIGHT_Q6_K ? q6kWeights(wb, s, part) : v128.load(wb + (<usize>s << 5) + (<usize>part << 4));
}

/** 16 weights of Q6_K (0..63): the low 4 bits of each byte of `nibbles`, bits 4-5 of `qhBits` (its 2 bits moved there). */
// @ts-ignore: decorator
@inline function q6kSixteen(nibbles: v128, qhBits: v128): v128 {
  return v128.or(v128.and(nibbles, i8x16.splat(0x0f)), v128.and(qhBits, i8x16.splat(0x30)));
}

/**
 * acc plus one Q6_K super-block (at wb) of a row against the 8 activation blocks from a0, half by
 * half (128 weights, 4 sub-blocks, 8 groups of 16 with a scale each): each group's integer dot
 * times d·sc·da in f32 (d·sc exact), and the -32 offsets as -32·Σa times the same factors, four
 * groups a vector. A half's sub-blocks in a loop over its nibbles (low: sub-blocks 0, 1; high: 2,
 * 3), as Q4_K's halves: spelled out whole, TurboFan hoisted every load and spilled ~100 vectors.
 */
// @ts-ignore: decorator
@inline function q6kSuperBlock(wb: usize, a0: usize, acc: v128, format: i32): v128 {
  const d = f32x4.splat(halfAt(wb + sixBitDAt(format))), u8 = format == WEIGHT_Q6_K_U8;
  for (let n: usize = 0; n < 2; n++) {
    const ql = wb + (n << 6), qh = wb + 128 + (n << 5), a = a0 + (n << 2) * QA_BLOCK;
    // d·sc·da of the half's 8 groups (groups 2j, 2j+1: sub-block j's halves, whose da is one).
    const da = gather4(a, QA_SCALE);
    const sc = i16x8.extend_low_i8x16_s(v128.load64_zero(wb + sixBitScalesAt(format) + (n << 3)));
    const g0 = f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(sc)), d), v128.shuffle<f32>(da, da, 0, 0, 1, 1));
    const g1 = f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(sc)), d), v128.shuffle<f32>(da, da, 2, 2, 3, 3));
    // The offsets: each group's Σa (two per activation block, side by side) times -32.
    const s0 = v128.load64_lane(a + QA_BLOCK + QA_SUM16, v128.load64_zero(a + QA_SUM16), 1);
    const s1 = v128.load64_lane(a + 3 * QA_BLOCK + QA_SUM16, v128.load64_zero(a + 2 * QA_BLOCK + QA_SUM16), 1);
    acc = fmadd(f32x4.mul(f32x4.convert_i32x4_s(s0), f32x4.splat(-32)), g0, acc);
    acc = fmadd(f32x4.mul(f32x4.convert_i32x4_s(s1), f32x4.splat(-32)), g1, acc);
    // Iteration k: ql's k-th nibbles; sub-block 2k takes qh bits 4k, 4k+1 (from ql[0..32)),
    // sub-block 2k+1 bits 4k+2, 4k+3 (from ql[32..64)). The vectors shift by a constant 4 after
    // each iteration: shifted by 4k, a variable, V8 moved the count into a vector register
    // for every shift (4 instructions each; this way the GEMV takes 0.87x the time, 0.91x simd).
    // (Q6_K_U8: group 4k + t of the half is 16 bytes at 128n + 16·(4k + t), none of these.)
    const none = i32x4.splat(0);
    let l0 = u8 ? none : v128.load(ql), l1 = u8 ? none : v128.load(ql + 16), l2 = u8 ? none : v128.load(ql + 32), l3 = u8 ? none : v128.load(ql + 48);
    let h0 = u8 ? none : v128.load(qh), h1 = u8 ? none : v128.load(qh + 16);
    let g = g0;
    for (let k = 0; k < 2; k++) {
      const at = a + (<usize>k << 1) * QA_BLOCK, u = wb + (n << 7) + (<usize>k << 6);
      acc = fmadd(f32x4.convert_i32x4_s(dot16(u8 ? v128.load(u) : q6kSixteen(l0, i16x8.shl(h0, 4)), at, 0)), v128.shuffle<f32>(g, g, 0, 0, 0, 0), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot16(u8 ? v128.load(u + 16) : q6kSixteen(l1, i16x8.shl(h1, 4)), at, 1)), v128.shuffle<f32>(g, g, 1, 1, 1, 1), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot16(u8 ? v128.load(u + 32) : q6kSixteen(l2, i16x8.shl(h0, 2)), at + QA_BLOCK, 0)), v128.shuffle<f32>(g, g, 2, 2, 2, 2), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot16(u8 ? v128.load(u + 48) : q6kSixteen(l3, i16x8.shl(h1, 2)), at + QA_BLOCK, 1)), v128.shuffle<f32>(g, g, 3, 3, 3, 3), acc);
      l0 = i16x8.shr_u(l0, 4); l1 = i16x8.shr_u(l1, 4); l2 = i16x8.shr_u(l2, 4); l3 = i16x8.shr_u(l3, 4);
      h0 = i16x8.shr_u(h0, 4); h1 = i16x8.shr_u(h1, 4);
      g = g1;
    }
  }
  return acc;
}

/** Group t's 16 weights (w, unsigned <= 63) against 16 activations at a, times its i8 scale (lane t of sc): i32x4 partial sums added into acc (pair sums <= 2·127·63 fit i16). */
// @ts-ignore: decorator
@inline function superDot16(w: v128, a: usize, sc: v128, t: i32, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(a), w), lane16(sc, t)));
  return unreachable();
}

/**
 * acc plus one Q6_K super-block (at wb) against the activation super-block at ab: the 16 groups'
 * integer dots each times its i8 scale, added in integers, less 32 · Σ sc·Σa (the -32 offsets, two
 * i16 dots with the sums of 16), converted once and times d·da. Groups in q6kSuperBlock's order:
 * iteration k of half n takes groups 8n + 4k .. 8n + 4k + 3.
 */
// @ts-ignore: decorator
@inline function q6kSuperBlockI(wb: usize, ab: usize, acc: v128, format: i32): v128 {
  const scales = v128.load(wb + sixBitScalesAt(format));
  const scLo = i16x8.extend_low_i8x16_s(scales), scHi = i16x8.extend_high_i8x16_s(scales);
  const offsets = i32x4.add(i32x4.dot_i16x8_s(scLo, v128.load(ab + SUPER_SUM16)), i32x4.dot_i16x8_s(scHi, v128.load(ab + SUPER_SUM16 + 16)));
  let ai = i32x4.splat(0);
  for (let n: usize = 0; n < 2; n++) {
    const a = ab + SUPER_I8 + (n << 7), sc = n == 0 ? scLo : scHi;
    if (format == WEIGHT_Q6_K_U8) {
      // Group t of the half: 16 bytes at 128n + 16t.
      const u = wb + (n << 7);
      ai = superDot16(v128.load(u), a, sc, 0, ai);
      ai = superDot16(v128.load(u + 16), a + 16, sc, 1, ai);
      ai = superDot16(v128.load(u + 32), a + 32, sc, 2, ai);
      ai = superDot16(v128.load(u + 48), a + 48, sc, 3, ai);
      ai = superDot16(v128.load(u + 64), a + 64, sc, 4, ai);
      ai = superDot16(v128.load(u + 80), a + 80, sc, 5, ai);
      ai = superDot16(v128.load(u + 96), a + 96, sc, 6, ai);
      ai = superDot16(v128.load(u + 112), a + 112, sc, 7, ai);
      continue;
    }
    const ql = wb + (n << 6), qh = wb + 128 + (n << 5);
    const l0 = v128.load(ql), l1 = v128.load(ql + 16), l2 = v128.load(ql + 32), l3 = v128.load(ql + 48);
    const h0 = v128.load(qh), h1 = v128.load(qh + 16);
    // Group 4k + t: the low (k = 0) or high (k = 1) nibbles of l_t, high bits 2·(2k + (t >> 1)) of
    // h_(t & 1) moved to bits 4-5 (one shift or none).
    ai = superDot16(q6kSixteen(l0, i16x8.shl(h0, 4)), a, sc, 0, ai);
    ai = superDot16(q6kSixteen(l1, i16x8.shl(h1, 4)), a + 16, sc, 1, ai);
    ai = superDot16(q6kSixteen(l2, i16x8.shl(h0, 2)), a + 32, sc, 2, ai);
    ai = superDot16(q6kSixteen(l3, i16x8.shl(h1, 2)), a + 48, sc, 3, ai);
    ai = superDot16(q6kSixteen(i16x8.shr_u(l0, 4), h0), a + 64, sc, 4, ai);
    ai = superDot16(q6kSixteen(i16x8.shr_u(l1, 4), h1), a + 80, sc, 5, ai);
    ai = superDot16(q6kSixteen(i16x8.shr_u(l2, 4), i16x8.shr_u(h0, 2)), a + 96, sc, 6, ai);
    ai = superDot16(q6kSixteen(i16x8.shr_u(l3, 4), i16x8.shr_u(h1, 2)), a + 112, sc, 7, ai);
  }
  return fmadd(f32x4.convert_i32x4_s(i32x4.sub(ai, i32x4.shl(offsets, 5))), f32x4.splat(halfAt(wb + sixBitDAt(format)) * load<f32>(ab)), acc);
}

/**
 * The 16 group scales of a Q2_K / Q3_K super-block as bytes (lane g: group g): Q2_K's low nibbles
 * (its mins are the high ones); Q3_K's 6-bit s - 32 (signed): the low 4 bits from bytes 0-7 (low
 * nibbles for groups 0-7, high for 8-15), the high 2 from bytes 8-11 (group g: byte 8 + (g & 3),
 * bits 2·(g >> 2)), moved to bits 6-7 of their byte by an i32 multiply by 2^(6 - 2·(g >> 2)).
 */
// @ts-ignore: decorator
@inline export function lowBitScales(wb: usize, format: i32): v128 {
  if (format == WEIGHT_Q2_K) return v128.and(v128.load(wb), i8x16.splat(0x0f));
  const v = v128.load32_lane(wb + 104, v128.load64_zero(wb + 96), 2); // exactly the 12 bytes
  const x = v128.shuffle<u8>(v, v, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
  const low = v128.or(v128.and(x, i8x16(15, 15, 15, 15, 15, 15, 15, 15, 0, 0, 0, 0, 0, 0, 0, 0)), v128.and(highNibbles(x), i8x16(0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15, 15, 15, 15, 15)));
  const top = i32x4.mul(v128.shuffle<u8>(v, v, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11), i32x4(64, 16, 4, 1));
  return i8x16.sub(v128.or(low, v128.and(i16x8.shr_u(top, 2), i8x16.splat(0x30))), i8x16.splat(32));
}

/** 16 weights of Q2_K / Q3_K quarter j (0-3) of a half: 2-bit fields at 2j of q, Q3_K's third bits at 2 + j of t moved to bit 2 (unsigned: 0..3, 0..7). */
// @ts-ignore: decorator
@inline function lowBitSixteen(q: v128, t: v128, j: i32, three: bool): v128 {
  const w = v128.and(j == 0 ? q : i16x8.shr_u(q, j << 1), i8x16.splat(3));
  return three ? v128.or(w, v128.and(j == 0 ? t : i16x8.shr_u(t, j), i8x16.splat(4))) : w;
}

/**
 * Q3_K's third bits (32 bytes, weight 128n + 32j + l: bit 4n + j of byte l) for bytes 16·part..
 * of half n, moved so that quarter j's bit sits at 2 + j (a constant shift); Q2_K: none.
 */
// @ts-ignore: decorator
@inline function thirdBitPlane(wb: usize, n: usize, part: i32, three: bool): v128 {
  if (!three) return i32x4.splat(0);
  const t = v128.load(wb + (<usize>part << 4));
  return n == 0 ? i16x8.shl(t, 2) : i16x8.shr_u(t, 2);
}

/**
 * acc plus one Q2_K / Q3_K super-block (at wb) of a row against the 8 activation blocks from a0,
 * half by half as Q6_K's: each 16-weight group's integer dot (weights unsigned: Q2_K's q in 0..3,
 * Q3_K's q + 4·(third bit) in 0..7) times d·sc·da in f32, and the offsets four groups a vector:
 * Q2_K's mins as -dmin·m·da·Σa, Q3_K's -4 as -4·Σa times the group's factor. In iteration k of a
 * half, quarters 2k and 2k+1: the 2-bit fields at 4k and 4k + 2, third bits 2k and 2k + 1 (after
 * the half's bits were moved to 2 .. 5).
 */
// @ts-ignore: decorator
@inline function lowBitSuperBlock(wb: usize, a0: usize, acc: v128, format: i32): v128 {
  const three = format == WEIGHT_Q3_K, qs = wb + (three ? 32 : 16);
  const d = f32x4.splat(superScale(wb + (three ? 108 : 80), format));
  for (let n: usize = 0; n < 2; n++) {
    const a = a0 + (n << 2) * QA_BLOCK, da = gather4(a, QA_SCALE);
    const all = lowBitScales(wb, format);
    const sc = n == 0 ? i16x8.extend_low_i8x16_s(all) : i16x8.extend_high_i8x16_s(all);
    const g0 = f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(sc)), d), v128.shuffle<f32>(da, da, 0, 0, 1, 1));
    const g1 = f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(sc)), d), v128.shuffle<f32>(da, da, 2, 2, 3, 3));
    // Each group's Σa (two per activation block, side by side).
    const s0 = f32x4.convert_i32x4_s(v128.load64_lane(a + QA_BLOCK + QA_SUM16, v128.load64_zero(a + QA_SUM16), 1));
    const s1 = f32x4.convert_i32x4_s(v128.load64_lane(a + 3 * QA_BLOCK + QA_SUM16, v128.load64_zero(a + 2 * QA_BLOCK + QA_SUM16), 1));
    if (three) {
      acc = fmadd(f32x4.mul(s0, f32x4.splat(-4)), g0, acc);
      acc = fmadd(f32x4.mul(s1, f32x4.splat(-4)), g1, acc);
    } else {
      const dmin = f32x4.splat(-superScale(wb + 82, format)), mh = highNibbles(v128.load(wb));
      const m = n == 0 ? i16x8.extend_low_i8x16_u(mh) : i16x8.extend_high_i8x16_u(mh);
      acc = fmadd(f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(m)), dmin), v128.shuffle<f32>(da, da, 0, 0, 1, 1)), s0, acc);
      acc = fmadd(f32x4.mul(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(m)), dmin), v128.shuffle<f32>(da, da, 2, 2, 3, 3)), s1, acc);
    }
    let t0 = thirdBitPlane(wb, n, 0, three), t1 = thirdBitPlane(wb, n, 1, three);
    // The 2-bit fields and third bits shift by constants after each iteration (as Q6_K's;
    // 0.92-0.94x the time of shifts by 4k and 2k).
    let q0 = v128.load(qs + (n << 5)), q1 = v128.load(qs + (n << 5) + 16);
    let g = g0;
    for (let k = 0; k < 2; k++) {
      const at = a + (<usize>k << 1) * QA_BLOCK;
      acc = fmadd(f32x4.convert_i32x4_s(dot16(lowBitSixteen(q0, t0, 0, three), at, 0)), v128.shuffle<f32>(g, g, 0, 0, 0, 0), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot16(lowBitSixteen(q1, t1, 0, three), at, 1)), v128.shuffle<f32>(g, g, 1, 1, 1, 1), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot16(lowBitSixteen(q0, t0, 1, three), at + QA_BLOCK, 0)), v128.shuffle<f32>(g, g, 2, 2, 2, 2), acc);
      acc = fmadd(f32x4.convert_i32x4_s(dot16(lowBitSixteen(q1, t1, 1, three), at + QA_BLOCK, 1)), v128.shuffle<f32>(g, g, 3, 3, 3, 3), acc);
      if (three) { t0 = i16x8.shr_u(t0, 2); t1 = i16x8.shr_u(t1, 2); }
      q0 = i16x8.shr_u(q0, 4); q1 = i16x8.shr_u(q1, 4);
      g = g1;
    }
  }
  return acc;
}

/**
 * acc plus one Q2_K / Q3_K super-block (at wb) against the activation super-block at ab, as
 * Q6_K's: the 16 groups' integer dots each times its scale added in integers (Q3_K's s - 32,
 * Q2_K's 4-bit sc), converted once and times d·da; the offsets i16 dots with the sums of 16:
 * Q3_K's -4 · Σ s·Σa inside the integers, Q2_K's mins -dmin·da · Σ m·Σa.
 */
// @ts-ignore: decorator
@inline function lowBitSuperBlockI(wb: usize, ab: usize, acc: v128, format: i32): v128 {
  const three = format == WEIGHT_Q3_K, qs = wb + (three ? 32 : 16), all = lowBitScales(wb, format);
  const scLo = three ? i16x8.extend_low_i8x16_s(all) : i16x8.extend_low_i8x16_u(all);
  const scHi = three ? i16x8.extend_high_i8x16_s(all) : i16x8.extend_high_i8x16_u(all);
  const sumsLo = v128.load(ab + SUPER_SUM16), sumsHi = v128.load(ab + SUPER_SUM16 + 16), da = load<f32>(ab);
  let ai = i32x4.splat(0);
  for (let n: usize = 0; n < 2; n++) {
    const q0 = v128.load(qs + (n << 5)), q1 = v128.load(qs + (n << 5) + 16), a = ab + SUPER_I8 + (n << 7), sc = n == 0 ? scLo : scHi;
    const t0 = thirdBitPlane(wb, n, 0, three), t1 = thirdBitPlane(wb, n, 1, three);
    // Quarter j's 32 weights: groups 2j (q0, t0) and 2j + 1 (q1, t1) of the half, activations 32j on.
    ai = superDot16(lowBitSixteen(q0, t0, 0, three), a, sc, 0, ai);
    ai = superDot16(lowBitSixteen(q1, t1, 0, three), a + 16, sc, 1, ai);
    ai = superDot16(lowBitSixteen(q0, t0, 1, three), a + 32, sc, 2, ai);
    ai = superDot16(lowBitSixteen(q1, t1, 1, three), a + 48, sc, 3, ai);
    ai = superDot16(lowBitSixteen(q0, t0, 2, three), a + 64, sc, 4, ai);
    ai = superDot16(lowBitSixteen(q1, t1, 2, three), a + 80, sc, 5, ai);
    ai = superDot16(lowBitSixteen(q0, t0, 3, three), a + 96, sc, 6, ai);
    ai = superDot16(lowBitSixteen(q1, t1, 3, three), a + 112, sc, 7, ai);
  }
  // Q3_K's -4 offsets: 4 · Σ s·Σa out of the integers.
  if (three) ai = i32x4.sub(ai, i32x4.shl(i32x4.add(i32x4.dot_i16x8_s(scLo, sumsLo), i32x4.dot_i16x8_s(scHi, sumsHi)), 2));
  acc = fmadd(f32x4.convert_i32x4_s(ai), f32x4.splat(superScale(wb + (three ? 108 : 80), format) * da), acc);
  if (three) return acc;
  const mins = highNibbles(v128.load(wb));
  const mi = i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(mins), sumsLo), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(mins), sumsHi));
  return fmadd(f32x4.convert_i32x4_s(mi), f32x4.splat(-superScale(wb + 82, format) * da), acc);
}

/** 16 weights (part 0: l = 0-15, 1: 16-31) of Q2_K / Q3_K quarter j of half n, signed (Q3_K: q - 4) or, Q2_K, 0..3. */
// @ts-ignore: decorator
@inline export function lowBitWeights(wb: usize, n: i32, j: i32, part: i32, format: i32): v128 {
  const three = format == WEIGHT_Q3_K, o = <usize>part << 4;
  const q = v128.and(i16x8.shr_u(v128.load(wb + (three ? 32 : 16) + (<usize>n << 5) + o), j << 1), i8x16.splat(3));
  if (!three) return q;
  const bit = (n << 2) + j, t = v128.load(wb + o);
  const third = v128.and(bit <= 2 ? i16x8.shl(t, 2 - bit) : i16x8.shr_u(t, bit - 2), i8x16.splat(4));
  return i8x16.sub(v128.or(q, third), i8x16.splat(4));
}

/** Σ w·a over 16 weights (unsigned, <= 63) and the activation block a's half `part`, as i32x4 partial sums. */
// @ts-ignore: decorator
@inline function dot16(w: v128, a: usize, part: i32): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return i32x4.extadd_pairwise_i16x8_s(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(a + QA_I8 + (<usize>part << 4)), w));
  }
  const at = a + (<usize>part << 5); // 32 x i16 activations
  return i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(w), v128.load(at)), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(w), v128.load(at, 16)));
}

/** Σ w·a over a sub-block of 32 weights (w0: 0-15, w1: 16-31, unsigned <= 15) and activation block a. */
// @ts-ignore: decorator
@inline function dot32(w0: v128, w1: v128, a: usize): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    // Pair sums <= 2·127·15: two of them add in 16 bits.
    const pairs = i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(a + QA_I8), w0), i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(a + QA_I8 + 16), w1));
    return i32x4.extadd_pairwise_i16x8_s(pairs);
  }
  return i32x4.add(dot16(w0, a, 0), dot16(w1, a, 1));
}

/** acc plus one super-block of any K-quant (at wb) against the activation super-block at ab (relaxed build). */
// @ts-ignore: decorator
@inline function superBlockI(wb: usize, ab: usize, acc: v128, format: i32): v128 {
  return isSixBit(format) ? q6kSuperBlockI(wb, ab, acc, format) : isLowBit(format) ? lowBitSuperBlockI(wb, ab, acc, format) : q4kSuperBlockI(wb, ab, acc, format);
}

/**
 * One output: the weight row at w (nsb super-blocks) against the activation row qa (Q6_K's -32
 * offsets go into the integers).
 */
// @ts-ignore: decorator
@inline export function dotk_1x1(qa: usize, w: usize, nsb: i32, format: i32): f32 {
  let acc = f32x4.splat(0);
  for (let sb = 0; sb < nsb; sb++) {
    const wb = w + <usize>sb * superBytes(format), a0 = qa + (<usize>sb << 3) * QA_BLOCK;
    if (superActivations(format)) {
      acc = superBlockI(wb, qa + <usize>sb * QA_SUPER, acc, format);
    } else if (hasMins(format)) {
      const a4 = a0 + 4 * QA_BLOCK;
      acc = q4kSuperBlock(wb, a0, gather4(a0, QA_SCALE), gather4(a4, QA_SCALE), gather4(a0, QA_DSUM), gather4(a4, QA_DSUM), acc, format);
    } else if (isLowBit(format)) {
      acc = lowBitSuperBlock(wb, a0, acc, format);
    } else {
      acc = q6kSuperBlock(wb, a0, acc, format);
    }
  }
  return hsum(acc);
}

/**
 * Two outputs: one activation row against two weight rows anywhere (two of the GEMV's four
 * streams), each output computed exactly as dotk_1x1 computes it; the activation block's loads
 * shared by both.
 */
// @ts-ignore: decorator
@inline export function dotk_1x2(qa: usize, w0: usize, w1: usize, nsb: i32, format: i32, y0: usize, y1: usize, addToY: bool): void {
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  for (let sb = 0; sb < nsb; sb++) {
    const o = <usize>sb * superBytes(format), b0 = w0 + o, b1 = w1 + o, a0 = qa + (<usize>sb << 3) * QA_BLOCK;
    if (superActivations(format)) {
      const ab = qa + <usize>sb * QA_SUPER;
      acc0 = superBlockI(b0, ab, acc0, format);
      acc1 = superBlockI(b1, ab, acc1, format);
    } else if (hasMins(format)) {
      const a4 = a0 + 4 * QA_BLOCK;
      const daLo = gather4(a0, QA_SCALE), daHi = gather4(a4, QA_SCALE), dsLo = gather4(a0, QA_DSUM), dsHi = gather4(a4, QA_DSUM);
      acc0 = q4kSuperBlock(b0, a0, daLo, daHi, dsLo, dsHi, acc0, format);
      acc1 = q4kSuperBlock(b1, a0, daLo, daHi, dsLo, dsHi, acc1, format);
    } else if (isLowBit(format)) {
      acc0 = lowBitSuperBlock(b0, a0, acc0, format);
      acc1 = lowBitSuperBlock(b1, a0, acc1, format);
    } else {
      acc0 = q6kSuperBlock(b0, a0, acc0, format);
      acc1 = q6kSuperBlock(b1, a0, acc1, format);
    }
  }
  finish(y0, hsum(acc0), addToY);
  finish(y1, hsum(acc1), addToY);
}

/**
 * K weights (a multiple of 256) of a row from its first super-block at src, as f32 at dst: Q4_K
 * (d·sc)·q - dmin·m, Q6_K (d·sc)·(q - 32), each with one rounding (d·sc, dmin·m and (d·sc)·q for
 * Q4_K are exact), the values the host's dequantizer computes.
 */
// @ts-ignore: decorator
@inline export function dequantizeRowK(src: usize, K: i32, dst: usize, format: i32): void {
  const nsb = K / SUPER_BLOCK;
  for (let sb = 0; sb < nsb; sb++) {
    const wb = src + <usize>sb * superBytes(format), out0 = dst + (<usize>sb << 10);
    for (let s = 0; s < 8; s++) {
      const out = out0 + (<usize>s << 7);
      if (hasMins(format)) {
        const sm = q4kScaleMin(wb + 4, s);
        const f = f32x4.splat(halfAt(wb) * <f32>(sm & 255)), minus = f32x4.splat(halfAt(wb + 2) * <f32>(sm >> 8));
        scale16(q4kWeights(wb, s, 0, format), f, minus, out);
        scale16(q4kWeights(wb, s, 1, format), f, minus, out + 64);
      } else if (isLowBit(format)) {
        // Sub-block s = quarter s & 3 of half s >> 2; its groups 2s, 2s + 1.
        const n = s >> 2, j = s & 3, three = format == WEIGHT_Q3_K;
        const d = halfAt(wb + (three ? 108 : 80)), scales = lowBitScales(wb, format);
        for (let part = 0; part < 2; part++) {
          const g = (s << 1) + part;
          // The group's scale: lane g of the unpacked scales (a variable lane, by a swizzle).
          const sg = three ? <i32>i8x16.extract_lane_s(i8x16.swizzle(scales, i8x16.splat(<i8>g)), 0) : <i32>(load<u8>(wb + <usize>g) & 15);
          const minus = three ? f32x4.splat(0) : f32x4.splat(halfAt(wb + 82) * <f32>(load<u8>(wb + <usize>g) >> 4));
          scale16(lowBitWeights(wb, n, j, part, format), f32x4.splat(d * <f32>sg), minus, out + (<usize>part << 6));
        }
      } else {
        const d = halfAt(wb + sixBitDAt(format)), sc = wb + sixBitScalesAt(format) + (<usize>s << 1), zero = f32x4.splat(0);
        scale16(i8x16.sub(sixBitWeights(wb, s, 0, format), i8x16.splat(32)), f32x4.splat(d * <f32>load<i8>(sc)), zero, out);
        scale16(i8x16.sub(sixBitWeights(wb, s, 1, format), i8x16.splat(32)), f32x4.splat(d * <f32>load<i8>(sc + 1)), zero, out + 64);
      }
    }
  }
}
