// GET /?kvHeads=8&context=2048 — fills a one-layer paged KV cache (32 query heads x 128) with
// `context` random tokens, decodes one token against it, and answers with the time, the KV bytes
// per token and the wasm memory this took.
// GET /generate?prompt=...&maxNewTokens=16 — generates text with a tiny GQA model (synthetic
// bf16 weights and a byte-level BPE tokenizer, loaded from files in memory as a real folder
// would be from R2 or KV), greedy through the paged KV cache.
// /v1/* and /health — the OpenAI-compatible API (the same handler as `gqa-wasm serve`) over the
// GGUF model in the R2 bucket MODEL, stored as byte shards of at most 25 MiB under MODEL_PREFIX
// (e.g. `split -b 25M model.gguf model.gguf.` then `wrangler r2 object put`): the shards are
// streamed into wasm memory in order, never held whole in JS. The API runs in a Durable Object
// (ModelServer): requests to one object share its event loop, so they decode together
// (continuous batching). With an `x-conversation-id` header a request goes to that
// conversation's own object, which keeps the conversation's KV cache in Durable Object storage:
// the next turn resumes without recomputing the earlier ones, even in a new isolate.
// The runtime refuses to grow past its memory budget, so a request too large for the 128 MB
// isolate fails with a clear error instead of killing it.
import { createKVCache, createOpenAIServer, createRuntime, loadModel, syntheticModelFiles, WasmOutOfMemoryError, type LanguageModel, type OpenAIServer, type Runtime } from "gqa-wasm";
// @ts-expect-error: a CompiledWasm module (wrangler.toml), a WebAssembly.Module at run time
import kernels from "gqa-wasm/build/gqa-relaxed.wasm";

const MEMORY_BUDGET = 96 << 20; // leaves room for the isolate's own heap under 128 MB
/** The R2 model's runtime: a SmolLM2-135M Q4_0 (76 MB of weights) and an int8 KV cache of 2048 tokens (25 MB). */
const MODEL_MEMORY_BUDGET = 108 << 20;
const MODEL_CONTEXT = 2048;
const NUM_HEADS = 32, HEAD_DIM = 128;

interface Env { MODEL?: R2Like; MODEL_PREFIX?: string; SERVER?: DurableObjectNamespaceLike; API_KEY?: string }
/** The parts of a Durable Object namespace binding and of an object's state this Worker uses. */
interface DurableObjectNamespaceLike { idFromName(name: string): unknown; get(id: unknown): { fetch(request: Request): Promise<Response> } }
interface DurableObjectStateLike {
  storage: {
    get<T>(key: string): Promise<T | undefined>;
    put(entries: Record<string, unknown>): Promise<void>;
    delete(keys: string[]): Promise<number>;
  };
  blockConcurrencyWhile<T>(fn: () => Promise<T>): Promise<T>;
}
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
    return loadModel(await edgeRuntime!, { "model.gguf": file });
  })().catch((e: unknown) => { edgeModel = undefined; throw e; });
  return edgeModel;
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
    if (url.pathname.startsWith("/v1/") || url.pathname === "/health") return toModelServer(request, env);
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

/** Sends an API request to the shared ModelServer, or to its conversation's own one. */
function toModelServer(request: Request, env: Env): Promise<Response> | Response {
  const error = (status: number, message: string) => Response.json({ error: { message, type: "invalid_request_error", param: null, code: null } }, { status });
  if (!env.SERVER) return error(503, "no SERVER Durable Object binding (wrangler.toml durable_objects)");
  const conversation = request.headers.get("x-conversation-id");
  if (conversation !== null && !/^[A-Za-z0-9_.-]{1,128}$/.test(conversation)) return error(400, "x-conversation-id must be 1 to 128 letters, digits, '.', '_' or '-'");
  const stub = env.SERVER.get(env.SERVER.idFromName(conversation === null ? "shared" : `conversation:${conversation}`));
  const headers = new Headers(request.headers);
  headers.set("x-gqa-persist", conversation === null ? "0" : "1");
  return stub.fetch(new Request(request, { headers }));
}

