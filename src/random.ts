// Deterministic uniform floats (a 32-bit LCG): the same inputs on every run and every host, for
// the demo, the benchmark and the tests.

/** Fills `a` with uniform floats in [-scale, scale). */
export function fillSeeded(a: Float32Array, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  for (let i = 0; i < a.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2147483648 - 1) * scale;
  }
  return a;
}

/** n uniform floats in [-scale, scale). */
export function seededArray(n: number, seed: number, scale = 1): Float32Array {
  return fillSeeded(new Float32Array(n), seed, scale);
}
