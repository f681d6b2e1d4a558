// The Web Worker: times one decode step through the paged KV cache at growing context lengths,
// for each KV-head count, posting each point as it is measured; then loads a tiny model from
// files in memory (with load progress) and streams a generation, token by token.
import { createKVCache, createRuntime, loadModel, syntheticModelFiles, type Runtime } from "gqa-wasm";

export interface Point { kvHeads: number; context: number; ms: number }
export type FromWorker =
  | { type: "start"; build: string; total: number } | { type: "point"; point: Point } | { type: "done" }
  | { type: "load"; phase: string; fraction: number } | { type: "token"; text: string }
  | { type: "generated"; text: string; tokens: number[]; decodeTokensPerSecond: number } | { type: "error"; message: string };

const post = (m: FromWorker) => (self as unknown as Worker).postMessage(m);

async function runtime(base: string): Promise<Runtime> {
  try {
    return await createRuntime({ wasm: new URL("build/gqa-relaxed.wasm", base) });
  } catch {
    return createRuntime({ wasm: new URL("build/gqa-simd.wasm", base) }); // no relaxed SIMD here
  }
}

self.onmessage = async (e: MessageEvent<{ base: string; contexts: number[]; kvHeads: number[] }>) => {
  try {
    const { base, contexts, kvHeads } = e.data;
    const rt = await runtime(base);
    post({ type: "start", build: rt.build, total: contexts.length * kvHeads.length });
    const [numHeads, headDim] = [32, 128];
    for (const kv of kvHeads) {
      const cache = createKVCache(rt, { layers: [{ numKvHeads: kv, headDim }] });
      const seq = cache.createSequence();
      for (const context of contexts) {
        while (seq.length() < context) {
          const n = Math.min(512, context - seq.length());
          const rows = new Float32Array(n * kv * headDim).map(() => Math.random() - 0.5);
          cache.append(seq, 0, rows, rows);
        }
        const q = new Float32Array(numHeads * headDim).map(() => Math.random() - 0.5);
        const times: number[] = [];
        for (let i = 0; i < 7; i++) {
          const t = performance.now();
          cache.attention(seq, 0, { q, numHeads });
          times.push(performance.now() - t);
        }
        post({ type: "point", point: { kvHeads: kv, context, ms: times.sort((a, b) => a - b)[3]! } });
      }
      cache.dispose();
    }
    post({ type: "done" });
    const model = await loadModel(rt, syntheticModelFiles(), {
      onProgress: (p) => post({ type: "load", phase: p.phase, fraction: p.totalBytes ? p.doneBytes / p.totalBytes : 1 }),
    });
    const generation = model.generate("The attention heads share their keys and values", { maxNewTokens: 40, temperature: 0 });
    for await (const step of generation) post({ type: "token", text: step.text });
    const r = await generation.done;
    post({ type: "generated", text: r.text, tokens: r.tokens, decodeTokensPerSecond: r.decodeTokensPerSecond });
    model.dispose();
  } catch (err) {
    post({ type: "error", message: (err as Error).message });
  }
};
