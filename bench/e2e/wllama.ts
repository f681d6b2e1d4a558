// wllama (llama.cpp in wasm) in headless Chromium for bench:e2e: a page served from 127.0.0.1
// with COOP/COEP (threads need cross-origin isolation) loads the GGUF and reports llama.cpp's
// own prompt and generation timings.
import { createReadStream, mkdtempSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundle } from "../../examples/bundle.ts";
import { chromiumPath } from "../../tests/conformance/web-hosts.ts";

export interface WllamaTiming { prefill: number; decode: number; predicted: number }

export async function startWllama(): Promise<{ run(file: string, threads: number, prompt: string, promptTokens: number, gen: number, ctx: number): Promise<WllamaTiming>; close(): Promise<void> }> {
  const here = fileURLToPath(new URL(".", import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), "gqa-wllama-"));
  await bundle(join(here, "wllama-page.ts"), join(dir, "page.js"));
  let model = "";
  const files = (path: string): [string, string] | undefined => ({
    "/": ["text/html", ""], "/page.js": ["text/javascript", join(dir, "page.js")],
    "/wllama.wasm": ["application/wasm", join(here, "node_modules/@wllama/wllama/esm/wasm/wllama.wasm")],
    "/model.gguf": ["application/octet-stream", model],
  } as Record<string, [string, string]>)[path];
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = files(path);
    const headers = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
    if (!file) { res.writeHead(404, headers).end(); return; }
    if (path === "/") { res.writeHead(200, { ...headers, "content-type": "text/html" }).end("<!doctype html><meta charset=utf-8><script type=module src=/page.js></script>"); return; }
    res.writeHead(200, { ...headers, "content-type": file[0], "content-length": String(statSync(file[1]).size) });
    createReadStream(file[1]).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: await chromiumPath(), headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
  return {
    async run(file, threads, prompt, promptTokens, gen, ctx) {
      model = file;
      const page = await browser.newPage();
      try {
        await page.goto(`${base}?threads=${threads}&gen=${gen}&ctx=${ctx}&batch=${Math.min(ctx, 512)}&prompt=${encodeURIComponent(prompt)}`);
        await page.waitForFunction(() => (window as { wllamaResult?: unknown }).wllamaResult !== undefined, undefined, { timeout: 600_000 });
        const r = await page.evaluate(() => (window as unknown as { wllamaResult: { timings?: { prompt_n: number; prompt_per_second: number; predicted_per_second: number; predicted_n: number }; error?: string; crossOriginIsolated?: boolean } }).wllamaResult);
        if (!r.timings) throw new Error(`wllama: ${r.error ?? "no timings"}`);
        // The timed run must have evaluated the whole prompt (not a cached prefix of the warm-up's).
        if (r.timings.prompt_n < promptTokens) throw new Error(`wllama: the timed run evaluated ${r.timings.prompt_n} prompt tokens, not ${promptTokens}`);
        return { prefill: r.timings.prompt_per_second, decode: r.timings.predicted_per_second, predicted: r.timings.predicted_n };
      } finally { await page.close(); }
    },
    async close() { await browser.close(); server.close(); },
  };
}
