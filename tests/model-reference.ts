// The float64 reference decoder, written plainly from the Hugging Face modeling code (not from
// ours). No host built-ins: the conformance suite runs it in every host too.
import { referenceAttention } from "../src/reference.ts";
import type { ModelConfig } from "../src/model/config.ts";
import type { TransformerModel } from "../src/model/transformer.ts";

export type Weights = Map<string, Float32Array>;

/**
 * RoPE inverse frequencies as Hugging Face's rope init functions compute them (default, linear,
 * dynamic within the context, llama3, longrope) over the rotated elements (partial_rotary_factor),
 * and llama.cpp's per-frequency factors; with `local`, Gemma 3's sliding layers' (rope_local_base_freq,
 * default rope type). LongRoPE's long factors where the context passes original_max_position_embeddings
 * (Hugging Face decides by the sequence's length, llama.cpp by the context's; they agree on sequences
 * within the original context when the context is that long).
 */
function referenceInverseFrequencies(cfg: ModelConfig, local = false): number[] {
  const D = cfg.rotaryDim, s = local ? undefined : cfg.ropeScaling, theta = local ? cfg.localRopeTheta! : cfg.ropeTheta;
  const inv = Array.from({ length: D / 2 }, (_, i) => 1 / theta ** ((2 * i) / D));
  if (!s || s.type === "dynamic") return inv;
  if (s.type === "linear") return inv.map((f) => f / s.factor);
  // llama.cpp's rope_freqs.weight: ggml's rope divides each frequency's angle by its factor.
  if (s.type === "factors") return inv.map((f, i) => f / s.factors[i]!);
  // longrope: inv_freq = 1 / (ext_factors · base^(2i/dim)).
  if (s.type === "longrope") {
    const ext = cfg.maxPositionEmbeddings > s.originalMaxPositionEmbeddings ? s.longFactors : s.shortFactors;
    return Array.from({ length: D / 2 }, (_, i) => 1 / (ext[i]! * theta ** ((2 * i) / D)));
  }
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    const low = s.originalMaxPositionEmbeddings / s.lowFreqFactor, high = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    if (wavelen < high) return f;
    if (wavelen > low) return f / s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * f / s.factor + smooth * f;
  });
}

/**
 * The decoder in plain float64, written from the Hugging Face modeling code, not from ours:
 * LlamaForCausalLM and its kin, and Gemma2ForCausalLM / Gemma3ForCausalLM (norms of 1 + w, scaled
 * embeddings, norms after attention and the MLP, GeGLU, sliding layers (Gemma 3's with their own
 * theta), Gemma 2's soft-capped scores and logits), and GraniteForCausalLM (Llama with four
 * multipliers: embeddings, residual adds, attention scale, logits), and Phi3ForCausalLM (q/k/v rows
 * of one qkv_proj, gate and up halves of one gate_up_proj, RoPE on the first rotary_dim elements of
 * each head, LongRoPE's cos and sin times its attention factor).
 */
