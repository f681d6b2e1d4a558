import type { Runtime } from "./runtime/runtime.ts";
import { formatBytes } from "./format.ts";
import { createKVCache } from "./kv/kv-cache.ts";
import { maxAbsDiff, referenceAttention } from "./reference.ts";
import { fillSeeded, seededArray } from "./random.ts";
import { expectedTensors } from "./model/architecture.ts";
import { parseModelConfig } from "./model/config.ts";
import { TransformerModel } from "./model/transformer.ts";
import { LanguageModel } from "./model/language-model.ts";

// The seed idea made visible: the same Llama-3-8B-like attention (32 query heads, head_dim 128,
// 32 layers) with fewer KV heads keeps a smaller KV cache and decodes faster.

/** DeciLM-7B's KV heads per layer (variable GQA). */
export const DECILM_7B_KV_HEADS = [4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4];

export interface DemoOptions {
  contexts?: number[];
  numHeads?: number;
  headDim?: number;
  /** Timed decode calls per (KV heads, context); the median is reported. */
  repeats?: number;
  print?: (line: string) => void;
}

interface Config { name: string; kvHeadsPerLayer: number[] }

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

export function runDemo(rt: Runtime, options: DemoOptions = {}): void {
  const print = options.print ?? console.log;
  const contexts = options.contexts ?? [512, 2048, 8192];
  const H = options.numHeads ?? 32, D = options.headDim ?? 128;
  const repeats = options.repeats ?? 15;
  const layers = DECILM_7B_KV_HEADS.length;
  const configs: Config[] = [
    { name: "MHA", kvHeadsPerLayer: Array(layers).fill(H) },
    { name: "GQA-8", kvHeadsPerLayer: Array(layers).fill(8) },
    { name: "GQA-4", kvHeadsPerLayer: Array(layers).fill(4) },
    { name: "MQA", kvHeadsPerLayer: Array(layers).fill(1) },
    { name: "DeciLM-7B var.", kvHeadsPerLayer: DECILM_7B_KV_HEADS },
  ];
  const kvCounts = [...new Set(configs.flatMap((c) => c.kvHeadsPerLayer))].sort((a, b) => b - a);

  print(`gqa-wasm demo: ${H} query heads x head_dim ${D}, ${layers} layers, paged f32 KV cache, ${rt.build} kernels, 1 thread`);
  print(`Decode = one new token attending to the whole cached context, in every layer (attention only).`);
  print("");

  // Per distinct KV-head count: one layer's paged cache grows through the contexts (appended
  // in chunks, as a prefill would), and one decode step is timed at each context.
  const layerMs = new Map<string, number>(); // `${kvHeads}@${ctx}` -> ms per layer
  const sorted = [...contexts].sort((a, b) => a - b);
  for (const kv of kvCounts) {
    const cache = createKVCache(rt, { layers: [{ numKvHeads: kv, headDim: D }] });
    const q = rt.alloc(H * D), out = rt.alloc(H * D);
    try {
      fillSeeded(q.array, 3);
      const seq = cache.createSequence();
      const args = { q, out, numHeads: H };
      for (const ctx of sorted) {
        while (seq.length() < ctx) {
          const n = Math.min(512, ctx - seq.length());
          const k = new Float32Array(n * kv * D), v = new Float32Array(n * kv * D);
          fillSeeded(k, seq.length() + 1); fillSeeded(v, seq.length() + 2);
          cache.append(seq, 0, k, v);
        }
        const call = () => cache.attentionInto(seq, 0, args);
        for (let i = 0; i < 5; i++) call(); // warm-up: the engine's optimizing tier, caches
        const times: number[] = [];
        for (let i = 0; i < repeats; i++) {
          const t0 = performance.now();
          call();
          times.push(performance.now() - t0);
        }
        layerMs.set(`${kv}@${ctx}`, median(times));
      }
    } finally {
      q.free(); out.free(); cache.dispose();
    }
  }

  const header = ["config", "KV heads", "KV bytes/token", ...contexts.map((c) => `ms/tok @${c}`), ...contexts.map((c) => `x MHA @${c}`), "max err"];
  const rows: string[][] = [];
  const mhaMs = contexts.map((ctx) => configs[0]!.kvHeadsPerLayer.reduce((s, kv) => s + layerMs.get(`${kv}@${ctx}`)!, 0));
  for (const c of configs) {
    const bytesPerToken = c.kvHeadsPerLayer.reduce((s, kv) => s + 2 * kv * D * 4, 0);
    const ms = contexts.map((ctx) => c.kvHeadsPerLayer.reduce((s, kv) => s + layerMs.get(`${kv}@${ctx}`)!, 0));
    const distinct = [...new Set(c.kvHeadsPerLayer)];
    rows.push([
      c.name,
      distinct.length === 1 ? String(distinct[0]) : `${Math.min(...distinct)}..${Math.max(...distinct)}`,
      formatBytes(bytesPerToken),
      ...ms.map((m) => m.toFixed(2)),
      ...ms.map((m, i) => `${(mhaMs[i]! / m).toFixed(2)}x`),
      maxError(rt, H, c.kvHeadsPerLayer, D).toExponential(1),
    ]);
  }
  printTable(print, header, rows);
  print("");
  print("KV bytes/token: K and V of all layers in f32. ms/tok: median of " + repeats + " decode calls per layer shape, summed over layers.");
  print("max err: largest |wasm - float64 reference| over a decode and a chunked causal prefill through the cache, per distinct layer shape.");
}

