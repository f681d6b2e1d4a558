// Where a model's files come from: a folder on disk (Node, Deno, Bun), files already in memory
// (ArrayBuffers, bytes, strings, fetch Responses, Blobs / Files: a browser or a Worker), or a
// base URL fetched file by file. The loader sees one interface and never which host it runs on.
import { ModelConfigError } from "./config.ts";
import { importNodeBuiltin } from "../runtime/node-builtins.ts";

/** One file given in memory: bytes, text, a fetch Response still to be read, or a Blob / File (a file picker's). */
export type ModelFileValue = ArrayBuffer | ArrayBufferView | string | Response | Blob | ReadableStream<Uint8Array> | { stream: ReadableStream<Uint8Array>; size: number };

/**
 * A model: a folder path or file: URL, an http(s) URL of the folder (each file is fetched from
 * it), or the files by name ({ "config.json": ..., "model.safetensors": ..., ... }).
 */
export type ModelSource = string | URL | Record<string, ModelFileValue> | Map<string, ModelFileValue>;

/** A file read front to back: its size, and its bytes chunk by chunk. */
export interface FileStream { size: number; chunks: AsyncIterator<Uint8Array> }

/** Chunks of a file read from disk or memory, so that progress moves and no read is huge. */
const CHUNK_BYTES = 8 << 20;

export interface ModelFiles {
  /** Where the files are, for messages. */
  readonly location: string;
  /** The file's text, or undefined when there is no such file. */
  text(name: string): Promise<string | undefined>;
  /** The first `length` bytes (the safetensors header) and the file's size, reading no more than needed. */
  head(name: string, length: number): Promise<{ bytes: Uint8Array; size: number }>;
  /** The whole file; `progress` hears the bytes read so far. */
  bytes(name: string, progress?: (readBytes: number) => void): Promise<Uint8Array>;
  /**
   * The file as a stream of chunks, with its size, read once from the start: how a GGUF model
   * goes into wasm memory without a whole copy of the file in JS.
   */
  open(name: string): Promise<FileStream>;
  /** A path for messages about one file. */
  describe(name: string): string;
}

/**
 * A name that can only mean a file directly inside the model's folder: no separators, no "." or
 * "..", no URL scheme or NUL. Names of shards come from the folder's own (untrusted) index.
 */
export function isPlainFileName(name: string): boolean {
  return name.length > 0 && name.length <= 255 && name !== "." && name !== ".." && !/[/\\:\0]/.test(name);
}

function checkName(files: ModelFiles, name: string): void {
  if (!isPlainFileName(name)) throw new ModelConfigError(`${files.location}: ${JSON.stringify(name)} is not a plain file name in the model's folder`);
}

/**
 * A GGUF model source: a path or URL ending in .gguf, or files in memory holding a .gguf (and no
 * config.json). The files are those of its folder; `name` is the file (or its first split).
 */