/** Durable Object storage values are at most 128 KiB: a snapshot is kept in chunks. */
const CHUNK_BYTES = 120 << 10;
interface SavedConversation { generation: number; chunks: number; tokens: number[] }

/**
 * The OpenAI-compatible API in a Durable Object. A conversation's object saves the K/V of its
 * latest reply (a KV snapshot, in chunks) after each completion and restores it when a new
 * isolate starts, so the next turn's prompt finds its earlier turns in the prefix cache.
 */
export class ModelServer {
  private api?: Promise<OpenAIServer>;
  private saving: Promise<void> = Promise.resolve();

  constructor(private readonly state: DurableObjectStateLike, private readonly env: Env) {}

  async fetch(request: Request): Promise<Response> {
    const persist = request.headers.get("x-gqa-persist") === "1";
    this.api ??= this.state.blockConcurrencyWhile(() => this.start(persist)).catch((e: unknown) => { this.api = undefined; throw e; });
    let api: OpenAIServer;
    try {
      api = await this.api;
    } catch (e) {
      const status = e instanceof WasmOutOfMemoryError ? 507 : 503;
      return Response.json({ error: { message: (e as Error).message, type: "server_error", param: null, code: null } }, { status });
    }
    return api.fetch(request);
  }

  private async start(persist: boolean): Promise<OpenAIServer> {
    const model = await edge(this.env);
    let restoring = true;
    const api = createOpenAIServer(model, {
      modelId: "model", apiKey: this.env.API_KEY, maxSequences: persist ? 1 : 4, maxCacheTokens: MODEL_CONTEXT, kvDtype: "int8",
      // A conversation keeps one sequence: its latest turn.
      maxPrefixEntries: persist ? 1 : 8,
      onPrefixCached: persist ? (seq, tokens) => { if (!restoring) this.save(api.cache.snapshot(seq), tokens); } : undefined,
    });
    if (persist) {
      const saved = await this.state.storage.get<SavedConversation>("conversation");
      if (saved) {
        const parts = await Promise.all(Array.from({ length: saved.chunks }, (_, i) => this.state.storage.get<Uint8Array>(`kv:${saved.generation}:${i}`)));
        if (parts.every((p) => p instanceof Uint8Array)) {
          const bytes = new Uint8Array(parts.reduce((n, p) => n + p!.length, 0));
          parts.reduce((at, p) => { bytes.set(p!, at); return at + p!.length; }, 0);
          // A snapshot that does not fit this model (a different file since) is dropped, not fatal.
          try { api.scheduler.addPrefix(api.cache.restore(bytes), saved.tokens); } catch { /* start afresh */ }
        }
      }
    }
    restoring = false;
    return api;
  }

  /** Writes the snapshot's chunks under a new generation, then the record naming it (one atomic put), then drops the old chunks. */
  private save(snapshot: Uint8Array, tokens: readonly number[]): void {
    this.saving = this.saving.then(async () => {
      const old = await this.state.storage.get<SavedConversation>("conversation");
      const generation = (old?.generation ?? 0) + 1;
      const chunks = Math.ceil(snapshot.length / CHUNK_BYTES);
      for (let i = 0; i < chunks; i += 100) {
        const batch: Record<string, Uint8Array> = {};
        for (let j = i; j < Math.min(chunks, i + 100); j++) batch[`kv:${generation}:${j}`] = snapshot.slice(j * CHUNK_BYTES, (j + 1) * CHUNK_BYTES);
        await this.state.storage.put(batch);
      }
      await this.state.storage.put({ conversation: { generation, chunks, tokens: [...tokens] } satisfies SavedConversation });
      if (old) {
        const keys = Array.from({ length: old.chunks }, (_, i) => `kv:${old.generation}:${i}`);
        for (let i = 0; i < keys.length; i += 128) await this.state.storage.delete(keys.slice(i, i + 128));
      }
    }).catch(() => { /* the next save tries again */ });
  }
}
