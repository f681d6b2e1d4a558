import { KVCacheFullError, KVSnapshotError, UseAfterFreeError, WasmOutOfMemoryError } from "../errors.ts";
import type { PagePool } from "../memory/page-pool.ts";
import { residentBuffer, type WasmBuffer } from "../memory/wasm-buffer.ts";
import { attentionShape, type AttentionShape } from "../ops/attention.ts";
import { structField } from "../runtime/kernel-exports.ts";
import { attentionSplits } from "../threads/splits.ts";
import { float32Array, positiveInt } from "../ops/validate.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { Job } from "../threads/pool.ts";
import type { Program } from "../runtime/program.ts";
import { crc32 } from "./crc32.ts";
import { decodeRows, KV_DTYPE_CODES, KV_DTYPES, KV_ELEM_BYTES, type EncodedRows, type KVDtype } from "./storage.ts";

// A paged KV cache in wasm memory (PagedAttention's idea): fixed pages of `pageSize` tokens
// from page pools, a block table per (sequence, layer), and attention kernels that walk the
// block table in place. Layers may differ in KV heads (variable GQA): each layer's pages are
// sized by its own KV-head count. A page holds K then V, each head-major
// [numKvHeads][pageSize][headDim] in the storage type (f32, f16, bf16, or int8 with per-row scales
// after the data; see storage.ts and kv_page_bytes). Pages are reference-counted so that fork()
// shares a parent's pages; a shared, partly filled last page is copied on write.

export interface KVLayerShape { numKvHeads: number; headDim: number }

/** A block table's place in a kept program's memory (KVCache.blockTable), and whose tables it holds. @internal */
export interface BlockTable { readonly ptr: number; readonly capacity: number; holds?: { seq: KVSequence; version: number } }

/**
 * A layer's attention calls in a program (KVCache.attentionCalls). `refresh(items)` points them at
 * the sequences' current lengths (call i: items[i].seq) before a kept program runs again; false when
 * the threads would now split them differently (build the program again).
 * @internal
 */
export interface PagedAttentionCalls { refresh(items: readonly { seq: KVSequence }[]): boolean }

export type { KVDtype } from "./storage.ts";

export interface KVCacheOptions {
  layers: KVLayerShape[];
  /**
   * Tokens per page (default 64): a head's keys in a page are one contiguous run the attention
   * kernels stream, each page a restart (SmolLM2 decode 1.02-1.03x at 400 tokens, 1.09x at 2000
   * over 32-token pages; 128 gave 1.16x at 2000 but shares prompt prefixes only in whole pages).
   */
  pageSize?: number;
  /** Storage type: f32 (default, exact), f16 or bf16 (half the bytes; see storage.ts) or int8 (a quarter, plus a scale per row). */
  dtype?: KVDtype;
  /** Cap: room for this many tokens in every layer (over all sequences). */
  maxTokens?: number;
  /** Cap: this many bytes of pages in all, split over the layers by their page sizes. */
  maxBytes?: number;
}

export interface KVAttentionArgs {
  /** [seqQ, numHeads, headDim]: the queries of the newest seqQ tokens (already appended). */
  q: Float32Array;
  numHeads: number;
  /** Bottom-right aligned causal mask (default true: the cache holds the past). */
  causal?: boolean;
  /** Each query sees at most this many newest keys, its own included (Mistral); omitted: all. */
  slidingWindow?: number;
  scale?: number;
  /** Scores capped at ±softcap (Gemma 2); omitted: not capped. */
  softcap?: number;
}

export interface KVResidentAttentionArgs extends Omit<KVAttentionArgs, "q"> {
  q: WasmBuffer;
  out: WasmBuffer;
}

/** One sequence in a batched decode: its newest token's queries [1 or more, numHeads, headDim]. */
export interface KVBatchItem { seq: KVSequence; q: Float32Array }

const SNAPSHOT_MAGIC = "GQAKVSNP";
const SNAPSHOT_VERSION = 1;

export interface KVCacheStats {
  pageSize: number;
  dtype: KVDtype;
  pagesUsed: number;
  pagesFree: number;
  pagesTotal: number;
  /** K + V bytes one token takes in each layer. */
  bytesPerTokenPerLayer: number[];
  /** K + V bytes one token takes over all layers. */
  bytesPerToken: number;
  /** Bytes of all pages the cache holds (used and free). */
  totalBytes: number;
  sequences: { id: number; length: number; pages: number }[];
}

/** One sequence's view of the cache: a block table and a length per layer. */
export class KVSequence {
  /** @internal */ readonly tables: number[][];
  /** @internal */ readonly lengths: number[];
  /** @internal */ freed = false;
  /** @internal Counts changes of the block tables (pages taken, copied on write, released): a program's copy of them is current while it matches. */
  tablesVersion = 0;
  /** @internal The forward pass that last took it (TransformerModel: a batch holding it twice is refused). */
  lastPass = 0;

