// The tensors of the model families this runtime runs, in one place: what each tensor is for
// (its role), its Hugging Face and GGUF names, its shape, and per architecture what differs
// (biases, how GGUF files store it). Inspect, load (safetensors and GGUF), the GGUF writer, the
// forward pass, synthetic models, the demo and the bench all take tensor names from here: a new
// architecture of this family is a new entry of ARCHITECTURES (and its test reference).
import type { ModelConfig, ModelType } from "./config.ts";

/** What a tensor is for in the forward pass. */
export type GlobalRole = "embedding" | "finalNorm" | "lmHead";
export type LayerRole = "inputNorm" | "ffnNorm" | "q" | "k" | "v" | "qkv" | "o" | "qBias" | "kBias" | "vBias" | "oBias" | "qNorm" | "kNorm" | "attnOutNorm" | "ffnOutNorm" | "gate" | "up" | "gateUp" | "down";
/** norm and bias tensors stay f32; linear ones (and the embedding) take the weight dtype. */
export type TensorKind = "embedding" | "norm" | "linear" | "bias";

export interface TensorSpec {
  /** Hugging Face name */
  name: string;
  gguf: string;
  shape: number[];
  kind: TensorKind;
  role: GlobalRole | LayerRole;
  layer?: number;
  /** For linear weights: the length of a row (the input features). */
  inFeatures?: number;
}

/**
 * Tensors some configs lack: `bias` only with q/k/v biases, `outputBias` only with an o_proj bias,
 * `qkNorm` only in architectures that normalise q and k per head, `outputNorms` only in those
 * that normalise the attention and MLP outputs (Gemma); `split` (q, k, v, gate, up) only where
 * checkpoints store them apart, `fused` (qkv, gateUp) only where they store them together (Phi-3).
 */
interface RoleSpec<R> { role: R; hf: string; gguf: string; kind: TensorKind; shape: (c: ModelConfig, kvHeads: number) => number[]; bias?: boolean; outputBias?: boolean; qkNorm?: boolean; outputNorms?: boolean; split?: boolean; fused?: boolean }

const GLOBAL: RoleSpec<GlobalRole>[] = [
  { role: "embedding", hf: "model.embed_tokens.weight", gguf: "token_embd.weight", kind: "embedding", shape: (c) => [c.vocabSize, c.hiddenSize] },
  { role: "finalNorm", hf: "model.norm.weight", gguf: "output_norm.weight", kind: "norm", shape: (c) => [c.hiddenSize] },
  { role: "lmHead", hf: "lm_head.weight", gguf: "output.weight", kind: "linear", shape: (c) => [c.vocabSize, c.hiddenSize] },
];

