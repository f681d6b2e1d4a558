// GET /?kvHeads=8&context=2048 — fills a one-layer paged KV cache (32 query heads x 128) with
// `context` random tokens, decodes one token against it, and answers with the time, the KV bytes
// per token and the wasm memory this took.
// GET /generate?prompt=...&maxNewTokens=16 — generates text with a tiny GQA model (synthetic
// bf16 weights and a byte-level BPE tokenizer, loaded from files in memory as a real folder
// would be from R2 or KV), greedy through the paged KV cache.
// GET /model/generate?prompt=...&maxNewTokens=64 — streams a continuation (text/plain) from the
// GGUF model in the R2 bucket MODEL, stored as byte shards of at most 25 MiB under
// MODEL_PREFIX (e.g. `split -b 25M model.gguf model.gguf.` then `wrangler r2 object put`): the
// shards are streamed into wasm memory in order, never held whole in JS.
// POST /model/chat {"messages": [{"role": "user", "content": "..."}], "maxNewTokens": 64} —
// the model's chat template over the messages, the reply as Server-Sent Events.
// The runtime refuses to grow past MEMORY_BUDGET, so a request too large for the 128 MB isolate
// fails with a clear error instead of killing it.
import { createKVCache, createRuntime, loadModel, syntheticModelFiles, WasmOutOfMemoryError, type Generation, type LanguageModel, type Runtime } from "gqa-wasm";
// @ts-expect-error: a CompiledWasm module (wrangler.toml), a WebAssembly.Module at run time
import kernels from "gqa-wasm/build/gqa-relaxed.wasm";

const MEMORY_BUDGET = 96 << 20; // leaves room for the isolate's own heap under 128 MB
/** The R2 model's runtime: a SmolLM2-135M Q4_0 (76 MB of weights) and an int8 KV cache of 2048 tokens (25 MB). */
const MODEL_MEMORY_BUDGET = 108 << 20;
const MODEL_CONTEXT = 2048;
const NUM_HEADS = 32, HEAD_DIM = 128;

interface Env { MODEL?: R2Like; MODEL_PREFIX?: string }
/** The parts of an R2 bucket binding this Worker uses. */
interface R2Like {
  list(options: { prefix: string; cursor?: string }): Promise<{ objects: { key: string; size: number }[]; truncated: boolean; cursor?: string }>;
  get(key: string): Promise<{ body: ReadableStream<Uint8Array> } | null>;
}

let runtime: Promise<Runtime> | undefined;
let tinyModel: Promise<LanguageModel> | undefined;
let edgeRuntime: Promise<Runtime> | undefined;
let edgeModel: Promise<LanguageModel> | undefined;

/** The shards under `prefix`, in key order, as one stream of the whole file (one shard in flight at a time). */
async function shardedFile(bucket: R2Like, prefix: string): Promise<{ stream: ReadableStream<Uint8Array>; size: number }> {
  const objects: { key: string; size: number }[] = [];
  let cursor: string | undefined;
  do {
    const page = await bucket.list({ prefix, cursor });
    objects.push(...page.objects);
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  if (objects.length === 0) throw new RangeError(`no model shards under ${prefix} in the MODEL bucket`);
  objects.sort((a, b) => (a.key < b.key ? -1 : 1));
  let next = 0;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        if (!reader) {
          if (next === objects.length) { controller.close(); return; }
          const object = await bucket.get(objects[next++]!.key);
          if (!object) throw new RangeError(`shard ${objects[next - 1]!.key} disappeared`);
          reader = object.body.getReader();
        }
        const { done, value } = await reader.read();
        if (!done) { controller.enqueue(value); return; }
        reader = undefined;
      }
    },
    async cancel() { await reader?.cancel(); },
  });
  return { stream, size: objects.reduce((s, o) => s + o.size, 0) };
}

