import { LinearMemory } from "../memory/linear-memory.ts";
import { PagePool } from "../memory/page-pool.ts";
import { PersistentArena } from "../memory/persistent-arena.ts";
import { ScratchArena } from "../memory/scratch-arena.ts";
import { BUFFER_DTYPES, bufferBytes, residentBuffer, WasmBuffer, type BufferDtype } from "../memory/wasm-buffer.ts";
import { isQuantDtype, quantRowBytes, type QuantDtype } from "../formats/quant.ts";
import { attentionArrays, attentionShape, type AttentionArgs, type AttentionShape } from "../ops/attention.ts";
import { linearShape, type LinearArgs, type LinearShape } from "../ops/linear.ts";
import { describe, float32Array, positiveInt } from "../ops/validate.ts";
import { ThreadPool, type Claim, type Job } from "../threads/pool.ts";
import { Program } from "./program.ts";
import { attentionSplits, columnChunks, columnSplits, type AttentionRange } from "../threads/splits.ts";
import { CODES, KERNELS, WEIGHT_FORMATS, kernelExportsOf, LINEAR_KERNELS, structBytes, writeStruct, type KernelExports } from "./kernel-exports.ts";
import { importNodeBuiltin } from "./node-builtins.ts";
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
  /**
   * Threads for the kernels (default 1). 'auto': the cores, where threads are possible
   * (worker_threads on Node, Deno and Bun; Web Workers in a cross-origin-isolated page), else 1;
   * rt.threadInfo says which and why.
   */
  threads?: "auto" | number;
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
  /** out = (out + x · weightᵀ) + bias instead of out = x · weightᵀ + bias (a residual add fused into the kernel). */
  accumulate?: boolean;
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
  /** The threads programs run on: the caller alone, or with workers (createRuntime, threads > 1). */
  private pool: ThreadPool;
  private readonly exports: Record<string, unknown>;
  /** Which thread count was chosen, and why. */
  threadInfo = "1 thread (the default)";

  constructor(module: WebAssembly.Module, options: RuntimeOptions = {}, shared = false) {
    for (const key of ["initialMemoryBytes", "maxMemoryBytes"] as const) {
      const v = options[key];
      if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v) || v <= 0)) {
        throw new RangeError(`createRuntime: ${key} must be a positive number of bytes, got ${describe(v)}`);
      }
    }
    this.memory = new LinearMemory({ initialBytes: options.initialMemoryBytes ?? 4 << 20, maxBytes: options.maxMemoryBytes, shared });
    let instance: WebAssembly.Instance;
    try {
      instance = new WebAssembly.Instance(module, { env: { memory: this.memory.memory } });
    } catch (e) {
      throw new TypeError(`createRuntime: the kernels do not link against a ${shared ? "shared" : "non-shared"} memory (${(e as Error).message}); ${shared ? "threads need a -threads build" : "pass a build without threads"}`);
    }
    this.kernels = kernelExportsOf(instance);
    this.exports = instance.exports;
    this.pool = ThreadPool.caller(this.exports);
    this.build = (this.kernels.kernel_features() & 1) !== 0 ? "relaxed" : "simd";
    this.persistent = new PersistentArena(this.memory, this.kernels.heap_base());
    this.scratch = new ScratchArena(this.persistent);
  }

  /** Threads the kernels run on. */
  get threads(): number { return this.pool.size; }

  /** @internal */
  attachPool(pool: ThreadPool, info: string): void { this.pool = pool; this.threadInfo = info; }

  /** @internal: this instance's exports, which thread 0 calls. */
  get instanceExports(): Record<string, unknown> { return this.exports; }

  /** Ends the worker threads, if any (the runtime stays usable on one thread). */
  async dispose(): Promise<void> {
    const pool = this.pool;
    if (pool.size === 1) return;
    this.pool = ThreadPool.caller(this.exports);
    this.threadInfo = "1 thread (disposed pool)";
    await pool.dispose();
  }

  /**
   * A zeroed buffer of `length` elements in wasm memory (f32 unless `dtype` says bf16, f16, or
   * q8_0 / q4_0 / q5_0 / q4_k / q6_k with rows of `rowLength`).
   */
  alloc(length: number, dtype: BufferDtype = "f32", rowLength?: number): WasmBuffer {
    positiveInt("alloc", "length", length);
    const buffer = this.newBuffer("alloc", length, dtype, rowLength);
    this.memory.u8.fill(0, buffer.ptr, buffer.ptr + buffer.byteLength);
    return buffer;
  }

  /**
   * Copies `data` into a new buffer in wasm memory; with dtype bf16 or f16 it is stored 16-bit
   * (rounded to nearest even), as weights for linearInto. A Uint16Array is taken as the raw
   * bits of a bf16 or f16 `dtype` and copied as they are (a checkpoint's 16-bit tensors).
   */
  upload(data: Float32Array | Uint16Array, dtype?: BufferDtype): WasmBuffer;
  /**
   * Block-quantized weights (rows of `rowLength`): floats are quantized as ggml does; bytes are
   * taken as the blocks themselves (a GGUF tensor's data), copied as they are.
   */
  upload(data: Float32Array | Uint8Array, dtype: QuantDtype, rowLength: number): WasmBuffer;
  upload(data: Float32Array | Uint16Array | Uint8Array, dtype: BufferDtype = "f32", rowLength?: number): WasmBuffer {
    if (isQuantDtype(dtype)) {
      positiveInt("upload", "rowLength", rowLength);
      if (data instanceof Uint8Array) {
        const rowBytes = quantRowBytes(dtype, rowLength!);
        if (data.length === 0 || data.length % rowBytes !== 0) throw new RangeError(`upload: ${data.length} bytes are not whole ${dtype} rows of ${rowLength} weights (${rowBytes} bytes each)`);
        const buffer = this.newBuffer("upload", (data.length / rowBytes) * rowLength!, dtype, rowLength);
        this.memory.u8.set(data, buffer.ptr);
        return buffer;
      }
      float32Array("upload", "data", data);
      if (data.length === 0 || data.length % rowLength! !== 0) throw new RangeError(`upload: ${data.length} floats are not whole rows of ${rowLength}`);
      return this.newBuffer("upload", data.length, dtype, rowLength).set(data);
    }
    if (data instanceof Uint8Array) throw new TypeError(`upload: bytes are taken for block-quantized dtypes only (q8_0, q4_0, q5_0, q4_k, q6_k), not ${String(dtype)}`);
    if (data instanceof Uint16Array) {
      if (dtype !== "bf16" && dtype !== "f16") throw new TypeError(`upload: a Uint16Array holds bf16 or f16 bits; pass dtype "bf16" or "f16", not ${String(dtype)}`);
      const buffer = this.newBuffer("upload", data.length, dtype);
      new Uint16Array(this.memory.memory.buffer, buffer.ptr, data.length).set(data);
      return buffer;
    }
    float32Array("upload", "data", data);
    const buffer = this.newBuffer("upload", data.length, dtype);
    if (data.length > 0) buffer.set(data);
    return buffer;
  }

  private newBuffer(op: string, length: number, dtype: BufferDtype, rowLength?: number): WasmBuffer {
    if (!BUFFER_DTYPES.includes(dtype)) throw new RangeError(`${op}: dtype must be ${BUFFER_DTYPES.join(", ")}, got ${String(dtype)}`);
    if (isQuantDtype(dtype)) {
      positiveInt(op, "rowLength", rowLength);
      if (length % rowLength! !== 0) throw new RangeError(`${op}: ${length} elements are not whole rows of ${rowLength}`);
    } else rowLength = undefined;
    const ptr = this.persistent.alloc(bufferBytes(dtype, length, rowLength));
    return new WasmBuffer(this.memory, this.persistent, ptr, length, undefined, dtype, rowLength);
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
    return this.call(() => this.prepareAttention(args));
  }

  /** attention() that awaits the worker threads instead of blocking (a browser's main thread cannot block). */
  attentionAsync(args: AttentionArgs): Promise<Float32Array> {
    return this.callAsync(() => this.prepareAttention(args));
  }

  /** Grouped-query attention on resident buffers: no copies, the result lands in `out`. */
  attentionInto(args: ResidentAttentionArgs): void {
    this.call(() => this.prepareAttentionInto(args));
  }

  /** attentionInto() that awaits the worker threads instead of blocking. */
  attentionIntoAsync(args: ResidentAttentionArgs): Promise<void> {
    return this.callAsync(() => this.prepareAttentionInto(args));
  }

  /** y[rows, outFeatures] = x · weightᵀ (+ bias), on arrays. */
  linear(args: LinearArgs): Float32Array {
    return this.call(() => this.prepareLinear(args));
  }

  /** linear() that awaits the worker threads instead of blocking. */
  linearAsync(args: LinearArgs): Promise<Float32Array> {
    return this.callAsync(() => this.prepareLinear(args));
  }

  /** The linear layer on resident buffers (weights uploaded once): no copies. */
  linearInto(args: ResidentLinearArgs): void {
    this.call(() => this.prepareLinearInto(args));
  }

  /**
   * Several independent linear layers in one call (e.g. q, k and v of one input): their jobs
   * go to the worker pool in one hand-off. Each output is what linearInto gives it alone.
   */
  linearsInto(list: readonly ResidentLinearArgs[]): void {
    this.call(() => {
      // Split by the work of all of them together: each op over every thread, thread t taking
      // range t of each (a k/v projection too small to split alone still shares the load).
      const macs = list.reduce((sum, a) => sum + (a.x as WasmBuffer).length * a.outFeatures, 0);
      const prepared = list.map((args) => this.prepareLinearInto(args, this.threadsFor(macs)));
      const outs = list.map((a) => a.out as WasmBuffer);
      outs.forEach((o, i) => list.forEach((a, j) => {
        if (i !== j && (overlaps(o, a.x as WasmBuffer) || overlaps(o, a.out as WasmBuffer))) throw new RangeError(`linearsInto: the output of call ${i} overlaps call ${j}'s ${overlaps(o, a.x as WasmBuffer) ? "input" : "output"}`);
      }));
      return { jobs: prepared.flatMap((p) => p.jobs), finish: () => undefined };
    });
  }

  /**
   * Builds a kernel program (the calls of a whole step, in phases; see Program) and runs it: one
   * hand-off to the worker pool for all of it where it fits, on one thread in order otherwise.
   * `build` adds the calls and returns how to read the result; scratch is reset afterwards.
   */
  runProgram<T>(build: (p: Program) => () => T): T {
    this.checkIdle();
    try {
      const p = this.scratchProgram();
      const finish = build(p);
      this.runRounds(p);
      return finish();
    } finally {
      this.scratch.reset();
    }
  }

  /**
   * A program to build once and run many times (runKept): a decode step of one shape, whose
   * calls change only in a few arguments from step to step (Program.variable, set). Its memory is its
   * own until dispose().
   * @internal
   */
  keepProgram(): Program {
    const owned: WasmBuffer[] = [];
    return new Program(this.threads, (bytes) => {
      const b = this.alloc(Math.max(1, Math.ceil(bytes / 4)));
      owned.push(b);
      return b.ptr;
    }, () => { for (const b of owned.splice(0)) b.free(); });
  }

  /**
   * The index of the largest value of `x` (the first of equals; a NaN never larger), computed in
   * wasm where x is a view of this runtime's memory (a model's resident logits), else undefined.
   * @internal
   */
  argmaxResident(x: Float32Array): number | undefined {
    if (x.length === 0 || x.buffer !== this.memory.memory.buffer) return undefined;
    return this.kernels.argmax_f32(x.byteOffset, x.length);
  }

  /** Runs a kept program (keepProgram), as built and updated. @internal */
  runKept(p: Program): void {
    this.checkIdle();
    this.runRounds(p);
  }

  /**
   * A linear layer's calls in a program: the threads share its columns (in a program a split
   * costs no extra hand-off); on quantized weights each quantizes x in its own scratch.
   */
  linearCalls(p: Program, args: ResidentLinearArgs): void {
    p.addPerThread(this.linearThreadJobs(args, p.threads, undefined, (t, bytes) => p.threadScratch(t, "linear", bytes)));
  }

  /**
   * A linear layer's jobs for a program of `threads` threads, job t for thread t, with the
   * scratch `scratchFor(t, bytes)` gives (kept by the caller, e.g. to reuse the jobs in later
   * programs).
   * @internal
   */
  linearThreadJobs(args: ResidentLinearArgs, threads: number, quantizedX: number | undefined, scratchFor: (t: number, bytes: number) => number): Job[] {
    const { shape, x, weight, bias, out } = this.checkLinearInto(args);
    return this.linearJobs(shape, x.ptr, weight.ptr, bias?.ptr ?? 0, out.ptr, weight.dtype, threads, args.accumulate ?? false, scratchFor, quantizedX);
  }

  /**
   * Runs a prepared call: its kernel jobs (on the pool when there is one), then its finish step;
   * the scratch arena is reset afterwards whatever happens. Used by the KV cache too.
   * @internal
   */
  call<T>(prepare: () => PreparedCall<T>): T {
    this.checkIdle();
    try {
      const c = prepare();
      this.runRounds(this.programOf(c));
      return c.finish();
    } finally {
      this.scratch.reset();
    }
  }

  /** As call(), awaiting the worker threads. */
  private async callAsync<T>(prepare: () => PreparedCall<T>): Promise<T> {
    if (this.pool.size === 1) return this.call(prepare);
    this.checkIdle();
    this.asyncInFlight = true;
    try {
      const c = prepare(), p = this.programOf(c), pool = this.pool;
      pool.resetClaims(p.claims.size);
      for (const round of p.encoded()) {
        if (round.callerOnly) pool.runOnCaller(round.lists[0]!);
        else await pool.runEncodedAsync(round.lists);
      }
      return c.finish();
    } finally {
      this.asyncInFlight = false;
      this.scratch.reset();
    }
  }

  private asyncInFlight = false;

  private checkIdle(): void {
    if (this.asyncInFlight) throw new Error("runtime busy: await the pending async call first (one call at a time)");
  }

  private prepareAttention(args: AttentionArgs): PreparedCall<Float32Array> {
    const { q, k, v } = attentionArrays("attention", args);
    const shape = attentionShape("attention", args, q.length, k.length, v.length);
    const qPtr = this.scratch.alloc(q.length * 4);
    const kPtr = this.scratch.alloc(k.length * 4);
    const vPtr = this.scratch.alloc(v.length * 4);
    const outPtr = this.scratch.alloc(q.length * 4);
    const { jobs, after } = this.attentionJobs(shape, outPtr, (r, scratch, o, stats) =>
      ({ kernel: "attention_f32", args: [this.attentionCall(shape, { q: qPtr, k: kPtr, v: vPtr, out: o }), ...r, stats, scratch] }));
    const heap = this.memory.f32;
    heap.set(q, qPtr >>> 2);
    heap.set(k, kPtr >>> 2);
    heap.set(v, vPtr >>> 2);
    return { jobs, after, finish: () => this.memory.f32.slice(outPtr >>> 2, (outPtr >>> 2) + q.length) };
  }

  private prepareAttentionInto(args: ResidentAttentionArgs): PreparedCall<void> {
    const op = "attentionInto";
    const q = residentBuffer(op, "q", args.q, this.memory, "f32"), k = residentBuffer(op, "k", args.k, this.memory, "f32");
    const v = residentBuffer(op, "v", args.v, this.memory, "f32"), out = residentBuffer(op, "out", args.out, this.memory, "f32");
    const shape = attentionShape(op, args, q.length, k.length, v.length);
    if (out.length !== q.length) throw new RangeError(`${op}: out has ${out.length} elements; expected ${q.length}, like q`);
    for (const [name, other] of [["q", q], ["k", k], ["v", v]] as const) {
      if (overlaps(out, other)) throw new RangeError(`${op}: out overlaps ${name}`);
    }
    const { jobs, after } = this.attentionJobs(shape, out.ptr, (r, scratch, o, stats) =>
      ({ kernel: "attention_f32", args: [this.attentionCall(shape, { q: q.ptr, k: k.ptr, v: v.ptr, out: o }), ...r, stats, scratch] }));
    return { jobs, after, finish: () => undefined };
  }

  private prepareLinear(args: LinearArgs): PreparedCall<Float32Array> {
    if (args === null || typeof args !== "object") throw new TypeError("linear: expected an arguments object");
    const x = float32Array("linear", "x", args.x);
    const weight = float32Array("linear", "weight", args.weight);
    const bias = args.bias === undefined ? undefined : float32Array("linear", "bias", args.bias);
    const shape = linearShape("linear", args.inFeatures, args.outFeatures, x.length, weight.length, bias?.length);
    const xPtr = this.scratch.alloc(x.length * 4);
    const wPtr = this.scratch.alloc(weight.length * 4);
    const bPtr = bias ? this.scratch.alloc(bias.length * 4) : 0;
    const yPtr = this.scratch.alloc(shape.rows * shape.outFeatures * 4);
    const heap = this.memory.f32;
    heap.set(x, xPtr >>> 2);
    heap.set(weight, wPtr >>> 2);
    if (bias) heap.set(bias, bPtr >>> 2);
    return {
      jobs: this.linearJobs(shape, xPtr, wPtr, bPtr, yPtr),
      finish: () => this.memory.f32.slice(yPtr >>> 2, (yPtr >>> 2) + shape.rows * shape.outFeatures),
    };
  }

  private prepareLinearInto(args: ResidentLinearArgs, threads?: number): PreparedCall<void> {
    const { shape, x, weight, bias, out } = this.checkLinearInto(args);
    return { jobs: this.linearJobs(shape, x.ptr, weight.ptr, bias?.ptr ?? 0, out.ptr, weight.dtype, threads, args.accumulate ?? false), finish: () => undefined };
  }

  private checkLinearInto(args: ResidentLinearArgs): { shape: LinearShape; x: WasmBuffer; weight: WasmBuffer; bias?: WasmBuffer; out: WasmBuffer } {
    const op = "linearInto";
    const x = residentBuffer(op, "x", args.x, this.memory, "f32"), weight = residentBuffer(op, "weight", args.weight, this.memory);
    const out = residentBuffer(op, "out", args.out, this.memory, "f32");
    const bias = args.bias === undefined ? undefined : residentBuffer(op, "bias", args.bias, this.memory, "f32");
    const shape = linearShape(op, args.inFeatures, args.outFeatures, x.length, weight.length, bias?.length);
    if (out.length !== shape.rows * shape.outFeatures) {
      throw new RangeError(`${op}: out has ${out.length} elements; expected [rows, outFeatures] = ${shape.rows * shape.outFeatures}`);
    }
    if (overlaps(out, x)) throw new RangeError(`${op}: out overlaps x`);
    if (weight.rowLength !== undefined && weight.rowLength !== shape.inFeatures) {
      throw new RangeError(`${op}: the ${weight.dtype} weight has rows of ${weight.rowLength}; inFeatures is ${shape.inFeatures}`);
    }
    return { shape, x, weight, bias, out };
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

  /**
   * An attention problem cut into per-thread ranges (KV heads or key ranges for decode, query
   * positions for prefill), job t with scratch `scratchFor(t, bytes)` (default: its own, from
   * `alloc`, itself by default the runtime's scratch). Key ranges (split-KV) write partial outputs
   * and statistics to memory from `alloc`, and `after` combines them into `out`. The job
   * builder gets the range, its scratch, where to write, and the statistics pointer (0: none).
   * @internal
   */
  attentionJobs(s: AttentionShape, out: number, job: (range: AttentionRange, scratch: number, out: number, stats: number) => Job, threads = this.threads,
    scratchFor?: (t: number, bytes: number) => number, alloc = (bytes: number) => this.scratch.alloc(bytes)): { jobs: Job[]; after?: Job[] } {
    const { ranges, splitKv } = attentionSplits(s.seqQ, s.seqK, s.numKvHeads, s.causal, threads);
    const bytes = this.kernels.attention_scratch_bytes(s.numHeads, s.numKvHeads, s.headDim);
    const scratch = scratchFor ?? ((_t: number, n: number) => alloc(n));
    if (!splitKv) return { jobs: ranges.map((r, t) => job(r, scratch(t, bytes), out, 0)) };
    const rows = s.seqQ * s.numHeads, parts = ranges.length;
    const partials = alloc(parts * rows * s.headDim * 4);
    const stats = alloc(parts * rows * 8);
    const jobs = ranges.map((r, i) => job(r, scratch(i, bytes), partials + i * rows * s.headDim * 4, stats + i * rows * 8));
    return { jobs, after: [{ kernel: "attention_combine", args: [partials, stats, parts, rows, s.headDim, out, 0, rows] }] };
  }

  /**
   * An AttentionCall struct (abi) for `shape` in memory from `alloc` (default: scratch): `where` gives q and out, and k and v
   * (contiguous) or pages, pageSize and dtype (paged).
   * @internal
   */
  attentionCall(shape: AttentionShape, where: { q: number; out: number; k?: number; v?: number; pages?: number; pageSize?: number; dtype?: number },
    alloc = (bytes: number) => this.scratch.alloc(bytes)): number {
    const ptr = alloc(structBytes("AttentionCall"));
    writeStruct(this.memory, ptr, "AttentionCall", {
      q: where.q, k: where.k ?? 0, v: where.v ?? 0, out: where.out, seqQ: shape.seqQ, seqK: shape.seqK, numHeads: shape.numHeads,
      numKvHeads: shape.numKvHeads, headDim: shape.headDim, scale: shape.scale, causal: shape.causal ? 1 : 0, window: shape.slidingWindow,
      pages: where.pages ?? 0, pageSize: where.pageSize ?? 0, dtype: where.dtype ?? 0, softcap: shape.softcap,
    });
    return ptr;
  }

  /** Below ~1 MFLOP (of the call, all its ops together) a thread hand-off costs more than it saves. */
  private threadsFor(macs: number): number { return macs < 1 << 19 ? 1 : this.threads; }

  /**
   * Job t for thread t; `scratchFor(t, bytes)` gives job t's scratch (default: its own).
   * `quantizedX`: x already quantized there (quantized weights; see quantizeJobs). On several
   * threads the jobs share the output columns as a claim, chunk by chunk, except for quantized
   * weights whose calls quantize x themselves (each chunk would quantize it again): those take
   * fixed column ranges.
   */
  private linearJobs(s: LinearShape, x: number, w: number, b: number, y: number, dtype: BufferDtype = "f32", threads = this.threadsFor(s.rows * s.outFeatures * s.inFeatures),
    accumulate = false, scratchFor = (_t: number, bytes: number) => this.scratch.alloc(bytes), quantizedX?: number): Job[] {
    const kernel = LINEAR_KERNELS[dtype], sizer = (KERNELS[kernel] as { scratchBytes?: "linear_panel_scratch_bytes" | "linear_quant_scratch_bytes" }).scratchBytes;
    const quantizes = this.readsQuantizedX(dtype, s.rows);
    if (quantizedX !== undefined && !quantizes) throw new RangeError(`linear: quantized activations are for quantized weights below ${this.quantF32Rows(dtype)} rows, not ${dtype} x ${s.rows}`);
    // Each job its own scratch: quantized activations, a widened weight panel, or a packed one
    // (with quantizedX, where the kernel reads x quantized (LINEAR_X_QUANTIZED), only the packed
    // panel is written: the sizer's bytes cover it).
    const bytes = sizer ? this.kernels[sizer](s.rows, s.inFeatures) : 0;
    const flags = (accumulate ? CODES.LINEAR_ACCUMULATE : 0) | (quantizedX !== undefined ? CODES.LINEAR_X_QUANTIZED : 0);
    const job = (t: number, n0: number, n1: number, claim?: Claim): Job => ({
      kernel, args: [quantizedX ?? x, w, b, y, s.rows, s.outFeatures, s.inFeatures, n0, n1, flags, bytes > 0 ? scratchFor(t, bytes) : 0], ...(claim ? { claim } : {}),
    });
    if (threads > 1 && !(quantizes && quantizedX === undefined)) {
      const claim: Claim = { arg: (KERNELS[kernel].params as readonly string[]).indexOf("nBegin"), from: 0, to: s.outFeatures, ...columnChunks(s.rows < 4 || quantizes, s.outFeatures, threads), parts: threads };
      return Array.from({ length: threads }, (_, t) => job(t, 0, s.outFeatures, claim));
    }
    return columnSplits(s.outFeatures, threads).map(([n0, n1], t) => job(t, n0, n1));
  }

  /**
   * Whether a linear call on `dtype` weights over `rows` rows of x reads x quantized to 8 bits
   * (quantizeJobs; LINEAR_X_QUANTIZED): quantized weights below the rows from which their kernel
   * computes in f32 on dequantized weight panels (linear_quant_f32_rows).
   * @internal
   */
  readsQuantizedX(dtype: BufferDtype, rows: number): boolean {
    return isQuantDtype(dtype) && rows < this.quantF32Rows(dtype);
  }

  /** The rows from which the kernel of quantized `dtype` weights computes in f32 (linear_quant_f32_rows). */
  private quantF32Rows(dtype: BufferDtype): number {
    return this.kernels.linear_quant_f32_rows(WEIGHT_FORMATS[dtype as QuantDtype]);
  }

  /**
   * Jobs that quantize x [rows, inFeatures] into `qa` (linear_quant_scratch_bytes(rows, K) bytes)
   * for linear calls on quantized weights, its 32-blocks split over up to `threads` threads.
   * @internal
   */
  quantizeJobs(x: number, rows: number, inFeatures: number, qa: number, threads: number): Job[] {
    const blocks = rows * Math.ceil(inFeatures / 32), parts = Math.max(1, Math.min(threads, Math.floor(blocks / 8)));
    return Array.from({ length: parts }, (_, t) => this.quantizeJob(x, rows, inFeatures, qa, Math.floor((t * blocks) / parts), Math.floor(((t + 1) * blocks) / parts)));
  }

  /**
   * One quantize_activations call: x's 32-blocks [blockBegin, blockEnd) (row by row) into `qa`.
   * @internal
   */
  quantizeJob(x: number, rows: number, inFeatures: number, qa: number, blockBegin: number, blockEnd: number): Job {
    return { kernel: "quantize_activations", args: [x, rows, inFeatures, qa, blockBegin, blockEnd] };
  }

  /** A program to run once, its memory from the runtime's scratch (reset after the call). */
  private scratchProgram(): Program {
    return new Program(this.threads, (bytes) => this.scratch.alloc(bytes));
  }

  /** A prepared call as a program: its jobs dealt to the threads in turn, then its `after` jobs in order on the caller. */
  private programOf(c: PreparedCall<unknown>): Program {
    const p = this.scratchProgram();
    c.jobs.forEach((j, i) => p.add(i, j));
    if (c.after?.length) {
      p.barrier();
      for (const j of c.after) p.add(0, j);
    }
    return p;
  }

  /** Runs a program's rounds: one hand-off each, or on the caller alone where only it has calls (no workers woken). */
  private runRounds(p: Program): void {
    const pool = this.pool;
    pool.resetClaims(p.claims.size);
    const rounds = p.encoded();
    for (let r = 0; r < rounds.length; r++) {
      const round = rounds[r]!;
      if (round.callerOnly) pool.runOnCaller(round.lists[0]!);
      else pool.runEncoded(round.lists);
    }
  }
}