  /** @internal */
  constructor(readonly id: number, layers: number, tables?: number[][], lengths?: number[]) {
    this.tables = tables ?? Array.from({ length: layers }, () => []);
    this.lengths = lengths ?? new Array<number>(layers).fill(0);
  }

  /** Tokens cached in `layer` (layer 0 by default). */
  length(layer = 0): number { return this.lengths[layer] ?? 0; }
  get isFreed(): boolean { return this.freed; }
}

interface LayerStore {
  shape: KVLayerShape;
  pool: PagePool;
  /** Bytes of one stored row (headDim elements). */
  rowBytes: number;
  /** Bytes of one head's K (or V) rows in a page. */
  headBytes: number;
  /** int8: byte offset of the K scales in a page (V scales follow). */
  scaleOffset: number;
  pageBytes: number;
}

export class KVCache {
  readonly pageSize: number;
  readonly dtype: KVDtype;
  readonly layers: readonly KVLayerShape[];
  private readonly stores: LayerStore[];
  private readonly pools: PagePool[];
  private readonly refs = new Map<number, number>();
  private readonly sequences = new Map<number, KVSequence>();
  private nextId = 1;
  private disposed = false;

  constructor(private readonly rt: Runtime, options: KVCacheOptions) {
    const op = "createKVCache";
    if (options === null || typeof options !== "object") throw new TypeError(`${op}: expected options`);
    if (!Array.isArray(options.layers) || options.layers.length === 0) throw new TypeError(`${op}: layers must be a non-empty array of { numKvHeads, headDim }`);
    this.layers = options.layers.map((l, i) => ({
      numKvHeads: positiveInt(op, `layers[${i}].numKvHeads`, l?.numKvHeads),
      headDim: positiveInt(op, `layers[${i}].headDim`, l?.headDim),
    }));
    this.pageSize = options.pageSize === undefined ? 64 : positiveInt(op, "pageSize", options.pageSize);
    this.dtype = options.dtype ?? "f32";
    if (!Object.hasOwn(KV_DTYPE_CODES, this.dtype)) throw new RangeError(`${op}: dtype '${String(options.dtype)}' is not supported (${KV_DTYPES.join(", ")})`);
    if (options.maxTokens !== undefined && options.maxBytes !== undefined) throw new TypeError(`${op}: give maxTokens or maxBytes, not both`);
    const pageBytesOf = (l: KVLayerShape) => rt.kernels.kv_page_bytes(l.numKvHeads, l.headDim, this.pageSize, KV_DTYPE_CODES[this.dtype]);
    let pagesPerLayer = Infinity;
    if (options.maxTokens !== undefined) pagesPerLayer = Math.ceil(positiveInt(op, "maxTokens", options.maxTokens) / this.pageSize);
    if (options.maxBytes !== undefined) {
      const perPageRow = this.layers.reduce((s, l) => s + pageBytesOf(l), 0);
      pagesPerLayer = Math.floor(positiveInt(op, "maxBytes", options.maxBytes) / perPageRow);
      if (pagesPerLayer < 1) throw new RangeError(`${op}: maxBytes (${options.maxBytes}) is less than one page in every layer (${perPageRow} bytes)`);
    }
    // Layers of the same shape share a pool: its cap is their pages together.
    const byShape = new Map<string, { pool?: PagePool; count: number; shape: KVLayerShape }>();
    for (const l of this.layers) {
      const key = `${l.numKvHeads}x${l.headDim}`;
      const e = byShape.get(key) ?? { count: 0, shape: l };
      e.count++;
      byShape.set(key, e);
    }
    for (const e of byShape.values()) e.pool = rt.createPagePool(pageBytesOf(e.shape), pagesPerLayer * e.count);
    this.pools = [...byShape.values()].map((e) => e.pool!);
    this.stores = this.layers.map((l) => ({
      shape: l,
      pool: byShape.get(`${l.numKvHeads}x${l.headDim}`)!.pool!,
      rowBytes: l.headDim * KV_ELEM_BYTES[this.dtype],
      headBytes: this.pageSize * l.headDim * KV_ELEM_BYTES[this.dtype],
      scaleOffset: rt.kernels.kv_scale_offset(l.numKvHeads, l.headDim, this.pageSize),
      pageBytes: pageBytesOf(l),
    }));
  }

  createSequence(): KVSequence {
    this.checkLive("createSequence");
    const seq = new KVSequence(this.nextId++, this.layers.length);
    this.sequences.set(seq.id, seq);
    return seq;
  }