function edge(env: Env): Promise<LanguageModel> {
  if (!env.MODEL) return Promise.reject(new RangeError("no MODEL bucket is bound (wrangler.toml r2_buckets)"));
  const prefix = env.MODEL_PREFIX ?? "model.gguf.";
  edgeRuntime ??= createRuntime({ wasm: kernels as WebAssembly.Module, maxMemoryBytes: MODEL_MEMORY_BUDGET });
  edgeModel ??= (async () => {
    const file = await shardedFile(env.MODEL!, prefix);
    return loadModel(await edgeRuntime!, { "model.gguf": file }, { cache: { dtype: "int8", maxTokens: MODEL_CONTEXT } });
  })().catch((e: unknown) => { edgeModel = undefined; throw e; });
  return edgeModel;
}

/** A generation's text as a streamed body: plain text, or Server-Sent Events ending with the result. */
function streamed(generation: Generation, sse: boolean, rt: Runtime): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      try {
        for await (const step of generation) {
          if (step.text) controller.enqueue(encoder.encode(sse ? `data: ${JSON.stringify({ text: step.text })}\n\n` : step.text));
        }
        const r = await generation.done;
        if (sse) controller.enqueue(encoder.encode(`data: ${JSON.stringify({ done: true, finishReason: r.finishReason, tokens: r.tokens, wasmMemoryBytes: rt.stats().memoryBytes })}\n\n`));
        controller.close();
      } catch (e) { controller.error(e); }
    },
  });
  return new Response(body, { headers: { "content-type": sse ? "text/event-stream" : "text/plain; charset=utf-8", "x-wasm-memory-bytes": String(rt.stats().memoryBytes) } });
}

async function edgeRequest(request: Request, url: URL, env: Env): Promise<Response> {
  let prompt: string | { role: string; content: string }[], maxNewTokens: number;
  try {
    if (url.pathname === "/model/generate") {
      prompt = url.searchParams.get("prompt") ?? "Once upon a time";
      maxNewTokens = intParam(url, "maxNewTokens", 64, 512);
      if (prompt.length === 0 || prompt.length > 4000) throw new RangeError(`prompt must have 1 to 4000 characters, got ${prompt.length}`);
    } else {
      if (request.method !== "POST") return Response.json({ error: "POST a JSON body {messages, maxNewTokens}" }, { status: 405 });
      const body = await request.json().catch(() => null) as { messages?: unknown; maxNewTokens?: unknown } | null;
      const messages = body?.messages;
      if (!Array.isArray(messages) || messages.length === 0 || messages.length > 64 || messages.some((m) => typeof m?.role !== "string" || typeof m?.content !== "string" || m.content.length > 4000)) {
        throw new RangeError("messages must be 1 to 64 {role, content} objects with at most 4000 characters each");
      }
      prompt = messages as { role: string; content: string }[];
      maxNewTokens = body?.maxNewTokens === undefined ? 64 : Number(body.maxNewTokens);
      if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1 || maxNewTokens > 512) throw new RangeError(`maxNewTokens must be an integer in [1, 512], got ${String(body?.maxNewTokens)}`);
    }
  } catch (e) {
    return Response.json({ error: (e as Error).message }, { status: 400 });
  }
  const model = await edge(env);
  const rt = await edgeRuntime!;
  if (typeof prompt === "string") return streamed(model.generate(prompt, { maxNewTokens, temperature: 0 }), false, rt);
  const chat = model.chat();
  const last = prompt[prompt.length - 1]!;
  chat.messages.push(...prompt.slice(0, -1));
  const generation = chat.send(last.content, { maxNewTokens, temperature: 0 });
  // The conversation's pages go back to the cache when the reply ends.
  generation.onEnd(() => chat.dispose());
  return streamed(generation, true, rt);
}

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
  async fetch(request: Request, env: Env = {}): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/model/generate" || url.pathname === "/model/chat") {
      try {
        return await edgeRequest(request, url, env);
      } catch (e) {
        if (e instanceof WasmOutOfMemoryError) return Response.json({ error: e.message }, { status: 507 });
        if (e instanceof RangeError) return Response.json({ error: e.message }, { status: 503 });
        throw e;
      }
    }
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