export function ggufTarget(source: ModelSource): { files: ModelFiles; name: string } | undefined {
  const isGGUF = (n: string) => /\.gguf$/i.test(n);
  if (typeof source === "string" || source instanceof URL) {
    const text = source instanceof URL ? source.href : source;
    if (!isGGUF(text.replace(/[?#].*$/, ""))) return undefined;
    if (source instanceof URL && source.protocol === "file:") return ggufTarget(decodeURIComponent(source.pathname));
    if (/^https?:\/\//.test(text)) {
      const url = new URL(text);
      const name = decodeURIComponent(url.pathname.slice(url.pathname.lastIndexOf("/") + 1));
      return { files: new UrlFiles(new URL(".", url)), name };
    }
    const cut = text.lastIndexOf("/");
    return { files: new FolderFiles(cut < 0 ? "." : text.slice(0, cut) || "/"), name: text.slice(cut + 1) };
  }
  if (source === null || typeof source !== "object") return undefined;
  const names = source instanceof Map ? [...source.keys()] : Object.keys(source);
  if (names.includes("config.json")) return undefined;
  const ggufs = names.filter(isGGUF).sort();
  if (ggufs.length === 0) return undefined;
  return { files: openModelFiles(source), name: ggufs[0]! };
}

export function openModelFiles(source: ModelSource): ModelFiles {
  if (source instanceof Map) return new MemoryFiles(source);
  if (source instanceof URL) {
    if (source.protocol === "file:") return new FolderFiles(decodeURIComponent(source.pathname));
    return new UrlFiles(source);
  }
  if (typeof source === "string") return /^https?:\/\//.test(source) ? new UrlFiles(new URL(source)) : new FolderFiles(source);
  if (source !== null && typeof source === "object") return new MemoryFiles(new Map(Object.entries(source)));
  throw new TypeError(`loadModel: expected a folder path, a URL or the files by name, got ${source === null ? "null" : typeof source}`);
}

/** The largest config / tokenizer / template file read (tokenizer.json files reach ~35 MB). */
const MAX_TEXT_BYTES = 128 << 20;

type Fs = typeof import("node:fs/promises");
type Path = typeof import("node:path");

/** Files in a folder on disk, read through Node's fs (Node, Deno and Bun all provide it). */
class FolderFiles implements ModelFiles {
  private modules?: Promise<{ fs: Fs; path: Path }>;
  constructor(readonly location: string) {}

  private async node(): Promise<{ fs: Fs; path: Path }> {
    this.modules ??= (async () => {
      const [fs, path] = await Promise.all([importNodeBuiltin<Fs>("fs/promises"), importNodeBuiltin<Path>("path")]);
      const stat = await fs.stat(this.location).catch(() => undefined);
      if (!stat) throw new ModelConfigError(`${this.location}: not a model folder (no such directory)`);
      if (!stat.isDirectory()) throw new ModelConfigError(`${this.location}: not a model folder (it is a file; give the folder holding config.json and the safetensors)`);
      return { fs, path };
    })();
    return this.modules;
  }

  describe(name: string): string { return `${this.location.replace(/\/+$/, "")}/${name}`; }

  async text(name: string): Promise<string | undefined> {
    const handle = await this.open_(name, true);
    if (!handle) return undefined;
    try {
      const size = (await handle.stat()).size;
      if (size > MAX_TEXT_BYTES) throw new ModelConfigError(`${this.describe(name)}: ${size} bytes, more than the ${MAX_TEXT_BYTES} a JSON or template file of a model may be`);
      return new TextDecoder().decode(await this.readAll(handle, name));
    } finally {
      await handle.close();
    }
  }

  async head(name: string, length: number): Promise<{ bytes: Uint8Array; size: number }> {
    const handle = (await this.open_(name))!;
    try {
      const size = (await handle.stat()).size;
      const bytes = new Uint8Array(Math.min(length, size));
      await handle.read(bytes, 0, bytes.length, 0);
      return { bytes, size };
    } finally {
      await handle.close();
    }
  }

  async bytes(name: string, progress?: (readBytes: number) => void): Promise<Uint8Array> {
    const handle = (await this.open_(name))!;
    try {
      return await this.readAll(handle, name, progress);
    } finally {
      await handle.close();
    }
  }

  async open(name: string): Promise<FileStream> {
    const handle = (await this.open_(name))!;
    const size = (await handle.stat()).size;
    const where = this.describe(name);
    async function* read(): AsyncGenerator<Uint8Array> {
      try {
        for (let at = 0; at < size;) {
          const chunk = new Uint8Array(Math.min(CHUNK_BYTES, size - at));
          const { bytesRead } = await handle.read(chunk, 0, chunk.length, at);
          if (bytesRead === 0) throw new ModelConfigError(`${where}: the file ended after ${at} of ${size} bytes`);
          at += bytesRead;
          yield chunk.subarray(0, bytesRead);
        }
      } finally { await handle.close(); }
    }
    return { size, chunks: read() };
  }

  private async readAll(handle: import("node:fs/promises").FileHandle, name: string, progress?: (readBytes: number) => void): Promise<Uint8Array> {
    const size = (await handle.stat()).size;
    const out = new Uint8Array(size);
    // In chunks, so that a progress bar moves while a multi-gigabyte shard is read.
    for (let at = 0; at < size;) {
      const { bytesRead } = await handle.read(out, at, Math.min(CHUNK_BYTES, size - at), at);
      if (bytesRead === 0) throw new ModelConfigError(`${this.describe(name)}: the file ended after ${at} of ${size} bytes`);
      at += bytesRead;
      progress?.(at);
    }
    return out;
  }

  /**
   * Opens a plain file name of the folder for reading; regular files only (symbolic links to
   * them are fine, as in the Hugging Face cache). Non-blocking, so a FIFO cannot hang the open;
   * it is then refused like a directory or a device. `optional`: undefined when it does not exist.
   */
  private async open_(name: string, optional = false) {
    checkName(this, name);
    const { fs, path } = await this.node();
    const { constants } = await importNodeBuiltin<typeof import("node:fs")>("fs");
    const handle = await fs.open(path.join(this.location, name), constants.O_RDONLY | (constants.O_NONBLOCK ?? 0)).catch((e: NodeJS.ErrnoException) => {
      if (optional && e.code === "ENOENT") return undefined;
      throw new ModelConfigError(`${this.describe(name)}: cannot open (${e.code === "ENOENT" ? "no such file" : e.code ?? e.message})`);
    });
    if (!handle) return undefined;
    const stat = await handle.stat();
    if (!stat.isFile()) {
      await handle.close();
      throw new ModelConfigError(`${this.describe(name)}: not a regular file (${stat.isDirectory() ? "a directory" : stat.isFIFO() ? "a FIFO" : "a device or socket"})`);
    }
    return handle;
  }
}

/** Files handed over in memory; Responses are read once, when first needed. */
class MemoryFiles implements ModelFiles {
  readonly location = "(files in memory)";
  private readonly read = new Map<string, Promise<Uint8Array>>();
  constructor(private readonly files: Map<string, ModelFileValue>) {}

  describe(name: string): string { return name; }

  async text(name: string): Promise<string | undefined> {
    const value = this.files.get(name);
    if (value === undefined) return undefined;
    if (typeof value === "string") return value;
    return new TextDecoder().decode(await this.bytes(name));
  }

  async head(name: string, length: number): Promise<{ bytes: Uint8Array; size: number }> {
    // A Blob (a File the user picked) is sliced: a multi-gigabyte shard is not read for its header.
    const value = this.files.get(name);
    if (!this.read.has(name) && typeof Blob !== "undefined" && value instanceof Blob) return { bytes: new Uint8Array(await value.slice(0, length).arrayBuffer()), size: value.size };
    const all = await this.bytes(name);
    return { bytes: all.subarray(0, length), size: all.length };
  }

  bytes(name: string, progress?: (readBytes: number) => void): Promise<Uint8Array> {
    let p = this.read.get(name);
    if (!p) {
      p = toBytes(this.value(name), name, progress);
      this.read.set(name, p);
    }
    return p;
  }

  async open(name: string): Promise<FileStream> {
    if (this.read.has(name)) return chunksOf(await this.read.get(name)!);
    const value = this.value(name);
    if (value instanceof ReadableStream || isSizedStream(value)) {
      // A stream is read once: it is handed over, not kept.
      this.files.delete(name);
      return value instanceof ReadableStream ? streamChunks(value, NaN, name) : streamChunks(value.stream, value.size, name);
    }
    if (typeof Response !== "undefined" && value instanceof Response) {
      if (!value.ok) throw new ModelConfigError(`${name}: HTTP ${value.status} ${value.statusText}`);
      const size = Number(value.headers.get("content-length") ?? NaN);
      // Without a length (a chunked or compressed response) it can only be read whole first.
      if (!value.body || !Number.isSafeInteger(size)) return chunksOf(await this.bytes(name));
      this.files.delete(name);
      return streamChunks(value.body, size, name);
    }
    if (typeof Blob !== "undefined" && value instanceof Blob) return streamChunks(value.stream(), value.size, name);
    return chunksOf(await this.bytes(name));
  }

  private value(name: string): ModelFileValue {
    const value = this.files.get(name);
    if (value === undefined) throw new ModelConfigError(`${name}: not among the files given (${[...this.files.keys()].join(", ")})`);
    return value;
  }
}

function isSizedStream(v: unknown): v is { stream: ReadableStream<Uint8Array>; size: number } {
  return typeof v === "object" && v !== null && (v as { stream?: unknown }).stream instanceof ReadableStream && typeof (v as { size?: unknown }).size === "number";
}

/** Bytes already in memory as a FileStream, in CHUNK_BYTES pieces. */
function chunksOf(bytes: Uint8Array): FileStream {
  async function* each(): AsyncGenerator<Uint8Array> { for (let at = 0; at < bytes.length; at += CHUNK_BYTES) yield bytes.subarray(at, at + CHUNK_BYTES); }
  return { size: bytes.length, chunks: each() };
}

/** A byte stream of a known size as a FileStream; it must deliver exactly that many bytes. */
function streamChunks(body: ReadableStream<Uint8Array>, size: number, name: string): FileStream {
  if (!Number.isSafeInteger(size) || size < 0) throw new ModelConfigError(`${name}: a streamed file needs its size (a content-length, or { stream, size })`);
  const reader = body.getReader();
  async function* each(): AsyncGenerator<Uint8Array> {
    let at = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        at += value.length;
        if (at > size) throw new ModelConfigError(`${name}: more bytes than the ${size} announced`);
        yield value;
      }
      if (at < size) throw new ModelConfigError(`${name}: the stream ended after ${at} of ${size} bytes`);
    } finally { reader.releaseLock(); }
  }
  return { size, chunks: each() };
}

/** A folder served over http(s): each file fetched once from base/name. */
class UrlFiles implements ModelFiles {
  readonly location: string;
  private readonly read = new Map<string, Promise<Uint8Array | undefined>>();
  constructor(private readonly base: URL) {
    this.base = new URL(base.href.endsWith("/") ? base.href : `${base.href}/`);
    this.location = this.base.href;
  }

  describe(name: string): string { return new URL(name, this.base).href; }

  private fetchFile(name: string, progress?: (readBytes: number) => void): Promise<Uint8Array | undefined> {
    checkName(this, name);
    let p = this.read.get(name);
    if (!p) {
      p = (async () => {
        const url = this.describe(name);
        const res = await fetch(url).catch((e: Error) => { throw new ModelConfigError(`${url}: fetch failed (${e.message})`); });
        if (res.status === 404) return undefined;
        if (!res.ok) throw new ModelConfigError(`${url}: HTTP ${res.status} ${res.statusText}`);
        return toBytes(res, url, progress);
      })();
      this.read.set(name, p);
    }
    return p;
  }

  async text(name: string): Promise<string | undefined> {
    const b = await this.fetchFile(name);
    return b && new TextDecoder().decode(b);
  }

  /**
   * The first bytes by a Range request (a shard is not fetched whole for its header); a server
   * that ignores ranges sends the file, of which the first bytes are read and the rest cancelled.
   * Without a size to go by (no Content-Range or content-length), the file is fetched whole.
   */
  async head(name: string, length: number): Promise<{ bytes: Uint8Array; size: number }> {
    checkName(this, name);
    if (!this.read.has(name) && length > 0) {
      const url = this.describe(name);
      const res = await fetch(url, { headers: { range: `bytes=0-${length - 1}` } }).catch((e: Error) => { throw new ModelConfigError(`${url}: fetch failed (${e.message})`); });
      if (res.status === 404) throw new ModelConfigError(`${url}: HTTP 404 Not Found`);
      const total = res.status === 206 ? Number(/\/(\d+)$/.exec(res.headers.get("content-range") ?? "")?.[1] ?? NaN) : res.status === 200 ? Number(res.headers.get("content-length") ?? NaN) : NaN;
      if ((res.status === 206 || res.status === 200) && res.body && Number.isSafeInteger(total)) {
        const reader = res.body.getReader(), bytes = new Uint8Array(Math.min(length, total));
        let at = 0;
        try {
          while (at < bytes.length) {
            const { done, value } = await reader.read();
            if (done) break;
            const n = Math.min(value.length, bytes.length - at);
            bytes.set(value.subarray(0, n), at);
            at += n;
          }
        } finally { await reader.cancel().catch(() => undefined); }
        if (at === bytes.length) return { bytes, size: total };
      } else await res.body?.cancel().catch(() => undefined);
    }
    const all = await this.bytes(name);
    return { bytes: all.subarray(0, length), size: all.length };
  }

  async bytes(name: string, progress?: (readBytes: number) => void): Promise<Uint8Array> {
    const b = await this.fetchFile(name, progress);
    if (!b) throw new ModelConfigError(`${this.describe(name)}: HTTP 404 Not Found`);
    return b;
  }

  async open(name: string): Promise<FileStream> {
    checkName(this, name);
    if (this.read.has(name)) return chunksOf(await this.bytes(name));
    const url = this.describe(name);
    const res = await fetch(url).catch((e: Error) => { throw new ModelConfigError(`${url}: fetch failed (${e.message})`); });
    if (!res.ok) throw new ModelConfigError(`${url}: HTTP ${res.status} ${res.statusText}`);
    const size = Number(res.headers.get("content-length") ?? NaN);
    if (!res.body || !Number.isSafeInteger(size)) return chunksOf(await toBytes(res, url));
    return streamChunks(res.body, size, url);
  }
}

async function toBytes(value: ModelFileValue, name: string, progress?: (readBytes: number) => void): Promise<Uint8Array> {
  if (typeof value === "string") return new TextEncoder().encode(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (typeof Blob !== "undefined" && value instanceof Blob) return readStream(value.stream(), value.size, progress);
  if (value instanceof ReadableStream || isSizedStream(value)) {
    const { size, chunks } = value instanceof ReadableStream ? streamChunks(value, NaN, name) : streamChunks(value.stream, value.size, name);
    const out = new Uint8Array(size);
    let at = 0;
    for (let r = await chunks.next(); !r.done; r = await chunks.next()) { out.set(r.value, at); at += r.value.length; progress?.(at); }
    return out;
  }
  if (typeof Response !== "undefined" && value instanceof Response) {
    if (!value.ok) throw new ModelConfigError(`${name}: HTTP ${value.status} ${value.statusText}`);
    const total = Number(value.headers.get("content-length") ?? NaN);
    if (!value.body || !Number.isFinite(total)) {
      const b = new Uint8Array(await value.arrayBuffer());
      progress?.(b.length);
      return b;
    }
    return readStream(value.body, total, progress);
  }
  throw new TypeError(`${name}: expected an ArrayBuffer, bytes, a string, a Response or a Blob, got ${Object.prototype.toString.call(value)}`);
}

/** Reads a byte stream into one buffer of the announced size (grown if it lied), reporting as it arrives. */
async function readStream(body: ReadableStream<Uint8Array>, total: number, progress?: (readBytes: number) => void): Promise<Uint8Array> {
  let out = new Uint8Array(total), at = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value: chunk } = await reader.read();
    if (done) break;
    if (at + chunk.length > out.length) { const grown = new Uint8Array(Math.max(out.length * 2, at + chunk.length)); grown.set(out.subarray(0, at)); out = grown; }
    out.set(chunk, at);
    at += chunk.length;
    progress?.(at);
  }
  return out.subarray(0, at);
}