  /**
   * Appends K and V of n new tokens to one layer: k, v [n, numKvHeads, headDim] token-major.
   * Pages are taken first, all or nothing: when none are left it throws KVCacheFullError and
   * nothing changes.
   */
  append(seq: KVSequence, layer: number, k: Float32Array, v: Float32Array): void {
    const op = "KVCache.append";
    this.checkSeq(op, seq);
    const store = this.store(op, layer);
    float32Array(op, "k", k); float32Array(op, "v", v);
    const { numKvHeads: KV, headDim: D } = store.shape;
    const rowLen = KV * D;
    if (k.length === 0 || k.length % rowLen !== 0) throw new RangeError(`${op}: k has ${k.length} elements; expected [n, ${KV}, ${D}] for layer ${layer}`);
    if (v.length !== k.length) throw new RangeError(`${op}: v has ${v.length} elements but k has ${k.length}`);
    const n = k.length / rowLen;
    // The same kernel as a forward pass's (kv_write): K/V copied into scratch, then encoded into the pages.
    this.rt.call(() => {
      const kPtr = this.rt.scratch.alloc(k.length * 4), vPtr = this.rt.scratch.alloc(v.length * 4);
      const job = this.appendCall(seq, layer, n, kPtr, vPtr);
      const heap = this.rt.memory.f32;
      heap.set(k, kPtr >>> 2);
      heap.set(v, vPtr >>> 2);
      return { jobs: [job], finish: () => undefined };
    });
  }


  /** Takes the pages n more tokens need (all or nothing), then writes the stored rows. */
  private appendEncoded(seq: KVSequence, layer: number, n: number, k: EncodedRows, v: EncodedRows): void {
    const store = this.stores[layer]!;
    const { numKvHeads: KV } = store.shape;
    const table = seq.tables[layer]!;
    const len = seq.lengths[layer]!;
    const ps = this.pageSize;
    this.growTable(seq, layer, n);
    const u8 = this.rt.memory.u8;
    const rb = store.rowBytes;
    const f32 = this.rt.memory.f32;
    for (let t = 0; t < n; t++) {
      const pos = len + t;
      const page = table[Math.floor(pos / ps)]!;
      const slot = pos % ps;
      for (let h = 0; h < KV; h++) {
        const row = t * KV + h;
        const kDst = page + h * store.headBytes + slot * rb;
        u8.set(k.data.subarray(row * rb, (row + 1) * rb), kDst);
        u8.set(v.data.subarray(row * rb, (row + 1) * rb), kDst + KV * store.headBytes);
        if (k.scales) {
          const sc = (page + store.scaleOffset >>> 2) + h * ps + slot;
          f32[sc] = k.scales[row]!;
          f32[sc + KV * ps] = v.scales![row]!;
        }
      }
    }
    seq.lengths[layer] = len + n;
  }

  /**
   * Makes `seq`'s block table in `layer` cover n more tokens: takes the pages (all or nothing;
   * KVCacheFullError when there are none), copying a shared, partly filled last page first.
   */
  private growTable(seq: KVSequence, layer: number, n: number): void {
    const store = this.stores[layer]!;
    const table = seq.tables[layer]!;
    const len = seq.lengths[layer]!;
    const cow = len % this.pageSize !== 0 && (this.refs.get(table[table.length - 1]!) ?? 0) > 1;
    const fresh = Math.ceil((len + n) / this.pageSize) - table.length;
    if (fresh <= 0 && !cow) return; // the pages hold them already (most decode steps)
    const pages = this.takePages(store, fresh + (cow ? 1 : 0));
    if (cow) {
      const shared = table[table.length - 1]!;
      const copy = pages.pop()!;
      this.rt.memory.u8.copyWithin(copy, shared, shared + store.pageBytes);
      this.unref(store, shared);
      table[table.length - 1] = copy;
    }
    table.push(...pages);
    seq.tablesVersion++;
  }

  /**
   * For a kernel program: takes the pages n more tokens of `layer` need and counts them in;
   * returns the position of the first (where its kv_write call starts). The caller rolls back
   * (truncate) if the program fails.
   * @internal
   */
  reserve(seq: KVSequence, layer: number, n: number): number {
    const op = "KVCache.reserve";
    this.checkSeq(op, seq);
    this.store(op, layer);
    positiveInt(op, "n", n);
    const pos0 = seq.lengths[layer]!;
    this.growTable(seq, layer, n);
    seq.lengths[layer] = pos0 + n;
    return pos0;
  }

  /**
   * reserve() in layers [0, layers), for a model's step: its checks once, not per layer. Throws
   * as reserve() does, part way through; the caller rolls back.
   * @internal
   */
  reserveLayers(seq: KVSequence, layers: number, n: number): void {
    const op = "KVCache.reserve";
    this.checkSeq(op, seq);
    this.store(op, layers - 1);
    positiveInt(op, "n", n);
    for (let l = 0; l < layers; l++) {
      this.growTable(seq, l, n);
      seq.lengths[l] = seq.lengths[l]! + n;
    }
  }

