// Rotary embedding angles, computed once on the host in float64: inverse frequencies
// theta^(-2i/d) (Hugging Face), optionally rescaled (llama3, linear, a GGUF file's per-frequency
// factors; dynamic NTK changes nothing within max_position_embeddings, past which the runtime
// does not go), and cos/sin tables [positions][headDim/2] for the rope_f32 kernel.
import type { ModelConfig } from "./config.ts";

export function ropeInverseFrequencies(headDim: number, theta: number, scaling?: ModelConfig["ropeScaling"]): Float64Array {
  const half = headDim >> 1;
  const inv = Float64Array.from({ length: half }, (_, i) => 1 / theta ** ((2 * i) / headDim));
  if (!scaling || scaling.type === "dynamic") return inv;
  if (scaling.type === "linear") return inv.map((f) => f / scaling.factor);
  if (scaling.type === "factors") return inv.map((f, i) => f / scaling.factors[i]!);
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
export function ropeFrequencyFactors(headDim: number, theta: number, scaling: ModelConfig["ropeScaling"]): Float32Array {
  const plain = ropeInverseFrequencies(headDim, theta), scaled = ropeInverseFrequencies(headDim, theta, scaling);
  return Float32Array.from(plain, (f, i) => f / scaled[i]!);
}

export function ropeTable(positions: number, inverseFrequencies: Float64Array): { cos: Float32Array; sin: Float32Array } {
  const half = inverseFrequencies.length;
  const cos = new Float32Array(positions * half), sin = new Float32Array(positions * half);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * inverseFrequencies[i]!;
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