/** Per layer, Hugging Face `model.layers.{i}.{hf}`, GGUF `blk.{i}.{gguf}`. */
const LAYER: RoleSpec<LayerRole>[] = [
  { role: "inputNorm", hf: "input_layernorm.weight", gguf: "attn_norm.weight", kind: "norm", shape: (c) => [c.hiddenSize] },
  // The norm before the MLP (Gemma's pre_feedforward_layernorm: Architecture.hfNames).
  { role: "ffnNorm", hf: "post_attention_layernorm.weight", gguf: "ffn_norm.weight", kind: "norm", shape: (c) => [c.hiddenSize] },
  { role: "q", hf: "self_attn.q_proj.weight", gguf: "attn_q.weight", kind: "linear", shape: (c) => [c.numHeads * c.headDim, c.hiddenSize], split: true },
  { role: "k", hf: "self_attn.k_proj.weight", gguf: "attn_k.weight", kind: "linear", shape: (c, kv) => [kv * c.headDim, c.hiddenSize], split: true },
  { role: "v", hf: "self_attn.v_proj.weight", gguf: "attn_v.weight", kind: "linear", shape: (c, kv) => [kv * c.headDim, c.hiddenSize], split: true },
  // q, k and v rows one after the other in one matrix (Phi-3's qkv_proj).
  { role: "qkv", hf: "self_attn.qkv_proj.weight", gguf: "attn_qkv.weight", kind: "linear", shape: (c, kv) => [(c.numHeads + 2 * kv) * c.headDim, c.hiddenSize], fused: true },
  { role: "o", hf: "self_attn.o_proj.weight", gguf: "attn_output.weight", kind: "linear", shape: (c) => [c.hiddenSize, c.numHeads * c.headDim] },
  { role: "qBias", hf: "self_attn.q_proj.bias", gguf: "attn_q.bias", kind: "bias", shape: (c) => [c.numHeads * c.headDim], bias: true },
  { role: "kBias", hf: "self_attn.k_proj.bias", gguf: "attn_k.bias", kind: "bias", shape: (c, kv) => [kv * c.headDim], bias: true },
  { role: "vBias", hf: "self_attn.v_proj.bias", gguf: "attn_v.bias", kind: "bias", shape: (c, kv) => [kv * c.headDim], bias: true },
  { role: "oBias", hf: "self_attn.o_proj.bias", gguf: "attn_output.bias", kind: "bias", shape: (c) => [c.hiddenSize], outputBias: true },
  { role: "qNorm", hf: "self_attn.q_norm.weight", gguf: "attn_q_norm.weight", kind: "norm", shape: (c) => [c.headDim], qkNorm: true },
  { role: "kNorm", hf: "self_attn.k_norm.weight", gguf: "attn_k_norm.weight", kind: "norm", shape: (c) => [c.headDim], qkNorm: true },
  { role: "attnOutNorm", hf: "post_attention_layernorm.weight", gguf: "post_attention_norm.weight", kind: "norm", shape: (c) => [c.hiddenSize], outputNorms: true },
  { role: "ffnOutNorm", hf: "post_feedforward_layernorm.weight", gguf: "post_ffw_norm.weight", kind: "norm", shape: (c) => [c.hiddenSize], outputNorms: true },
  { role: "gate", hf: "mlp.gate_proj.weight", gguf: "ffn_gate.weight", kind: "linear", shape: (c) => [c.intermediateSize, c.hiddenSize], split: true },
  { role: "up", hf: "mlp.up_proj.weight", gguf: "ffn_up.weight", kind: "linear", shape: (c) => [c.intermediateSize, c.hiddenSize], split: true },
  // gate's rows then up's (Phi-3's gate_up_proj; llama.cpp's phi3 keeps both in its ffn_up).
  { role: "gateUp", hf: "mlp.gate_up_proj.weight", gguf: "ffn_up.weight", kind: "linear", shape: (c) => [2 * c.intermediateSize, c.hiddenSize], fused: true },
  { role: "down", hf: "mlp.down_proj.weight", gguf: "ffn_down.weight", kind: "linear", shape: (c) => [c.hiddenSize, c.intermediateSize] },
];

export interface Architecture {
  /** q/k/v biases whatever config.json says (Qwen2 always has them). */
  attentionBias?: boolean;
  /** attention_bias: true gives o_proj a bias too (Llama's and Qwen3's attention; Qwen2's o_proj never has one). */
  outputBias?: boolean;
  /** Each head's q and k RMS-normalised (a weight of head_dim each) before RoPE (Qwen3). */
  qkNorm?: boolean;
  /** The attention and MLP outputs RMS-normalised before their residual adds (Gemma's post_attention / post_feedforward norms). */
  outputNorms?: boolean;
  /**
   * Each RMSNorm multiplies by 1 + w, the checkpoint storing w (Gemma). The runtime keeps 1 + w,
   * as llama.cpp's converter writes GGUF files: 1 is added when a Hugging Face checkpoint is read.
   */
  normWeightOffset?: number;
  /** q/k/v stored as one matrix, and gate/up as one (Phi-3): the roles qkv and gateUp instead of q, k, v, gate, up. */
  fusedProjections?: boolean;
  /** Hugging Face names that differ from Llama's, by role. */
  hfNames?: Partial<Record<LayerRole, string>>;
  /** The llama.cpp architecture a GGUF file of it is written as; undefined: none (no GGUF export). */
  ggufArchitecture?: "llama" | "qwen2" | "qwen3" | "smollm3" | "gemma2" | "gemma3" | "granite" | "phi3";
}