  /**
   * The kv_write call that stores n tokens' K and V (resident f32, [n, numKvHeads, headDim] at
   * `k` and `v`) into the pages of the block table at `table`, from position pos0 (argument 9),
   * so K/V go from the projections to the pages without leaving wasm.
   * @internal
   */
  writeJob(layer: number, table: number, k: number, v: number, n: number, pos0: number): Job {
    const { numKvHeads, headDim } = this.store("KVCache.writeJob", layer).shape;
    return { kernel: "kv_write", args: [k, v, 0, n, numKvHeads, headDim, table, this.pageSize, KV_DTYPE_CODES[this.dtype], pos0] };
  }

  /** reserve() and writeJob() for a program run once (the block table in the runtime's scratch). @internal */
  appendCall(seq: KVSequence, layer: number, n: number, k: number, v: number): Job {
    const pos0 = this.reserve(seq, layer, n);
    return this.writeJob(layer, this.tableInScratch(seq, layer, (bytes) => this.rt.scratch.alloc(bytes)), k, v, n, pos0);
  }

  /**
   * Room in a kept program's memory for a block table of `seq`'s in `layer` (twice the pages it
   * has, at least 8), for its kv_write and attention calls: rewritten before each run (writeTable).
   * @internal
   */
  blockTable(p: Program, seq: KVSequence, layer: number): BlockTable {
    const capacity = Math.max(8, 2 * seq.tables[layer]!.length);
    return { ptr: p.alloc(capacity * 4), capacity };
  }

  /** Writes `seq`'s block table of `layer` into `table` (unless it holds it already); false when it has outgrown it. @internal */
  writeTable(table: BlockTable, seq: KVSequence, layer: number): boolean {
    if (table.holds?.seq === seq && table.holds.version === seq.tablesVersion) return true;
    const pages = seq.tables[layer]!;
    if (pages.length > table.capacity) return false;
    this.rt.memory.i32.set(pages, table.ptr >>> 2); // addresses past 2^31 keep their bits
    table.holds = { seq, version: seq.tablesVersion };
    return true;
  }

  /**
   * For a kernel program: the paged attention calls of several sequences in `layer` (their
   * newest tokens' queries against all they hold, through each item's block table, or a copy
   * in the program's memory), as attentionBatchInto would run them: with at least as many
   * sequences as threads a sequence per thread (item i on thread i: a model that put item i's
   * K/V writes on that thread too needs no barrier before these), else each split over the threads. Split-KV
   * partials are combined in a phase of their own after a barrier. A kept program runs them
   * again at later steps after `refresh` has pointed them at the sequences' new lengths.
   * @internal
   */
  attentionCalls(p: Program, items: readonly { seq: KVSequence; q: WasmBuffer; out: WasmBuffer; table?: BlockTable }[], layer: number, args: Omit<KVResidentAttentionArgs, "q" | "out">, op = "KVCache.attentionCalls"): PagedAttentionCalls {
    const whole = items.length >= p.threads;
    const after: Job[] = [];
    const calls = items.map(({ seq, q, out, table }, i) => {
      const threads = whole ? 1 : p.threads;
      const c = this.pagedJobs(op, seq, layer, { ...args, q, out }, q.length, q.ptr, out.ptr, threads, (bytes) => p.alloc(bytes),
        (t, bytes) => p.threadScratch(whole ? i : t, "attention", bytes), table?.ptr);
      if (whole) p.add(i, c.jobs[0]!);
      else p.addPerThread(c.jobs);
      if (c.after) after.push(...c.after);
      return { ...c, threads };
    });
    if (after.length > 0) {
      p.barrier();
      after.forEach((j, i) => p.add(i, j));
    }
    // What a later step changes: each call's length (in its struct) and key and query ranges
    // (arguments 1-6), packed per item as [struct word, 6 variables, their 6 values] per call:
    // a refresh runs just after the weights have streamed through the caches, so it touches
    // little memory (mostly only the key range's end changes).
    const seqK = structField("AttentionCall", "seqK"), W = 13;
    const packed = calls.map(({ jobs }) => Int32Array.from(jobs.flatMap((job) => [(job.args[0]! >>> 2) + seqK, ...[1, 2, 3, 4, 5, 6].map((a) => p.variable(job, a)), ...job.args.slice(1, 7)])));
    return {
      refresh: (now) => {
        const i32 = this.rt.memory.i32;
        for (let i = 0; i < calls.length; i++) {
          const { shape, splitKv, threads } = calls[i]!, words = packed[i]!, length = now[i]!.seq.lengths[layer]!;
          const split = attentionSplits(shape.seqQ, length, shape.numKvHeads, shape.causal, threads);
          if (split.splitKv !== splitKv || split.ranges.length * W !== words.length) return false;
          for (let j = 0, w = 0; j < split.ranges.length; j++, w += W) {
            i32[words[w]!] = length;
            const range = split.ranges[j]!;
            for (let r = 0; r < 6; r++) {
              if (words[w + 7 + r] === range[r]) continue;
              p.set(words[w + 1 + r]!, range[r]!);
              words[w + 7 + r] = range[r]!;
            }
          }
        }
        return true;
      },
    };
  }

