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

/**
 * n floats shaped like trained transformer weights: normal, each row of `rowLength` with its own
 * scale (log-normal around `scale`), and 1 in 1000 an outlier eight times larger (the heavy
 * tails that make low-bit quantization hard).
 */
export function seededTrainedLike(n: number, rowLength: number, seed: number, scale = 0.02): Float32Array {
  const u = seededArray(2 * n + n / rowLength + 1, seed);
  // Box-Muller; the uniform kept inside (0, 1), which a float32 of it can leave.
  const normal = (i: number) => Math.sqrt(-2 * Math.log(Math.min(1 - 1e-9, Math.max(1e-12, (u[2 * i]! + 1) / 2)))) * Math.cos(Math.PI * (u[2 * i + 1]! + 1));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const row = Math.floor(i / rowLength);
    const rowScale = scale * Math.exp(0.3 * (u[2 * n + row]! * 1.7));
    out[i] = normal(i) * rowScale * (((u[2 * i]! * 1e6) & 1023) === 0 ? 8 : 1);
  }
  return out;
}
