// Quality, measured: perplexity of a model on a token sequence, and, against a reference model
// on the same tokens, the mean KL divergence of next-token distributions and how often their
// top-1 tokens agree (what a quantized model loses against its f32 original). Windows of `ctx`
// tokens, each from an empty cache (as llama.cpp's perplexity tool does), scored on every
// position after the first; logits are read a chunk of positions at a time.
import { argmax } from "./sampling.ts";
import type { TransformerModel } from "./transformer.ts";

export interface EvalOptions {
  /** Tokens per window (default: 512, or the model's context if shorter). */
  ctx?: number;
  /** A model with the same vocabulary to compare with (KL divergence, top-1 agreement). */
  reference?: TransformerModel;
  /** Positions scored so far, of all. */
  onProgress?: (done: number, total: number) => void;
}

export interface EvalResult {
  tokens: number;
  windows: number;
  ctx: number;
  /** Next-token predictions scored. */
  scored: number;
  perplexity: number;
  referencePerplexity?: number;
  /** Mean over positions of KL(reference || model), in nats. */
  meanKl?: number;
  /** Fraction of positions where both models' most likely next token is the same. */
  top1Agreement?: number;
}

const CHUNK = 128;

export function evaluate(model: TransformerModel, ids: readonly number[], options: EvalOptions = {}): EvalResult {
  const V = model.config.vocabSize;
  const ref = options.reference;
  if (ref && ref.config.vocabSize !== V) throw new RangeError(`eval: the reference has ${ref.config.vocabSize} tokens in its vocabulary, the model ${V}`);
  const most = Math.min(model.config.maxPositionEmbeddings, ref?.config.maxPositionEmbeddings ?? Infinity);
  const ctx = options.ctx ?? Math.min(512, most);
  if (!Number.isInteger(ctx) || ctx < 2 || ctx > most) throw new RangeError(`eval: ctx must be an integer in [2, ${most}], got ${ctx}`);
  if (ids.length < 2) throw new RangeError(`eval: the text has ${ids.length} tokens; at least 2 are needed`);
  for (const t of ids) if (!Number.isInteger(t) || t < 0 || t >= V) throw new RangeError(`eval: token id ${t} is outside the vocabulary [0, ${V})`);
  const windows: number[][] = [];
  for (let at = 0; at + 1 < ids.length; at += ctx) windows.push(ids.slice(at, at + ctx));
  const total = windows.reduce((s, w) => s + w.length - 1, 0);
  let nll = 0, refNll = 0, kl = 0, agree = 0, done = 0;
  const caches = [model.createCache(), ...(ref ? [ref.createCache()] : [])];
  try {
    for (const w of windows) {
      const seqs = caches.map((c) => c.createSequence());
      for (let at = 0; at < w.length - 1; at += CHUNK) {
        const part = w.slice(at, Math.min(at + CHUNK, w.length - 1));
        const logits = model.forward(caches[0]!, seqs[0]!, part);
        const refLogits = ref ? ref.forward(caches[1]!, seqs[1]!, part) : undefined;
        for (let i = 0; i < part.length; i++) {
          const next = w[at + i + 1]!;
          const row = logits.subarray(i * V, (i + 1) * V);
          const lp = logSoftmax(row);
          nll -= lp[next]!;
          if (refLogits) {
            const rlp = logSoftmax(refLogits.subarray(i * V, (i + 1) * V));
            refNll -= rlp[next]!;
            let k = 0;
            for (let v = 0; v < V; v++) { const p = Math.exp(rlp[v]!); if (p > 0) k += p * (rlp[v]! - lp[v]!); }
            kl += k;
            if (argmax(lp) === argmax(rlp)) agree++;
          }
        }
        done += part.length;
        options.onProgress?.(done, total);
      }
      caches.forEach((c, i) => c.free(seqs[i]!));
    }
  } finally {
    for (const c of caches) c.dispose();
  }
  return {
    tokens: ids.length, windows: windows.length, ctx, scored: total, perplexity: Math.exp(nll / total),
    ...(ref ? { referencePerplexity: Math.exp(refNll / total), meanKl: kl / total, top1Agreement: agree / total } : {}),
  };
}

/** log(softmax(x)) in float64. */
function logSoftmax(x: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i]! > max) max = x[i]!;
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i]! - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(x, (v) => v - lse);
}
