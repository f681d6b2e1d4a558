import { float32Array, positiveInt, rowsOf } from "./validate.ts";

/** Arguments of rt.attention: token-major float32 tensors. */
export interface AttentionArgs {
  /** [seqQ, numHeads, headDim] */
  q: Float32Array;
  /** [seqK, numKvHeads, headDim] */
  k: Float32Array;
  /** [seqK, numKvHeads, headDim] */
  v: Float32Array;
  numHeads: number;
  /** numHeads for MHA, 1 for MQA, a divisor of numHeads for GQA. */
  numKvHeads: number;
  headDim: number;
  /** Bottom-right aligned causal mask: query i sees key j iff j <= i + (seqK - seqQ). */
  causal?: boolean;
  /**
   * With causal: each query sees at most this many keys, its own position included (Mistral's
   * sliding window): query i sees key j iff i + (seqK - seqQ) - slidingWindow < j. Omitted: all.
   */
  slidingWindow?: number;
  /** Score scale; 1/sqrt(headDim) when omitted. */
  scale?: number;
  /** Scores (after the scale) capped at ±softcap as softcap · tanh(s / softcap) (Gemma 2); omitted: not capped. */
  softcap?: number;
}

/** A validated attention problem. */
export interface AttentionShape {
  seqQ: number;
  seqK: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  causal: boolean;
  /** 0: no sliding window */
  slidingWindow: number;
  scale: number;
  /** 0: no soft-capping */
  softcap: number;
}

/**
 * Checks the shape arguments and derives seqQ / seqK from the element counts. Throws a
 * TypeError or RangeError naming the argument before any kernel runs.
 */
export function attentionShape(
  op: string,
  args: Omit<AttentionArgs, "q" | "k" | "v">,
  qLength: number, kLength: number, vLength: number,
): AttentionShape {
  const numHeads = positiveInt(op, "numHeads", args.numHeads);
  const numKvHeads = positiveInt(op, "numKvHeads", args.numKvHeads);
  const headDim = positiveInt(op, "headDim", args.headDim);
  if (numHeads % numKvHeads !== 0) {
    throw new RangeError(`${op}: numHeads (${numHeads}) must be a multiple of numKvHeads (${numKvHeads})`);
  }
  if (args.causal !== undefined && typeof args.causal !== "boolean") {
    throw new TypeError(`${op}: causal must be a boolean, got ${typeof args.causal}`);
  }
  let slidingWindow = 0;
  if (args.slidingWindow !== undefined) {
    slidingWindow = positiveInt(op, "slidingWindow", args.slidingWindow);
    if (args.causal !== true) throw new RangeError(`${op}: slidingWindow needs causal: true (a window of past keys)`);
  }
  const scale = args.scale ?? 1 / Math.sqrt(headDim);
  if (typeof scale !== "number" || !Number.isFinite(scale)) {
    throw new RangeError(`${op}: scale must be a finite number, got ${String(scale)}`);
  }
  const softcap = args.softcap ?? 0;
  if (typeof softcap !== "number" || !Number.isFinite(softcap) || softcap < 0 || (args.softcap !== undefined && softcap === 0)) {
    throw new RangeError(`${op}: softcap must be a positive finite number, got ${String(args.softcap)}`);
  }
  const seqQ = rowsOf(op, "q", qLength, numHeads * headDim, "[seqQ, numHeads, headDim]");
  const seqK = rowsOf(op, "k", kLength, numKvHeads * headDim, "[seqK, numKvHeads, headDim]");
  if (vLength !== kLength) {
    throw new RangeError(`${op}: v has ${vLength} elements but k has ${kLength}; both are [seqK, numKvHeads, headDim]`);
  }
  return { seqQ, seqK, numHeads, numKvHeads, headDim, causal: args.causal ?? false, slidingWindow, scale, softcap };
}

export function attentionArrays(op: string, args: AttentionArgs): { q: Float32Array; k: Float32Array; v: Float32Array } {
  if (args === null || typeof args !== "object") throw new TypeError(`${op}: expected an arguments object`);
  return {
    q: float32Array(op, "q", args.q),
    k: float32Array(op, "k", args.k),
    v: float32Array(op, "v", args.v),
  };
}
