import { WasmOutOfMemoryError } from "../errors.ts";

export const WASM_PAGE_BYTES = 65536;
/** wasm32 addresses 4 GiB at most. */
export const WASM32_MAX_BYTES = 65536 * WASM_PAGE_BYTES;

/**
 * The WebAssembly.Memory the host owns, and the one place typed-array views are derived:
 * `memory.grow` detaches every old view, so callers read `f32` / `u8` each time instead of
 * keeping a view.
 */
export class LinearMemory {
  readonly memory: WebAssembly.Memory;
  /** The most bytes this memory may grow to. */
  readonly limitBytes: number;
  private viewBuffer: ArrayBufferLike | null = null;
  private f32View = new Float32Array(0);
  private u8View = new Uint8Array(0);
  private i32View = new Int32Array(0);

  constructor(options: { initialBytes: number; maxBytes?: number; shared?: boolean }) {
    const limit = Math.min(options.maxBytes ?? WASM32_MAX_BYTES, WASM32_MAX_BYTES);
    const maximum = Math.floor(limit / WASM_PAGE_BYTES);
    const initial = Math.min(Math.ceil(options.initialBytes / WASM_PAGE_BYTES), maximum);
    if (maximum < 1) throw new RangeError(`createRuntime: maxMemoryBytes (${options.maxBytes}) is below one wasm page (65536 bytes)`);
    this.limitBytes = maximum * WASM_PAGE_BYTES;
    // Shared memory (threads) is what the threaded kernel builds import.
    this.memory = new WebAssembly.Memory({ initial, maximum, shared: options.shared ?? false } as WebAssembly.MemoryDescriptor);
  }

  get byteLength(): number { return this.memory.buffer.byteLength; }

  get f32(): Float32Array { this.refreshViews(); return this.f32View; }
  get u8(): Uint8Array { this.refreshViews(); return this.u8View; }
  get i32(): Int32Array { this.refreshViews(); return this.i32View; }

  /** Grows the memory so that it is at least `bytes` long. Throws WasmOutOfMemoryError, changing nothing. */
  ensure(bytes: number, requestedBytes: number): void {
    const have = this.byteLength;
    if (bytes <= have) return;
    const pages = Math.ceil((bytes - have) / WASM_PAGE_BYTES);
    const fail = (why: string) => new WasmOutOfMemoryError(
      `wasm memory cannot grow to ${mib(have + pages * WASM_PAGE_BYTES)} for a ${mib(requestedBytes)} allocation: ${why}`,
      requestedBytes, have, this.limitBytes);
    if (have + pages * WASM_PAGE_BYTES > this.limitBytes) throw fail(`the limit is ${mib(this.limitBytes)}`);
    try {
      this.memory.grow(pages);
    } catch (e) {
      throw fail(`the engine refused (${(e as Error).message})`);
    }
  }

  private refreshViews(): void {
    const buffer = this.memory.buffer;
    if (buffer === this.viewBuffer) return;
    this.viewBuffer = buffer;
    this.f32View = new Float32Array(buffer);
    this.u8View = new Uint8Array(buffer);
    this.i32View = new Int32Array(buffer);
  }
}

export function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(bytes < 1048576 ? 3 : 1)} MiB`;
}
