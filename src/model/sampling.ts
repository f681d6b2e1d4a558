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

  constructor(options: SamplingOptions = {}) {
    const { temperature = 0, topK = 0, topP = 1, seed = 0, repetitionPenalty = 1 } = options;
    if (!Number.isFinite(temperature) || temperature < 0) throw new RangeError(`sampling: temperature must be >= 0, got ${temperature}`);
    if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`sampling: topK must be a non-negative integer, got ${topK}`);
    if (!(topP > 0 && topP <= 1)) throw new RangeError(`sampling: topP must be in (0, 1], got ${topP}`);
    if (!Number.isInteger(seed)) throw new RangeError(`sampling: seed must be an integer, got ${seed}`);
    if (!(repetitionPenalty > 0) || !Number.isFinite(repetitionPenalty)) throw new RangeError(`sampling: repetitionPenalty must be > 0, got ${repetitionPenalty}`);
    this.temperature = temperature; this.topK = topK; this.topP = topP; this.repetitionPenalty = repetitionPenalty;
    this.state = (seed ^ 0x9e3779b9) >>> 0 || 1;
  }

  /** The next token given one row of logits and the tokens so far. */
  next(logits: Float32Array, history: readonly number[] = []): number {
    const z = Float64Array.from(logits);
    if (this.repetitionPenalty !== 1) {
      for (const t of new Set(history)) {
        if (t >= 0 && t < z.length) z[t] = z[t]! > 0 ? z[t]! / this.repetitionPenalty : z[t]! * this.repetitionPenalty;
      }
    }
    if (this.temperature === 0) {
      let best = 0;
      for (let j = 1; j < z.length; j++) if (z[j]! > z[best]!) best = j;
      return best;
    }
    // Candidates, most likely first; top-k, then softmax at the temperature, then top-p.
    let order = Array.from(z.keys()).sort((a, b) => z[b]! - z[a]!);
    if (this.topK > 0) order = order.slice(0, this.topK);
    const top = z[order[0]!]!;
    const weights = order.map((t) => Math.exp((z[t]! - top) / this.temperature));
    const total = weights.reduce((a, b) => a + b, 0);
    let keep = order.length, cumulative = 0;
    if (this.topP < 1) {
      for (let i = 0; i < order.length; i++) {
        cumulative += weights[i]! / total;
        if (cumulative >= this.topP) { keep = i + 1; break; }
      }
    }
    const kept = weights.slice(0, keep);
    let r = this.random() * kept.reduce((a, b) => a + b, 0);
    for (let i = 0; i < keep; i++) {
      r -= kept[i]!;
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
