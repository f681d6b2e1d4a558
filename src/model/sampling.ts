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
   * sorted: candidates come most likely first (ties: lower id first) from a binary heap built in
   * linear time, and only as many are taken as top-k and top-p keep (50 of 152k: ~1 ms, where a
   * full sort took ~65 ms). Without top-k and top-p one linear pass samples from all tokens.
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
    // Top-k, then softmax at the temperature over those, then top-p.
    const order: number[] = [], weights: number[] = [];
    let total = 0;
    let candidates: CandidateHeap | undefined;
    if (topK) {
      for (const t of topK) { order.push(t); weights.push(weight(t)); total += weights[weights.length - 1]!; }
    } else {
      // Top-p alone: the tokens it can keep, ranked by one native sort (a heap popped token by
      // token took 10-35 ms at 152k tokens, the nucleus of a flat distribution being thousands).
      // (float32 logits: their order packs into a key; a repetition penalty's float64 copy pops the heap)
      const mass = z instanceof Float32Array ? new Float64Array(NUCLEUS_BINS) : undefined;
      for (let t = 0; t < z.length; t++) { const w = weight(t); total += w; if (mass) mass[nucleusBin(z[t]!, top, T)]! += w; }
      const ranked = mass ? rankedNucleusCandidates(z as Float32Array, top, T, total, this.topP, mass) : undefined;
      if (ranked) for (const t of ranked) { order.push(t); weights.push(weight(t)); }
      candidates = ranked ? undefined : new CandidateHeap(z);
    }
    let keep = 0, cumulative = 0;
    for (;;) {
      if (keep === order.length) {
        if (order.length === k) break;
        // Rounding left the ranked candidates' mass a hair short of p: the rest of the tokens.
        candidates ??= new CandidateHeap(z, order.length);
        const t = candidates.pop();
        order.push(t); weights.push(weight(t));
      }
      cumulative += weights[keep]! / total;
      keep++;
      if (this.topP < 1 && cumulative >= this.topP) break;
    }
    let kept = 0;
    for (let i = 0; i < keep; i++) kept += weights[i]!;
    let r = this.random() * kept;
    for (let i = 0; i < keep; i++) {
      r -= weights[i]!;
      if (r < 0) return order[i]!;
    }
    return order[keep - 1]!;
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
/** A token's bin for rankedNucleusCandidates: (top - z)/T in quarters. */
function nucleusBin(z: number, top: number, T: number): number {
  return Math.min(NUCLEUS_BINS - 1, Math.floor(((top - z) / T) * BINS_PER_UNIT));
}

/**
 * The tokens top-p can keep, best first (ties: the lower id), without ranking the vocabulary:
 * with the `mass` of the weights in each bin (nucleusBin), the best bins are taken until their
 * mass reaches p, and one bin more (the sums' rounding), so the nucleus (tokens best first until
 * the mass reaches p) never goes past them; those tokens are sorted at once on keys that pack
 * the logit's order and the id into one double. Undefined past 2^21 tokens, or when the bins do
 * not prune.
 */
function rankedNucleusCandidates(z: Float32Array, top: number, T: number, total: number, p: number, mass: Float64Array): Int32Array | undefined {
  const ID_BITS = 2 ** 21;
  if (z.length > ID_BITS) return undefined;
  let last = 0;
  for (let sum = mass[0]!; sum < p * total && last < NUCLEUS_BINS - 1; ) sum += mass[++last]!;
  if (++last >= NUCLEUS_BINS - 1) return undefined;
  // The key: the float's bits mapped to an order (descending), times 2^21, plus the id.
  const bits = new Uint32Array(1), f = new Float32Array(bits.buffer);
  const keys: number[] = [];
  for (let t = 0; t < z.length; t++) {
    if (nucleusBin(z[t]!, top, T) > last) continue;
    f[0] = z[t]! === 0 ? 0 : z[t]!; // -0 ranks as +0, as the comparison does
    const u = bits[0]!, ascending = u & 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0;
    keys.push((0xffffffff - ascending) * ID_BITS + t);
  }
  const sorted = Float64Array.from(keys).sort();
  return Int32Array.from(sorted, (key) => key % ID_BITS);
}

/** Token ids, most likely first on pop (ties: the lower id), from a max-heap built in O(n). */
class CandidateHeap {
  private readonly heap: Int32Array;
  private size: number;
  /** `skip`: the best `skip` tokens are taken already. */
  constructor(private readonly z: Logits, skip = 0) {
    this.size = z.length;
    this.heap = new Int32Array(z.length);
    for (let i = 0; i < z.length; i++) this.heap[i] = i;
    for (let i = (this.size >> 1) - 1; i >= 0; i--) this.down(i);
    for (let i = 0; i < skip; i++) this.pop();
  }

  pop(): number {
    const h = this.heap, top = h[0]!;
    h[0] = h[--this.size]!;
    this.down(0);
    return top;
  }

  private before(a: number, b: number): boolean {
    return ranksBefore(this.z, a, b);
  }

  private down(i: number): void {
    const h = this.heap, n = this.size;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < n && this.before(h[l]!, h[m]!)) m = l;
      if (r < n && this.before(h[r]!, h[m]!)) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}
