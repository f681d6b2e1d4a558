import { positiveInt, rowsOf } from "./validate.ts";

/** Arguments of rt.linear: y[M, outFeatures] = x[M, inFeatures] · weightᵀ (+ bias). */
export interface LinearArgs {
  /** [M, inFeatures] */
  x: Float32Array;
  /** [outFeatures, inFeatures], as PyTorch / Hugging Face store it */
  weight: Float32Array;
  /** [outFeatures] */
  bias?: Float32Array;
  inFeatures: number;
  outFeatures: number;
}

export interface LinearShape { rows: number; inFeatures: number; outFeatures: number }

export function linearShape(
  op: string, inFeatures: unknown, outFeatures: unknown,
  xLength: number, weightLength: number, biasLength: number | undefined,
): LinearShape {
  const K = positiveInt(op, "inFeatures", inFeatures);
  const N = positiveInt(op, "outFeatures", outFeatures);
  const rows = rowsOf(op, "x", xLength, K, "[rows, inFeatures]");
  if (weightLength !== N * K) {
    throw new RangeError(`${op}: weight has ${weightLength} elements; expected [outFeatures, inFeatures] = ${N * K}`);
  }
  if (biasLength !== undefined && biasLength !== N) {
    throw new RangeError(`${op}: bias has ${biasLength} elements; expected [outFeatures] = ${N}`);
  }
  return { rows, inFeatures: K, outFeatures: N };
}
