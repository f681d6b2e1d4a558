// The GGUF page: a URL or a picked file goes to the Web Worker, which loads it (progress) and
// streams generations into the page. `?auto=1&model=URL&prompt=...&tokens=N` loads and
// generates by itself and leaves the result in window.ggufResult (what the tests read).
import type { FromWorker, ToWorker } from "./gguf-worker.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const [url, file, loadUrl, progress, status, prompt, generate, speed, output] =
  [$<HTMLInputElement>("url"), $<HTMLInputElement>("file"), $<HTMLButtonElement>("load-url"), $<HTMLProgressElement>("progress"), $("status"), $<HTMLTextAreaElement>("prompt"), $<HTMLButtonElement>("generate"), $("speed"), $("output")];
const params = new URLSearchParams(location.search);
const base = new URL("./", location.href).href;
const result = window as unknown as { ggufResult?: unknown };
let cached = false;

const worker = new Worker(new URL("./gguf-worker.js", import.meta.url), { type: "module" });
const send = (m: ToWorker) => worker.postMessage(m);
const maxNewTokens = Number(params.get("tokens") ?? 64);

worker.onmessage = (e: MessageEvent<FromWorker>) => {
  const m = e.data;
  if (m.type === "progress") { progress.value = m.fraction; status.textContent = `${m.what} ${(100 * m.fraction).toFixed(0)}%`; }
  if (m.type === "loaded") {
    cached = m.cached;
    status.textContent = `loaded${m.cached ? " from the browser's cache" : ""}: ${m.description}`;
    generate.disabled = false;
    if (params.get("auto")) generate.click();
  }
  if (m.type === "token") output.textContent += m.text;
  if (m.type === "generated") {
    speed.textContent = `${m.tokens.length} tokens at ${m.decodeTokensPerSecond.toFixed(1)} tokens/s`;
    generate.disabled = false;
    result.ggufResult = { text: m.text, tokens: m.tokens, shown: output.textContent, cached };
  }
  if (m.type === "error") { status.textContent = `error: ${m.message}`; generate.disabled = false; result.ggufResult = { error: m.message }; }
};

loadUrl.onclick = () => { generate.disabled = true; send({ type: "load-url", url: url.value, base }); };
file.onchange = () => { const f = file.files?.[0]; if (f) { generate.disabled = true; send({ type: "load-file", file: f, base }); } };
generate.onclick = () => { output.textContent = ""; generate.disabled = true; send({ type: "generate", prompt: prompt.value, maxNewTokens }); };

if (params.get("model")) url.value = params.get("model")!;
if (params.get("prompt")) prompt.value = params.get("prompt")!;
if (params.get("auto")) loadUrl.click();
