import { importNodeBuiltin } from "../runtime/node-builtins.ts";

// A pool of worker threads on one shared WebAssembly.Memory. Every worker instantiates the same
// compiled Module on that memory; a call hands each thread (the caller is thread 0) a list of
// kernel calls with their own ranges (several ops, or several sequences, in one hand-off), and
// completion is counted with Atomics. A list may hold barriers: every thread reaches its n-th
// barrier before any goes past it, so a whole layer (or decode step) of dependent ops is one
// hand-off, the threads spinning briefly between ops instead of sleeping and being woken. Jobs
// may share a range (a Claim) that their threads take in chunks from an atomic counter, so a
// phase's work goes to whichever thread is free. Every thread, the caller included, runs its list
// from the same slots with the same function (runList); a runtime of one thread is a pool of one.
// Kernels are pure functions of pointers and ranges, so the threads need no other shared state.

import { JOB_KERNELS, KERNELS, type JobKernel } from "../runtime/kernel-exports.ts";

/**
 * A range the threads holding a job share out as they run: each takes the next `chunk` of
 * [from, to) (written into args[arg] and args[arg + 1]) until none is left, the last chunk per
 * thread's worth in pieces of `tail` (smaller pieces: the threads finish close together), so a
 * thread slowed by anything (another process on its core, a slower core) takes fewer chunks and
 * the threads reach the phase's barrier together. `parts`: how many threads' jobs share it (the
 * fallback splits it statically into that many). Only for kernels whose outputs do not depend
 * on how the range is cut (the linear layers' columns), so answers never depend on the timing.
 */
export interface Claim { readonly arg: number; readonly from: number; readonly to: number; readonly chunk: number; readonly tail: number; readonly parts: number }
export interface Job { kernel: JobKernel; args: number[]; claim?: Claim }
/** A point in every thread's list that all threads reach before any goes on. */
export const BARRIER = "barrier";
/** One entry of a thread's list: a kernel call or a barrier. */
export type Call = Job | typeof BARRIER;

/** Argument words per call: the widest pool kernel's (the linear kernels' 11), checked below. */
const MAX_ARGS = 12;
/** Calls (kernels and barriers) one thread takes per hand-off. */
export const MAX_CALLS_PER_THREAD = 1024;
/** Claims (shared ranges) one program can use; each has a counter. */
export const MAX_CLAIMS = 4096;
// A call: id (-1: barrier), claim counter (-1: none), the claimed argument, from, to, chunk, tail; args.
const HEADER = 7;
const CALL = HEADER + MAX_ARGS;
const SLOT = 1 + MAX_CALLS_PER_THREAD * CALL; // count, calls
const GEN = 0, DONE = 1, ERROR = 2, STOP = -1; // control words; 3 and 4 are the barrier's (barrierWait)
/** Loads a worker spins on GEN after a run before it sleeps (about a millisecond). */
const IDLE_SPINS = 500000;
/** Loads the caller spins on DONE before it sleeps (as a barrier does). */
const DONE_SPINS = 20000;
const CONTROL_INTS = 8;
const MESSAGE_BYTES = 512;

/**
 * Waits while control word `index` holds `value`: `spins` loads first, then asleep
 * (Atomics.wait) unless `canSleep` is false (a browser's main thread spins only). Waking a sleeping
 * thread costs tens to hundreds of microseconds, so every wait of the pool spins first.
 * Self-contained: the workers run its source text.
 */
function spinWait(ctl: Int32Array, index: number, value: number, spins: number, canSleep: boolean): void {
  for (let n = 0; Atomics.load(ctl, index) === value;) {
    if (++n > spins && canSleep) Atomics.wait(ctl, index, value);
  }
}

/**
 * Waits at a barrier of `size` threads: control word 3 counts arrivals, word 4 is the barrier's
 * generation; the last to arrive resets the count and advances the generation. Spins first (the
 * phases between barriers are short; 20,000 loads are tens of microseconds), then sleeps;
 * `canSleep` false (a browser's main thread) spins only. Self-contained but for spinWait: the
 * workers run both source texts.
 */