/** Every model type: Llama's layout, with what differs. */
export const ARCHITECTURES: Record<ModelType, Architecture> = {
  llama: { outputBias: true, ggufArchitecture: "llama" },
  qwen2: { attentionBias: true, ggufArchitecture: "qwen2" },
  // Qwen3 (dense): Qwen2 without the biases (unless attention_bias), with q/k norms.
  qwen3: { outputBias: true, qkNorm: true, ggufArchitecture: "qwen3" },
  // SmolLM3: Llama with NoPE layers (ModelConfig.nopeLayers); llama.cpp's smollm3 has every 4th.
  smollm3: { outputBias: true, ggufArchitecture: "smollm3" },
  // llama.cpp runs Mistral checkpoints as its llama architecture (it has no sliding window there).
  mistral: { ggufArchitecture: "llama" },
  // Llama's attention with per-layer KV heads: no llama.cpp architecture holds them.
  deci: { outputBias: true },
  // Gemma 3's text models (270M, 1B): q/k norms, norms of the attention and MLP outputs, norm
  // weights stored as w - 1, GeGLU, scaled embeddings, sliding-window layers (ModelConfig).
  gemma3_text: { outputBias: true, qkNorm: true, outputNorms: true, normWeightOffset: 1, hfNames: { ffnNorm: "pre_feedforward_layernorm.weight" }, ggufArchitecture: "gemma3" },
  // Gemma 2: Gemma 3's layout without q/k norms, every other layer sliding, soft-capped scores and logits (ModelConfig).
  gemma2: { outputBias: true, outputNorms: true, normWeightOffset: 1, hfNames: { ffnNorm: "pre_feedforward_layernorm.weight" }, ggufArchitecture: "gemma2" },
  // Granite 3.x (IBM): Llama's layout with four multipliers (embeddings, residual adds, attention scale, logits: ModelConfig).
  granite: { outputBias: true, ggufArchitecture: "granite" },
  // Phi-3 / Phi-3.5-mini / Phi-4-mini: Llama's layer with q/k/v and gate/up each stored as one
  // matrix; partial rotary and LongRoPE (ModelConfig).
  phi3: { fusedProjections: true, ggufArchitecture: "phi3" },
};

/** Whether a layer role is one a model type's checkpoints hold at all (whatever its config's options). */
function typeHasRole(r: RoleSpec<LayerRole>, modelType: ModelType): boolean {
  const a = ARCHITECTURES[modelType];
  return !(r.outputNorms && !a.outputNorms) && !(r.split && a.fusedProjections) && !(r.fused && !a.fusedProjections);
}

/** A layer role's Hugging Face name (after `model.layers.{i}.`) in a model type. */
function hfName(r: RoleSpec<LayerRole>, modelType: ModelType): string {
  return ARCHITECTURES[modelType].hfNames?.[r.role] ?? r.hf;
}

/**
 * llama.cpp's converter permutes the rows of q and k (weights and biases) of models it writes as
 * its llama architecture (and smollm3 and granite, llama models there), for its RoPE layout;
 * qwen2 / qwen3 / gemma files keep Hugging Face's order.
 */
export function ggufPermutesQK(ggufArchitecture: string): boolean {
  return ggufArchitecture === "llama" || ggufArchitecture === "mistral" || ggufArchitecture === "smollm3" || ggufArchitecture === "granite";
}

/** The tensors a config needs, in order: the embedding, each layer's, the final norm, the LM head unless tied. */
export function modelTensors(cfg: ModelConfig): TensorSpec[] {
  const out: TensorSpec[] = [];
  const global = (r: RoleSpec<GlobalRole>) => {
    const shape = r.shape(cfg, 0);
    out.push({ name: r.hf, gguf: r.gguf, shape, kind: r.kind, role: r.role, inFeatures: r.kind === "norm" ? undefined : shape[1] });
  };
  global(GLOBAL[0]!);
  cfg.kvHeadsPerLayer.forEach((kv, i) => {
    for (const r of LAYER) {
      if ((r.bias && !cfg.attentionBias) || (r.outputBias && !cfg.outputBias) || (r.qkNorm && !cfg.qkNorm) || (r.outputNorms && !cfg.outputNorms) || !typeHasRole(r, cfg.modelType)) continue;
      const shape = r.shape(cfg, kv);
      out.push({ name: layerTensorName(i, r.role, cfg.modelType), gguf: `blk.${i}.${r.gguf}`, shape, kind: r.kind, role: r.role, layer: i, inFeatures: r.kind === "linear" ? shape[1] : undefined });
    }
  });
  global(GLOBAL[1]!);
  if (!cfg.tieWordEmbeddings) global(GLOBAL[2]!);
  return out;
}

