import { LinearMemory } from "../memory/linear-memory.ts";
import { PagePool } from "../memory/page-pool.ts";
import { PersistentArena } from "../memory/persistent-arena.ts";
import { ScratchArena } from "../memory/scratch-arena.ts";
import { WasmBuffer } from "../memory/wasm-buffer.ts";
import { attentionArrays, attentionShape, type AttentionArgs, type AttentionShape } from "../ops/attention.ts";
import { linearShape, type LinearArgs, type LinearShape } from "../ops/linear.ts";
import { describe, float32Array, positiveInt } from "../ops/validate.ts";
import { kernelExportsOf, type KernelExports } from "./kernel-exports.ts";
import { compileKernels, type KernelBuild, type WasmSource } from "./wasm-source.ts";

export interface RuntimeOptions {
  /** The kernels: a compiled WebAssembly.Module (required on Cloudflare Workers), bytes, or a URL/path. */
  wasm?: WasmSource;
  /** Force a kernel build instead of picking the best one the engine validates. */
  build?: KernelBuild;
  /** Initial size of linear memory (default 4 MiB). */
  initialMemoryBytes?: number;
  /** Linear memory never grows past this; allocations beyond it throw WasmOutOfMemoryError. */
  maxMemoryBytes?: number;
}

/** Arguments of rt.attentionInto: every tensor already in wasm memory, no copies. */
export interface ResidentAttentionArgs extends Omit<AttentionArgs, "q" | "k" | "v"> {
  q: WasmBuffer;
  k: WasmBuffer;
  v: WasmBuffer;
  /** [seqQ, numHeads, headDim]; must not overlap q, k or v. */
  out: WasmBuffer;
}

/** Arguments of rt.linearInto: every tensor already in wasm memory, no copies. */
export interface ResidentLinearArgs extends Omit<LinearArgs, "x" | "weight" | "bias"> {
  x: WasmBuffer;
  weight: WasmBuffer;
  bias?: WasmBuffer;
  /** [rows, outFeatures]; must not overlap x. */
  out: WasmBuffer;
}

export interface RuntimeStats {
  build: KernelBuild;
  memoryBytes: number;
  memoryLimitBytes: number;
  persistentLiveBytes: number;
  persistentBlocks: number;
  scratchReservedBytes: number;
}

/**
 * One instance of the kernels on a WebAssembly.Memory the host owns, with its arenas:
 * persistent (resident tensors, weights, KV page slabs), scratch (reset after every call) and
 * page pools for KV caches. Calls are synchronous on the calling thread.
 */
export class Runtime {
  readonly build: KernelBuild;
  readonly memory: LinearMemory;
  readonly persistent: PersistentArena;
  readonly scratch: ScratchArena;
  /** The raw kernels (pointers and sizes). */
  readonly kernels: KernelExports;

  constructor(module: WebAssembly.Module, options: RuntimeOptions = {}) {
    this.memory = new LinearMemory({ initialBytes: options.initialMemoryBytes ?? 4 << 20, maxBytes: options.maxMemoryBytes });
    const instance = new WebAssembly.Instance(module, { env: { memory: this.memory.memory } });
    this.kernels = kernelExportsOf(instance);
    this.build = (this.kernels.kernel_features() & 1) !== 0 ? "relaxed" : "simd";
    this.persistent = new PersistentArena(this.memory, this.kernels.heap_base());
    this.scratch = new ScratchArena(this.persistent);
  }

  /** A zeroed float32 buffer of `length` elements in wasm memory. */
  alloc(length: number): WasmBuffer {
    positiveInt("alloc", "length", length);
    const ptr = this.persistent.alloc(length * 4);
    this.memory.u8.fill(0, ptr, ptr + length * 4);
    return new WasmBuffer(this.memory, this.persistent, ptr, length);
  }

  /** Copies `data` into a new buffer in wasm memory. */
  upload(data: Float32Array): WasmBuffer {
    float32Array("upload", "data", data);
    const ptr = this.persistent.alloc(data.length * 4);
    const buffer = new WasmBuffer(this.memory, this.persistent, ptr, data.length);
    if (data.length > 0) buffer.set(data);
    return buffer;
  }

  /** A pool of fixed-size pages (the KV cache's storage). */
  createPagePool(pageBytes: number, maxPages?: number): PagePool {
    return new PagePool(this.persistent, pageBytes, maxPages);
  }

  /**
   * Grouped-query attention on arrays: out[seqQ, numHeads, headDim], computed synchronously.
   * Query head h reads KV head floor(h / (numHeads / numKvHeads)).
   */
  attention(args: AttentionArgs): Float32Array {
    const { q, k, v } = attentionArrays("attention", args);
    const shape = attentionShape("attention", args, q.length, k.length, v.length);
    return this.withScratch(() => {
      const qPtr = this.scratch.alloc(q.length * 4);
      const kPtr = this.scratch.alloc(k.length * 4);
      const vPtr = this.scratch.alloc(v.length * 4);
      const outPtr = this.scratch.alloc(q.length * 4);
      const state = this.scratch.alloc(this.kernels.attention_scratch_bytes(shape.numHeads, shape.numKvHeads));
      const heap = this.memory.f32;
      heap.set(q, qPtr >>> 2);
      heap.set(k, kPtr >>> 2);
      heap.set(v, vPtr >>> 2);
      this.runAttention(shape, qPtr, kPtr, vPtr, outPtr, state);
      return this.memory.f32.slice(outPtr >>> 2, (outPtr >>> 2) + q.length);
    });
  }