  /** A copy of `seq`'s block table for `layer` in memory from `alloc` (valid as long as that memory). */
  private tableInScratch(seq: KVSequence, layer: number, alloc: (bytes: number) => number): number {
    const table = seq.tables[layer]!;
    const ptr = alloc(table.length * 4);
    this.rt.memory.i32.set(table, ptr >>> 2); // addresses past 2^31 keep their bits
    return ptr;
  }

  /** The stored rows (token-major) of a layer of `seq`, in the storage type. */
  private readEncoded(seq: KVSequence, layer: number): { k: EncodedRows; v: EncodedRows } {
    const store = this.stores[layer]!;
    const KV = store.shape.numKvHeads, rb = store.rowBytes, ps = this.pageSize;
    const len = seq.lengths[layer]!;
    const rows = len * KV;
    const k: EncodedRows = { data: new Uint8Array(rows * rb) }, v: EncodedRows = { data: new Uint8Array(rows * rb) };
    if (this.dtype === "int8") { k.scales = new Float32Array(rows); v.scales = new Float32Array(rows); }
    const u8 = this.rt.memory.u8, f32 = this.rt.memory.f32;
    for (let pos = 0; pos < len; pos++) {
      const page = seq.tables[layer]![Math.floor(pos / ps)]!;
      const slot = pos % ps;
      for (let h = 0; h < KV; h++) {
        const row = pos * KV + h;
        const src = page + h * store.headBytes + slot * rb;
        k.data.set(u8.subarray(src, src + rb), row * rb);
        v.data.set(u8.subarray(src + KV * store.headBytes, src + KV * store.headBytes + rb), row * rb);
        if (k.scales) {
          const sc = (page + store.scaleOffset >>> 2) + h * ps + slot;
          k.scales[row] = f32[sc]!;
          v.scales![row] = f32[sc + KV * ps]!;
        }
      }
    }
    return { k, v };
  }

  /**
   * Attention of the newest tokens' queries against everything `seq` has cached in `layer`
   * (append first, then attend). Returns [seqQ, numHeads, headDim].
   */
  attention(seq: KVSequence, layer: number, args: KVAttentionArgs): Float32Array {
    const op = "KVCache.attention";
    return this.rt.call(() => {
      const q = float32Array(op, "q", args?.q);
      const qPtr = this.rt.scratch.alloc(q.length * 4);
      const outPtr = this.rt.scratch.alloc(q.length * 4);
      const { jobs, after } = this.pagedJobs(op, seq, layer, args, q.length, qPtr, outPtr, this.rt.threads, (bytes) => this.rt.scratch.alloc(bytes));
      this.rt.memory.f32.set(q, qPtr >>> 2);
      return { jobs, after, finish: () => this.rt.memory.f32.slice(outPtr >>> 2, (outPtr >>> 2) + q.length) };
    });
  }

  /** As attention(), with q and out resident in wasm memory (no copies). */
  attentionInto(seq: KVSequence, layer: number, args: KVResidentAttentionArgs): void {
    const op = "KVCache.attentionInto";
    this.attendResident(op, [{ seq, q: args?.q, out: args?.out }], layer, args, () => op);
  }

  /**
   * Attention for several sequences at once, q and out resident (a batched forward pass). With
   * at least as many sequences as threads, each sequence is one job and the threads take a
   * sequence each (a hand-off per `threads` sequences, not one per sequence); then every output
   * has the bits a one-thread call gives. Fewer sequences than threads are split as alone.
   */
  attentionBatchInto(items: readonly { seq: KVSequence; q: WasmBuffer; out: WasmBuffer }[], layer: number, args: Omit<KVResidentAttentionArgs, "q" | "out">): void {
    const op = "KVCache.attentionBatchInto";
    this.attendResident(op, items, layer, args, (i) => `${op}: items[${i}]`);
  }

  /** attentionInto for one sequence or several; `where(i)` names item i in errors. */
  private attendResident(op: string, items: readonly { seq: KVSequence; q: unknown; out: unknown }[], layer: number, args: Omit<KVResidentAttentionArgs, "q" | "out">, where: (i: number) => string): void {
    const checked = items.map(({ seq, q, out }, i) => {
      const qb = residentBuffer(where(i), "q", q, this.rt.memory, "f32"), ob = residentBuffer(where(i), "out", out, this.rt.memory, "f32");
      if (ob.length !== qb.length) throw new RangeError(`${where(i)}: out has ${ob.length} elements; expected ${qb.length}, like q`);
      return { seq, q: qb, out: ob };
    });
    this.rt.runProgram((p) => { this.attentionCalls(p, checked, layer, args, op); return () => undefined; });
  }