function barrierWait(ctl: Int32Array, size: number, canSleep: boolean): void {
  const BAR_COUNT = 3, BAR_GEN = 4, BARRIER_SPINS = 20000;
  const gen = Atomics.load(ctl, BAR_GEN);
  if (Atomics.add(ctl, BAR_COUNT, 1) === size - 1) {
    Atomics.store(ctl, BAR_COUNT, 0);
    Atomics.add(ctl, BAR_GEN, 1);
    Atomics.notify(ctl, BAR_GEN);
    return;
  }
  spinWait(ctl, BAR_GEN, gen, BARRIER_SPINS, canSleep);
}

/** Calls f with the MAX_ARGS argument words at s[a]... (a Wasm export ignores those past its parameters): no array per call. Self-contained. */
function callWords(f: KernelFn, s: Float64Array, a: number): void {
  f(s[a]!, s[a + 1]!, s[a + 2]!, s[a + 3]!, s[a + 4]!, s[a + 5]!, s[a + 6]!, s[a + 7]!, s[a + 8]!, s[a + 9]!, s[a + 10]!, s[a + 11]!);
}

/**
 * Runs one thread's list from the slots at `base` (count, then calls of `call` words: id, claim
 * counter, the claimed argument, from, to, chunk, tail, then the arguments from `header`): kernels in
 * order, barriers met (unless `barriers` is false: a list run on the caller alone), claimed
 * ranges taken chunk by chunk from their counters. After a kernel fails the thread skips its
 * kernels but still meets every barrier, so nobody waits forever; the first error is returned.
 * The caller and every worker run this same function (the workers its source text).
 */
function runList(kernels: readonly KernelFn[], slots: Float64Array, base: number, counters: Int32Array, ctl: Int32Array, size: number,
  canSleep: boolean, barriers: boolean, header: number, call: number): unknown {
  let error: unknown;
  for (let c = 0, at = base + 1, n = slots[base]!; c < n; c++, at += call) {
    const id = slots[at]!;
    if (id < 0) { if (barriers) barrierWait(ctl, size, canSleep); continue; }
    if (error !== undefined) continue;
    try {
      const f = kernels[id]!, claim = slots[at + 1]!;
      if (claim < 0) { callWords(f, slots, at + header); continue; }
      const arg = at + header + slots[at + 2]!, from = slots[at + 3]!, to = slots[at + 4]!, chunk = slots[at + 5]!, small = slots[at + 6]!;
      // The last `size` chunks' worth of the range goes in pieces of `small`, so the threads end
      // the phase at most that far apart.
      const whole = Math.max(0, Math.ceil((to - from) / chunk) - size), tail = from + whole * chunk;
      for (;;) {
        const i = Atomics.add(counters, claim, 1);
        const b = i < whole ? from + i * chunk : tail + (i - whole) * small;
        if (b >= to) break;
        slots[arg] = b; slots[arg + 1] = Math.min(b + (i < whole ? chunk : small), to);
        callWords(f, slots, at + header);
      }
    } catch (e) {
      error = e ?? new Error("kernel failed");
    }
  }
  return error;
}

// The worker's program: one loop for both kinds of worker, after a prologue that receives the
// Module, the memory and the control buffers (worker_threads: workerData; Web Workers: the
// first message). Kept as strings so the pool needs no separate file to locate.
const WORKER_LOOP = `
function serve({ module: wasmModule, memory, control, claimCounters, jobs, message, index, size }, ready) {
  const ctl = new Int32Array(control);
  const counters = new Int32Array(claimCounters);
  const slots = new Float64Array(jobs);
  const text = new Uint8Array(message);
  const instance = new WebAssembly.Instance(wasmModule, { env: { memory } });
  const kernels = ${JSON.stringify(JOB_KERNELS)}.map((n) => n && instance.exports[n]);
  ${spinWait.toString()}
  ${barrierWait.toString()}
  ${callWords.toString()}
  ${runList.toString()}
  ready();
  let gen = 0;
  for (;;) {
    // Between runs (a decode step's few hundred microseconds of JavaScript) spin before
    // sleeping: waking a sleeping worker took 150-190 us of every step on a 2-core VM.
    spinWait(ctl, ${GEN}, gen, ${IDLE_SPINS}, true);
    gen = Atomics.load(ctl, ${GEN});
    if (gen === ${STOP}) break;
    const e = runList(kernels, slots, index * ${SLOT}, counters, ctl, size, true, true, ${HEADER}, ${CALL});
    if (e !== undefined && Atomics.compareExchange(ctl, ${ERROR}, 0, index + 1) === 0) {
      const bytes = new TextEncoder().encode(String(e && e.message || e)).subarray(0, ${MESSAGE_BYTES});
      text.fill(0); text.set(bytes);
    }
    Atomics.add(ctl, ${DONE}, 1);
    Atomics.notify(ctl, ${DONE});
  }
}
`;
const NODE_WORKER_SOURCE = `${WORKER_LOOP}
const { parentPort, workerData } = require("node:worker_threads");
serve(workerData, () => parentPort.postMessage("ready"));
`;
const WEB_WORKER_SOURCE = `${WORKER_LOOP}
self.onmessage = (e) => serve(e.data, () => self.postMessage("ready"));
`;

