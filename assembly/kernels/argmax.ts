// Greedy decoding's choice over a row of logits left in wasm memory: the index of the largest
// value, the first of equals, NaN never chosen, as the host's argmax (sampling.ts) picks it: its
// JavaScript loop over 49k logits took 46-78 us between decode steps, with the caches cold.

/**
 * The index of the largest of the n floats at x (n >= 1): the first of equal values; a NaN is
 * never larger (so a NaN x[0] stays the answer, as a scan that starts there keeps it). Four
 * lanes each keep their best value and its first index (a strict >), two vectors of lanes side
 * by side; then the best of the lanes, the lowest index among equals.
 */
export function argmax_f32(x: usize, n: i32): i32 {
  if (n <= 0) return -1;
  const first = load<f32>(x);
  if (isNaN(first)) return 0;
  let bestA = f32x4.splat(-Infinity), bestB = bestA;
  let idxA = i32x4.splat(-1), idxB = idxA;
  let at = i32x4(0, 1, 2, 3);
  const step = i32x4.splat(8), four = i32x4.splat(4);
  const body8 = <usize>(n & ~7) << 2;
  for (let o: usize = 0; o < body8; o += 32) {
    const a = v128.load(x + o), b = v128.load(x + o, 16);
    const ga = f32x4.gt(a, bestA), gb = f32x4.gt(b, bestB);
    bestA = v128.bitselect(a, bestA, ga); idxA = v128.bitselect(at, idxA, ga);
    bestB = v128.bitselect(b, bestB, gb); idxB = v128.bitselect(i32x4.add(at, four), idxB, gb);
    at = i32x4.add(at, step);
  }
  // Lane by lane: the larger value, or the lower index of two equal ones (an index of -1: none).
  let best: f32 = -Infinity, index: i32 = -1;
  for (let lane = 0; lane < 8; lane++) {
    const v = lane < 4 ? lanef(bestA, lane) : lanef(bestB, lane - 4);
    const i = lane < 4 ? lanei(idxA, lane) : lanei(idxB, lane - 4);
    if (i < 0) continue;
    if (v > best || (v == best && (index < 0 || i < index))) { best = v; index = i; }
  }
  for (let i = n & ~7; i < n; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    if (v > best) { best = v; index = i; }
  }
  // Nothing above -inf: every value is -inf or NaN, and the first (-inf) is the answer.
  return index < 0 ? 0 : index;
}

// @ts-ignore: decorator
@inline function lanef(v: v128, lane: i32): f32 {
  return lane == 0 ? f32x4.extract_lane(v, 0) : lane == 1 ? f32x4.extract_lane(v, 1) : lane == 2 ? f32x4.extract_lane(v, 2) : f32x4.extract_lane(v, 3);
}

// @ts-ignore: decorator
@inline function lanei(v: v128, lane: i32): i32 {
  return lane == 0 ? i32x4.extract_lane(v, 0) : lane == 1 ? i32x4.extract_lane(v, 1) : lane == 2 ? i32x4.extract_lane(v, 2) : i32x4.extract_lane(v, 3);
}
