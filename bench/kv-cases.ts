// The KV-cache part of `npm run bench`, each case one decode token through enough layers that
// their K/V come from memory (as in a model): paging overhead against the contiguous op, f16 / bf16 /
// int8 storage against f32 (time, error, roofline with the storage type's bytes), and the
// DeciLM-7B variable-GQA stack against the same stack as MHA.
import { createKVCache, maxAbsDiff, type KVDtype, type Runtime, type WasmBuffer } from "../src/index.ts";
import { DECILM_7B_KV_HEADS } from "../src/demo.ts";
import { KV_DTYPES, KV_ELEM_BYTES } from "../src/kv/storage.ts";
import { measure } from "./harness.ts";
import { seededArray as random } from "../src/random.ts";

export interface KvRow {
  case: string;
  build: string;
  ms: number;
  /** Bytes of K/V read (storage type) */
  bytes: number;
  gbps: number;
  rooflineMs: number;
  rooflineFraction: number;
  /** against the contiguous op (paging overhead), or against the f32 cache (dtypes) */
  versus?: { what: string; ratio: number };
  /** max |out - out_f32| / max |out_f32| */
  relErrorVsF32?: number;
  bytesPerToken?: number;
}


function maxAbs(a: Float32Array): number { let m = 0; for (const x of a) m = Math.max(m, Math.abs(x)); return m; }

/**
 * Layers enough that together they hold at least this many bytes of K/V: each case times one
 * token through every layer, as a decode step sees the cache (a layer's K/V long out of the CPU's
 * caches by its next use), not one layer's K/V read again and again from the L2/L3.
 */
const MIN_STACK_BYTES = 96 << 20;

function layersFor(KV: number, D: number, past: number, bytesPerElement: number): number {
  return Math.max(1, Math.ceil(MIN_STACK_BYTES / (2 * past * KV * D * bytesPerElement)));
}

/** One sequence of `layers` identical layer shapes, each filled with `past` tokens in chunks (no huge temporaries). */
function fillCache(rt: Runtime, KV: number, D: number, past: number, dtype: KVDtype, layers: number) {
  const cache = createKVCache(rt, { layers: Array.from({ length: layers }, () => ({ numKvHeads: KV, headDim: D })), dtype }); // the default page size
  const seq = cache.createSequence();
  for (let l = 0; l < layers; l++) {
    for (let t = 0; t < past; t += 512) {
      const n = Math.min(512, past - t);
      cache.append(seq, l, random(n * KV * D, 1 + t + 1000 * l), random(n * KV * D, 7 + t + 1000 * l));
    }
  }
  return { cache, seq };
}

