// Choosing the next token from one row of logits: repetition penalty (the Hugging Face rule),
// then greedy (temperature 0) or sampling with temperature, top-k and top-p from a seeded
// generator, so that a seed reproduces a generation.

export interface SamplingOptions {
  /** 0 (default): greedy. */
  temperature?: number;
  /** Keep the k most likely tokens (0 or undefined: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1: all). */
  topP?: number;
  /** Seed of the sampling generator (default 0). */
  seed?: number;
  /** > 1 discourages tokens already in the sequence (1: off). */
  repetitionPenalty?: number;
}

export class Sampler {
  private state: number;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly repetitionPenalty: number;

  /**
   * `residentArgmax`: an argmax for logits it can reach (a runtime's resident logits, in wasm:
   * Runtime.argmaxResident), undefined for others; greedy decoding takes it first.
   */
  constructor(options: SamplingOptions = {}, private readonly residentArgmax?: (x: Float32Array) => number | undefined) {
    const { temperature = 0, topK = 0, topP = 1, seed = 0, repetitionPenalty = 1 } = options;
    if (!Number.isFinite(temperature) || temperature < 0) throw new RangeError(`sampling: temperature must be >= 0, got ${temperature}`);
    if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`sampling: topK must be a non-negative integer, got ${topK}`);
    if (!(topP > 0 && topP <= 1)) throw new RangeError(`sampling: topP must be in (0, 1], got ${topP}`);
    if (!Number.isInteger(seed)) throw new RangeError(`sampling: seed must be an integer, got ${seed}`);
    if (!(repetitionPenalty > 0) || !Number.isFinite(repetitionPenalty)) throw new RangeError(`sampling: repetitionPenalty must be > 0, got ${repetitionPenalty}`);
    this.temperature = temperature; this.topK = topK; this.topP = topP; this.repetitionPenalty = repetitionPenalty;
    this.state = (seed ^ 0x9e3779b9) >>> 0 || 1;
  }

  /**
   * The next token given one row of logits and the tokens so far. The vocabulary is never
   * sorted: top-k's candidates come best first (ties: lower id first) from one pass keeping a
   * k-sized heap (50 of 152k: ~0.3 ms, where a full sort took ~65 ms), top-p alone ranks only the
   * tokens at its boundary (nucleusDraw). Without top-k and top-p one linear pass samples from all tokens.
   */
  next(logits: Float32Array, history: readonly number[] = []): number {
    // A copy only when the penalty changes some logits.
    const z: Logits = this.repetitionPenalty !== 1 ? Float64Array.from(logits) : logits;
    if (this.repetitionPenalty !== 1) {
      for (const t of new Set(history)) {
        if (t >= 0 && t < z.length) z[t] = z[t]! > 0 ? z[t]! / this.repetitionPenalty : z[t]! * this.repetitionPenalty;
      }
    }
    if (this.temperature === 0) return (z instanceof Float32Array ? this.residentArgmax?.(z) : undefined) ?? argmax(z);
    // Top-k's candidates come best first, so its first is the argmax (no pass of its own).
    const k = this.topK > 0 ? Math.min(this.topK, z.length) : z.length;
    const topK = this.topK > 0 ? topKOf(z, k) : undefined;
    const best = topK ? topK[0]! : argmax(z);
    const top = z[best]!, T = this.temperature;
    const weight = (t: number) => Math.exp((z[t]! - top) / T);
    if (this.topK === 0 && this.topP === 1) {
      let total = 0;
      for (let t = 0; t < z.length; t++) total += weight(t);
      let r = this.random() * total;
      for (let t = 0; t < z.length; t++) { r -= weight(t); if (r < 0) return t; }
      return best;
    }
    // Top-p alone: no ranking of the vocabulary (nucleusDraw).
    if (!topK) return nucleusDraw(z, top, T, this.topP, this.random(), best);
    // Top-k, then softmax at the temperature over those, then top-p.
    const weights = topK.map(weight);
    let total = 0;
    for (const w of weights) total += w;
    let keep = 0, cumulative = 0;
    while (keep < topK.length) {
      cumulative += weights[keep]! / total;
      keep++;
      if (this.topP < 1 && cumulative >= this.topP) break;
    }
    let kept = 0;
    for (let i = 0; i < keep; i++) kept += weights[i]!;
    let r = this.random() * kept;
    for (let i = 0; i < keep; i++) {
      r -= weights[i]!;
      if (r < 0) return topK[i]!;
    }
    return topK[keep - 1]!;
  }

  /** Uniform in [0, 1) (xorshift32). */
  private random(): number {
    let x = this.state;
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    this.state = x;
    return x / 4294967296;
  }
}

