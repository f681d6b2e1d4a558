// Plain float64 references, written for clarity, not speed: the yardstick for the kernels in
// the tests and the demo's accuracy check.

export interface ReferenceAttentionArgs {
  q: ArrayLike<number>; k: ArrayLike<number>; v: ArrayLike<number>;
  numHeads: number; numKvHeads: number; headDim: number;
  causal?: boolean; slidingWindow?: number; scale?: number;
  /** Gemma 2's soft-capping: each score s (after the scale) becomes softcap · tanh(s / softcap). */
  softcap?: number;
}

/** softmax(scale · q·kᵀ) · v per query head, in float64, with the same layouts and mask as rt.attention. */
export function referenceAttention(a: ReferenceAttentionArgs): Float64Array {
  const { numHeads, numKvHeads, headDim: D } = a;
  const seqQ = a.q.length / (numHeads * D);
  const seqK = a.k.length / (numKvHeads * D);
  const scale = a.scale ?? 1 / Math.sqrt(D);
  const group = numHeads / numKvHeads;
  const out = new Float64Array(a.q.length);
  for (let i = 0; i < seqQ; i++) {
    const lastKey = a.causal ? Math.min(seqK - 1, i + seqK - seqQ) : seqK - 1;
    // Sliding window: the newest `slidingWindow` keys up to the query's position.
    const firstKey = a.slidingWindow ? Math.max(0, i + seqK - seqQ - a.slidingWindow + 1) : 0;
    for (let h = 0; h < numHeads; h++) {
      const kvHead = Math.floor(h / group);
      const qRow = (i * numHeads + h) * D;
      const scores: number[] = [];
      for (let j = firstKey; j <= lastKey; j++) {
        const kRow = (j * numKvHeads + kvHead) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += a.q[qRow + d]! * a.k[kRow + d]!;
        scores.push(a.softcap ? a.softcap * Math.tanh((dot * scale) / a.softcap) : dot * scale);
      }
      if (scores.length === 0) continue; // no visible key: the row stays 0
      const max = Math.max(...scores);
      const weights = scores.map((s) => Math.exp(s - max));
      const total = weights.reduce((x, y) => x + y, 0);
      for (let j = firstKey; j <= lastKey; j++) {
        const vRow = (j * numKvHeads + kvHead) * D;
        const w = weights[j - firstKey]! / total;
        for (let d = 0; d < D; d++) out[qRow + d] = out[qRow + d]! + w * a.v[vRow + d]!;
      }
    }
  }
  return out;
}

/** y[m][n] = Σ_k x[m][k] · w[n][k] + b[n], in float64. */
export function referenceLinear(
  x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number> | undefined, inFeatures: number, outFeatures: number,
): Float64Array {
  const rows = x.length / inFeatures;
  const y = new Float64Array(rows * outFeatures);
  for (let m = 0; m < rows; m++) {
    for (let n = 0; n < outFeatures; n++) {
      let sum = b ? b[n]! : 0;
      for (let k = 0; k < inFeatures; k++) sum += x[m * inFeatures + k]! * w[n * inFeatures + k]!;
      y[m * outFeatures + n] = sum;
    }
  }
  return y;
}

/** Largest |a[i] - b[i]|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
