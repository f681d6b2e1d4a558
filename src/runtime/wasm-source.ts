import { WasmFeatureError } from "../errors.ts";
import { importNodeBuiltin } from "./node-builtins.ts";

/** The two kernel builds, compiled from the same source (see asconfig.json). */
export type KernelBuild = "relaxed" | "simd";

/** Where the kernels come from: a compiled Module (Cloudflare Workers), bytes, or a URL/path. */
export type WasmSource = WebAssembly.Module | ArrayBuffer | ArrayBufferView | URL | string;

/** The packaged .wasm of a build, located relative to this module (src/ and dist/ alike). */
export function defaultKernelUrl(build: KernelBuild, threads = false): URL {
  return new URL(`../../build/gqa-${build}${threads ? "-threads" : ""}.wasm`, import.meta.url);
}

async function readBytes(url: URL): Promise<Uint8Array<ArrayBuffer>> {
  if (url.protocol === "file:") {
    const { readFile } = await importNodeBuiltin<typeof import("node:fs/promises")>("fs/promises");
    try {
      return new Uint8Array(await readFile(url));
    } catch (e) {
      throw new Error(`createRuntime: cannot read ${url.pathname} (${(e as Error).message}); run \`npm run build\` to compile the kernels`);
    }
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`createRuntime: fetching ${url.href} failed: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function toBytes(source: ArrayBuffer | ArrayBufferView): Uint8Array<ArrayBuffer> {
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  // A copy: the view may sit on a SharedArrayBuffer, which compile() does not take.
  return new Uint8Array(source.buffer, source.byteOffset, source.byteLength).slice();
}

/**
 * Compiles the kernels. With no source it picks the best build this engine accepts, by
 * validating the real bytes: relaxed SIMD (FMA) first, then plain SIMD. `prefer` forces one.
 */
export async function compileKernels(source?: WasmSource, prefer?: KernelBuild, threads = false): Promise<WebAssembly.Module> {
  if (source instanceof WebAssembly.Module) return source;
  if (source !== undefined) {
    const bytes = source instanceof ArrayBuffer || ArrayBuffer.isView(source)
      ? toBytes(source)
      : await readBytes(typeof source === "string" ? toUrl(source) : source);
    if (!WebAssembly.validate(bytes)) {
      throw new WasmFeatureError("createRuntime: the given wasm bytes do not validate on this engine (corrupt, or it lacks SIMD / relaxed SIMD)");
    }
    return WebAssembly.compile(bytes);
  }
  const order: KernelBuild[] = prefer ? [prefer] : ["relaxed", "simd"];
  for (const build of order) {
    const bytes = await readBytes(defaultKernelUrl(build, threads));
    if (WebAssembly.validate(bytes)) return WebAssembly.compile(bytes);
  }
  throw new WasmFeatureError(prefer === "relaxed"
    ? "createRuntime: this engine does not accept relaxed SIMD (on Node 20 start node with --experimental-wasm-relaxed-simd)"
    : "createRuntime: this JavaScript engine lacks WebAssembly SIMD (fixed-width 128-bit), which gqa-wasm needs");
}

function toUrl(path: string): URL {
  if (/^[a-z][a-z0-9+.-]*:/i.test(path) && !/^[a-z]:[\\/]/i.test(path)) return new URL(path);
  // A filesystem path (Node, Deno, Bun).
  const abs = path.startsWith("/") ? path : `${globalThis.process?.cwd?.() ?? ""}/${path}`;
  return new URL(`file://${abs}`);
}
