import assert from "node:assert/strict";
import { createKVCache, type KVDtype, type Runtime } from "../src/index.ts";
import { referenceAttention, maxAbsDiff } from "../src/reference.ts";
import { BUILDS, maxAbs, randomArray, runtimeFor } from "./helpers.ts";
import { f32ToBf16, f32ToF16 } from "../src/formats/half.ts";
import { KV_DTYPES } from "../src/kv/storage.ts";

/**
 * The storage encoding written plainly: f16 rounded to nearest even, what would round to
 * infinity (infinities too) saturated at ±65504 (the largest half); bf16 rounded to nearest even
 * (NaN stays NaN); int8 per
 * row of `rowLen` with scale fround(max|x| / 127) and q = clamp(Math.round(x / scale), ±127).
 */
function encodeRows(dtype: KVDtype, x: Float32Array, rowLen: number): { data: Uint8Array; scales?: Float32Array } {
  if (dtype === "f32") return { data: new Uint8Array(x.slice().buffer) };
  if (dtype === "f16") {
    const saturated = (h: number) => (h & 0x7fff) === 0x7c00 ? (h & 0x8000) | 0x7bff : h;
    return { data: new Uint8Array(Uint16Array.from(x, (e) => saturated(f32ToF16(e))).buffer) };
  }
  if (dtype === "bf16") return { data: new Uint8Array(Uint16Array.from(x, (e) => f32ToBf16(e)).buffer) };
  const rows = x.length / rowLen;
  const out = new Int8Array(x.length);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let i = r * rowLen; i < (r + 1) * rowLen; i++) m = Math.max(m, Math.abs(x[i]!));
    const scale = Math.fround(m / 127);
    scales[r] = scale;
    if (scale === 0) continue;
    for (let i = r * rowLen; i < (r + 1) * rowLen; i++) out[i] = Math.max(-127, Math.min(127, Math.round(x[i]! / scale)));
  }
  return { data: new Uint8Array(out.buffer), scales };
}

// f16, bf16 and int8 caches: the kernels must compute exactly the attention of the K/V as stored
// (checked against the float64 reference on the decoded K/V), and the storage error against
// an f32 cache must stay small.
const SHAPES = [{ H: 32, KV: 8, D: 128 }, { H: 9, KV: 3, D: 64 }, { H: 14, KV: 2, D: 67 }, { H: 4, KV: 4, D: 80 }];
const STORAGE_ERROR: Record<KVDtype, number> = { f32: 0, f16: 2e-3, bf16: 1e-2, int8: 4e-2 }; // of the output scale

/** A one-layer cache (pages of 16) of `dtype` holding 300 tokens of random K/V. */
function filled300(rt: Runtime, dtype: KVDtype, KV: number, D: number, scale = 1) {
  const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 16, dtype });
  const seq = cache.createSequence();
  cache.append(seq, 0, randomArray(300 * KV * D, 1, 2 * scale), randomArray(300 * KV * D, 2, scale));
  return { cache, seq };
}

