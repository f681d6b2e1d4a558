// The page that runs wllama (llama.cpp compiled to wasm) for bench:e2e: loads /model.gguf and
// completes a prompt greedily (after one warm-up run), leaving llama.cpp's own timings in window.wllamaResult.
import { Wllama } from "@wllama/wllama";

const params = new URLSearchParams(location.search);
const result = window as unknown as { wllamaResult?: unknown };
try {
  const wllama = new Wllama({ default: new URL("/wllama.wasm", location.href).href });
  await wllama.loadModelFromUrl(new URL("/model.gguf", location.href).href, {
    n_ctx: Number(params.get("ctx")), n_batch: Number(params.get("batch")), n_threads: Number(params.get("threads")), useCache: false,
  });
  // One untimed run first (the browser tiers its wasm up while it runs, as V8 does ours), then the
  // timed one; cache_prompt off so the second evaluates the whole prompt again.
  const complete = (maxTokens: number) => wllama.createCompletion({
    prompt: params.get("prompt")!, max_tokens: maxTokens, temperature: 0, ...({ ignore_eos: true, cache_prompt: false } as object),
  } as never) as unknown as Promise<{ timings?: { prompt_n: number; prompt_per_second: number; predicted_n: number; predicted_per_second: number } }>;
  await complete(8);
  const response = await complete(Number(params.get("gen")));
  result.wllamaResult = { timings: response.timings, crossOriginIsolated: self.crossOriginIsolated };
  await wllama.exit();
} catch (e) {
  result.wllamaResult = { error: String((e as Error)?.message ?? e) };
}
