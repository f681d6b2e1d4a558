import { KVCacheFullError, KVSnapshotError, UseAfterFreeError, WasmOutOfMemoryError } from "../errors.ts";
import type { PagePool } from "../memory/page-pool.ts";
import type { WasmBuffer } from "../memory/wasm-buffer.ts";
import { attentionShape } from "../ops/attention.ts";
import { float32Array, positiveInt } from "../ops/validate.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { crc32 } from "./crc32.ts";

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

/** One sequence in a batched decode: its newest token's queries [1 or more, numHeads, headDim]. */
export interface KVBatchItem { seq: KVSequence; q: Float32Array }

const SNAPSHOT_MAGIC = "GQAKVSNP";
const SNAPSHOT_VERSION = 1;
const DTYPE_CODES: Record<KVDtype, number> = { f32: 1 };

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

  /** K and V of the tokens `seq` holds in `layer`, gathered token-major [length, numKvHeads, headDim]. */
  readLayer(seq: KVSequence, layer: number): { k: Float32Array; v: Float32Array } {
    const op = "KVCache.readLayer";
    this.checkSeq(op, seq);
    const store = this.store(op, layer);
    const { numKvHeads: KV, headDim: D } = store.shape;
    const len = seq.lengths[layer]!;
    const k = new Float32Array(len * KV * D), v = new Float32Array(len * KV * D);
    const f32 = this.rt.memory.f32;
    for (let pos = 0; pos < len; pos++) {
      const page = seq.tables[layer]![Math.floor(pos / this.pageSize)]! >>> 2;
      const slot = (pos % this.pageSize) * D;
      for (let h = 0; h < KV; h++) {
        const src = page + h * store.headElems + slot;
        k.set(f32.subarray(src, src + D), (pos * KV + h) * D);
        v.set(f32.subarray(src + KV * store.headElems, src + KV * store.headElems + D), (pos * KV + h) * D);
      }
    }
    return { k, v };
  }

  /**
   * Serialises one sequence (its K/V and lengths in every layer) so that it can be restored into
   * a cache of the same shape in another process or isolate. Layout (little-endian):
   * "GQAKVSNP", u32 version, u32 dtype, u32 layers, per layer u32 numKvHeads, headDim, length;
   * then per layer K then V, token-major f32; then u32 CRC-32 of everything before it.
   */
  snapshot(seq: KVSequence): Uint8Array {
    this.checkSeq("KVCache.snapshot", seq);
    const L = this.layers.length;
    const headerBytes = 8 + 12 + 12 * L;
    const dataBytes = this.layers.reduce((s, l, i) => s + 2 * seq.lengths[i]! * l.numKvHeads * l.headDim * 4, 0);
    const bytes = new Uint8Array(headerBytes + dataBytes + 4);
    const view = new DataView(bytes.buffer);
    bytes.set(new TextEncoder().encode(SNAPSHOT_MAGIC), 0);
    view.setUint32(8, SNAPSHOT_VERSION, true);
    view.setUint32(12, DTYPE_CODES[this.dtype], true);
    view.setUint32(16, L, true);
    this.layers.forEach((l, i) => {
      view.setUint32(20 + 12 * i, l.numKvHeads, true);
      view.setUint32(24 + 12 * i, l.headDim, true);
      view.setUint32(28 + 12 * i, seq.lengths[i]!, true);
    });
    let at = headerBytes;
    for (let i = 0; i < L; i++) {
      const { k, v } = this.readLayer(seq, i);
      for (const x of [k, v]) { bytes.set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength), at); at += x.byteLength; }
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
    if (dtype !== DTYPE_CODES[this.dtype]) throw fail(`snapshot dtype code ${dtype} does not match this cache's ${this.dtype}`);
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
      dataBytes += 2 * len * kv * d * 4;
    }
    if (snapshot.length !== headerBytes + dataBytes + 4) throw fail(`expected ${headerBytes + dataBytes + 4} bytes for the lengths it declares, got ${snapshot.length} (truncated or padded)`);
    const stored = view.getUint32(headerBytes + dataBytes, true);
    if (crc32(snapshot.subarray(0, headerBytes + dataBytes)) !== stored) throw fail("checksum mismatch (corrupted)");
    // Copy to an aligned buffer so the K/V can be read as floats.
    const data = new Float32Array(snapshot.slice(headerBytes, headerBytes + dataBytes).buffer);
    const seq = this.createSequence();
    try {
      let at = 0;
      this.layers.forEach((l, i) => {
        const n = lengths[i]! * l.numKvHeads * l.headDim;
        if (n > 0) this.append(seq, i, data.subarray(at, at + n), data.subarray(at + n, at + 2 * n));
        at += 2 * n;
      });
    } catch (e) {
      this.free(seq);
      throw e;
    }
    return seq;
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