for (const build of BUILDS) {
  it(`kv_write stores the bits of the plain encoding, every dtype (${build} build)`, async () => {
    const rt = await runtimeFor(build);
    const [KV, D, n] = [3, 37, 29];
    for (const dtype of KV_DTYPES) {
      const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 5, dtype });
      try {
        const k = randomArray(n * KV * D, 11, 3), v = randomArray(n * KV * D, 12);
        // Values at the edges: halfway cases of int8 rounding (x / scale = ±k.5), bf16 and f16
        // ties, zeros, a zero row, a subnormal, huge values; f16's: its largest, what rounds past
        // it, infinity, subnormal halves and ties.
        for (let i = 0; i < D; i++) k[i] = i % 2 === 0 ? 127 : (i - 18) + 0.5;
        for (let i = D; i < 2 * D; i++) k[i] = 0;
        k[2 * D] = -0; k[2 * D + 1] = 1e-40; k[2 * D + 2] = 3e38; v[5] = 1 + 2 ** -8; v[6] = 1 + 3 * 2 ** -8;
        k[2 * D + 3] = 65504; k[2 * D + 4] = 65519.99; k[2 * D + 5] = -65520; k[2 * D + 6] = -Infinity; k[2 * D + 7] = 2 ** -25;
        k[2 * D + 8] = 3 * 2 ** -25; k[2 * D + 9] = 1.4 * 2 ** -25; k[2 * D + 10] = 2 ** -14 - 2 ** -26; k[2 * D + 11] = 6e-5;
        v[7] = 1 + 2 ** -11; v[8] = 1 + 3 * 2 ** -11; v[9] = -(2048 + 1); v[10] = 2 ** -14 + 2 ** -25;
        const seq = cache.createSequence();
        cache.append(seq, 0, k.subarray(0, 4 * KV * D), v.subarray(0, 4 * KV * D));
        cache.append(seq, 0, k.subarray(4 * KV * D), v.subarray(4 * KV * D));
        const snap = cache.snapshot(seq);
        const ek = encodeRows(dtype, k, D), ev = encodeRows(dtype, v, D);
        const parts = [ek.data, ev.data, ...(ek.scales ? [new Uint8Array(ek.scales.buffer), new Uint8Array(ev.scales!.buffer)] : [])];
        const expected = new Uint8Array(parts.reduce((s, x) => s + x.length, 0));
        parts.reduce((at, x) => { expected.set(x, at); return at + x.length; }, 0);
        const header = 8 + 12 + 12;
        assert.deepEqual(snap.subarray(header, snap.length - 4), expected, `${dtype}: stored bytes differ from the plain encoding`);
      } finally { cache.dispose(); }
    }
  });

  it(`decode on f16 and bf16 pages is the same bits as on f32 pages holding the stored values, groups of 1, 2, 3, 4 and 7, f16 subnormals, queries past 2^15 (${build} build)`, async () => {
    // f16 groups of 1, 2 and 4 read the pages as F16Scaled with 2^112 folded into the queries and
    // P (a query element of 2^15 or more: the F16 tiles instead), 3 and 7 widen them first.
    const rt = await runtimeFor(build);
    for (const dtype of ["f16", "bf16"] as const) {
      for (const { H, KV, D } of [{ H: 4, KV: 4, D: 80 }, { H: 8, KV: 4, D: 64 }, { H: 9, KV: 3, D: 64 }, { H: 6, KV: 2, D: 67 }, { H: 32, KV: 8, D: 128 }, { H: 14, KV: 2, D: 64 }]) {
        // K/V of magnitude ~1, and ~1e-5 (f16 subnormals: F16Scaled reads them as f32 subnormals).
        for (const scale of [1, 1e-5]) {
          const { cache, seq } = filled300(rt, dtype, KV, D, scale);
          const f32 = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 16 });
          try {
            const ref = f32.createSequence();
            const stored = cache.readLayer(seq, 0);
            if (dtype === "f16" && scale < 1) assert.ok(stored.k.some((x) => x !== 0 && Math.abs(x) < 2 ** -14), "the K pages hold f16 subnormals");
            f32.append(ref, 0, stored.k, stored.v);
            for (let step = 0; step < 4; step++) {
              const q = randomArray(H * D, 3 + step, 2);
              if (step === 3) q[H * D - 1] = 40000; // past 2^15: the call is not folded
              assert.deepEqual(cache.attention(seq, 0, { q, numHeads: H }), f32.attention(ref, 0, { q, numHeads: H }), `${dtype} ${H}/${KV}/${D} scale ${scale} step ${step}`);
            }
          } finally { cache.dispose(); f32.dispose(); }
        }
      }
    }
  });

  it(`a query's output is the same bits alone (decode: the tiles, or for f16 groups of 3, 6 and 7 the rows widened once) as among 40 (prefill: widened once), every dtype, groups of 1, 2, 3, 4, 7 and 8 (${build} build)`, async () => {
    const rt = await runtimeFor(build);
    for (const dtype of KV_DTYPES) {
      for (const { H, KV, D } of [{ H: 9, KV: 3, D: 64 }, { H: 6, KV: 2, D: 67 }, { H: 32, KV: 8, D: 128 }, { H: 4, KV: 4, D: 80 }, { H: 14, KV: 2, D: 64 }, { H: 16, KV: 2, D: 36 }, { H: 16, KV: 8, D: 128 }, { H: 4, KV: 2, D: 37 }]) {
        const { cache, seq } = filled300(rt, dtype, KV, D);
        try {
          const n = 40, row = H * D, q = randomArray(n * row, 3, 2);
          const all = cache.attention(seq, 0, { q, numHeads: H, causal: false });
          for (let i = 0; i < n; i++) {
            const alone = cache.attention(seq, 0, { q: q.subarray(i * row, (i + 1) * row), numHeads: H, causal: false });
            assert.deepEqual(alone, all.subarray(i * row, (i + 1) * row), `${dtype} ${H}/${KV}/${D}: query ${i}`);
          }
        } finally { cache.dispose(); }
      }
    }
  });

  for (const dtype of ["f16", "bf16", "int8"] as const) {
    describe(`${dtype} KV cache (${build} build)`, () => {
      for (const pageSize of [7, 16]) {
        it(`attends exactly to the stored K/V, and stays within ${STORAGE_ERROR[dtype]} of f32 (page size ${pageSize})`, async () => {
          const rt = await runtimeFor(build);
          const layers = SHAPES.map(({ KV, D }) => ({ numKvHeads: KV, headDim: D }));
          const cache = createKVCache(rt, { layers, pageSize, dtype });
          const f32 = createKVCache(rt, { layers, pageSize });
          try {
            const seq = cache.createSequence(), ref = f32.createSequence();
            SHAPES.forEach(({ H, KV, D }, layer) => {
              for (const [step, n] of [40, 1, 2].entries()) {
                const k = randomArray(n * KV * D, 7 * layer + step), v = randomArray(n * KV * D, 70 + 7 * layer + step);
                cache.append(seq, layer, k, v);
                f32.append(ref, layer, k, v);
                const q = randomArray(n * H * D, 300 + step, 3);
                const out = cache.attention(seq, layer, { q, numHeads: H });
                const stored = cache.readLayer(seq, layer);
                const exact = referenceAttention({ q, k: stored.k, v: stored.v, numHeads: H, numKvHeads: KV, headDim: D, causal: true });
                assert.ok(maxAbsDiff(out, exact) <= 2e-4 * maxAbs(exact), `layer ${layer} step ${step}: kernel vs stored K/V ${maxAbsDiff(out, exact)}`);
                const full = f32.attention(ref, layer, { q, numHeads: H });
                const err = maxAbsDiff(out, full) / maxAbs(full);
                assert.ok(err <= STORAGE_ERROR[dtype], `layer ${layer} step ${step}: ${dtype} vs f32 relative error ${err}`);
              }
            });
          } finally { cache.dispose(); f32.dispose(); }
        });
      }

      it("takes the expected share of the f32 bytes, and snapshots, forks and truncations round-trip exactly", async () => {
        const rt = await runtimeFor(build);
        const [H, KV, D] = [8, 2, 64];
        const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 8, dtype });
        const other = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 3, dtype });
        try {
          const perToken = cache.stats().bytesPerToken;
          assert.equal(perToken, dtype === "int8" ? 2 * KV * D + 2 * KV * 4 : 2 * KV * D * 2);
          const seq = cache.createSequence();
          cache.append(seq, 0, randomArray(30 * KV * D, 1), randomArray(30 * KV * D, 2));
          const child = cache.fork(seq);
          cache.append(child, 0, randomArray(5 * KV * D, 3), randomArray(5 * KV * D, 4));
          cache.truncate(child, 29);
          const restored = other.restore(cache.snapshot(child));
          assert.deepEqual(other.readLayer(restored, 0), cache.readLayer(child, 0));
          assert.deepEqual(other.snapshot(restored), cache.snapshot(child));
          const q = randomArray(H * D, 5);
          assert.deepEqual(other.attention(restored, 0, { q, numHeads: H }), cache.attention(child, 0, { q, numHeads: H }));
          const parentStored = cache.readLayer(seq, 0);
          assert.equal(parentStored.k.length, 30 * KV * D, "the parent kept its 30 tokens");
        } finally { cache.dispose(); other.dispose(); }
      });
    });
  }
}