/** Through a paged cache: 80 cached tokens, then a decode step; then 16 more tokens as a chunked causal prefill. */
function maxError(rt: Runtime, H: number, kvHeadsPerLayer: number[], D: number): number {
  let worst = 0;
  for (const kv of new Set(kvHeadsPerLayer)) {
    const cache = createKVCache(rt, { layers: [{ numKvHeads: kv, headDim: D }], pageSize: 16 });
    try {
      const seq = cache.createSequence();
      let K = new Float32Array(0), V = new Float32Array(0);
      for (const [n, seed] of [[80, 1], [16, 2]] as const) {
        const k = new Float32Array(n * kv * D), v = new Float32Array(n * kv * D);
        fillSeeded(k, 10 * kv + seed); fillSeeded(v, 20 * kv + seed);
        cache.append(seq, 0, k, v);
        const grownK = new Float32Array(K.length + k.length); grownK.set(K); grownK.set(k, K.length); K = grownK;
        const grownV = new Float32Array(V.length + v.length); grownV.set(V); grownV.set(v, V.length); V = grownV;
        const seqQ = n === 80 ? 1 : n;
        const q = new Float32Array(seqQ * H * D);
        fillSeeded(q, 30 * kv + seed);
        const out = cache.attention(seq, 0, { q, numHeads: H });
        const ref = referenceAttention({ q, k: K, v: V, numHeads: H, numKvHeads: kv, headDim: D, causal: true });
        worst = Math.max(worst, maxAbsDiff(out, ref));
      }
    } finally { cache.dispose(); }
  }
  return worst;
}


export function printTable(print: (line: string) => void, header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  print(line(header));
  print(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) print(line(r));
}

/** SmolLM2-135M's shape (Hugging Face config), for the synthetic end-to-end generation. */
export const SMOLLM2_135M_SHAPE = {
  model_type: "llama", hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9,
  num_key_value_heads: 3, vocab_size: 49152, rms_norm_eps: 1e-5, rope_theta: 100000, max_position_embeddings: 8192,
  tie_word_embeddings: true,
};

/**
 * A tiny end-to-end generation: a SmolLM2-135M-shaped model with deterministic random weights
 * (bf16, made in memory), a prompt of token ids, greedy decoding through the paged KV cache.
 */
export async function runModelDemo(rt: Runtime, options: { newTokens?: number; print?: (line: string) => void } = {}): Promise<void> {
  const print = options.print ?? console.log;
  const cfg = parseModelConfig(SMOLLM2_135M_SHAPE);
  const shapes = expectedTensors(cfg);
  let seed = 1;
  const t0 = performance.now();
  const transformer = new TransformerModel(rt, cfg, (name) => {
    const n = shapes.get(name)!.reduce((a, b) => a * b, 1);
    return name.endsWith("norm.weight") ? new Float32Array(n).fill(1) : seededArray(n, seed++, 0.05);
  }, "bf16");
  const loadMs = performance.now() - t0;
  // No tokenizer: the prompt is token ids, and so is the output.
  const model = new LanguageModel(transformer, undefined, { eosTokenIds: [], sampling: { temperature: 0 } });
  try {
    const prompt = [1, 504, 3287, 314, 260, 1345, 28, 4779, 30, 16, 2];
    const r = await model.generate(prompt, { maxNewTokens: options.newTokens ?? 16 }).done;
    const params = [...shapes.values()].reduce((s, sh) => s + sh.reduce((a, b) => a * b, 1), 0);
    print(`Synthetic SmolLM2-135M-shaped model (${(params / 1e6).toFixed(0)}M parameters, random bf16 weights made in ${(loadMs / 1000).toFixed(1)} s, ${cfg.numLayers} layers, ${cfg.numHeads} heads / ${cfg.kvHeadsPerLayer[0]} KV heads):`);
    print(`  prefill ${prompt.length} tokens: ${r.prefillTokensPerSecond.toFixed(1)} tokens/s; greedy decode through the paged KV cache: ${r.decodeTokensPerSecond.toFixed(1)} tokens/s`);
    print(`  generated ids: ${r.tokens.join(",")} (random weights: the ids mean nothing, the speed does)`);
    print(`  KV cache: ${model.kvCache().stats().bytesPerToken} bytes per token (f32); as MHA it would be ${cfg.numLayers * 2 * cfg.numHeads * cfg.headDim * 4}`);
    print("A real model: download a Hugging Face folder (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) and run");
    print("  gqa-wasm info --model DIR");
    print('  gqa-wasm run --model DIR --prompt "The capital of France is" --max-new-tokens 32');
    print("  gqa-wasm run --model DIR --chat        (one user turn per line of stdin, the conversation kept in the KV cache)");
    print("or a GGUF file (Q8_0, Q4_0, Q4_K_M, F16, ...): gqa-wasm run --model model.gguf --prompt \"...\"; quantize a folder with");
    print("  gqa-wasm quantize --model DIR --dtype q4_k_m --out model.gguf   (llama.cpp's Q4_K_M mix; or q8_0, q4_0, ...)");
    print("Serve it to any OpenAI client (continuous batching, JSON schemas, tool calls): gqa-wasm serve --model DIR|model.gguf  ->  http://127.0.0.1:8080/v1");
  } finally {
    model.dispose();
  }
}
