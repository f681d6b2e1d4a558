import assert from "node:assert/strict";
import { createKVCache, KVCacheFullError, UseAfterFreeError, type KVSequence, type Runtime } from "../src/index.ts";
import { referenceAttention, maxAbsDiff } from "../src/reference.ts";
import { BUILDS, maxAbs, randomArray, runtimeFor } from "./helpers.ts";

const DECILM = [4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4];

/** Token-major K/V of `n` tokens for a layer, deterministic per (seed, layer). */
function kvRows(n: number, kvHeads: number, D: number, seed: number) {
  return { k: randomArray(n * kvHeads * D, seed * 2 + 1), v: randomArray(n * kvHeads * D, seed * 2 + 2) };
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const c = new Float32Array(a.length + b.length);
  c.set(a); c.set(b, a.length);
  return c;
}

for (const build of BUILDS) {
  describe(`paged KV cache (${build} build)`, () => {
    let rt: Runtime;
    before(async () => { rt = await runtimeFor(build); });

    for (const pageSize of [1, 5, 16, 32, 100]) {
      it(`paged attention equals contiguous attention bit for bit (page size ${pageSize}, layers 32/8/128, 9/3/64, 14/2/40, 8/1/67, MHA 4/4/32, 10/2/24, 12/2/33, 18/2/20)`, () => {
        // MHA decode and a group of 5 (4 + 1) take the one-row score path, which reads a page's keys in four streams;
        // groups of 3, 6 (3 + 3), 7 (4 + 3) and 9 (3 + 3 + 3) the 3-row tiles, which read them in three.
        const layers = [{ H: 32, KV: 8, D: 128 }, { H: 9, KV: 3, D: 64 }, { H: 14, KV: 2, D: 40 }, { H: 8, KV: 1, D: 67 }, { H: 4, KV: 4, D: 32 }, { H: 10, KV: 2, D: 24 }, { H: 12, KV: 2, D: 33 }, { H: 18, KV: 2, D: 20 }];
        const cache = createKVCache(rt, { layers: layers.map(({ KV, D }) => ({ numKvHeads: KV, headDim: D })), pageSize });
        try {
          const seq = cache.createSequence();
          layers.forEach(({ H, KV, D }, layer) => {
            // A chunked prefill of 37 tokens, then 3 decode steps, each checked against the contiguous op.
            let K = new Float32Array(0), V = new Float32Array(0);
            for (const [step, n] of [37, 1, 1, 1].entries()) {
              const { k, v } = kvRows(n, KV, D, 10 * layer + step);
              cache.append(seq, layer, k, v);
              K = concat(K, k); V = concat(V, v);
              const q = randomArray(n * H * D, 100 + step);
              const paged = cache.attention(seq, layer, { q, numHeads: H });
              const flat = rt.attention({ q, k: K, v: V, numHeads: H, numKvHeads: KV, headDim: D, causal: true });
              assert.deepEqual(paged, flat, `layer ${layer}, step ${step}`);
            }
          });
        } finally { cache.dispose(); }
      });
    }

    it("sliding window through the cache: chunked prefill then decode match the float64 reference", () => {
      const H = 8, KV = 2, D = 40, W = 45;
      const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 16 });
      try {
        const seq = cache.createSequence();
        let K = new Float32Array(0), V = new Float32Array(0);
        for (const [step, n] of [70, 30, 1, 1, 1].entries()) {
          const { k, v } = kvRows(n, KV, D, 900 + step);
          cache.append(seq, 0, k, v);
          K = concat(K, k); V = concat(V, v);
          const q = randomArray(n * H * D, 950 + step);
          const out = cache.attention(seq, 0, { q, numHeads: H, slidingWindow: W });
          const ref = referenceAttention({ q, k: K, v: V, numHeads: H, numKvHeads: KV, headDim: D, causal: true, slidingWindow: W });
          assert.ok(maxAbsDiff(out, ref) <= 2e-4 * maxAbs(ref), `step ${step}`);
        }
        assert.throws(() => cache.attention(seq, 0, { q: randomArray(H * D, 1), numHeads: H, slidingWindow: W, causal: false }), /slidingWindow needs causal/);
        assert.throws(() => cache.attention(seq, 0, { q: randomArray(H * D, 1), numHeads: H, slidingWindow: 0 }), /slidingWindow/);
      } finally { cache.dispose(); }
    });

    it("matches the float64 reference through a DeciLM-7B-like variable-GQA stack", () => {
      const D = 64, H = 32, T = 40;
      const cache = createKVCache(rt, { layers: DECILM.map((n) => ({ numKvHeads: n, headDim: D })), pageSize: 16 });
      try {
        const seq = cache.createSequence();
        DECILM.forEach((KV, layer) => {
          const { k, v } = kvRows(T, KV, D, layer);
          cache.append(seq, layer, k, v);
          const q = randomArray(H * D, 500 + layer);
          const out = cache.attention(seq, layer, { q, numHeads: H });
          const ref = referenceAttention({ q, k, v, numHeads: H, numKvHeads: KV, headDim: D, causal: true });
          assert.ok(maxAbsDiff(out, ref) <= 2e-4 * maxAbs(ref), `layer ${layer}`);
        });
        const stats = cache.stats();
        assert.equal(stats.bytesPerToken, DECILM.reduce((s, n) => s + 2 * n * D * 4, 0));
        assert.equal(stats.pagesUsed, DECILM.length * Math.ceil(T / 16));
      } finally { cache.dispose(); }
    });

    it("bytes per token follow the KV-head count: MHA : GQA-8 : MQA = 32 : 8 : 1", () => {
      const per = [32, 8, 1].map((n) => {
        const c = createKVCache(rt, { layers: Array(4).fill({ numKvHeads: n, headDim: 128 }) });
        const s = c.createSequence();
        for (let l = 0; l < 4; l++) { const { k, v } = kvRows(64, n, 128, l); c.append(s, l, k, v); }
        const st = c.stats();
        c.dispose();
        return [st.bytesPerToken, st.pagesUsed * (st.totalBytes / st.pagesTotal)];
      });
      assert.deepEqual(per.map(([b]) => b! / per[2]![0]!), [32, 8, 1]);
      assert.deepEqual(per.map(([, used]) => used! / per[2]![1]!), [32, 8, 1]);
    });

    it("fork shares pages, and writes after the fork do not leak across (copy on write)", () => {
      const [H, KV, D] = [8, 2, 32];
      const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 8 });
      try {
        const parent = cache.createSequence();
        const base = kvRows(13, KV, D, 1); // 13 tokens: the second page is partly filled
        cache.append(parent, 0, base.k, base.v);
        const pagesBefore = cache.stats().pagesUsed;
        const child = cache.fork(parent);
        assert.equal(cache.stats().pagesUsed, pagesBefore, "fork copies nothing");
        const a = kvRows(4, KV, D, 2), b = kvRows(4, KV, D, 3);
        cache.append(parent, 0, a.k, a.v);
        cache.append(child, 0, b.k, b.v);
        const q = randomArray(H * D, 9);
        for (const [seq, extra] of [[parent, a], [child, b]] as const) {
          const expect = rt.attention({ q, k: concat(base.k, extra.k), v: concat(base.v, extra.v), numHeads: H, numKvHeads: KV, headDim: D, causal: true });
          assert.deepEqual(cache.attention(seq, 0, { q, numHeads: H }), expect);
        }
        cache.free(parent);
        const only = rt.attention({ q, k: concat(base.k, b.k), v: concat(base.v, b.v), numHeads: H, numKvHeads: KV, headDim: D, causal: true });
        assert.deepEqual(cache.attention(child, 0, { q, numHeads: H }), only, "the child survives its parent");
      } finally { cache.dispose(); }
    });

    it("truncate then re-append equals never having appended", () => {
      const [H, KV, D] = [6, 3, 24];
      const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }, { numKvHeads: 1, headDim: D }], pageSize: 4 });
      try {
        const s1 = cache.createSequence(), s2 = cache.createSequence();
        for (const layer of [0, 1]) {
          const kv = layer === 0 ? KV : 1;
          const first = kvRows(10, kv, D, layer), wrong = kvRows(5, kv, D, 7 + layer), right = kvRows(3, kv, D, 9 + layer);
          cache.append(s1, layer, first.k, first.v);
          cache.append(s2, layer, first.k, first.v);
          cache.append(s1, layer, wrong.k, wrong.v);
          cache.append(s2, layer, right.k, right.v);
        }
        const fork = cache.fork(s1); // the rolled-back pages are shared: truncate must not disturb the fork
        cache.truncate(s1, 10);
        assert.equal(s1.length(1), 10);
        for (const layer of [0, 1]) { const right = kvRows(3, layer === 0 ? KV : 1, D, 9 + layer); cache.append(s1, layer, right.k, right.v); }
        for (const layer of [0, 1]) {
          const q = randomArray(2 * H * D, 4);
          assert.deepEqual(cache.attention(s1, layer, { q, numHeads: H }), cache.attention(s2, layer, { q, numHeads: H }));
          assert.equal(fork.length(layer), 15);
        }
        assert.throws(() => cache.truncate(s1, 14), /holds 13 tokens, cannot keep 14/);
      } finally { cache.dispose(); }
    });

    it("a full cache fails the append with KVCacheFullError before writing, other sequences intact, freed pages reused", () => {
      const [H, KV, D] = [4, 2, 16];
      const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 4, maxTokens: 20 });
      try {
        const a = cache.createSequence(), b = cache.createSequence();
        const ka = kvRows(12, KV, D, 1), kb = kvRows(6, KV, D, 2);
        cache.append(a, 0, ka.k, ka.v); // 3 pages
        cache.append(b, 0, kb.k, kb.v); // 2 pages: 5 of 5 in use
        const q = randomArray(H * D, 3);
        const before = [cache.attention(a, 0, { q, numHeads: H }), cache.attention(b, 0, { q, numHeads: H })];
        const more = kvRows(3, KV, D, 4);
        assert.throws(() => cache.append(b, 0, more.k, more.v), (e: unknown) => e instanceof KVCacheFullError && /KV cache is full/.test((e as Error).message));
        assert.equal(b.length(), 6);
        assert.deepEqual([cache.attention(a, 0, { q, numHeads: H }), cache.attention(b, 0, { q, numHeads: H })], before);
        cache.free(a);
        cache.append(b, 0, more.k, more.v);
        assert.equal(b.length(), 9);
        assert.throws(() => cache.attention(a, 0, { q, numHeads: H }), UseAfterFreeError);
        assert.throws(() => cache.append(a, 0, more.k, more.v), UseAfterFreeError);
      } finally { cache.dispose(); }
    });

    it("rejects bad arguments clearly", () => {
      assert.throws(() => createKVCache(rt, { layers: [] }), /layers must be a non-empty array/);
      assert.throws(() => createKVCache(rt, { layers: [{ numKvHeads: 0, headDim: 8 }] }), /layers\[0\].numKvHeads must be positive/);
      assert.throws(() => createKVCache(rt, { layers: [{ numKvHeads: 1, headDim: 8 }], dtype: "int4" as never }), /dtype 'int4' is not supported/);
      const cache = createKVCache(rt, { layers: [{ numKvHeads: 2, headDim: 8 }] });
      try {
        const s = cache.createSequence();
        assert.throws(() => cache.attention(s, 0, { q: new Float32Array(32), numHeads: 4 }), /holds no tokens; append K\/V first/);
        assert.throws(() => cache.append(s, 0, new Float32Array(15), new Float32Array(15)), /k has 15 elements; expected \[n, 2, 8\]/);
        assert.throws(() => cache.append(s, 1, new Float32Array(16), new Float32Array(16)), /layer must be an integer in \[0, 1\), got 1/);
        cache.append(s, 0, new Float32Array(16), new Float32Array(16));
        assert.throws(() => cache.attention(s, 0, { q: new Float32Array(24), numHeads: 3 }), /numHeads \(3\) must be a multiple of numKvHeads \(2\)/);
      } finally { cache.dispose(); }
    });

    it("releaseFreePages gives whole free slabs back to the runtime and keeps the ones in use", () => {
      // (The scratch arena keeps what it grew to: a first call of the runtime may grow it here.)
      const held = () => rt.stats().persistentLiveBytes - rt.stats().scratchReservedBytes;
      const before = held();
      const cache = createKVCache(rt, { layers: [{ numKvHeads: 2, headDim: 16 }], pageSize: 4 });
      try {
        const a = cache.createSequence(), b = cache.createSequence();
        const rows = (n: number, seed: number) => kvRows(n, 2, 16, seed);
        const ra = rows(4 * 70, 1), rb = rows(3, 2);
        cache.append(a, 0, ra.k, ra.v); // 70 pages: a slab of 64 and another
        cache.append(b, 0, rb.k, rb.v);
        const used = cache.stats().pagesTotal;
        cache.free(a);
        const released = cache.releaseFreePages();
        assert.ok(released > 0 && released < used, `${released} of ${used} pages released; b's slab stays`);
        assert.deepEqual(cache.readLayer(b, 0), { k: rb.k, v: rb.v }, "b's K/V intact");
        cache.free(b);
        cache.releaseFreePages();
        assert.equal(cache.stats().pagesTotal, 0);
        assert.equal(held(), before, "every slab back in the arena");
        const again = cache.createSequence();
        cache.append(again, 0, rb.k, rb.v);
        assert.deepEqual(cache.readLayer(again, 0), { k: rb.k, v: rb.v }, "the cache still works");
      } finally { cache.dispose(); }
    });

    it("soak: 20,000 appends and frees across many sequences end with every page back in the pool", () => {
      const [KV, D] = [2, 8];
      const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }, { numKvHeads: 1, headDim: D }], pageSize: 4, maxTokens: 4000 });
      const live: KVSequence[] = [];
      let state = 12345, appends = 0;
      const rnd = (n: number) => { state = (Math.imul(state, 1103515245) + 12345) >>> 0; return state % n; };
      const one = kvRows(1, KV, D, 1), oneMqa = kvRows(1, 1, D, 2);
      try {
        while (appends < 20_000) {
          const r = rnd(100);
          if (live.length === 0 || r < 5) live.push(cache.createSequence());
          else if (r < 8) live.push(cache.fork(live[rnd(live.length)]!));
          else if (r < 12) cache.free(live.splice(rnd(live.length), 1)[0]!);
          else if (r < 14) { const s = live[rnd(live.length)]!; cache.truncate(s, rnd(s.length() + 1)); }
          else {
            const s = live[rnd(live.length)]!;
            try {
              cache.append(s, 0, one.k, one.v);
              cache.append(s, 1, oneMqa.k, oneMqa.v);
            } catch (e) {
              if (!(e instanceof KVCacheFullError)) throw e;
              cache.free(live.splice(live.indexOf(s), 1)[0]!); // evict, like a server would
              continue;
            }
            appends++;
          }
        }
        for (const s of live.splice(0)) cache.free(s);
        const st = cache.stats();
        assert.equal(st.pagesUsed, 0);
        assert.equal(st.pagesFree, st.pagesTotal);
        assert.deepEqual(st.sequences, []);
      } finally { cache.dispose(); }
    });
  });
}

