// Tiny models for the model-runner tests: random weights, a float64 reference forward written
// from the Hugging Face modeling code, and model folders on disk.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { referenceAttention, writeSafetensors, type TensorToWrite } from "../src/index.ts";
import { expectedTensors, parseModelConfig, type ModelConfig } from "../src/model/config.ts";
import { ropeInverseFrequencies } from "../src/model/rope.ts";
import { randomArray } from "./helpers.ts";

export type Weights = Map<string, Float32Array>;

export function randomWeights(cfg: ModelConfig): Weights {
  const w: Weights = new Map();
  let seed = 11;
  for (const [name, shape] of expectedTensors(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    w.set(name, name.endsWith("norm.weight") ? Float32Array.from(randomArray(n, seed++, 0.2), (x) => 1 + x) : randomArray(n, seed++, 0.3));
  }
  if (cfg.tieWordEmbeddings) w.set("lm_head.weight", w.get("model.embed_tokens.weight")!);
  return w;
}

/** The decoder in plain float64, written from the Hugging Face modeling code, not from ours. */
export function referenceForward(cfg: ModelConfig, w: Weights, tokens: number[]): number[][] {
  const { hiddenSize: hd, numHeads: H, headDim: D, intermediateSize: ff, vocabSize: V, rmsNormEps: eps } = cfg;
  const get = (name: string) => w.get(name)!;
  const rms = (x: number[], g: Float32Array) => { const ms = x.reduce((s, v) => s + v * v, 0) / x.length; return x.map((v, i) => (v / Math.sqrt(ms + eps)) * g[i]!); };
  const matvec = (x: number[], W: Float32Array, out: number, b?: Float32Array) =>
    Array.from({ length: out }, (_, o) => x.reduce((s, v, i) => s + v * W[o * x.length + i]!, b ? b[o]! : 0));
  const inv = ropeInverseFrequencies(D, cfg.ropeTheta, cfg.ropeScaling);
  const rope = (vec: number[], heads: number, pos: number) => {
    const out = vec.slice();
    for (let h = 0; h < heads; h++) for (let i = 0; i < D / 2; i++) {
      const a = vec[h * D + i]!, b = vec[h * D + i + D / 2]!, ang = pos * inv[i]!;
      out[h * D + i] = a * Math.cos(ang) - b * Math.sin(ang);
      out[h * D + i + D / 2] = b * Math.cos(ang) + a * Math.sin(ang);
    }
    return out;
  };
  let x = tokens.map((t) => Array.from(get("model.embed_tokens.weight").subarray(t * hd, (t + 1) * hd)));
  cfg.kvHeadsPerLayer.forEach((KV, l) => {
    const p = `model.layers.${l}`;
    const h = x.map((r) => rms(r, get(`${p}.input_layernorm.weight`)));
    const bias = (k: string) => (cfg.attentionBias ? get(`${p}.self_attn.${k}_proj.bias`) : undefined);
    const q = h.map((r, i) => rope(matvec(r, get(`${p}.self_attn.q_proj.weight`), H * D, bias("q")), H, i));
    const k = h.map((r, i) => rope(matvec(r, get(`${p}.self_attn.k_proj.weight`), KV * D, bias("k")), KV, i));
    const v = h.map((r) => matvec(r, get(`${p}.self_attn.v_proj.weight`), KV * D, bias("v")));
    const attn = referenceAttention({ q: q.flat(), k: k.flat(), v: v.flat(), numHeads: H, numKvHeads: KV, headDim: D, causal: true, slidingWindow: cfg.slidingWindow });
    x = x.map((r, i) => {
      const o = matvec(Array.from(attn.subarray(i * H * D, (i + 1) * H * D)), get(`${p}.self_attn.o_proj.weight`), hd);
      const x1 = r.map((val, j) => val + o[j]!);
      const h2 = rms(x1, get(`${p}.post_attention_layernorm.weight`));
      const g = matvec(h2, get(`${p}.mlp.gate_proj.weight`), ff), u = matvec(h2, get(`${p}.mlp.up_proj.weight`), ff);
      const d = matvec(g.map((gv, j) => (gv / (1 + Math.exp(-gv))) * u[j]!), get(`${p}.mlp.down_proj.weight`), hd);
      return x1.map((val, j) => val + d[j]!);
    });
  });
  return x.map((r) => matvec(rms(r, get("model.norm.weight")), get("lm_head.weight"), V));
}


/** Tiny configs of every supported architecture, for the forward and CLI tests. */
export const base = { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 40, rms_norm_eps: 1e-5, max_position_embeddings: 512 };
export const models: [string, Record<string, unknown>][] = [
  ["llama GQA (4 heads, 2 KV heads)", { ...base, model_type: "llama", num_key_value_heads: 2 }],
  ["llama MQA with tied embeddings, an explicit head_dim and llama3 rope scaling", { ...base, model_type: "llama", num_key_value_heads: 1, head_dim: 16, tie_word_embeddings: true,
    rope_theta: 500000, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }],
  ["qwen2 with q/k/v biases", { ...base, model_type: "qwen2", num_key_value_heads: 2 }],
  ["mistral with a sliding window (5) shorter than the prompt", { ...base, model_type: "mistral", num_key_value_heads: 2, sliding_window: 5 }],
  ["deci with per-layer KV heads", { ...base, model_type: "deci", num_hidden_layers: 3, num_key_value_heads_per_layer: [4, 2, 1] }],
];

export interface FolderOptions {
  shards?: number;
  /** leave this tensor out */
  drop?: string;
  dtype?: "F32" | "BF16";
  /** the weights to write (random ones of the config's shapes otherwise) */
  weights?: Weights;
  /** take the tensor shapes from this config instead (to write a broken config over good tensors) */
  tensorsOf?: Record<string, unknown>;
}

/** A model folder: config.json and safetensors (one file or shards with an index). */
export function writeModelFolder(config: Record<string, unknown>, opts: FolderOptions = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "gqa-model-"));
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const cfg = parseModelConfig(opts.tensorsOf ?? config);
  const weights = opts.weights ?? randomWeights(cfg);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, shape] of expectedTensors(cfg)) {
    if (name !== opts.drop) tensors[name] = { dtype: opts.dtype ?? "F32", shape, data: weights.get(name)! };
  }
  const names = Object.keys(tensors);
  const shards = opts.shards ?? 1;
  if (shards === 1) writeFileSync(join(dir, "model.safetensors"), writeSafetensors(tensors));
  else {
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < shards; s++) {
      const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
      const part = Object.fromEntries(names.filter((_, i) => i % shards === s).map((n) => [n, tensors[n]!]));
      for (const n of Object.keys(part)) weightMap[n] = file;
      writeFileSync(join(dir, file), writeSafetensors(part));
    }
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
  return dir;
}