export function kvCases(
  rt: Runtime, quick: boolean, roofline: (bytes: number, flops: number, probeBytes: number) => number,
): KvRow[] {
  const rows: KvRow[] = [];
  const H = 32, D = 128;
  const pasts = quick ? [512] : [2048, 8192];
  const log = (r: KvRow) => {
    rows.push(r);
    console.error(`  kv ${r.case} [${r.build}]: ${r.ms.toFixed(3)} ms, ${(100 * r.rooflineFraction).toFixed(0)}% of roofline` +
      (r.versus ? `, ${r.versus.ratio.toFixed(2)}x ${r.versus.what}` : "") + (r.relErrorVsF32 !== undefined ? `, rel. error ${r.relErrorVsF32.toExponential(1)}` : ""));
  };
  const row = (name: string, ms: number, bytes: number, flops: number, extra: Partial<KvRow> = {}): KvRow => {
    const rl = roofline(bytes, flops, MIN_STACK_BYTES); // read bandwidth from memory, as the cases read
    return { case: name, build: rt.build, ms, bytes, gbps: bytes / ms / 1e6, rooflineMs: rl, rooflineFraction: rl / ms, ...extra };
  };

  /** Per-layer ms of one token through `layers` layers (layersFor), K/V from memory: `call(l)` attends layer l. */
  const msPerLayer = (layers: number, call: (l: number) => void): number => {
    const step = () => { for (let l = 0; l < layers; l++) call(l); };
    for (let i = 0; i < 3; i++) step();
    return measure(step).medianMs / layers;
  };

  for (const KV of [8, 32]) {
    for (const past of pasts) {
      const flops = 4 * H * D * past;
      const layers = layersFor(KV, D, past, 4);
      const q = rt.upload(random(H * D, 3)), out = rt.alloc(H * D);
      // Contiguous: the same tokens token-major.
      const { cache, seq } = fillCache(rt, KV, D, past, "f32", layers);
      const ks: WasmBuffer[] = [], vs: WasmBuffer[] = [];
      try {
        for (let l = 0; l < layers; l++) { const flat = cache.readLayer(seq, l); ks.push(rt.upload(flat.k)); vs.push(rt.upload(flat.v)); }
        const pagedArgs = { q, out, numHeads: H };
        const contiguous = msPerLayer(layers, (l) => rt.attentionInto({ q, k: ks[l]!, v: vs[l]!, out, numHeads: H, numKvHeads: KV, headDim: D }));
        const paged = msPerLayer(layers, (l) => cache.attentionInto(seq, l, pagedArgs));
        const bytes = 2 * past * KV * D * 4;
        log(row(`contiguous ${H}/${KV}/${D} past ${past} (per layer of ${layers})`, contiguous, bytes, flops));
        log(row(`paged f32 ${H}/${KV}/${D} past ${past} (per layer of ${layers})`, paged, bytes, flops,
          { versus: { what: "the contiguous op's time (paging overhead: ratio - 1)", ratio: paged / contiguous } }));
      } finally { for (const x of [...ks, ...vs]) x.free(); q.free(); out.free(); cache.dispose(); }
    }
  }

  const dtypePast = quick ? 512 : 8192;
  for (const KV of [8, 32]) {
    const q = random(H * D, 5);
    const flops = 4 * H * D * dtypePast;
    let f32Ms = 0, f32Out = new Float32Array(0);
    for (const dtype of KV_DTYPES) { // f32 first: the others' baseline
      const layers = layersFor(KV, D, dtypePast, KV_ELEM_BYTES[dtype]);
      const { cache, seq } = fillCache(rt, KV, D, dtypePast, dtype, layers);
      const qb = rt.upload(q), out = rt.alloc(H * D);
      try {
        const args = { q: qb, out, numHeads: H };
        const ms = msPerLayer(layers, (l) => cache.attentionInto(seq, l, args));
        cache.attentionInto(seq, 0, args);
        const result = out.toFloat32Array();
        if (dtype === "f32") { f32Ms = ms; f32Out = result; }
        const bytes = dtypePast * cache.stats().bytesPerToken / layers;
        log(row(`paged ${dtype} ${H}/${KV}/${D} past ${dtypePast} (per layer of ${layers})`, ms, bytes, flops, {
          versus: { what: "faster than the f32 cache", ratio: f32Ms / ms },
          relErrorVsF32: maxAbsDiff(result, f32Out) / maxAbs(f32Out),
          bytesPerToken: cache.stats().bytesPerToken / layers,
        }));
      } finally { qb.free(); out.free(); cache.dispose(); }
    }
  }

  // DeciLM-7B's per-layer KV heads vs the same 32 layers as MHA: one token decoded through every
  // layer's cache. Each distinct layer shape is timed once (per layer, from memory as above) and
  // counted per layer.
  const stackPast = quick ? 512 : 2048;
  const msPerKv = new Map<number, number>();
  for (const KV of new Set([...DECILM_7B_KV_HEADS, H])) {
    const layers = layersFor(KV, D, stackPast, 4);
    const { cache, seq } = fillCache(rt, KV, D, stackPast, "f32", layers);
    const q = rt.upload(random(H * D, 9)), out = rt.alloc(H * D);
    try {
      const args = { q, out, numHeads: H };
      msPerKv.set(KV, msPerLayer(layers, (l) => cache.attentionInto(seq, l, args)));
    } finally { q.free(); out.free(); cache.dispose(); }
  }
  const stacks: [string, number[]][] = [["MHA x32 layers", Array(32).fill(H)], ["DeciLM-7B variable GQA", DECILM_7B_KV_HEADS]];
  let mhaMs = 0;
  for (const [name, kvs] of stacks) {
    const ms = kvs.reduce((s, kv) => s + msPerKv.get(kv)!, 0);
    const bytesPerToken = kvs.reduce((s, kv) => s + 2 * kv * D * 4, 0);
    if (name.startsWith("MHA")) mhaMs = ms;
    log(row(`stack ${name}, ${H} heads x ${D}, past ${stackPast}`, ms, stackPast * bytesPerToken, 32 * 4 * H * D * stackPast,
      { bytesPerToken, versus: { what: "faster than the MHA stack", ratio: mhaMs / ms } }));
  }
  return rows;
}
