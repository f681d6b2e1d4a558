// A Hugging Face config.json, read into what the runtime needs: the attention shape of every
// layer (variable GQA included) and the MLP/norm/rope parameters. Llama, Qwen2, Qwen3, SmolLM3,
// Mistral and DeciLM; anything else is a clear error.

import { ARCHITECTURES } from "./architecture.ts";

export class ModelConfigError extends Error {
  override name = "ModelConfigError";
}

export const MODEL_TYPES = ["llama", "qwen2", "qwen3", "smollm3", "mistral", "deci"] as const;
export type ModelType = (typeof MODEL_TYPES)[number];

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** KV heads of each layer (all equal except for DeciLM's variable GQA). */
  kvHeadsPerLayer: number[];
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /**
   * llama3: low frequencies divided by `factor`, blended (Llama 3.1/3.2); linear: every
   * position divided by `factor`; dynamic (NTK, e.g. DeciLM-7B): the plain angles up to
   * max_position_embeddings, which is as far as this runtime goes; factors: frequency i divided
   * by factors[i] (a GGUF file's rope_freqs.weight, llama.cpp's form of llama3 scaling).
   */
  ropeScaling?: { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
    | { type: "linear"; factor: number } | { type: "dynamic"; factor: number } | { type: "factors"; factors: readonly number[] };
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have biases (Qwen2, or Llama's / Qwen3's attention_bias). */
  attentionBias: boolean;
  /** o_proj has a bias (Llama's, Qwen3's and DeciLM's attention_bias). */
  outputBias: boolean;
  /** q and k are RMS-normalised per head before RoPE (Qwen3's q_norm / k_norm). */
  qkNorm: boolean;
  /** Mistral's sliding window (keys older than this many tokens are not seen). */
  slidingWindow?: number;
  /** SmolLM3's NoPE layers: true where a layer's q and k get no rotary embedding (absent: every layer rotates). */
  nopeLayers?: readonly boolean[];
}

/**
 * Upper bounds on config.json sizes, checked before anything proportional to them is allocated:
 * far above every released model (Llama 3.1 405B: 126 layers, hidden 16384, 128 heads; vocab
 * 262k at most; contexts of 1M), far below what would exhaust memory by itself.
 */
export const CONFIG_LIMITS: Record<string, number> = {
  num_hidden_layers: 1024, hidden_size: 1 << 17, intermediate_size: 1 << 20, num_attention_heads: 4096,
  num_key_value_heads: 4096, head_dim: 4096, vocab_size: 1 << 22, max_position_embeddings: 1 << 24, sliding_window: 1 << 24,
};

export function parseModelConfig(json: unknown, source = "config.json"): ModelConfig {
  const fail = (why: string) => new ModelConfigError(`${source}: ${why}`);
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw fail("not a JSON object");
  const c = json as Record<string, unknown>;
  const int = (key: string, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) throw fail(`${key} must be a positive integer, got ${JSON.stringify(c[key])}`);
    const most = CONFIG_LIMITS[key];
    if (most !== undefined && v > most) throw fail(`${key} is ${v}, over the ${most} this runtime accepts`);
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw fail(`${key} must be a positive number, got ${JSON.stringify(c[key])}`);
    return v;
  };
  const modelType = c.model_type;
  if (typeof modelType !== "string" || !(MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw fail(`model_type ${JSON.stringify(modelType)} is not supported (${MODEL_TYPES.join(", ")})`);
  }
  const hiddenSize = int("hidden_size"), numLayers = int("num_hidden_layers"), numHeads = int("num_attention_heads");
  const headDim = c.head_dim === undefined || c.head_dim === null ? hiddenSize / numHeads : int("head_dim");
  if (!Number.isInteger(headDim)) throw fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} (and no head_dim is given)`);
  if (headDim % 2 !== 0) throw fail(`head_dim ${headDim} is odd; rotary embeddings rotate pairs of dimensions`);
  let kvHeadsPerLayer: number[];
  if (modelType === "deci") {
    const per = c.num_key_value_heads_per_layer;
    if (!Array.isArray(per) || per.length !== numLayers || per.some((n) => !Number.isInteger(n) || n <= 0 || n > CONFIG_LIMITS.num_key_value_heads!)) {
      throw fail(`num_key_value_heads_per_layer must list ${numLayers} positive integers, got ${JSON.stringify(per)}`);
    }
    kvHeadsPerLayer = per as number[];
  } else {
    kvHeadsPerLayer = new Array<number>(numLayers).fill(int("num_key_value_heads", numHeads));
  }
  kvHeadsPerLayer.forEach((kv, layer) => {
    if (numHeads % kv !== 0) throw fail(`layer ${layer}: num_attention_heads ${numHeads} is not a multiple of its ${kv} KV heads`);
  });
  let ropeScaling: ModelConfig["ropeScaling"];
  const rs = c.rope_scaling as Record<string, unknown> | null | undefined;
  if (rs !== undefined && rs !== null) {
    const type = rs.rope_type ?? rs.type;
    const f = (k: string) => { const v = rs[k]; if (typeof v !== "number" || !(v > 0)) throw fail(`rope_scaling.${k} must be a positive number`); return v; };
    if (type === "llama3") {
      ropeScaling = { type, factor: f("factor"), lowFreqFactor: f("low_freq_factor"), highFreqFactor: f("high_freq_factor"), originalMaxPositionEmbeddings: f("original_max_position_embeddings") };
    } else if (type === "linear" || type === "dynamic") {
      ropeScaling = { type, factor: f("factor") };
    } else if (type !== "default") {
      throw fail(`rope_scaling type ${JSON.stringify(type)} is not supported (llama3, linear, dynamic)`);
    }
  }
  const act = c.hidden_act ?? "silu";
  if (act !== "silu" && act !== "swish") throw fail(`hidden_act ${JSON.stringify(act)} is not supported (silu: the SwiGLU MLP)`);
  if (c.mlp_bias === true) throw fail("mlp_bias: true is not supported (MLP projections without biases)");
  const perLayerWindow = ({ qwen2: "Qwen2", qwen3: "Qwen3", smollm3: "SmolLM3" } as Record<string, string>)[modelType];
  if (perLayerWindow && c.use_sliding_window === true) throw fail(`use_sliding_window: true (${perLayerWindow}'s per-layer window) is not supported`);
  const slidingWindow = modelType === "mistral" && c.sliding_window !== null && c.sliding_window !== undefined ? int("sliding_window") : undefined;
  // SmolLM3: no_rope_layers (1: the layer rotates, 0: NoPE), else every no_rope_layer_interval-th layer is NoPE.
  let nopeLayers: boolean[] | undefined;
  if (modelType === "smollm3") {
    const list = c.no_rope_layers;
    if (list !== undefined && list !== null) {
      if (!Array.isArray(list) || list.length !== numLayers || list.some((v) => v !== 0 && v !== 1)) throw fail(`no_rope_layers must list ${numLayers} values of 0 or 1, got ${JSON.stringify(list).slice(0, 80)}`);
      nopeLayers = list.map((v) => v === 0);
    } else {
      const interval = int("no_rope_layer_interval", 4);
      nopeLayers = Array.from({ length: numLayers }, (_, i) => (i + 1) % interval === 0);
    }
  }
  return {
    modelType: modelType as ModelType, hiddenSize, intermediateSize: int("intermediate_size"), numLayers, numHeads, kvHeadsPerLayer, headDim,
    vocabSize: int("vocab_size"), rmsNormEps: num("rms_norm_eps", 1e-6), ropeTheta: num("rope_theta", 10000), ropeScaling,
    maxPositionEmbeddings: int("max_position_embeddings", 2048), tieWordEmbeddings: c.tie_word_embeddings === true,
    attentionBias: ARCHITECTURES[modelType as ModelType].attentionBias === true || c.attention_bias === true, slidingWindow,
    outputBias: ARCHITECTURES[modelType as ModelType].outputBias === true && c.attention_bias === true,
    qkNorm: ARCHITECTURES[modelType as ModelType].qkNorm === true, nopeLayers,
  };
}