/** GPT-2's byte -> printable character map (byte-level BPE vocabularies are written in it). */
function byteChars(): string[] {
  const printable = [...Array(94).keys()].map((i) => i + 33).concat([...Array(12).keys()].map((i) => i + 161), [...Array(82).keys()].map((i) => i + 174));
  const chars: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) chars.push(String.fromCodePoint(printable.includes(b) ? b : 256 + extra++));
  return chars;
}

export const SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [string, string][] = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"]];
/** Vocabulary size of the test tokenizer: 3 special tokens, 256 bytes, 5 merges. */
export const TOKENIZER_VOCAB = SPECIAL_TOKENS.length + 256 + MERGES.length;
/** The ChatML template of SmolLM2 / Qwen2.5, as tokenizer_config.json carries it. */
export const CHATML_TEMPLATE = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * A real byte-level BPE tokenizer.json (the GPT-2 / Llama-3 / Qwen2 kind: every byte a token,
 * a few merges, ChatML special tokens) and its tokenizer_config.json, written into `dir`.
 */
export function writeTokenizer(dir: string, opts: { chatTemplate?: string | null } = {}): void {
  const vocab: Record<string, number> = {};
  SPECIAL_TOKENS.forEach((t, i) => { vocab[t] = i; });
  for (const c of byteChars()) vocab[c] = Object.keys(vocab).length;
  for (const [a, b] of MERGES) vocab[a + b] = Object.keys(vocab).length;
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({
    version: "1.0",
    added_tokens: SPECIAL_TOKENS.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null, pre_tokenizer: byteLevel, post_processor: null, decoder: byteLevel,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges: MERGES.map((m) => m.join(" ")) },
  }));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({
    bos_token: null, eos_token: "<|im_end|>", ...(opts.chatTemplate === null ? {} : { chat_template: opts.chatTemplate ?? CHATML_TEMPLATE }),
  }));
}

/** A llama GQA config whose vocabulary is the test tokenizer's. */
export const textModel = { ...base, model_type: "llama", num_key_value_heads: 2, vocab_size: TOKENIZER_VOCAB };
