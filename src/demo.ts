import type { Runtime } from "./runtime/runtime.ts";
import type { WasmBuffer } from "./memory/wasm-buffer.ts";
import { maxAbsDiff, referenceAttention } from "./reference.ts";

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

/** Deterministic uniform [-1, 1) fill (fast LCG). */
function fillRandom(a: Float32Array, seed: number): void {
  let s = seed >>> 0;
  for (let i = 0; i < a.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2147483648 - 1;
  }
}

function median(xs: number[]): number {
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
  const maxCtx = Math.max(...contexts);

  print(`gqa-wasm demo: ${H} query heads x head_dim ${D}, ${layers} layers, f32 KV cache, ${rt.build} kernels, 1 thread`);
  print(`Decode = one new token attending to the whole context, in every layer (attention only).`);
  print("");

  // One K and one V buffer big enough for the largest case; smaller cases use a prefix
  // ([ctx, kvHeads, headDim] is contiguous), so memory is touched once.
  const k = rt.alloc(maxCtx * kvCounts[0]! * D), v = rt.alloc(maxCtx * kvCounts[0]! * D);
  const q = rt.alloc(H * D), out = rt.alloc(H * D);
  const buffers: WasmBuffer[] = [k, v, q, out];
  try {
    fillRandom(k.array, 1); fillRandom(v.array, 2); fillRandom(q.array, 3);
    const layerMs = new Map<string, number>(); // `${kvHeads}@${ctx}` -> ms per layer
    for (const kv of kvCounts) {
      for (const ctx of contexts) {
        const n = ctx * kv * D;
        const args = { q, out, k: k.subarray(0, n), v: v.subarray(0, n), numHeads: H, numKvHeads: kv, headDim: D };
        const call = () => rt.attentionInto(args);
        for (let i = 0; i < 5; i++) call(); // warm-up: the engine's optimizing tier, caches
        const times: number[] = [];
        for (let i = 0; i < repeats; i++) {
          const t0 = performance.now();
          call();
          times.push(performance.now() - t0);
        }
        layerMs.set(`${kv}@${ctx}`, median(times));
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
    print("max err: largest |wasm - float64 reference| over a decode and a causal prefill per distinct layer shape (small context).");
  } finally {
    for (const b of buffers) b.free();
  }
}

function maxError(rt: Runtime, H: number, kvHeadsPerLayer: number[], D: number): number {
  let worst = 0;
  for (const kv of new Set(kvHeadsPerLayer)) {
    for (const [seqQ, seqK, causal] of [[1, 100, false], [16, 80, true]] as const) {
      const q = new Float32Array(seqQ * H * D), k = new Float32Array(seqK * kv * D), v = new Float32Array(seqK * kv * D);
      fillRandom(q, 11 + kv); fillRandom(k, 12 + kv); fillRandom(v, 13 + kv);
      const args = { q, k, v, numHeads: H, numKvHeads: kv, headDim: D, causal };
      worst = Math.max(worst, maxAbsDiff(rt.attention(args), referenceAttention(args)));
    }
  }
  return worst;
}

function formatBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(2)} MiB` : `${(n / 1024).toFixed(0)} KiB`;
}

export function printTable(print: (line: string) => void, header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  print(line(header));
  print(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) print(line(r));
}
