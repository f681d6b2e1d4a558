// A Hugging Face config.json, read into what the runtime needs: the attention shape of every
// layer (variable GQA included) and the MLP/norm/rope parameters. Llama, Qwen2, Qwen3, SmolLM3,
// Mistral, DeciLM, Gemma 2, Gemma 3's text models, Granite and Phi-3 / Phi-4-mini; anything else
// is a clear error.

import { ARCHITECTURES } from "./architecture.ts";

export class ModelConfigError extends Error {
  override name = "ModelConfigError";
}

export const MODEL_TYPES = ["llama", "qwen2", "qwen3", "smollm3", "mistral", "deci", "gemma2", "gemma3_text", "granite", "phi3"] as const;
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
  /** The elements of each head RoPE rotates, the first ones (partial_rotary_factor: Phi-4-mini's 3/4); headDim otherwise. */
  rotaryDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /**
   * llama3: low frequencies divided by `factor`, blended (Llama 3.1/3.2); linear: every
   * position divided by `factor`; dynamic (NTK, e.g. DeciLM-7B): the plain angles up to
   * max_position_embeddings, which is as far as this runtime goes; factors: frequency i divided
   * by factors[i] (a GGUF file's rope_freqs.weight, llama.cpp's form of llama3 scaling);
   * longrope (Phi-3.5, Phi-4-mini): frequency i divided by shortFactors[i], or by longFactors[i]
   * when the context is longer than originalMaxPositionEmbeddings, cos and sin times
   * attentionFactor; maxPositionEmbeddings is the longest context it allows.
   */
  ropeScaling?: { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
    | { type: "linear"; factor: number } | { type: "dynamic"; factor: number } | { type: "factors"; factors: readonly number[] }
    | { type: "longrope"; shortFactors: readonly number[]; longFactors: readonly number[]; originalMaxPositionEmbeddings: number; maxPositionEmbeddings: number; attentionFactor: number };
  /**
   * The context the model runs with (positions): max_position_embeddings, or by default for
   * LongRoPE its original_max_position_embeddings, where the short factors hold (withContextLength).
   */
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have biases (Qwen2, or Llama's / Qwen3's attention_bias). */
  attentionBias: boolean;
  /** o_proj has a bias (Llama's, Qwen3's and DeciLM's attention_bias). */
  outputBias: boolean;
  /** q and k are RMS-normalised per head before RoPE (Qwen3's q_norm / k_norm). */
  qkNorm: boolean;
  /** The sliding window (keys this many tokens old or older are not seen): Mistral's in every layer, Gemma's in slidingLayers. */
  slidingWindow?: number;
  /** The layers that have the sliding window (absent: every layer); Gemma's local layers. */
  slidingLayers?: readonly boolean[];
  /** RoPE theta of the sliding layers, without scaling (Gemma 3's rope_local_base_freq); absent: ropeTheta and ropeScaling as in every layer. */
  localRopeTheta?: number;
  /** The gated MLP's activation: silu (SwiGLU) or the tanh approximation of GELU (Gemma's GeGLU). */
  activation: "silu" | "gelu_tanh";
  /** The attention scores' scale (Gemma's query_pre_attn_scalar^-1/2); absent: 1/sqrt(head_dim). */
  attentionScale?: number;
  /** Embeddings multiplied by this before the first layer (Gemma: sqrt(hidden_size)). */
  embeddingScale?: number;
  /** Gemma's norms of the attention and MLP outputs, before each residual add. */
  outputNorms: boolean;
  /** Gemma 2: attention scores capped at ±attentionSoftcap (softcap · tanh(s / softcap)); absent: not capped. */
  attentionSoftcap?: number;
  /** Gemma 2: logits capped at ±finalSoftcap likewise; absent: not capped. */
  finalSoftcap?: number;
  /** Granite's residual_multiplier: the attention and MLP outputs scaled by it before their residual adds. */
  residualScale?: number;
  /** Granite: logits multiplied by this (1 / logits_scaling). */
  logitScale?: number;
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
  sliding_window_pattern: 1024, _sliding_window_pattern: 1024,
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
  if (modelType === "gemma3") throw fail(`model_type "gemma3" (Gemma 3 with vision, 4B and up) is not supported; Gemma 3's text-only models (gemma3_text: 270M, 1B) are`);
  if (typeof modelType !== "string" || !(MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw fail(`model_type ${JSON.stringify(modelType)} is not supported (${MODEL_TYPES.join(", ")})`);
  }
  const hiddenSize = int("hidden_size"), numLayers = int("num_hidden_layers"), numHeads = int("num_attention_heads");
  const headDim = c.head_dim === undefined || c.head_dim === null ? hiddenSize / numHeads : int("head_dim");
  if (!Number.isInteger(headDim)) throw fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} (and no head_dim is given)`);
  // partial_rotary_factor: RoPE on the first int(head_dim · factor) elements of each head (Hugging Face's rope init reads it for every model).
  const partial = c.partial_rotary_factor;
  if (partial !== undefined && partial !== null && (typeof partial !== "number" || !(partial > 0 && partial <= 1))) throw fail(`partial_rotary_factor must be a number in (0, 1], got ${JSON.stringify(partial)}`);
  // (Rounded as int() does, but not down from a hair below an integer: 96 · (64 / 96) is 64.)
  const rotaryDim = typeof partial === "number" ? Math.floor(headDim * partial + 1e-9) : headDim;
  if (rotaryDim % 2 !== 0 || rotaryDim === 0) throw fail(`RoPE would rotate ${rotaryDim} elements of each head (head_dim ${headDim}${typeof partial === "number" ? ` x partial_rotary_factor ${partial}` : ""}); rotary embeddings rotate pairs`);
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
  const maxPositionEmbeddings = int("max_position_embeddings", 2048);
  let ropeScaling: ModelConfig["ropeScaling"];
  const rs = c.rope_scaling as Record<string, unknown> | null | undefined;
  if (rs !== undefined && rs !== null) {
    const type = rs.rope_type ?? rs.type;
    const f = (k: string) => { const v = rs[k]; if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) throw fail(`rope_scaling.${k} must be a positive number`); return v; };
    if (type === "llama3") {
      ropeScaling = { type, factor: f("factor"), lowFreqFactor: f("low_freq_factor"), highFreqFactor: f("high_freq_factor"), originalMaxPositionEmbeddings: f("original_max_position_embeddings") };
    } else if (type === "linear" || type === "dynamic") {
      ropeScaling = { type, factor: f("factor") };
    } else if (type === "longrope" || type === "su") {
      ropeScaling = longRope(rs, c.original_max_position_embeddings, maxPositionEmbeddings, rotaryDim, fail);
    } else if (type !== "default") {
      throw fail(`rope_scaling type ${JSON.stringify(type)} is not supported (llama3, linear, dynamic, longrope)`);
    }
  }
  const gemma = modelType === "gemma3_text" || modelType === "gemma2", gemma3 = modelType === "gemma3_text";
  const actKey = gemma ? "hidden_activation" : "hidden_act";
  const act = c[actKey] ?? (gemma ? "gelu_pytorch_tanh" : "silu");
  const activation = act === "silu" || act === "swish" ? "silu" : act === "gelu_pytorch_tanh" ? "gelu_tanh" : undefined;
  if (!activation) throw fail(`${actKey} ${JSON.stringify(act)} is not supported (silu: SwiGLU, gelu_pytorch_tanh: GeGLU)`);
  if (c.mlp_bias === true) throw fail("mlp_bias: true is not supported (MLP projections without biases)");
  const perLayerWindow = ({ qwen2: "Qwen2", qwen3: "Qwen3", smollm3: "SmolLM3" } as Record<string, string>)[modelType];
  if (perLayerWindow && c.use_sliding_window === true) throw fail(`use_sliding_window: true (${perLayerWindow}'s per-layer window) is not supported`);
  let slidingWindow = (modelType === "mistral" || modelType === "phi3") && c.sliding_window !== null && c.sliding_window !== undefined ? int("sliding_window") : undefined;
  // Phi-3.5 / Phi-4-mini give a window (262144) past their context: none, in effect.
  if (modelType === "phi3" && slidingWindow !== undefined && slidingWindow >= maxPositionEmbeddings) slidingWindow = undefined;
  let slidingLayers: boolean[] | undefined;
  let attentionSoftcap: number | undefined, finalSoftcap: number | undefined;
  if (gemma) {
    // Gemma 2 / 3: sliding-window (local) layers and full (global) ones, by layer_types or
    // (Gemma 3) every sliding_window_pattern-th layer global, (Gemma 2) every other one; the
    // soft-capping of scores and logits (Gemma 2's defaults 50 and 30; null: none).
    const cap = (key: string, gemma2Default: number) => (c[key] === null || (c[key] === undefined && gemma3) ? undefined : num(key, gemma2Default));
    attentionSoftcap = cap("attn_logit_softcapping", 50);
    finalSoftcap = cap("final_logit_softcapping", 30);
    if (c.use_bidirectional_attention === true) throw fail("use_bidirectional_attention: true (an embedding model) is not supported");
    if (c.rope_parameters !== undefined) throw fail("rope_parameters is not supported (rope_theta, rope_local_base_freq and rope_scaling are)");
    const types = c.layer_types;
    if (types !== undefined && types !== null) {
      if (!Array.isArray(types) || types.length !== numLayers || types.some((t) => t !== "sliding_attention" && t !== "full_attention")) throw fail(`layer_types must list ${numLayers} of "sliding_attention" or "full_attention", got ${JSON.stringify(types).slice(0, 80)}`);
      slidingLayers = types.map((t) => t === "sliding_attention");
    } else {
      const pattern = gemma3 ? int(c.sliding_window_pattern !== undefined ? "sliding_window_pattern" : "_sliding_window_pattern", 6) : 2;
      slidingLayers = Array.from({ length: numLayers }, (_, i) => (i + 1) % pattern !== 0);
    }
    slidingWindow = int("sliding_window", 4096);
  }
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
  const arch = ARCHITECTURES[modelType as ModelType];
  return {
    modelType: modelType as ModelType, hiddenSize, intermediateSize: int("intermediate_size"), numLayers, numHeads, kvHeadsPerLayer, headDim, rotaryDim,
    vocabSize: int("vocab_size"), rmsNormEps: num("rms_norm_eps", 1e-6), ropeTheta: num("rope_theta", gemma3 ? 1e6 : 10000), ropeScaling,
    maxPositionEmbeddings: ropeScaling?.type === "longrope" ? Math.min(maxPositionEmbeddings, ropeScaling.originalMaxPositionEmbeddings) : maxPositionEmbeddings,
    // Gemma's configs leave out tie_word_embeddings: its default there is true.
    tieWordEmbeddings: (c.tie_word_embeddings ?? gemma) === true,
    attentionBias: arch.attentionBias === true || c.attention_bias === true, slidingWindow, slidingLayers,
    outputBias: arch.outputBias === true && c.attention_bias === true,
    qkNorm: arch.qkNorm === true, nopeLayers, activation, outputNorms: arch.outputNorms === true,
    ...(gemma ? { attentionScale: 1 / Math.sqrt(num("query_pre_attn_scalar", 256)), embeddingScale: Math.sqrt(hiddenSize), attentionSoftcap, finalSoftcap } : {}),
    ...(gemma3 ? { localRopeTheta: num("rope_local_base_freq", 10000) } : {}),
    // Granite's multipliers (Hugging Face's GraniteConfig defaults: 1).
    ...(modelType === "granite" ? { embeddingScale: num("embedding_multiplier", 1), residualScale: num("residual_multiplier", 1), attentionScale: num("attention_multiplier", 1), logitScale: 1 / num("logits_scaling", 1) } : {}),
  };
}

/**
 * LongRoPE (Phi-3.5, Phi-4-mini; "su" its old name) as Hugging Face's rope init reads it: a short
 * and a long factor per rotated pair, original_max_position_embeddings (at the top level, or in
 * rope_scaling), and the attention factor (rope_scaling.attention_factor, else
 * sqrt(1 + ln(s) / ln(original)) for s = max_position_embeddings / original, 1 when s <= 1).
 */
function longRope(rs: Record<string, unknown>, topOriginal: unknown, maxPositions: number, rotaryDim: number, fail: (why: string) => Error): Extract<ModelConfig["ropeScaling"], { type: "longrope" }> {
  const factors = (key: string) => {
    const v = rs[key];
    if (!Array.isArray(v) || v.length !== rotaryDim / 2 || v.some((x) => typeof x !== "number" || !Number.isFinite(x) || x <= 0)) {
      throw fail(`rope_scaling.${key} must list ${rotaryDim / 2} positive numbers (one per rotated pair), got ${JSON.stringify(v)?.slice(0, 80)}`);
    }
    return v as number[];
  };
  const original = topOriginal ?? rs.original_max_position_embeddings ?? maxPositions;
  if (typeof original !== "number" || !Number.isInteger(original) || original <= 0 || original > maxPositions) {
    throw fail(`original_max_position_embeddings must be a positive integer up to max_position_embeddings ${maxPositions}, got ${JSON.stringify(original)}`);
  }
  const given = rs.factor;
  if (given !== undefined && given !== null && (typeof given !== "number" || !(given > 0) || !Number.isFinite(given))) throw fail("rope_scaling.factor must be a positive number");
  const scale = topOriginal === undefined && typeof given === "number" ? given : maxPositions / original;
  const attention = rs.attention_factor;
  if (attention !== undefined && attention !== null && (typeof attention !== "number" || !(attention > 0) || !Number.isFinite(attention))) throw fail("rope_scaling.attention_factor must be a positive number");
  const attentionFactor = typeof attention === "number" ? attention : scale <= 1 ? 1 : Math.sqrt(1 + Math.log(scale) / Math.log(original));
  // (An original context of 1 under a larger one: ln(1) = 0, no factor at all.)
  if (!Number.isFinite(attentionFactor)) throw fail(`original_max_position_embeddings ${original} under max_position_embeddings ${maxPositions} gives LongRoPE no finite attention factor`);
  return { type: "longrope", shortFactors: factors("short_factor"), longFactors: factors("long_factor"), originalMaxPositionEmbeddings: original, maxPositionEmbeddings: maxPositions, attentionFactor };
}

/**
 * The config run with a context of `length` positions (undefined: as parsed). LongRoPE models
 * may go up to max_position_embeddings, past original_max_position_embeddings (their long
 * factors); other models up to what they were given.
 */
export function withContextLength(config: ModelConfig, length: number | undefined): ModelConfig {
  if (length === undefined) return config;
  const most = config.ropeScaling?.type === "longrope" ? config.ropeScaling.maxPositionEmbeddings : config.maxPositionEmbeddings;
  if (!Number.isInteger(length) || length < 1 || length > most) throw new RangeError(`contextLength must be an integer from 1 to ${most} (the model's max_position_embeddings), got ${length}`);
  return { ...config, maxPositionEmbeddings: length };
}
