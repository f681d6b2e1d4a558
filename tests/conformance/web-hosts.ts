// Drivers for the hosts that are not command lines: Cloudflare workerd (through miniflare) and
// headless Chromium (through playwright-core), each served from 127.0.0.1.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundle } from "../../examples/bundle.ts";

export interface HostResult { passed: number; failed: number; text: string }

const root = fileURLToPath(new URL("../..", import.meta.url));

function parse(text: string): HostResult {
  const m = /conformance: (\d+) passed, (\d+) failed/.exec(text);
  return m ? { passed: Number(m[1]), failed: Number(m[2]), text } : { passed: 0, failed: 1, text };
}

interface WorkerOptions {
  /** Objects put into a local R2 bucket bound as MODEL first. */
  r2?: Record<string, Uint8Array>;
  /** Durable Object bindings: name -> exported class. */
  durableObjects?: Record<string, string>;
  /** A folder where Durable Object storage persists (a later Worker on the same folder finds it). */
  persistDir?: string;
}

/**
 * Serves a Worker script (bundled from `entry`) with `wasmName` from build/ in workerd; calls `fn`
 * with its URL.
 */
async function withWorker<T>(entry: string, wasmName: string, wasmFile: string, fn: (url: URL) => Promise<T>, options: WorkerOptions = {}): Promise<T> {
  const { r2, durableObjects, persistDir } = options;
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
      ...(r2 ? { r2Buckets: ["MODEL"], bindings: { MODEL_PREFIX: "model.gguf." } } : {}),
      ...(durableObjects ? { durableObjects } : {}),
      ...(persistDir ? { durableObjectsPersist: persistDir } : {}),
    });
    try {
      const url = await mf.ready;
      if (r2) {
        const bucket = await mf.getR2Bucket("MODEL");
        for (const [key, bytes] of Object.entries(r2)) await bucket.put(key, bytes);
      }
      return await fn(url);
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
  }, { durableObjects: EXAMPLE_DURABLE_OBJECTS });
}

const EXAMPLE_DURABLE_OBJECTS = { SERVER: "ModelServer" };

/**
 * The Chromium to drive: $CHROMIUM_PATH, else a system Chromium, else the one the
 * @sparticuz/chromium dev dependency ships compressed inside its npm package (unpacked into the
 * temporary folder on first use), so that `npm test` needs no browser installed by hand.
 */
export async function chromiumPath(): Promise<string> {
  const given = process.env.CHROMIUM_PATH;
  if (given) {
    if (!existsSync(given)) throw new Error(`CHROMIUM_PATH=${given} does not exist`);
    return given;
  }
  for (const path of ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) if (existsSync(path)) return path;
  const { default: packaged } = await import("@sparticuz/chromium");
  return packaged.executablePath();
}

/**
 * The Cloudflare Worker example with model shards in its R2 bucket: `fn` gets its URL. With
 * `persistDir`, its Durable Objects' storage outlives this Worker (a restart finds it).
 */
export function withWorkerExample<T>(r2: Record<string, Uint8Array>, fn: (url: URL) => Promise<T>, persistDir?: string): Promise<T> {
  return withWorker("examples/cloudflare-worker/src/index.ts", "gqa-relaxed.wasm", "gqa-relaxed.wasm", fn, { r2, durableObjects: EXAMPLE_DURABLE_OBJECTS, persistDir });
}

/** A file served by withPage: its content type, and its path (or, for HTML, its text). */
type Served = Record<string, [contentType: string, pathOrHtml: string]>;

const WASM_FILES: Served = Object.fromEntries(["relaxed", "simd", "relaxed-threads", "simd-threads"].map((b) => [
  `/build/gqa-${b}.wasm`, ["application/wasm", join(root, `build/gqa-${b}.wasm`)],
]));

/**
 * Bundles `entries` (name -> TypeScript entry) into a temporary folder, serves them with `files`
 * and the kernels from 127.0.0.1 (with COOP/COEP headers when `isolated`), opens "/" in headless
 * Chromium and returns what `fn` reads from the page.
 */
