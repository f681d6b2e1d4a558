// The KV-cache part of `npm run bench`: paging overhead against the contiguous op, bf16 / int8
// storage against f32 (time, error, roofline with the storage type's bytes), and the
// DeciLM-7B variable-GQA stack against the same stack as MHA.
import { createKVCache, maxAbsDiff, type KVDtype, type Runtime } from "../src/index.ts";
import { DECILM_7B_KV_HEADS } from "../src/demo.ts";
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

/** Fills one sequence of a one-layer cache with `past` tokens, in chunks (no huge temporaries). */
function fillCache(rt: Runtime, KV: number, D: number, past: number, dtype: KVDtype) {
  const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], dtype }); // the default page size
  const seq = cache.createSequence();
  for (let t = 0; t < past; t += 512) {
    const n = Math.min(512, past - t);
    cache.append(seq, 0, random(n * KV * D, 1 + t), random(n * KV * D, 7 + t));
  }
  return { cache, seq };
}

export function kvCases(
  rt: Runtime, quick: boolean, roofline: (bytes: number, flops: number) => number,
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
    const rl = roofline(bytes, flops);
    return { case: name, build: rt.build, ms, bytes, gbps: bytes / ms / 1e6, rooflineMs: rl, rooflineFraction: rl / ms, ...extra };
  };

  for (const KV of [8, 32]) {
    for (const past of pasts) {
      const flops = 4 * H * D * past;
      const q = rt.upload(random(H * D, 3)), out = rt.alloc(H * D);
      // Contiguous: the same tokens token-major.
      const { cache, seq } = fillCache(rt, KV, D, past, "f32");
      const flat = cache.readLayer(seq, 0);
      const k = rt.upload(flat.k), v = rt.upload(flat.v);
      try {
        const contiguousArgs = { q, k, v, out, numHeads: H, numKvHeads: KV, headDim: D };
        const pagedArgs = { q, out, numHeads: H };
        for (let i = 0; i < 5; i++) { rt.attentionInto(contiguousArgs); cache.attentionInto(seq, 0, pagedArgs); }
        const contiguous = measure(() => rt.attentionInto(contiguousArgs));
        const paged = measure(() => cache.attentionInto(seq, 0, pagedArgs));
        const bytes = 2 * past * KV * D * 4;
        log(row(`contiguous ${H}/${KV}/${D} past ${past}`, contiguous.medianMs, bytes, flops));
        log(row(`paged f32 ${H}/${KV}/${D} past ${past}`, paged.medianMs, bytes, flops,
          { versus: { what: "the contiguous op's time (paging overhead: ratio - 1)", ratio: paged.medianMs / contiguous.medianMs } }));
      } finally { k.free(); v.free(); q.free(); out.free(); cache.dispose(); }
    }
  }

  const dtypePast = quick ? 512 : 8192;
  for (const KV of [8, 32]) {
    const q = random(H * D, 5);
    const flops = 4 * H * D * dtypePast;
    let f32Ms = 0, f32Out = new Float32Array(0);
    for (const dtype of ["f32", "bf16", "int8"] as const) {
      const { cache, seq } = fillCache(rt, KV, D, dtypePast, dtype);
      const qb = rt.upload(q), out = rt.alloc(H * D);
      try {
        const args = { q: qb, out, numHeads: H };
        for (let i = 0; i < 5; i++) cache.attentionInto(seq, 0, args);
        const t = measure(() => cache.attentionInto(seq, 0, args));
        const result = out.toFloat32Array();
        if (dtype === "f32") { f32Ms = t.medianMs; f32Out = result; }
        const bytes = dtypePast * cache.stats().bytesPerToken;
        log(row(`paged ${dtype} ${H}/${KV}/${D} past ${dtypePast}`, t.medianMs, bytes, flops, {
          versus: { what: "faster than the f32 cache", ratio: f32Ms / t.medianMs },
          relErrorVsF32: maxAbsDiff(result, f32Out) / maxAbs(f32Out),
          bytesPerToken: cache.stats().bytesPerToken,
        }));
      } finally { qb.free(); out.free(); cache.dispose(); }
    }
  }

  // DeciLM-7B's per-layer KV heads vs the same 32 layers as MHA: one token decoded through every
  // layer's cache. Each distinct layer shape is timed once and counted per layer.
  const stackPast = quick ? 512 : 2048;
  const msPerKv = new Map<number, number>();
  for (const KV of new Set([...DECILM_7B_KV_HEADS, H])) {
    const { cache, seq } = fillCache(rt, KV, D, stackPast, "f32");
    const q = rt.upload(random(H * D, 9)), out = rt.alloc(H * D);
    try {
      const args = { q, out, numHeads: H };
      for (let i = 0; i < 5; i++) cache.attentionInto(seq, 0, args);
      msPerKv.set(KV, measure(() => cache.attentionInto(seq, 0, args)).medianMs);
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