  /**
   * Batched decode: attention for several sequences (of any lengths) in one call, each against
   * its own cached tokens of `layer`. Every item is checked before any kernel runs.
   */
  attentionBatch(items: KVBatchItem[], layer: number, args: Omit<KVAttentionArgs, "q">): Float32Array[] {
    const op = "KVCache.attentionBatch";
    if (!Array.isArray(items)) throw new TypeError(`${op}: items must be an array of { seq, q }`);
    const store = this.store(op, layer);
    const rowLen = store.shape.numKvHeads * store.shape.headDim;
    items.forEach(({ seq, q }, i) => {
      this.checkSeq(`${op}: items[${i}]`, seq);
      float32Array(op, `items[${i}].q`, q);
      const seqK = seq.lengths[layer]!;
      if (seqK === 0) throw new RangeError(`${op}: items[${i}]: layer ${layer} of sequence ${seq.id} holds no tokens`);
      attentionShape(`${op}: items[${i}]`, { ...args, numKvHeads: store.shape.numKvHeads, headDim: store.shape.headDim }, q.length, seqK * rowLen, seqK * rowLen);
    });
    return items.map(({ seq, q }) => this.attention(seq, layer, { ...args, q }));
  }

  /**
   * K and V of the tokens `seq` holds in `layer`, gathered token-major [length, numKvHeads,
   * headDim] as f32 (f16, bf16 and int8 decoded: what attention sees).
   */
  readLayer(seq: KVSequence, layer: number): { k: Float32Array; v: Float32Array } {
    const op = "KVCache.readLayer";
    this.checkSeq(op, seq);
    const D = this.store(op, layer).shape.headDim;
    const { k, v } = this.readEncoded(seq, layer);
    return { k: decodeRows(this.dtype, k.data, k.scales, D), v: decodeRows(this.dtype, v.data, v.scales, D) };
  }

  /**
   * Serialises one sequence (its K/V and lengths in every layer) so that it can be restored into
   * a cache of the same shape in another process or isolate. Layout (little-endian):
   * "GQAKVSNP", u32 version, u32 dtype, u32 layers, per layer u32 numKvHeads, headDim, length;
   * then per layer K then V rows token-major in the storage type (int8: then the K and V row
   * scales, f32); then u32 CRC-32 of everything before it. Restoring is exact for every dtype.
   */
  snapshot(seq: KVSequence): Uint8Array {
    this.checkSeq("KVCache.snapshot", seq);
    const L = this.layers.length;
    const headerBytes = 8 + 12 + 12 * L;
    const dataBytes = this.layers.reduce((s, l, i) => s + this.snapshotLayerBytes(l, seq.lengths[i]!), 0);
    const bytes = new Uint8Array(headerBytes + dataBytes + 4);
    const view = new DataView(bytes.buffer);
    bytes.set(new TextEncoder().encode(SNAPSHOT_MAGIC), 0);
    view.setUint32(8, SNAPSHOT_VERSION, true);
    view.setUint32(12, KV_DTYPE_CODES[this.dtype], true);
    view.setUint32(16, L, true);
    this.layers.forEach((l, i) => {
      view.setUint32(20 + 12 * i, l.numKvHeads, true);
      view.setUint32(24 + 12 * i, l.headDim, true);
      view.setUint32(28 + 12 * i, seq.lengths[i]!, true);
    });
    let at = headerBytes;
    for (let i = 0; i < L; i++) {
      const { k, v } = this.readEncoded(seq, i);
      const parts = [k.data, v.data];
      if (k.scales) parts.push(new Uint8Array(k.scales.buffer), new Uint8Array(v.scales!.buffer));
      for (const x of parts) { bytes.set(x, at); at += x.byteLength; }
    }
    view.setUint32(at, crc32(bytes.subarray(0, at)), true);
    return bytes;
  }