async function withPage<T>(entries: Record<string, string>, files: Served, isolated: boolean, fn: (page: import("playwright-core").Page, base: string) => Promise<T>, requests?: Map<string, number>): Promise<T> {
  const { chromium } = await import("playwright-core");
  const dir = mkdtempSync(join(tmpdir(), "gqa-chromium-"));
  const served: Served = { ...WASM_FILES, ...files };
  for (const [name, entry] of Object.entries(entries)) {
    await bundle(join(root, entry), join(dir, name));
    served[`/${name}`] = ["text/javascript", join(dir, name)];
  }
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    requests?.set(path, (requests.get(path) ?? 0) + 1);
    const file = served[path];
    if (!file) { res.writeHead(404).end(); return; }
    const headers: Record<string, string> = { "content-type": file[0] };
    if (isolated) Object.assign(headers, { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" });
    res.writeHead(200, headers).end(file[1].startsWith("<!doctype") ? file[1] : readFileSync(file[1]));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const context = await chromium.launchPersistentContext(join(dir, "profile"), {
    executablePath: await chromiumPath(), headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    return await fn(page, `http://127.0.0.1:${port}/`);
  } finally {
    await context.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The browser conformance entry in a page, with or without cross-origin isolation. */
export function runInChromium(crossOriginIsolated: boolean): Promise<HostResult & { isolated: boolean }> {
  const html = "<!doctype html><meta charset=utf-8><title>gqa-wasm conformance</title><body>running…<script type=module src=/bundle.js></script>";
  return withPage({ "bundle.js": "tests/conformance/browser-entry.ts" }, { "/": ["text/html", html] }, crossOriginIsolated, async (page) => {
    await page.waitForFunction(() => (window as { conformance?: unknown }).conformance !== undefined, undefined, { timeout: 120_000 });
    const r = await page.evaluate(() => (window as unknown as { conformance: { lines: string[] } }).conformance);
    const isolated = await page.evaluate(() => self.crossOriginIsolated);
    return { ...parse(r.lines.join("\n")), isolated };
  });
}

export interface GgufPageResult { text?: string; tokens?: number[]; shown?: string; cached?: boolean; error?: string }

/**
 * The browser example's GGUF page: loads `modelFile` by URL twice (a first visit, then a second
 * that should read Cache Storage) and once through the file picker, each generating `tokens`
 * tokens of `prompt`; also how often the server was asked for the model.
 */
export function runGgufPage(modelFile: string, prompt: string, tokens: number): Promise<{ visits: GgufPageResult[]; picked: GgufPageResult; modelRequests: number }> {
  const entries = { "gguf-main.js": "examples/browser/gguf-main.ts", "gguf-worker.js": "examples/browser/gguf-worker.ts" };
  const requests = new Map<string, number>();
  const files: Served = { "/": ["text/html", join(root, "examples/browser/gguf.html")], "/model.gguf": ["application/octet-stream", modelFile] };
  return withPage(entries, files, true, async (page, base) => {
    const wait = async () => {
      await page.waitForFunction(() => (window as { ggufResult?: unknown }).ggufResult !== undefined, undefined, { timeout: 150_000 });
      return page.evaluate(() => (window as unknown as { ggufResult: GgufPageResult }).ggufResult);
    };
    const query = `?auto=1&model=${encodeURIComponent("/model.gguf")}&prompt=${encodeURIComponent(prompt)}&tokens=${tokens}`;
    const visits: GgufPageResult[] = [];
    for (let i = 0; i < 2; i++) {
      await page.goto(`${base}${query}`);
      visits.push(await wait());
    }
    await page.goto(`${base}?prompt=${encodeURIComponent(prompt)}&tokens=${tokens}&auto=`);
    await page.setInputFiles("#file", modelFile);
    await page.waitForFunction(() => !(document.getElementById("generate") as HTMLButtonElement).disabled, undefined, { timeout: 150_000 });
    await page.click("#generate");
    const picked = await wait();
    return { visits, picked, modelRequests: requests.get("/model.gguf") ?? 0 };
  }, requests);
}

/** The browser example (page, Web Worker, kernels); optionally saves a screenshot. */
export function runBrowserExample(screenshot?: string): Promise<{ points?: { kvHeads: number; context: number; ms: number }[]; error?: string }> {
  const entries = { "main.js": "examples/browser/main.ts", "worker.js": "examples/browser/worker.ts" };
  return withPage(entries, { "/": ["text/html", join(root, "examples/browser/index.html")] }, false, async (page) => {
    await page.waitForFunction(() => (window as { exampleResult?: unknown }).exampleResult !== undefined, undefined, { timeout: 150_000 });
    if (screenshot) await page.screenshot({ path: screenshot });
    return page.evaluate(() => (window as unknown as { exampleResult: { points?: { kvHeads: number; context: number; ms: number }[]; generation?: { text: string; tokens: number[]; shown: string }; error?: string } }).exampleResult);
  });
}