const JOB_IDS = new Map<string, number>(JOB_KERNELS.map((k, i) => [k, i]));
for (const k of JOB_KERNELS) {
  if (k && KERNELS[k].params.length > MAX_ARGS) throw new Error(`threads: ${k} takes ${KERNELS[k].params.length} arguments; a call holds ${MAX_ARGS} (callWords)`);
}

/** Barriers in a list. */
function countBarriers(list: readonly Call[]): number {
  let n = 0;
  for (const c of list) if (c === BARRIER) n++;
  return n;
}

/** Words of a thread's encoded list of `calls` calls (encodeList). */
export const listWords = (calls: number): number => 1 + calls * CALL;

/**
 * A thread's list as its slot holds it (count, then per call: id, claim counter, the claimed
 * argument, from, to, chunk, tail, the arguments), ready to be copied in: written into `words`
 * from `start` (listWords(list.length) of them; without `words`, a buffer of its own, allocated after the checks) and returned as
 * that part of it. `onJob(job, word)`: where each job's arguments begin in `words`, so that a list
 * encoded once can take new arguments (a Program run many times). `claims`: the counter of each
 * claim the jobs hold.
 */
export function encodeList(list: readonly Call[], claims: ReadonlyMap<Claim, number>, words?: Float64Array, start = 0, onJob?: (job: Job, word: number) => void): Float64Array {
  if (list.length > MAX_CALLS_PER_THREAD) throw new RangeError(`threads: at most ${MAX_CALLS_PER_THREAD} calls per thread at once, got ${list.length}`);
  const length = listWords(list.length);
  // (A typed array drops writes past its end: a short buffer would lose calls silently.)
  if (words && start + length > words.length) throw new RangeError(`threads: a list of ${list.length} calls needs ${length} words from ${start}, the buffer has ${words.length}`);
  const image = words ? words.subarray(start, start + length) : new Float64Array(length);
  image[0] = list.length;
  for (let c = 0, at = 1; c < list.length; c++, at += CALL) {
    const job = list[c]!;
    if (job === BARRIER) { image[at] = -1; continue; }
    if (job.args.length > MAX_ARGS) throw new RangeError(`threads: ${job.kernel} takes at most ${MAX_ARGS} arguments`);
    const id = JOB_IDS.get(job.kernel);
    if (id === undefined) throw new RangeError(`threads: ${String(job.kernel)} is not a pool kernel`);
    image[at] = id;
    const claim = job.claim;
    if (claim) {
      const counter = claims.get(claim);
      if (counter === undefined) throw new Error("threads: a job's claim has no counter (jobs with claims go through a Program)");
      image[at + 1] = counter; image[at + 2] = claim.arg; image[at + 3] = claim.from; image[at + 4] = claim.to; image[at + 5] = claim.chunk; image[at + 6] = claim.tail;
    } else image[at + 1] = -1;
    image.set(job.args, at + HEADER);
    onJob?.(job, start + at + HEADER);
  }
  return image;
}

/** What the pool needs of a worker, whichever kind. */
interface PoolWorker { terminate(): unknown }

/** Shared memory where there is some (a pool of one thread works on plain buffers too). */
const sharedBuffer = (bytes: number) => (typeof SharedArrayBuffer === "function" ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));

/**
 * The threads a runtime's kernel programs run on: the caller (thread 0) and size - 1 workers
 * (none for one thread). Every thread runs its list the same way (runList).
 */
