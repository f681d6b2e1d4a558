// Rotary embedding angles, computed once on the host in float64: inverse frequencies
// theta^(-2i/d) over the d = rotaryDim rotated elements of a head (Hugging Face), optionally
// rescaled (llama3, linear, a GGUF file's per-frequency factors, LongRoPE's short or long
// factors; dynamic NTK changes nothing within max_position_embeddings, past which the runtime
// does not go), and cos/sin tables [positions][d/2] for the rope_f32 kernel, scaled by LongRoPE's
// attention factor.
import type { ModelConfig } from "./config.ts";

type RopeScaling = ModelConfig["ropeScaling"];

/**
 * LongRoPE's factors for a context of `context` positions: the long ones past
 * original_max_position_embeddings, else the short ones (llama.cpp's rule: the context decides,
 * so every position of a sequence rotates alike).
 */
export function longRopeFactors(scaling: Extract<RopeScaling, { type: "longrope" }>, context: number): readonly number[] {
  return context > scaling.originalMaxPositionEmbeddings ? scaling.longFactors : scaling.shortFactors;
}

/** What cos and sin are multiplied by: LongRoPE's attention factor, else 1. */
export function ropeAttentionFactor(scaling: RopeScaling): number {
  return scaling?.type === "longrope" ? scaling.attentionFactor : 1;
}

/** Inverse frequencies of the `rotaryDim / 2` rotated pairs; `context` picks LongRoPE's factors. */
export function ropeInverseFrequencies(rotaryDim: number, theta: number, scaling?: RopeScaling, context = Infinity): Float64Array {
  const half = rotaryDim >> 1;
  const inv = Float64Array.from({ length: half }, (_, i) => 1 / theta ** ((2 * i) / rotaryDim));
  if (!scaling || scaling.type === "dynamic") return inv;
  if (scaling.type === "linear") return inv.map((f) => f / scaling.factor);
  if (scaling.type === "factors") return inv.map((f, i) => f / scaling.factors[i]!);
  if (scaling.type === "longrope") { const factors = longRopeFactors(scaling, context); return inv.map((f, i) => f / factors[i]!); }
  // llama3: keep high frequencies, divide low ones by `factor`, blend smoothly in between.
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: old } = scaling;
  const lowWavelen = old / lowFreqFactor, highWavelen = old / highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / factor;
    const smooth = (old / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

/**
 * llama3 scaling as the per-frequency divisors llama.cpp's converter writes (rope_freqs.weight):
 * each plain inverse frequency over its scaled one.
 */
export function ropeFrequencyFactors(rotaryDim: number, theta: number, scaling: RopeScaling): Float32Array {
  const plain = ropeInverseFrequencies(rotaryDim, theta), scaled = ropeInverseFrequencies(rotaryDim, theta, scaling);
  return Float32Array.from(plain, (f, i) => f / scaled[i]!);
}

/** cos and sin of every position's angles, times `scale` (LongRoPE's attention factor). */
export function ropeTable(positions: number, inverseFrequencies: Float64Array, scale = 1): { cos: Float32Array; sin: Float32Array } {
  const half = inverseFrequencies.length;
  const cos = new Float32Array(positions * half), sin = new Float32Array(positions * half);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * inverseFrequencies[i]!;
      cos[p * half + i] = Math.cos(angle) * scale;
      sin[p * half + i] = Math.sin(angle) * scale;
    }
  }
  return { cos, sin };
}