  /**
   * A new sequence holding what `snapshot` saved. A truncated, corrupted or mismatched snapshot
   * throws KVSnapshotError; a cache without room throws KVCacheFullError; either way the cache
   * is unchanged.
   */
  restore(snapshot: Uint8Array): KVSequence {
    const op = "KVCache.restore";
    this.checkLive(op);
    if (!(snapshot instanceof Uint8Array)) throw new TypeError(`${op}: snapshot must be a Uint8Array`);
    const fail = (why: string) => new KVSnapshotError(`${op}: ${why}`);
    const L = this.layers.length;
    const headerBytes = 8 + 12 + 12 * L;
    if (snapshot.length < 20 || new TextDecoder().decode(snapshot.subarray(0, 8)) !== SNAPSHOT_MAGIC) throw fail("not a gqa-wasm KV snapshot (bad magic)");
    const view = new DataView(snapshot.buffer, snapshot.byteOffset, snapshot.byteLength);
    const version = view.getUint32(8, true);
    if (version !== SNAPSHOT_VERSION) throw fail(`snapshot version ${version}; this build reads version ${SNAPSHOT_VERSION}`);
    const dtype = view.getUint32(12, true);
    if (dtype !== KV_DTYPE_CODES[this.dtype]) throw fail(`snapshot dtype code ${dtype} does not match this cache's ${this.dtype} (${KV_DTYPE_CODES[this.dtype]})`);
    const layers = view.getUint32(16, true);
    if (layers !== L) throw fail(`snapshot has ${layers} layers; this cache has ${L}`);
    if (snapshot.length < headerBytes + 4) throw fail(`truncated: ${snapshot.length} bytes`);
    const lengths: number[] = [];
    let dataBytes = 0;
    for (let i = 0; i < L; i++) {
      const kv = view.getUint32(20 + 12 * i, true), d = view.getUint32(24 + 12 * i, true), len = view.getUint32(28 + 12 * i, true);
      const l = this.layers[i]!;
      if (kv !== l.numKvHeads || d !== l.headDim) throw fail(`layer ${i} is ${kv}x${d} in the snapshot, ${l.numKvHeads}x${l.headDim} in this cache`);
      lengths.push(len);
      dataBytes += this.snapshotLayerBytes(l, len);
    }
    if (snapshot.length !== headerBytes + dataBytes + 4) throw fail(`expected ${headerBytes + dataBytes + 4} bytes for the lengths it declares, got ${snapshot.length} (truncated or padded)`);
    const stored = view.getUint32(headerBytes + dataBytes, true);
    if (crc32(snapshot.subarray(0, headerBytes + dataBytes)) !== stored) throw fail("checksum mismatch (corrupted)");
    const seq = this.createSequence();
    try {
      let at = headerBytes;
      // Copies (slice) so that the scales are 4-byte aligned.
      const take = (n: number) => { const x = snapshot.slice(at, at + n); at += n; return x; };
      this.stores.forEach((store, i) => {
        const rows = lengths[i]! * store.shape.numKvHeads;
        if (rows === 0) return;
        const k: EncodedRows = { data: take(rows * store.rowBytes) }, v: EncodedRows = { data: take(rows * store.rowBytes) };
        if (this.dtype === "int8") { k.scales = new Float32Array(take(rows * 4).buffer); v.scales = new Float32Array(take(rows * 4).buffer); }
        this.appendEncoded(seq, i, lengths[i]!, k, v);
      });
    } catch (e) {
      this.free(seq);
      throw e;
    }
    return seq;
  }

  private snapshotLayerBytes(l: KVLayerShape, len: number): number {
    const rows = len * l.numKvHeads;
    return 2 * rows * l.headDim * KV_ELEM_BYTES[this.dtype] + (this.dtype === "int8" ? 2 * rows * 4 : 0);
  }

  /** A new sequence sharing all of `seq`'s cached tokens (pages shared until written). */
  fork(seq: KVSequence): KVSequence {
    this.checkSeq("KVCache.fork", seq);
    const child = new KVSequence(this.nextId++, this.layers.length, seq.tables.map((t) => [...t]), [...seq.lengths]);
    for (const t of child.tables) for (const p of t) this.refs.set(p, this.refs.get(p)! + 1);
    this.sequences.set(child.id, child);
    return child;
  }