/** Tensor names and shapes a config needs (Hugging Face naming). */
export function expectedTensors(cfg: ModelConfig): Map<string, number[]> {
  return new Map(modelTensors(cfg).map((t) => [t.name, t.shape]));
}

/**
 * The first of `names` (Hugging Face's, or with `gguf` GGUF's) that is a layer's tensor the config
 * does not use: an o_proj bias without attention_bias, q/k norms in a model_type without them, a
 * quantized checkpoint's extra parts. Ignored, such a tensor would leave the forward silently
 * wrong. (Old checkpoints' rotary_emb.inv_freq buffers are Hugging Face's own to ignore.)
 */
export function unusedLayerTensor(cfg: ModelConfig, names: Iterable<string>, gguf = false): string | undefined {
  const used = new Set(modelTensors(cfg).map((t) => (gguf ? t.gguf : t.name)));
  const layer = gguf ? /^blk\.\d+\./ : /^model\.layers\.\d+\./;
  for (const n of names) if (layer.test(n) && !used.has(n) && !n.endsWith(".rotary_emb.inv_freq")) return n;
  return undefined;
}

/** The fewest tensors a model of this many layers has (no biases, tied embeddings): checked before a tensor list proportional to the layer count is built. */
export function minTensorCount(cfg: ModelConfig): number {
  return cfg.numLayers * LAYER.filter((r) => !r.bias && !r.outputBias && !r.qkNorm && !r.outputNorms && typeHasRole(r, cfg.modelType)).length + 2;
}

/** The Hugging Face name of a global tensor. */
export function globalTensorName(role: GlobalRole): string {
  return GLOBAL.find((r) => r.role === role)!.hf;
}

/** The Hugging Face name of layer `layer`'s tensor for `role` (in a model type whose names differ from Llama's: Gemma's norms). */
export function layerTensorName(layer: number, role: LayerRole, modelType: ModelType = "llama"): string {
  return `model.layers.${layer}.${hfName(LAYER.find((r) => r.role === role)!, modelType)}`;
}

/** Each model type's layer roles by Hugging Face name (the output norms only where the type has them: Gemma's post_attention_layernorm is not Llama's). */
const LAYER_BY_HF = Object.fromEntries((Object.keys(ARCHITECTURES) as ModelType[]).map((type) =>
  [type, new Map(LAYER.filter((r) => typeHasRole(r, type)).map((r) => [hfName(r, type), r]))])) as Record<ModelType, Map<string, RoleSpec<LayerRole>>>;
const GLOBAL_BY_HF = new Map(GLOBAL.map((r) => [r.hf, r]));

/** The role (and layer) of a Hugging Face tensor name in a model type; undefined for a name of no role. */
export function tensorRole(name: string, modelType: ModelType): { role: GlobalRole | LayerRole; layer?: number } | undefined {
  const g = GLOBAL_BY_HF.get(name);
  if (g) return { role: g.role };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  const r = m ? LAYER_BY_HF[modelType].get(m[2]!) : undefined;
  return r ? { role: r.role, layer: Number(m![1]) } : undefined;
}

/** The GGUF name of a Hugging Face tensor name in a model type (names of no role are kept). */
export function ggufTensorName(name: string, modelType: ModelType): string {
  const g = GLOBAL_BY_HF.get(name);
  if (g) return g.gguf;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  const r = m ? LAYER_BY_HF[modelType].get(m[2]!) : undefined;
  return r ? `blk.${m![1]}.${r.gguf}` : name;
}

/** The heads of a q or k projection (weight or bias), whose rows llama.cpp's converter permutes; else undefined. */
export function qkPermutedHeads(name: string, config: ModelConfig): number | undefined {
  const r = tensorRole(name, config.modelType);
  if (!r || r.layer === undefined) return undefined;
  if (r.role === "q" || r.role === "qBias") return config.numHeads;
  if (r.role === "k" || r.role === "kBias") return config.kvHeadsPerLayer[r.layer];
  return undefined;
}
