// The page that runs wllama (llama.cpp compiled to wasm) for bench:e2e: loads /model.gguf and
// completes a prompt greedily, leaving llama.cpp's own timings in window.wllamaResult.
import { Wllama } from "@wllama/wllama";

const params = new URLSearchParams(location.search);
const result = window as unknown as { wllamaResult?: unknown };
try {
  const wllama = new Wllama({ default: new URL("/wllama.wasm", location.href).href });
  await wllama.loadModelFromUrl(new URL("/model.gguf", location.href).href, {
    n_ctx: Number(params.get("ctx")), n_batch: Number(params.get("batch")), n_threads: Number(params.get("threads")), useCache: false,
  });
  const response = await wllama.createCompletion({
    prompt: params.get("prompt")!, max_tokens: Number(params.get("gen")), temperature: 0, ...({ ignore_eos: true } as object),
  } as never) as unknown as { timings?: { prompt_n: number; prompt_per_second: number; predicted_n: number; predicted_per_second: number } };
  result.wllamaResult = { timings: response.timings, crossOriginIsolated: self.crossOriginIsolated };
  await wllama.exit();
} catch (e) {
  result.wllamaResult = { error: String((e as Error)?.message ?? e) };
}