  /** Keeps the first n tokens in every layer (rollback); pages past them are released. */
  truncate(seq: KVSequence, n: number): void {
    const op = "KVCache.truncate";
    this.checkSeq(op, seq);
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`${op}: n must be a non-negative integer, got ${n}`);
    seq.lengths.forEach((len, layer) => {
      if (n > len) throw new RangeError(`${op}: layer ${layer} holds ${len} tokens, cannot keep ${n}`);
    });
    seq.tables.forEach((table, layer) => {
      const keep = Math.ceil(n / this.pageSize);
      for (const p of table.splice(keep)) this.unref(this.stores[layer]!, p);
      seq.lengths[layer] = n;
    });
    seq.tablesVersion++;
  }

  /** Releases the sequence's pages; using it afterwards throws UseAfterFreeError. */
  free(seq: KVSequence): void {
    this.checkSeq("KVCache.free", seq);
    seq.tables.forEach((table, layer) => { for (const p of table) this.unref(this.stores[layer]!, p); table.length = 0; });
    seq.tablesVersion++;
    seq.freed = true;
    this.sequences.delete(seq.id);
  }

  stats(): KVCacheStats {
    const bytesPerTokenPerLayer = this.layers.map((l) => this.snapshotLayerBytes(l, 1));
    return {
      pageSize: this.pageSize,
      dtype: this.dtype,
      pagesUsed: this.pools.reduce((s, p) => s + p.pagesUsed, 0),
      pagesFree: this.pools.reduce((s, p) => s + p.pagesFree, 0),
      pagesTotal: this.pools.reduce((s, p) => s + p.pagesTotal, 0),
      bytesPerTokenPerLayer,
      bytesPerToken: bytesPerTokenPerLayer.reduce((a, b) => a + b, 0),
      totalBytes: this.pools.reduce((s, p) => s + p.pagesTotal * p.pageBytes, 0),
      sequences: [...this.sequences.values()].map((s) => ({ id: s.id, length: s.length(), pages: s.tables.reduce((a, t) => a + t.length, 0) })),
    };
  }

  /**
   * Gives the memory of pages no sequence holds back to the runtime (whole slabs), for other
   * allocations: e.g. after a pass ran out of memory. Returns the pages released.
   */
  releaseFreePages(): number {
    this.checkLive("KVCache.releaseFreePages");
    return this.pools.reduce((n, p) => n + p.releaseFreeSlabs(), 0);
  }

  /** Frees every sequence and returns all pages to the runtime. */
  dispose(): void {
    for (const s of [...this.sequences.values()]) this.free(s);
    for (const p of this.pools) p.dispose();
    this.disposed = true;
  }

  /** Validates a paged attention call and cuts it into kernel jobs (inside rt.call). */
  private pagedJobs(op: string, seq: KVSequence, layer: number, args: KVAttentionArgs | KVResidentAttentionArgs, qLength: number, qPtr: number, outPtr: number,
    threads: number, alloc: (bytes: number) => number, scratchFor?: (t: number, bytes: number) => number, table?: number): { jobs: Job[]; after?: Job[]; shape: AttentionShape; splitKv: boolean } {
    this.checkSeq(op, seq);
    const store = this.store(op, layer);
    const seqK = seq.lengths[layer]!;
    if (seqK === 0) throw new RangeError(`${op}: layer ${layer} of sequence ${seq.id} holds no tokens; append K/V first`);
    const { numKvHeads, headDim } = store.shape;
    const rowLen = numKvHeads * headDim;
    const s = attentionShape(op, { ...args, numKvHeads, headDim, causal: args.causal ?? true }, qLength, seqK * rowLen, seqK * rowLen);
    const tablePtr = table ?? this.tableInScratch(seq, layer, alloc);
    const dtype = KV_DTYPE_CODES[this.dtype];
    const c = this.rt.attentionJobs(s, outPtr, (r, scratch, out, stats) => ({
      kernel: "attention_paged",
      args: [this.rt.attentionCall(s, { q: qPtr, out, pages: tablePtr, pageSize: this.pageSize, dtype }, alloc), ...r, stats, scratch],
    }), threads, scratchFor, alloc);
    return { ...c, shape: s, splitKv: c.after !== undefined };
  }

  private takePages(store: LayerStore, count: number): number[] {
    if (count <= 0) return [];
    let pages: number[];
    try {
      pages = store.pool.allocPages(count);
    } catch (e) {
      if (!(e instanceof WasmOutOfMemoryError)) throw e;
      throw new KVCacheFullError(`KV cache is full: ${count} more page(s) of ${store.pageBytes} bytes needed for a ${store.shape.numKvHeads}x${store.shape.headDim} layer, ${store.pool.pagesFree} free (${e.message.replace(/^KV page pool is full: /, "")})`,
        e.requestedBytes, e.memoryBytes, e.limitBytes);
    }
    for (const p of pages) this.refs.set(p, 1);
    return pages;
  }

  private unref(store: LayerStore, page: number): void {
    const n = this.refs.get(page)! - 1;
    if (n > 0) { this.refs.set(page, n); return; }
    this.refs.delete(page);
    store.pool.freePage(page);
  }

  private store(op: string, layer: number): LayerStore {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers.length) {
      throw new RangeError(`${op}: layer must be an integer in [0, ${this.layers.length}), got ${layer}`);
    }
    return this.stores[layer]!;
  }

  private checkLive(op: string): void {
    if (this.disposed) throw new UseAfterFreeError(`${op}: this KV cache was disposed`);
  }

  private checkSeq(op: string, seq: KVSequence): void {
    this.checkLive(op);
    if (!(seq instanceof KVSequence)) throw new TypeError(`${op}: expected a KVSequence from this cache`);
    if (seq.freed) throw new UseAfterFreeError(`${op}: sequence ${seq.id} was freed`);
    if (this.sequences.get(seq.id) !== seq) throw new TypeError(`${op}: sequence ${seq.id} belongs to another cache`);
  }
}

/** A paged KV cache in the runtime's memory; see KVCache. */
export function createKVCache(rt: Runtime, options: KVCacheOptions): KVCache {
  return new KVCache(rt, options);
}
