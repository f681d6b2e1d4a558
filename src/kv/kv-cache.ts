import { KVCacheFullError, UseAfterFreeError, WasmOutOfMemoryError } from "../errors.ts";
import type { PagePool } from "../memory/page-pool.ts";
import type { WasmBuffer } from "../memory/wasm-buffer.ts";
import { attentionShape } from "../ops/attention.ts";
import { float32Array, positiveInt } from "../ops/validate.ts";
import type { Runtime } from "../runtime/runtime.ts";

// A paged KV cache in wasm memory (PagedAttention's idea): fixed pages of `pageSize` tokens
// from page pools, a block table per (sequence, layer), and attention kernels that walk the
// block table in place. Layers may differ in KV heads (variable GQA): each layer's pages are
// sized by its own KV-head count. A page holds K then V, each head-major
// [numKvHeads][pageSize][headDim]. Pages are reference-counted so that fork() shares a
// parent's pages; a shared, partly filled last page is copied on write.

export interface KVLayerShape { numKvHeads: number; headDim: number }

export type KVDtype = "f32";

export interface KVCacheOptions {
  layers: KVLayerShape[];
  /** Tokens per page (default 16). */
  pageSize?: number;
  /** Storage type (f32 for now). */
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
  scale?: number;
}

export interface KVResidentAttentionArgs extends Omit<KVAttentionArgs, "q"> {
  q: WasmBuffer;
  out: WasmBuffer;
}

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
  /** f32 elements of one head's K (or V) rows in a page */
  headElems: number;
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
    this.pageSize = options.pageSize === undefined ? 16 : positiveInt(op, "pageSize", options.pageSize);
    this.dtype = options.dtype ?? "f32";
    if (this.dtype !== "f32") throw new RangeError(`${op}: dtype '${String(options.dtype)}' is not supported (f32)`);
    if (options.maxTokens !== undefined && options.maxBytes !== undefined) throw new TypeError(`${op}: give maxTokens or maxBytes, not both`);
    const pageBytesOf = (l: KVLayerShape) => 2 * l.numKvHeads * this.pageSize * l.headDim * 4;
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
      headElems: this.pageSize * l.headDim,
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
    const table = seq.tables[layer]!;
    const len = seq.lengths[layer]!;
    const ps = this.pageSize;
    const partial = len % ps !== 0;
    const cow = partial && (this.refs.get(table[table.length - 1]!) ?? 0) > 1;
    const fresh = Math.ceil((len + n) / ps) - table.length;
    const pages = this.takePages(store, fresh + (cow ? 1 : 0));
    const mem = this.rt.memory;
    if (cow) {
      const shared = table[table.length - 1]!;
      const copy = pages.pop()!;
      mem.u8.copyWithin(copy, shared, shared + store.pageBytes);
      this.unref(store, shared);
      table[table.length - 1] = copy;
    }
    table.push(...pages);
    const f32 = mem.f32;
    for (let t = 0; t < n; t++) {
      const pos = len + t;
      const page = table[Math.floor(pos / ps)]! >>> 2;
      const slot = (pos % ps) * D;
      for (let h = 0; h < KV; h++) {
        const src = (t * KV + h) * D;
        const kDst = page + h * store.headElems + slot;
        f32.set(k.subarray(src, src + D), kDst);
        f32.set(v.subarray(src, src + D), kDst + KV * store.headElems);
      }
    }
    seq.lengths[layer] = len + n;
  }

  /**
   * Attention of the newest tokens' queries against everything `seq` has cached in `layer`
   * (append first, then attend). Returns [seqQ, numHeads, headDim].
   */
  attention(seq: KVSequence, layer: number, args: KVAttentionArgs): Float32Array {
    const op = "KVCache.attention";
    const q = float32Array(op, "q", args?.q);
    return this.rt.withScratch(() => {
      const qPtr = this.rt.scratch.alloc(q.length * 4);
      const outPtr = this.rt.scratch.alloc(q.length * 4);
      this.runAttention(op, seq, layer, args, q.length, qPtr, outPtr, () => this.rt.memory.f32.set(q, qPtr >>> 2));
      return this.rt.memory.f32.slice(outPtr >>> 2, (outPtr >>> 2) + q.length);
    });
  }

  /** As attention(), with q and out resident in wasm memory (no copies). */
  attentionInto(seq: KVSequence, layer: number, args: KVResidentAttentionArgs): void {
    const op = "KVCache.attentionInto";
    const q = args?.q, out = args?.out;
    for (const [name, b] of [["q", q], ["out", out]] as const) {
      if (!b || typeof (b as WasmBuffer).check !== "function") throw new TypeError(`${op}: ${name} must be a WasmBuffer`);
      b.check(`${op}: ${name}`);
    }
    if (out.length !== q.length) throw new RangeError(`${op}: out has ${out.length} elements; expected ${q.length}, like q`);
    this.rt.withScratch(() => this.runAttention(op, seq, layer, args, q.length, q.ptr, out.ptr));
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
  }

  /** Releases the sequence's pages; using it afterwards throws UseAfterFreeError. */
  free(seq: KVSequence): void {
    this.checkSeq("KVCache.free", seq);
    seq.tables.forEach((table, layer) => { for (const p of table) this.unref(this.stores[layer]!, p); table.length = 0; });
    seq.freed = true;
    this.sequences.delete(seq.id);
  }

  stats(): KVCacheStats {
    const bytesPerTokenPerLayer = this.layers.map((l) => 2 * l.numKvHeads * l.headDim * 4);
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

  /** Frees every sequence and returns all pages to the runtime. */
  dispose(): void {
    for (const s of [...this.sequences.values()]) this.free(s);
    for (const p of this.pools) p.dispose();
    this.disposed = true;
  }

  private runAttention(op: string, seq: KVSequence, layer: number, args: KVAttentionArgs | KVResidentAttentionArgs,
    qLength: number, qPtr: number, outPtr: number, fill?: () => void): void {
    this.checkSeq(op, seq);
    const store = this.store(op, layer);
    const seqK = seq.lengths[layer]!;
    if (seqK === 0) throw new RangeError(`${op}: layer ${layer} of sequence ${seq.id} holds no tokens; append K/V first`);
    const { numKvHeads, headDim } = store.shape;
    const rowLen = numKvHeads * headDim;
    const s = attentionShape(op, { ...args, numKvHeads, headDim, causal: args.causal ?? true }, qLength, seqK * rowLen, seqK * rowLen);
    const table = seq.tables[layer]!;
    const tablePtr = this.rt.scratch.alloc(table.length * 4);
    const state = this.rt.scratch.alloc(this.rt.kernels.attention_scratch_bytes(s.numHeads, s.numKvHeads));
    fill?.();
    new Uint32Array(this.rt.memory.memory.buffer, tablePtr, table.length).set(table);
    this.rt.kernels.attention_paged_f32(qPtr, outPtr, s.seqQ, seqK, s.numHeads, numKvHeads, headDim, s.scale, s.causal ? 1 : 0,
      tablePtr, this.pageSize, 0, numKvHeads, 0, s.seqQ, state);
  }

  private takePages(store: LayerStore, count: number): number[] {
    if (count <= 0) return [];
    let pages: number[];
    try {
      pages = store.pool.allocPages(count);
    } catch (e) {
      if (!(e instanceof WasmOutOfMemoryError)) throw e;
      throw new KVCacheFullError(`KV cache is full: ${count} more page(s) of ${store.pageBytes} bytes needed for a ${store.shape.numKvHeads}x${store.shape.headDim} layer (${e.message})`,
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