export class ThreadPool {
  private readonly ctl: Int32Array;
  private readonly counters: Int32Array;
  private readonly slots: Float64Array;
  private readonly text: Uint8Array;
  private disposed = false;

  private constructor(
    /** Threads including the caller. */
    readonly size: number,
    private readonly workers: PoolWorker[],
    control: ArrayBufferLike, claimCounters: ArrayBufferLike, jobs: ArrayBufferLike, message: ArrayBufferLike,
    /** The caller's kernels, by job id (JOB_KERNELS). */
    private readonly kernels: readonly KernelFn[],
    /** False on a browser's main thread, where Atomics.wait is not allowed. */
    private readonly canBlock: boolean,
  ) {
    this.ctl = new Int32Array(control);
    this.counters = new Int32Array(claimCounters);
    this.slots = new Float64Array(jobs);
    this.text = new Uint8Array(message);
  }

  /** The caller alone (one thread): programs run on it through the same list runner. */
  static caller(exports: Record<string, unknown>): ThreadPool {
    return new ThreadPool(1, [], sharedBuffer(4 * CONTROL_INTS), sharedBuffer(4 * MAX_CLAIMS), new ArrayBuffer(SLOT * 8), new ArrayBuffer(MESSAGE_BYTES), kernelsOf(exports), true);
  }

  /**
   * Starts size - 1 workers: worker_threads on Node, Deno and Bun; Web Workers elsewhere (a
   * cross-origin-isolated page, where SharedArrayBuffer exists). `exports`: the caller's instance's.
   */
  static async start(size: number, module: WebAssembly.Module, memory: WebAssembly.Memory, exports: Record<string, unknown>): Promise<ThreadPool> {
    const control = new SharedArrayBuffer(4 * CONTROL_INTS), claimCounters = new SharedArrayBuffer(4 * MAX_CLAIMS), jobs = new SharedArrayBuffer(size * SLOT * 8), message = new SharedArrayBuffer(MESSAGE_BYTES);
    const onNode = Boolean((globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node);
    const workers: PoolWorker[] = [];
    try {
      for (let index = 1; index < size; index++) {
        const data = { module, memory, control, claimCounters, jobs, message, index, size };
        workers.push(onNode ? await startNodeWorker(data) : await startWebWorker(data));
      }
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw new Error(`threads: a worker failed to start (${(e as Error).message})`);
    }
    const g = globalThis as { window?: unknown; document?: unknown };
    const canBlock = onNode || !(g.window !== undefined && g.document !== undefined);
    return new ThreadPool(size, workers, control, claimCounters, jobs, message, kernelsOf(exports), canBlock);
  }

  /** Sets the first `count` claim counters to zero: claims of a program start from their first chunk. */
  resetClaims(count: number): void {
    if (count > MAX_CLAIMS) throw new RangeError(`threads: at most ${MAX_CLAIMS} claims per program, got ${count}`);
    this.counters.fill(0, 0, count);
  }

  /**
   * Runs the calls of lists[t] on thread t, in order (thread 0 is the caller), and waits,
   * blocking, for all of them. Every list holds the same number of barriers. `claims`: the
   * counter of each claim the jobs hold (see Claim; counters are reset by resetClaims).
   */
  run(jobs: Call[][], claims: ReadonlyMap<Claim, number>): void {
    const expected = countBarriers(jobs[0] ?? []);
    for (let t = 1; t < this.size; t++) {
      const n = countBarriers(jobs[t] ?? []);
      if (n !== expected) throw new RangeError(`threads: thread ${t} has ${n} barriers, thread 0 ${expected}: every thread must meet every barrier`);
    }
    this.runEncoded(Array.from({ length: this.size }, (_, t) => encodeList(jobs[t] ?? [], claims)));
  }

  /** As run(), on lists already encoded (encodeList; a Program's rounds, encoded once and run many times). */
  runEncoded(lists: readonly Float64Array[]): void {
    if (!this.canBlock && this.size > 1) {
      throw new Error("threads: a browser's main thread cannot block: use the async calls (attentionAsync, linearAsync, ...) or run gqa-wasm in a Web Worker");
    }
    this.post(lists);
    const error = this.runOwn(true);
    for (let done = Atomics.load(this.ctl, DONE); done < this.size - 1; done = Atomics.load(this.ctl, DONE)) {
      spinWait(this.ctl, DONE, done, DONE_SPINS, true);
    }
    this.finish(error);
  }

  /** As runEncoded(), but the caller awaits the workers instead of blocking (browsers' main thread). */
  async runEncodedAsync(lists: readonly Float64Array[]): Promise<void> {
    this.post(lists);
    const error = this.runOwn(true);
    for (let done = Atomics.load(this.ctl, DONE); done < this.size - 1; done = Atomics.load(this.ctl, DONE)) {
      const w = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } }).waitAsync(this.ctl, DONE, done);
      if (w.async) await w.value;
    }
    this.finish(error);
  }

  /**
   * Runs an encoded list on the caller alone (the workers asleep): a round where only thread 0
   * has calls. Its claims still go through their counters (another round may hold part of one).
   */
  runOnCaller(list: Float64Array): void {
    if (this.disposed) throw new Error("threads: the runtime was disposed");
    this.slots.set(list, 0);
    const error = this.runOwn(false);
    if (error) throw error;
  }

  /** Ends every worker. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    Atomics.store(this.ctl, GEN, STOP);
    if (this.workers.length > 0) Atomics.notify(this.ctl, GEN);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  /** The caller's own list (thread 0, written at slot 0); the first error, if any. */
  private runOwn(barriers: boolean): unknown {
    return runList(this.kernels, this.slots, 0, this.counters, this.ctl, this.size, this.canBlock, barriers, HEADER, CALL);
  }

  /** Writes each thread's encoded list into its slot and wakes the workers. */
  private post(lists: readonly Float64Array[]): void {
    if (this.disposed) throw new Error("threads: the runtime was disposed");
    if (lists.length !== this.size) throw new RangeError(`threads: ${lists.length} lists for ${this.size} threads`);
    for (let t = 0; t < lists.length; t++) this.slots.set(lists[t]!, t * SLOT);
    if (this.size === 1) return;
    Atomics.store(this.ctl, DONE, 0);
    Atomics.store(this.ctl, ERROR, 0);
    const gen = Atomics.load(this.ctl, GEN);
    Atomics.store(this.ctl, GEN, gen === 0x7fffffff ? 1 : gen + 1);
    Atomics.notify(this.ctl, GEN);
  }

  private finish(callerError: unknown): void {
    if (callerError) throw callerError;
    const failed = Atomics.load(this.ctl, ERROR);
    if (failed > 0) {
      const end = this.text.indexOf(0);
      const message = new TextDecoder().decode(this.text.slice(0, end < 0 ? undefined : end));
      throw new Error(`threads: thread ${failed - 1} failed: ${message}`);
    }
  }
}

