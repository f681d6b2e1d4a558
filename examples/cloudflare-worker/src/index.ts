// GET /?kvHeads=8&context=2048 — fills a one-layer paged KV cache (32 query heads x 128) with
// `context` random tokens, decodes one token against it, and answers with the time, the KV bytes
// per token and the wasm memory this took.
// GET /generate?prompt=...&maxNewTokens=16 — generates text with a tiny GQA model (synthetic
// bf16 weights and a byte-level BPE tokenizer, loaded from files in memory as a real folder
// would be from R2 or KV), greedy through the paged KV cache.
// The runtime refuses to grow past MEMORY_BUDGET, so a request too large for the 128 MB isolate
// fails with a clear error instead of killing it.
import { createKVCache, createRuntime, loadModel, syntheticModelFiles, WasmOutOfMemoryError, type LanguageModel, type Runtime } from "gqa-wasm";
// @ts-expect-error: a CompiledWasm module (wrangler.toml), a WebAssembly.Module at run time
import kernels from "gqa-wasm/build/gqa-relaxed.wasm";

const MEMORY_BUDGET = 96 << 20; // leaves room for the isolate's own heap under 128 MB
const NUM_HEADS = 32, HEAD_DIM = 128;

let runtime: Promise<Runtime> | undefined;
let tinyModel: Promise<LanguageModel> | undefined;

function intParam(url: URL, name: string, fallback: number, max: number): number {
  const raw = url.searchParams.get(name);
  const n = raw === null ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new RangeError(`${name} must be an integer in [1, ${max}], got ${raw}`);
  return n;
}

async function generate(url: URL, rt: Runtime): Promise<Response> {
  const prompt = url.searchParams.get("prompt") ?? "Once upon a time";
  let maxNewTokens: number;
  try {
    maxNewTokens = intParam(url, "maxNewTokens", 16, 256);
    if (prompt.length === 0 || prompt.length > 2000) throw new RangeError(`prompt must have 1 to 2000 characters, got ${prompt.length}`);
  } catch (e) {
    return Response.json({ error: (e as Error).message }, { status: 400 });
  }
  // Loaded once per isolate; a failed load is not kept, so the next request tries again.
  tinyModel ??= loadModel(rt, syntheticModelFiles()).catch((e: unknown) => { tinyModel = undefined; throw e; });
  const model = await tinyModel;
  const result = await model.generate(prompt, { maxNewTokens, temperature: 0 }).done;
  return Response.json({
    prompt, text: result.text, tokens: result.tokens, finishReason: result.finishReason, promptTokens: result.promptTokens,
    kvCacheBytes: result.kvCacheBytes, build: rt.build, wasmMemoryBytes: rt.stats().memoryBytes, memoryBudgetBytes: MEMORY_BUDGET,
  });
}

export default {
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    runtime ??= createRuntime({ wasm: kernels as WebAssembly.Module, maxMemoryBytes: MEMORY_BUDGET });
    if (url.pathname === "/generate") {
      try {
        return await generate(url, await runtime);
      } catch (e) {
        if (e instanceof WasmOutOfMemoryError) return Response.json({ error: e.message }, { status: 507 });
        throw e;
      }
    }
    let kvHeads: number, context: number;
    try {
      kvHeads = intParam(url, "kvHeads", 8, NUM_HEADS);
      context = intParam(url, "context", 2048, 1 << 20);
      if (NUM_HEADS % kvHeads !== 0) throw new RangeError(`kvHeads must divide ${NUM_HEADS}, got ${kvHeads}`);
    } catch (e) {
      return Response.json({ error: (e as Error).message }, { status: 400 });
    }
    const rt = await runtime;
    const cache = createKVCache(rt, { layers: [{ numKvHeads: kvHeads, headDim: HEAD_DIM }] });
    try {
      const seq = cache.createSequence();
      let seed = 1;
      const random = (n: number) => Float32Array.from({ length: n }, () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 31) - 1);
      for (let t = 0; t < context; t += 256) {
        const n = Math.min(256, context - t);
        cache.append(seq, 0, random(n * kvHeads * HEAD_DIM), random(n * kvHeads * HEAD_DIM));
      }
      const q = random(NUM_HEADS * HEAD_DIM);
      const started = performance.now();
      const out = cache.attention(seq, 0, { q, numHeads: NUM_HEADS });
      const decodeMs = performance.now() - started; // Workers' clocks advance at I/O only: 0 on production
      return Response.json({
        numHeads: NUM_HEADS, kvHeads, headDim: HEAD_DIM, context, build: rt.build,
        decodeMs, kvBytesPerToken: cache.stats().bytesPerToken, kvBytes: cache.stats().totalBytes,
        wasmMemoryBytes: rt.stats().memoryBytes, memoryBudgetBytes: MEMORY_BUDGET, outputSample: Array.from(out.subarray(0, 4)),
      });
    } catch (e) {
      if (e instanceof WasmOutOfMemoryError) return Response.json({ error: e.message }, { status: 507 });
      throw e;
    } finally {
      cache.dispose();
    }
  },
};