export function referenceForward(cfg: ModelConfig, w: Weights, tokens: number[]): number[][] {
  const { hiddenSize: hd, numHeads: H, headDim: D, intermediateSize: ff, vocabSize: V, rmsNormEps: eps } = cfg;
  const gemma = cfg.modelType === "gemma3_text" || cfg.modelType === "gemma2";
  const get = (name: string) => w.get(name)!;
  // Gemma3RMSNorm: x / sqrt(mean(x²) + eps) · (1 + w).
  const rms = (x: number[], g: Float32Array) => { const ms = x.reduce((s, v) => s + v * v, 0) / x.length; return x.map((v, i) => (v / Math.sqrt(ms + eps)) * (gemma ? 1 + g[i]! : g[i]!)); };
  const matvec = (x: number[], W: Float32Array, out: number, b?: Float32Array) =>
    Array.from({ length: out }, (_, o) => x.reduce((s, v, i) => s + v * W[o * x.length + i]!, b ? b[o]! : 0));
  // gelu_pytorch_tanh, as torch writes it.
  const act = gemma ? (g: number) => 0.5 * g * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (g + 0.044715 * g ** 3))) : (g: number) => g / (1 + Math.exp(-g));
  const globalInv = referenceInverseFrequencies(cfg), localInv = cfg.localRopeTheta === undefined ? globalInv : referenceInverseFrequencies(cfg, true);
  let inv = globalInv;
  // Phi3: q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]; cos, sin times attention_scaling.
  const R = cfg.rotaryDim, mscale = cfg.ropeScaling?.type === "longrope" ? cfg.ropeScaling.attentionFactor : 1;
  const ropeAt = (vec: number[], heads: number, pos: number) => {
    const out = vec.slice();
    for (let h = 0; h < heads; h++) for (let i = 0; i < R / 2; i++) {
      const a = vec[h * D + i]!, b = vec[h * D + i + R / 2]!, ang = pos * inv[i]!, c = Math.cos(ang) * mscale, s = Math.sin(ang) * mscale;
      out[h * D + i] = a * c - b * s;
      out[h * D + i + R / 2] = b * c + a * s;
    }
    return out;
  };
  const granite = cfg.modelType === "granite", phi3 = cfg.modelType === "phi3";
  const embedScale = gemma ? Math.sqrt(hd) : granite ? cfg.embeddingScale! : 1;
  // Granite: residual + output · residual_multiplier.
  const residual = granite ? cfg.residualScale! : 1;
  let x = tokens.map((t) => Array.from(get("model.embed_tokens.weight").subarray(t * hd, (t + 1) * hd), (v) => v * embedScale));
  cfg.kvHeadsPerLayer.forEach((KV, l) => {
    const p = `model.layers.${l}`;
    // Gemma 3's sliding layers (Mistral's window is every layer's).
    const sliding = cfg.slidingWindow !== undefined && (cfg.slidingLayers?.[l] ?? true);
    inv = sliding ? localInv : globalInv;
    const h = x.map((r) => rms(r, get(`${p}.input_layernorm.weight`)));
    const bias = (k: string) => (cfg.attentionBias ? get(`${p}.self_attn.${k}_proj.bias`) : undefined);
    // Qwen3: q_norm / k_norm, an RMSNorm over each head's head_dim values, before RoPE.
    const headNorm = (vec: number[], heads: number, which: string) => !cfg.qkNorm ? vec
      : Array.from({ length: heads }, (_, hh) => rms(vec.slice(hh * D, (hh + 1) * D), get(`${p}.self_attn.${which}_norm.weight`))).flat();
    // SmolLM3's NoPE layers: no rotary embedding.
    const rope = cfg.nopeLayers?.[l] ? (vec: number[]) => vec : ropeAt;
    // Phi3: qkv = qkv_proj(x); q, k, v = qkv[..., :H·D], the next KV·D, the last KV·D.
    const qkv = phi3 ? h.map((r) => matvec(r, get(`${p}.self_attn.qkv_proj.weight`), (H + 2 * KV) * D)) : undefined;
    const project = (which: "q" | "k" | "v", r: number[], i: number, n: number) =>
      qkv ? qkv[i]!.slice(which === "q" ? 0 : which === "k" ? H * D : (H + KV) * D).slice(0, n) : matvec(r, get(`${p}.self_attn.${which}_proj.weight`), n, bias(which));
    const q = h.map((r, i) => rope(headNorm(project("q", r, i, H * D), H, "q"), H, i));
    const k = h.map((r, i) => rope(headNorm(project("k", r, i, KV * D), KV, "k"), KV, i));
    const v = h.map((r, i) => project("v", r, i, KV * D));
    const attn = referenceAttention({ q: q.flat(), k: k.flat(), v: v.flat(), numHeads: H, numKvHeads: KV, headDim: D, causal: true, slidingWindow: sliding ? cfg.slidingWindow : undefined,
      scale: gemma || granite ? cfg.attentionScale : undefined, softcap: cfg.attentionSoftcap });
    x = x.map((r, i) => {
      let o = matvec(Array.from(attn.subarray(i * H * D, (i + 1) * H * D)), get(`${p}.self_attn.o_proj.weight`), hd, cfg.outputBias ? get(`${p}.self_attn.o_proj.bias`) : undefined);
      if (gemma) o = rms(o, get(`${p}.post_attention_layernorm.weight`));
      const x1 = r.map((val, j) => val + o[j]! * residual);
      const h2 = rms(x1, get(`${p}.${gemma ? "pre_feedforward_layernorm" : "post_attention_layernorm"}.weight`));
      // Phi3: gate, up_states = gate_up_proj(x).chunk(2, dim=-1).
      const gu = phi3 ? matvec(h2, get(`${p}.mlp.gate_up_proj.weight`), 2 * ff) : undefined;
      const g = gu ? gu.slice(0, ff) : matvec(h2, get(`${p}.mlp.gate_proj.weight`), ff), u = gu ? gu.slice(ff) : matvec(h2, get(`${p}.mlp.up_proj.weight`), ff);
      let d = matvec(g.map((gv, j) => act(gv) * u[j]!), get(`${p}.mlp.down_proj.weight`), hd);
      if (gemma) d = rms(d, get(`${p}.post_feedforward_layernorm.weight`));
      return x1.map((val, j) => val + d[j]! * residual);
    });
  });
  // Gemma 2's final soft-capping: cap · tanh(logit / cap).
  const cap = cfg.finalSoftcap;
  // Granite: logits / logits_scaling.
  const logitsScaling = granite ? 1 / cfg.logitScale! : 1;
  return x.map((r) => matvec(rms(r, get("model.norm.weight")), get("lm_head.weight"), V).map((z) => (cap ? cap * Math.tanh(z / cap) : z / logitsScaling)));
}

/** Greedy continuation the slow way: the whole sequence through a fresh cache at every step. */
export function greedyByRecomputing(model: TransformerModel, prompt: readonly number[], n: number): number[] {
  const ids = [...prompt];
  for (let i = 0; i < n; i++) {
    const cache = model.createCache();
    try {
      const logits = model.forward(cache, cache.createSequence(), ids, { logits: "last" });
      ids.push(logits.indexOf(Math.max(...logits)));
    } finally { cache.dispose(); }
  }
  return ids.slice(prompt.length);
}