/** A call set up in scratch: its kernel jobs (run in parallel), jobs to run after them in order, then how to read its result. */
export interface PreparedCall<T> { jobs: Job[]; after?: Job[]; finish: () => T }



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
  const { threads, info } = await chooseThreads(opts.threads);
  const module = await compileKernels(opts.wasm, opts.build, threads > 1);
  if (threads === 1) {
    const rt = new Runtime(module, opts);
    rt.threadInfo = info;
    return rt;
  }
  let rt: Runtime;
  try {
    rt = new Runtime(module, opts, true);
  } catch (e) {
    // Given kernels that are not a -threads build: 'auto' settles for one thread.
    if (opts.threads !== "auto") throw e;
    rt = new Runtime(module, opts);
    rt.threadInfo = "1 thread: the given kernels are not a -threads build";
    return rt;
  }
  rt.attachPool(await ThreadPool.start(threads, module, rt.memory.memory, rt.instanceExports), info);
  return rt;
}

/**
 * Worker threads on one shared memory need SharedArrayBuffer and workers: worker_threads on
 * Node, Deno and Bun; Web Workers in a cross-origin-isolated page. Not on Cloudflare Workers.
 */
async function threadSupport(): Promise<{ cores: number } | { why: string }> {
  if (typeof SharedArrayBuffer !== "function") return { why: "SharedArrayBuffer is unavailable (a page without cross-origin isolation?)" };
  const g = globalThis as { process?: { versions?: { node?: string } }; crossOriginIsolated?: boolean; navigator?: { hardwareConcurrency?: number }; Worker?: unknown };
  if (g.process?.versions?.node) {
    try {
      const os = await importNodeBuiltin<typeof import("node:os")>("os");
      await importNodeBuiltin("worker_threads");
      return { cores: os.availableParallelism?.() ?? os.cpus().length };
    } catch (e) {
      return { why: `worker_threads is unavailable (${(e as Error).message})` };
    }
  }
  if (typeof g.Worker !== "function") return { why: "this host has no workers (Cloudflare Workers run one thread)" };
  if (g.crossOriginIsolated === false) return { why: "the page is not cross-origin isolated (serve it with COOP/COEP headers)" };
  return { cores: g.navigator?.hardwareConcurrency ?? 1 };
}

