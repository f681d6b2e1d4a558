// Building blocks shared by every kernel. The two builds (simd, relaxed) come from this one
// source: ASC_FEATURE_RELAXED_SIMD is a compile-time constant, so `fmadd` is either one FMA
// instruction or a mul followed by an add, with no branch at run time.

/** acc + a * b, lane-wise. */
// @ts-ignore: decorator
@inline export function fmadd(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, acc);
  return f32x4.add(f32x4.mul(a, b), acc);
}

/** Horizontal sums of four vectors at once: [sum(a), sum(b), sum(c), sum(d)]. */
// @ts-ignore: decorator
@inline export function hsum4x4(a: v128, b: v128, c: v128, d: v128): v128 {
  // Interleave and add twice: 6 shuffles and 3 adds instead of four scalar reductions.
  const ab = f32x4.add(v128.shuffle<f32>(a, b, 0, 4, 1, 5), v128.shuffle<f32>(a, b, 2, 6, 3, 7));
  const cd = f32x4.add(v128.shuffle<f32>(c, d, 0, 4, 1, 5), v128.shuffle<f32>(c, d, 2, 6, 3, 7));
  return f32x4.add(v128.shuffle<f32>(ab, cd, 0, 1, 4, 5), v128.shuffle<f32>(ab, cd, 2, 3, 6, 7));
}

/** Horizontal sum of one vector. */
// @ts-ignore: decorator
@inline export function hsum(a: v128): f32 {
  const b = f32x4.add(a, v128.shuffle<f32>(a, a, 2, 3, 0, 1));
  const c = f32x4.add(b, v128.shuffle<f32>(b, b, 1, 0, 3, 2));
  return f32x4.extract_lane(c, 0);
}

/**
 * Horizontal max of four i32 lanes. On |x| as bits (f32x4.abs), the largest magnitude: the bits
 * of non-negative floats order as their values do (NaN above inf), and an integer max is one
 * instruction where f32x4.max's NaN rules take eight on x86.
 */
// @ts-ignore: decorator
@inline export function hmaxI32(a: v128): i32 {
  const b = i32x4.max_s(a, v128.shuffle<i32>(a, a, 2, 3, 0, 1));
  return i32x4.extract_lane(i32x4.max_s(b, v128.shuffle<i32>(b, b, 1, 0, 3, 2)), 0);
}

/** Horizontal max of one vector. */
// @ts-ignore: decorator
@inline export function hmax(a: v128): f32 {
  const b = f32x4.max(a, v128.shuffle<f32>(a, a, 2, 3, 0, 1));
  const c = f32x4.max(b, v128.shuffle<f32>(b, b, 1, 0, 3, 2));
  return f32x4.extract_lane(c, 0);
}

// Element types a row (K/V, weights) can be stored in: f32; u16 holding bfloat16 (the high half
// of an f32, so widening is a shift); i16 holding IEEE half (f16); i8 (quantised, one f32 scale
// per row, applied by the caller). The type parameter only selects the widening.
export type BF16 = u16;
export type F16 = i16;

/** Whether element type T is bfloat16 (u16 storage). */
// @ts-ignore: decorator
@inline export function isBf16<T>(): bool { return sizeof<T>() == 2 && !isSigned<T>(); }

/** Whether element type T is IEEE half (i16 storage). */
// @ts-ignore: decorator
@inline export function isF16<T>(): bool { return sizeof<T>() == 2 && isSigned<T>(); }

/**
 * An element type: IEEE half (i16 storage, as F16) read without its exponent's rebias, so as the
 * f16 value times 2^-112 (exact: f16 normals become f32 normals, subnormals subnormals), for one
 * operation and one constant fewer than F16 in a tile (see scaledF16). A tag for the type
 * parameter, never instantiated: the one reference type among the element types.
 */
@unmanaged export class F16Scaled {}

/** Whether element type T is F16Scaled. */
// @ts-ignore: decorator
@inline export function isF16Scaled<T>(): bool { return isReference<T>(); }

/** Bytes of one stored element of type T. */
// @ts-ignore: decorator
@inline export function elementBytes<T>(): usize { return isF16Scaled<T>() ? 2 : sizeof<T>(); }

/** 2^112: an F16Scaled value times this is its f16 value (and a factor folded into the other operand undoes the 2^-112 exactly). */
export const F16_REBIAS: f32 = 5.192296858534828e33;

/**
 * f16 bit patterns, sign-extended into 32-bit lanes, as f32 times 2^-112: shifting left by 13
 * puts exponent and mantissa in f32's places (the sign extension fills bits 28-31 with the sign)
 * and the mask keeps bit 31 as the sign.
 */
// @ts-ignore: decorator
@inline function scaledF16(h: v128): v128 {
  return v128.and(i32x4.shl(h, 13), i32x4.splat(0x8fffe000));
}

/**
 * f16 bit patterns, sign-extended into 32-bit lanes, to f32 for finite values (weights, which
 * the loaders check): scaledF16 and one multiply by 2^112 that rebiases the exponent,
 * subnormals included. Four operations per four weights.
 */
// @ts-ignore: decorator
@inline function widenF16(h: v128): v128 {
  return f32x4.mul(scaledF16(h), f32x4.splat(F16_REBIAS));
}

/** Four consecutive elements from index i of a T row, widened to f32 lanes. */
// @ts-ignore: decorator
@inline export function load4<T>(p: usize, i: usize): v128 {
  if (isF16Scaled<T>()) return scaledF16(v128.load16x4_s(p + (i << 1)));
  if (sizeof<T>() == 4) return v128.load(p + (i << 2));
  if (sizeof<T>() == 2) {
    // One extending load (pmovsxwd / pmovzxwd from memory), not a load and an extend.
    return isSigned<T>() ? widenF16(v128.load16x4_s(p + (i << 1))) : i32x4.shl(v128.load16x4_u(p + (i << 1)), 16);
  }
  return f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(i16x8.extend_low_i8x16_s(v128.load32_zero(p + i))));
}

/** Element i of a T row as f32. */
// @ts-ignore: decorator
@inline export function load1<T>(p: usize, i: usize): f32 {
  if (isF16Scaled<T>()) return reinterpret<f32>((<i32>load<i16>(p + (i << 1)) << 13) & 0x8fffe000);
  if (sizeof<T>() == 4) return load<f32>(p + (i << 2));
  if (sizeof<T>() == 2) {
    if (isSigned<T>()) return f32x4.extract_lane(widenF16(i32x4.splat(<i32>load<i16>(p + (i << 1)))), 0);
    return reinterpret<f32>(<u32>load<u16>(p + (i << 1)) << 16);
  }
  return <f32>load<i8>(p + i);
}

/** n elements of a T row at src widened to f32 at dst (a SIMD body of four and a scalar tail). */
// @ts-ignore: decorator
@inline export function widenRow<T>(src: usize, n: i32, dst: usize): void {
  const body = <usize>(n & ~3);
  for (let i: usize = 0; i < body; i += 4) v128.store(dst + (i << 2), load4<T>(src, i));
  for (let i = body, end = <usize>n; i < end; i++) store<f32>(dst + (i << 2), load1<T>(src, i));
}
