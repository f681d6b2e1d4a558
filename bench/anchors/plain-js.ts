// The plain-JavaScript anchor: the loops a careful JS programmer writes on Float32Arrays.

/** Grouped-query attention, token-major layouts as rt.attention, two-pass softmax. */
export function plainAttention(
  q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array,
  seqQ: number, seqK: number, H: number, KV: number, D: number, causal: boolean,
): void {
  const group = H / KV, scale = 1 / Math.sqrt(D);
  const scores = new Float32Array(seqK);
  for (let i = 0; i < seqQ; i++) {
    const last = causal ? Math.min(seqK - 1, i + seqK - seqQ) : seqK - 1;
    for (let h = 0; h < H; h++) {
      const kh = (h / group) | 0, qo = (i * H + h) * D;
      let max = -Infinity;
      for (let j = 0; j <= last; j++) {
        const ko = (j * KV + kh) * D;
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qo + d]! * k[ko + d]!;
        s *= scale;
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j <= last; j++) { const p = Math.exp(scores[j]! - max); scores[j] = p; sum += p; }
      out.fill(0, qo, qo + D);
      for (let j = 0; j <= last; j++) {
        const p = scores[j]! / sum, vo = (j * KV + kh) * D;
        for (let d = 0; d < D; d++) out[qo + d] += p * v[vo + d]!;
      }
    }
  }
}

/** y = x·Wᵀ with W [N, K]. */
export function plainLinear(x: Float32Array, w: Float32Array, y: Float32Array, M: number, N: number, K: number): void {
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      const xo = m * K, wo = n * K;
      for (let k = 0; k < K; k++) s += x[xo + k]! * w[wo + k]!;
      y[m * N + n] = s;
    }
  }
}