/**
 * The most threads a runtime starts: each is a worker with its own instance, and past the
 * cores they only take turns. A few more than the cores stay allowed on small machines (tests
 * check that splits over 3 threads agree on 2 cores).
 */
export function maxThreads(cores: number): number {
  return Math.max(cores, 4);
}

async function chooseThreads(requested: RuntimeOptions["threads"]): Promise<{ threads: number; info: string }> {
  if (requested === undefined) return { threads: 1, info: "1 thread (the default)" };
  if (requested !== "auto" && (typeof requested !== "number" || !Number.isInteger(requested) || requested < 1)) {
    throw new TypeError(`createRuntime: threads must be 'auto' or a positive integer, got ${describe(requested)}`);
  }
  if (requested === 1) return { threads: 1, info: "1 thread (asked)" };
  const support = await threadSupport();
  if ("why" in support) {
    if (requested === "auto") return { threads: 1, info: `1 thread: ${support.why}` };
    throw new Error(`createRuntime: cannot run ${requested} threads: ${support.why}`);
  }
  if (requested === "auto") {
    return support.cores > 1 ? { threads: support.cores, info: `${support.cores} threads (auto: one per core)` } : { threads: 1, info: "1 thread (auto: one core)" };
  }
  const most = maxThreads(support.cores);
  if (requested > most) {
    throw new RangeError(`createRuntime: ${requested} threads asked; this host has ${support.cores} cores, and a runtime takes at most ${most} (the cores, or 4 where there are fewer)`);
  }
  return { threads: requested, info: `${requested} threads (asked; ${support.cores} cores)` };
}