/** z[a] ranks before z[b]: larger, or equal with the lower id (the order a stable sort gives). */
type Logits = Float32Array | Float64Array;

/** The index of the largest value (the first of equals): greedy decoding's choice. */
export function argmax(x: ArrayLike<number>): number {
  // The best value kept in a local (not re-read as x[best]): 46 against 78 us at 49k (scratch/argmax.ts).
  let best = 0, top = x[0]!;
  for (let i = 1, n = x.length; i < n; i++) { const v = x[i]!; if (v > top) { top = v; best = i; } }
  return best;
}

function ranksBefore(z: Logits, a: number, b: number): boolean {
  return z[a]! > z[b]! || (z[a] === z[b] && a < b);
}

/** The k best ids, best first, in one pass keeping a k-sized min-heap (most tokens fail one comparison). */
export function topKOf(z: Logits, k: number): number[] {
  const h: number[] = [];
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < h.length && ranksBefore(z, h[m]!, h[l]!)) m = l;
      if (r < h.length && ranksBefore(z, h[m]!, h[r]!)) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  };
  let t = 0;
  for (; t < z.length && h.length < k; t++) {
    h.push(t);
    for (let i = h.length - 1; i > 0;) { const p = (i - 1) >> 1; if (!ranksBefore(z, h[p]!, h[i]!)) break; [h[i], h[p]] = [h[p]!, h[i]!]; i = p; }
  }
  // The heap's worst in a local: most of a vocabulary fails this one comparison.
  for (let worst = z[h[0]!]!; t < z.length; t++) {
    if (z[t]! > worst) {
      h[0] = t;
      down(0);
      worst = z[h[0]!]!;
    }
  }
  return h.sort((a, b) => (ranksBefore(z, a, b) ? -1 : 1));
}

const NUCLEUS_BINS = 64, BINS_PER_UNIT = 4;
/** Each token's weight and bin for nucleusDraw, reused from call to call (next() runs to its end: nothing else uses them meanwhile). */
let nucleusWeights = new Float64Array(0), nucleusBins = new Uint8Array(0);
/** A bin mark for the tokens of the boundary bin that the nucleus keeps. */
const KEPT = 255;

/**
 * Top-p alone (every token a candidate): a draw from the nucleus, the most likely tokens (ties:
 * the lower id) until their probability reaches p, without ranking the vocabulary. One pass
 * gives each token its weight e^((z - top)/T) and its bin, (top - z)/T in quarters (best
 * first); whole bins are kept while their mass stays below p; the bin where it reaches p is
 * ranked alone and kept token by token until it does; then `u` draws over the kept tokens in id
 * order (the nucleus's distribution, as a draw in rank order). Sorting every candidate of the
 * nucleus took 18.3 ms at 152k flat logits (thousands of tokens); a heap popped token by token
 * 10-35 ms.
 */
function nucleusDraw(z: Logits, top: number, T: number, p: number, u: number, best: number): number {
  const V = z.length;
  if (nucleusWeights.length < V) { nucleusWeights = new Float64Array(V); nucleusBins = new Uint8Array(V); }
  const w = nucleusWeights, bin = nucleusBins, mass = new Float64Array(NUCLEUS_BINS);
  let total = 0;
  for (let t = 0; t < V; t++) {
    const x = Math.exp((z[t]! - top) / T), d = ((top - z[t]!) / T) * BINS_PER_UNIT;
    // NaN (a broken row) and -inf weigh nothing, in the last bin.
    const weight = x > 0 ? x : 0, b = d < NUCLEUS_BINS - 1 ? Math.floor(d) : NUCLEUS_BINS - 1;
    w[t] = weight; bin[t] = b; mass[b]! += weight; total += weight;
  }
  if (!(total > 0)) return best;
  const target = p * total;
  let kept = 0, whole = 0; // bins [0, whole) are kept whole
  while (whole < NUCLEUS_BINS - 1 && kept + mass[whole]! < target) kept += mass[whole++]!;
  // The boundary bins, best first, token by token (rounding may carry the cut past the first).
  for (let b = whole; b < NUCLEUS_BINS && kept < target; b++) {
    const tokens: number[] = [];
    for (let t = 0; t < V; t++) if (bin[t] === b) tokens.push(t);
    tokens.sort((x, y) => z[y]! - z[x]! || x - y);
    for (const t of tokens) {
      kept += w[t]!; bin[t] = KEPT;
      if (kept >= target) break;
    }
  }
  let r = u * kept, last = best;
  for (let t = 0; t < V; t++) {
    if (bin[t]! >= whole && bin[t] !== KEPT) continue;
    last = t;
    r -= w[t]!;
    if (r < 0) return t;
  }
  return last;
}