  /** Grouped-query attention on resident buffers: no copies, the result lands in `out`. */
  attentionInto(args: ResidentAttentionArgs): void {
    const op = "attentionInto";
    const q = residentBuffer(op, "q", args.q), k = residentBuffer(op, "k", args.k);
    const v = residentBuffer(op, "v", args.v), out = residentBuffer(op, "out", args.out);
    const shape = attentionShape(op, args, q.length, k.length, v.length);
    if (out.length !== q.length) throw new RangeError(`${op}: out has ${out.length} elements; expected ${q.length}, like q`);
    for (const [name, other] of [["q", q], ["k", k], ["v", v]] as const) {
      if (overlaps(out, other)) throw new RangeError(`${op}: out overlaps ${name}`);
    }
    this.withScratch(() => {
      const state = this.scratch.alloc(this.kernels.attention_scratch_bytes(shape.numHeads, shape.numKvHeads));
      this.runAttention(shape, q.ptr, k.ptr, v.ptr, out.ptr, state);
    });
  }

  /** y[rows, outFeatures] = x · weightᵀ (+ bias), on arrays. */
  linear(args: LinearArgs): Float32Array {
    if (args === null || typeof args !== "object") throw new TypeError("linear: expected an arguments object");
    const x = float32Array("linear", "x", args.x);
    const weight = float32Array("linear", "weight", args.weight);
    const bias = args.bias === undefined ? undefined : float32Array("linear", "bias", args.bias);
    const shape = linearShape("linear", args.inFeatures, args.outFeatures, x.length, weight.length, bias?.length);
    return this.withScratch(() => {
      const xPtr = this.scratch.alloc(x.length * 4);
      const wPtr = this.scratch.alloc(weight.length * 4);
      const bPtr = bias ? this.scratch.alloc(bias.length * 4) : 0;
      const yPtr = this.scratch.alloc(shape.rows * shape.outFeatures * 4);
      const heap = this.memory.f32;
      heap.set(x, xPtr >>> 2);
      heap.set(weight, wPtr >>> 2);
      if (bias) heap.set(bias, bPtr >>> 2);
      this.runLinear(shape, xPtr, wPtr, bPtr, yPtr);
      return this.memory.f32.slice(yPtr >>> 2, (yPtr >>> 2) + shape.rows * shape.outFeatures);
    });
  }

  /** The linear layer on resident buffers (weights uploaded once): no copies. */
  linearInto(args: ResidentLinearArgs): void {
    const op = "linearInto";
    const x = residentBuffer(op, "x", args.x), weight = residentBuffer(op, "weight", args.weight);
    const out = residentBuffer(op, "out", args.out);
    const bias = args.bias === undefined ? undefined : residentBuffer(op, "bias", args.bias);
    const shape = linearShape(op, args.inFeatures, args.outFeatures, x.length, weight.length, bias?.length);
    if (out.length !== shape.rows * shape.outFeatures) {
      throw new RangeError(`${op}: out has ${out.length} elements; expected [rows, outFeatures] = ${shape.rows * shape.outFeatures}`);
    }
    if (overlaps(out, x)) throw new RangeError(`${op}: out overlaps x`);
    this.runLinear(shape, x.ptr, weight.ptr, bias?.ptr ?? 0, out.ptr);
  }

  stats(): RuntimeStats {
    return {
      build: this.build,
      memoryBytes: this.memory.byteLength,
      memoryLimitBytes: this.memory.limitBytes,
      persistentLiveBytes: this.persistent.liveBytes,
      persistentBlocks: this.persistent.blockCount,
      scratchReservedBytes: this.scratch.reservedBytes,
    };
  }

  private runAttention(s: AttentionShape, q: number, k: number, v: number, out: number, state: number): void {
    this.kernels.attention_f32(q, k, v, out, s.seqQ, s.seqK, s.numHeads, s.numKvHeads, s.headDim, s.scale,
      s.causal ? 1 : 0, 0, s.numKvHeads, 0, s.seqQ, state);
  }

  private runLinear(s: LinearShape, x: number, w: number, b: number, y: number): void {
    this.kernels.linear_f32(x, w, b, y, s.rows, s.outFeatures, s.inFeatures, 0, s.outFeatures);
  }

  /** Runs `body` with the scratch arena, which is reset afterwards whatever happens. */
  withScratch<T>(body: () => T): T {
    try {
      return body();
    } finally {
      this.scratch.reset();
    }
  }
}

function residentBuffer(op: string, name: string, value: unknown): WasmBuffer {
  if (!(value instanceof WasmBuffer)) throw new TypeError(`${op}: ${name} must be a WasmBuffer (rt.alloc / rt.upload), got ${describe(value)}`);
  value.check(`${op}: ${name}`);
  return value;
}

function overlaps(a: WasmBuffer, b: WasmBuffer): boolean {
  return a.ptr < b.ptr + b.byteLength && b.ptr < a.ptr + a.byteLength;
}

function isWasmSource(value: unknown): value is WasmSource {
  return value instanceof WebAssembly.Module || value instanceof ArrayBuffer || ArrayBuffer.isView(value) ||
    value instanceof URL || typeof value === "string";
}

/**
 * Loads the kernels and returns a runtime. Accepts nothing (the best packaged build this
 * engine runs), a compiled WebAssembly.Module, bytes, a URL, or RuntimeOptions.
 */
export async function createRuntime(options?: RuntimeOptions | WasmSource): Promise<Runtime> {
  const opts: RuntimeOptions = options === undefined ? {} : isWasmSource(options) ? { wasm: options } : options;
  if (typeof opts !== "object" || opts === null) throw new TypeError(`createRuntime: expected options, a WebAssembly.Module, bytes or a URL, got ${describe(options)}`);
  const module = await compileKernels(opts.wasm, opts.build);
  return new Runtime(module, opts);
}