type KernelFn = (...args: number[]) => unknown;

/** An instance's kernels by job id (JOB_KERNELS; id 0 is none). */
function kernelsOf(exports: Record<string, unknown>): KernelFn[] {
  return JOB_KERNELS.map((n) => (n ? exports[n] as KernelFn : () => { throw new Error("threads: no kernel 0"); }));
}

type WorkerData = { module: WebAssembly.Module; memory: WebAssembly.Memory; control: SharedArrayBuffer; claimCounters: SharedArrayBuffer; jobs: SharedArrayBuffer; message: SharedArrayBuffer; index: number; size: number };

async function startNodeWorker(data: WorkerData): Promise<PoolWorker> {
  const { Worker } = await importNodeBuiltin<typeof import("node:worker_threads")>("worker_threads");
  const w = new Worker(NODE_WORKER_SOURCE, { eval: true, workerData: data });
  try {
    await new Promise<void>((resolve, reject) => { w.once("message", () => resolve()); w.once("error", reject); });
  } catch (e) {
    await w.terminate();
    throw e;
  }
  w.unref(); // an undisposed pool does not keep the process alive
  return w;
}

async function startWebWorker(data: WorkerData): Promise<PoolWorker> {
  const url = URL.createObjectURL(new Blob([WEB_WORKER_SOURCE], { type: "text/javascript" }));
  const w = new Worker(url);
  try {
    await new Promise<void>((resolve, reject) => {
      w.onmessage = () => resolve();
      w.onerror = (e) => reject(new Error(e.message));
      w.postMessage(data);
    });
  } catch (e) {
    w.terminate();
    throw e;
  } finally {
    URL.revokeObjectURL(url);
  }
  return w;
}
