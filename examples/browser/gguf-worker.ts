// The GGUF page's Web Worker: loads a model from a URL (through Cache Storage: the first visit
// downloads and stores it, later ones read it back) or from a picked File, streaming it into
// wasm memory with progress, then streams generations token by token.
import { createRuntime, loadModel, type LanguageModel, type Runtime } from "gqa-wasm";

export type ToWorker = { type: "load-url"; url: string; base: string } | { type: "load-file"; file: File; base: string } | { type: "generate"; prompt: string; maxNewTokens: number };
export type FromWorker =
  | { type: "progress"; what: string; fraction: number }
  | { type: "loaded"; description: string; cached: boolean }
  | { type: "token"; text: string }
  | { type: "generated"; text: string; tokens: number[]; decodeTokensPerSecond: number }
  | { type: "error"; message: string };

const post = (m: FromWorker) => (self as unknown as Worker).postMessage(m);
let rt: Runtime | undefined;
let model: LanguageModel | undefined;
const CACHE = "gqa-wasm-models";

async function runtime(base: string): Promise<Runtime> {
  if (rt) return rt;
  try {
    rt = await createRuntime({ wasm: new URL("build/gqa-relaxed.wasm", base) });
  } catch {
    rt = await createRuntime({ wasm: new URL("build/gqa-simd.wasm", base) }); // no relaxed SIMD here
  }
  return rt;
}

/** The URL's Response from Cache Storage, or fetched and stored there (the body is read once, as it streams into the model). */
async function cachedResponse(url: string): Promise<{ response: Response; cached: boolean }> {
  const cache = typeof caches !== "undefined" ? await caches.open(CACHE) : undefined;
  const hit = await cache?.match(url);
  if (hit) return { response: hit, cached: true };
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  if (!cache) return { response, cached: false };
  // One branch goes to Cache Storage, the other into wasm memory.
  await cache.put(url, response.clone());
  const again = await cache.match(url);
  return { response: again ?? response, cached: false };
}

async function load(source: Record<string, Response | File>, base: string): Promise<LanguageModel> {
  model?.dispose();
  model = undefined;
  const r = await runtime(base);
  return loadModel(r, source, {
    cache: { dtype: "int8", maxTokens: 2048 },
    onProgress: (p) => post({ type: "progress", what: p.phase === "read" ? "reading" : "ready", fraction: p.totalBytes ? p.doneBytes / p.totalBytes : 1 }),
  });
}

self.onmessage = async (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  try {
    if (m.type === "load-url" || m.type === "load-file") {
      let cached = false, source: Record<string, Response | File>;
      if (m.type === "load-url") {
        const name = new URL(m.url, m.base).pathname.split("/").pop() || "model.gguf";
        post({ type: "progress", what: "opening", fraction: 0 });
        const got = await cachedResponse(new URL(m.url, m.base).href);
        cached = got.cached;
        source = { [name.endsWith(".gguf") ? name : `${name}.gguf`]: got.response };
      } else {
        source = { [m.file.name.endsWith(".gguf") ? m.file.name : "model.gguf"]: m.file };
      }
      model = await load(source, m.base);
      const c = model.config;
      post({ type: "loaded", cached, description: `${c.modelType}, ${c.numLayers} layers, ${c.numHeads} heads / ${c.kvHeadsPerLayer[0]} KV heads, vocabulary ${c.vocabSize}, ${model.transformer.weightDtype} weights, ${rt!.build} kernels` });
      return;
    }
    if (!model) throw new Error("load a model first");
    const generation = model.generate(m.prompt, { maxNewTokens: m.maxNewTokens, temperature: 0 });
    for await (const step of generation) post({ type: "token", text: step.text });
    const r = await generation.done;
    post({ type: "generated", text: r.text, tokens: r.tokens, decodeTokensPerSecond: r.decodeTokensPerSecond });
  } catch (err) {
    post({ type: "error", message: (err as Error).message });
  }
};
