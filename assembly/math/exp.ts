import { fmadd } from "../simd";

// e^x on four lanes: range reduction x = n·ln2 + r with |r| <= ln2/2, a degree-7 polynomial
// for e^r (Cephes expf coefficients, ~1 ulp), and 2^n built in the exponent bits.
// Softmax only feeds x <= 0; anything below ln(2^-126) flushes to exactly 0 so that masked
// scores (-inf) contribute nothing. Inputs above 88 are clamped (no inf), NaN stays NaN.

const LOG2E: f32 = 1.44269504088896341;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;
const P0: f32 = 1.9875691500e-4;
const P1: f32 = 1.3981999507e-3;
const P2: f32 = 8.3334519073e-3;
const P3: f32 = 4.1665795894e-2;
const P4: f32 = 1.6666665459e-1;
const P5: f32 = 5.0000001201e-1;
const X_MIN: f32 = -87.33654475; // ln(2^-126): smallest normal result
const X_MAX: f32 = 88.0;

// @ts-ignore: decorator
@inline export function exp4(x: v128): v128 {
  const underflow = f32x4.lt(x, f32x4.splat(X_MIN));
  // pmin/pmax: one instruction each on x86, where min/max's NaN and ±0 rules take seven; the
  // same values here (bounds are not zero, and a NaN x passes through either way).
  const xc = f32x4.pmin(f32x4.pmax(x, f32x4.splat(X_MIN)), f32x4.splat(X_MAX));
  const n = f32x4.nearest(f32x4.mul(xc, f32x4.splat(LOG2E)));
  let r = fmadd(n, f32x4.splat(-LN2_HI), xc);
  r = fmadd(n, f32x4.splat(-LN2_LO), r);
  let p = fmadd(f32x4.splat(P0), r, f32x4.splat(P1));
  p = fmadd(p, r, f32x4.splat(P2));
  p = fmadd(p, r, f32x4.splat(P3));
  p = fmadd(p, r, f32x4.splat(P4));
  p = fmadd(p, r, f32x4.splat(P5));
  const r2 = f32x4.mul(r, r);
  p = fmadd(p, r2, f32x4.add(r, f32x4.splat(1.0)));
  // |n| <= 127: the relaxed truncation (one instruction, no saturation fix-up) gives the same.
  const ni = ASC_FEATURE_RELAXED_SIMD ? i32x4.relaxed_trunc_f32x4_s(n) : i32x4.trunc_sat_f32x4_s(n);
  const pow2n = i32x4.shl(i32x4.add(ni, i32x4.splat(127)), 23);
  const result = f32x4.mul(p, pow2n);
  return v128.andnot(result, underflow);
}

/**
 * cap · tanh(x / cap) on four lanes (Gemma 2's soft-capping of attention scores and logits), with
 * tanh(y) = sign(y) · (1 - 2 / (1 + e^(2|y|))): e^ clamped above gives exactly ±cap far out.
 */
// @ts-ignore: decorator
@inline export function softcap4(x: v128, cap: f32): v128 {
  const one = f32x4.splat(1);
  const e = exp4(f32x4.mul(f32x4.abs(x), f32x4.splat(2 / cap)));
  const t = f32x4.sub(one, f32x4.div(f32x4.splat(2), f32x4.add(one, e)));
  return f32x4.mul(v128.or(t, v128.and(x, i32x4.splat(0x80000000))), f32x4.splat(cap));
}

/** Scalar e^x with the same polynomial, for per-row rescale factors. */
// @ts-ignore: decorator
@inline export function exp1(x: f32): f32 {
  return f32x4.extract_lane(exp4(f32x4.splat(x)), 0);
}

/** out[i] = e^(x[i]) for n floats (exported for the accuracy test). */
export function exp_f32(x: usize, out: usize, n: i32): void {
  const body = <usize>(n & ~3) << 2;
  let o: usize = 0;
  for (; o < body; o += 16) v128.store(out + o, exp4(v128.load(x + o)));
  for (let i = n & ~3; i < n; i++) store<f32>(out + (<usize>i << 2), exp1(load<f32>(x + (<usize>i << 2))));
}
