// Drivers for the hosts that are not command lines: Cloudflare workerd (through miniflare) and
// headless Chromium (Debian's chromium through playwright-core), each served from 127.0.0.1.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundle } from "./bundle.ts";

export interface HostResult { passed: number; failed: number; text: string }

const root = fileURLToPath(new URL("../..", import.meta.url));

function parse(text: string): HostResult {
  const m = /conformance: (\d+) passed, (\d+) failed/.exec(text);
  return m ? { passed: Number(m[1]), failed: Number(m[2]), text } : { passed: 0, failed: 1, text };
}

/** Serves a Worker script (bundled from `entry`) with `wasmName` from build/ in workerd; calls `fn` with its URL. */
async function withWorker<T>(entry: string, wasmName: string, wasmFile: string, fn: (url: URL) => Promise<T>): Promise<T> {
  const { Miniflare } = await import("miniflare");
  const dir = mkdtempSync(join(tmpdir(), "gqa-workerd-"));
  try {
    await bundle(join(root, entry), join(dir, "worker.js"));
    copyFileSync(join(root, "build", wasmFile), join(dir, wasmName));
    // The modules are listed (not found by scanning): the runtime's computed dynamic imports of
    // Node built-ins are left in the bundle, unreachable on workerd, and the scanner rejects them.
    const mf = new Miniflare({
      modulesRoot: dir,
      modules: [{ type: "ESModule", path: join(dir, "worker.js") }, { type: "CompiledWasm", path: join(dir, wasmName) }],
      compatibilityDate: "2025-01-01", host: "127.0.0.1", port: 0,
    });
    try {
      return await fn(await mf.ready);
    } finally { await mf.dispose(); }
  } finally { rmSync(dir, { recursive: true, force: true }); }
}

/** The conformance Worker with its kernels imported as a compiled module, run by workerd. */
export function runInWorkerd(build: "relaxed" | "simd"): Promise<HostResult> {
  return withWorker("tests/conformance/worker-entry.ts", "gqa-kernels.wasm", `gqa-${build}.wasm`, async (url) => parse(await (await fetch(url)).text()));
}

/** The Cloudflare Worker example, answering the given queries. */
export function runWorkerExample(queries: string[]): Promise<{ status: number; body: Record<string, unknown> }[]> {
  return withWorker("examples/cloudflare-worker/src/index.ts", "gqa-relaxed.wasm", "gqa-relaxed.wasm", async (url) => {
    const answers = [];
    for (const q of queries) {
      const res = await fetch(new URL(q, url));
      answers.push({ status: res.status, body: (await res.json()) as Record<string, unknown> });
    }
    return answers;
  });
}

/** The browser entry in a page served from 127.0.0.1, with or without COOP/COEP headers. */
export async function runInChromium(crossOriginIsolated: boolean): Promise<HostResult & { isolated: boolean }> {
  const { chromium } = await import("playwright-core");
  const dir = mkdtempSync(join(tmpdir(), "gqa-chromium-"));
  await bundle(join(root, "tests/conformance/browser-entry.ts"), join(dir, "bundle.js"));
  const files: Record<string, [string, string]> = {
    "/": ["text/html", "<!doctype html><meta charset=utf-8><title>gqa-wasm conformance</title><body>running…<script type=module src=/bundle.js></script>"],
    "/bundle.js": ["text/javascript", join(dir, "bundle.js")],
    "/build/gqa-relaxed.wasm": ["application/wasm", join(root, "build/gqa-relaxed.wasm")],
    "/build/gqa-simd.wasm": ["application/wasm", join(root, "build/gqa-simd.wasm")],
    "/build/gqa-relaxed-threads.wasm": ["application/wasm", join(root, "build/gqa-relaxed-threads.wasm")],
    "/build/gqa-simd-threads.wasm": ["application/wasm", join(root, "build/gqa-simd-threads.wasm")],
  };
  const server = createServer((req, res) => {
    const file = files[new URL(req.url ?? "/", "http://x").pathname];
    if (!file) { res.writeHead(404).end(); return; }
    const headers: Record<string, string> = { "content-type": file[0] };
    if (crossOriginIsolated) Object.assign(headers, { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" });
    res.writeHead(200, headers).end(file[0] === "text/html" ? file[1] : readFileSync(file[1]));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const profile = join(dir, "profile");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium", headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForFunction(() => (window as { conformance?: unknown }).conformance !== undefined, undefined, { timeout: 120_000 });
    const r = await page.evaluate(() => (window as unknown as { conformance: { lines: string[] } }).conformance);
    const isolated = await page.evaluate(() => self.crossOriginIsolated);
    return { ...parse(r.lines.join("\n")), isolated };
  } finally {
    await context.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The browser example: its page, the Web Worker and the kernels, served from 127.0.0.1 and run in Chromium. */
export async function runBrowserExample(screenshot?: string): Promise<{ points?: { kvHeads: number; context: number; ms: number }[]; error?: string }> {
  const { chromium } = await import("playwright-core");
  const dir = mkdtempSync(join(tmpdir(), "gqa-example-"));
  await bundle(join(root, "examples/browser/main.ts"), join(dir, "main.js"));
  await bundle(join(root, "examples/browser/worker.ts"), join(dir, "worker.js"));
  const files: Record<string, [string, string]> = {
    "/": ["text/html", join(root, "examples/browser/index.html")],
    "/main.js": ["text/javascript", join(dir, "main.js")],
    "/worker.js": ["text/javascript", join(dir, "worker.js")],
    "/build/gqa-relaxed.wasm": ["application/wasm", join(root, "build/gqa-relaxed.wasm")],
    "/build/gqa-simd.wasm": ["application/wasm", join(root, "build/gqa-simd.wasm")],
  };
  const server = createServer((req, res) => {
    const file = files[new URL(req.url ?? "/", "http://x").pathname];
    if (!file) { res.writeHead(404).end(); return; }
    res.writeHead(200, { "content-type": file[0] }).end(readFileSync(file[1]));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const context = await chromium.launchPersistentContext(join(dir, "profile"), {
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium", headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForFunction(() => (window as { exampleResult?: unknown }).exampleResult !== undefined, undefined, { timeout: 150_000 });
    if (screenshot) await page.screenshot({ path: screenshot });
    return await page.evaluate(() => (window as unknown as { exampleResult: { points?: { kvHeads: number; context: number; ms: number }[]; error?: string } }).exampleResult);
  } finally {
    await context.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
