import assert from "node:assert/strict";
import { createKVCache, KVCacheFullError, KVSnapshotError, type KVCache, type KVSequence } from "../src/index.ts";
import { randomArray, runtimeFor } from "./helpers.ts";

const LAYERS = [{ numKvHeads: 4, headDim: 16 }, { numKvHeads: 2, headDim: 16 }, { numKvHeads: 1, headDim: 24 }];

async function filledCache(maxTokens?: number): Promise<{ cache: KVCache; seq: KVSequence }> {
  const rt = await runtimeFor("simd");
  const cache = createKVCache(rt, { layers: LAYERS, pageSize: 8, maxTokens });
  const seq = cache.createSequence();
  LAYERS.forEach((l, i) => {
    const n = 21 * l.numKvHeads * l.headDim;
    cache.append(seq, i, randomArray(n, 10 + i), randomArray(n, 20 + i));
  });
  return { cache, seq };
}

describe("KV snapshots and batched decode", () => {
  it("a snapshot restores exactly, in another cache of the same shape", async () => {
    const { cache, seq } = await filledCache();
    const other = createKVCache(await runtimeFor("simd"), { layers: LAYERS, pageSize: 4 });
    try {
      const bytes = cache.snapshot(seq);
      const copy = other.restore(bytes);
      LAYERS.forEach((_, i) => {
        assert.equal(copy.length(i), 21);
        assert.deepEqual(other.readLayer(copy, i), cache.readLayer(seq, i), `layer ${i}`);
      });
      // The restored sequence keeps going like the original.
      const q = randomArray(8 * 16, 5);
      assert.deepEqual(other.attention(copy, 0, { q, numHeads: 8 }), cache.attention(seq, 0, { q, numHeads: 8 }));
      assert.deepEqual(other.snapshot(copy), bytes);
    } finally { cache.dispose(); other.dispose(); }
  });

  it("rejects truncated, corrupted, mismatched and foreign snapshots, changing nothing", async () => {
    const { cache, seq } = await filledCache();
    try {
      const bytes = cache.snapshot(seq);
      const before = cache.stats();
      const flip = (at: number) => { const b = bytes.slice(); b[at] ^= 0x40; return b; };
      const cases: [string, Uint8Array, RegExp][] = [
        ["empty", new Uint8Array(0), /bad magic/],
        ["foreign", new TextEncoder().encode("PK\u0003\u0004 a zip file, not a snapshot"), /bad magic/],
        ["truncated header", bytes.slice(0, 30), /truncated/],
        ["truncated data", bytes.slice(0, bytes.length - 100), /truncated or padded/],
        ["padded", new Uint8Array([...bytes, 0]), /truncated or padded/],
        ["flipped data byte", flip(500), /checksum mismatch/],
        ["flipped checksum", flip(bytes.length - 1), /checksum mismatch/],
        ["other version", (() => { const b = bytes.slice(); b[8] = 9; return b; })(), /version 9/],
        ["other layer shape", (() => { const b = bytes.slice(); b[20] = 8; return b; })(), /layer 0 is 8x16 in the snapshot, 4x16 in this cache/],
        ["huge declared length", (() => { const b = bytes.slice(); new DataView(b.buffer).setUint32(28, 0xffffffff, true); return b; })(), /truncated or padded/],
      ];
      for (const [what, b, message] of cases) {
        assert.throws(() => cache.restore(b), (e: unknown) => e instanceof KVSnapshotError && message.test((e as Error).message), what);
      }
      const otherShape = createKVCache(await runtimeFor("simd"), { layers: LAYERS.slice(0, 2) });
      assert.throws(() => otherShape.restore(bytes), /snapshot has 3 layers; this cache has 2/);
      otherShape.dispose();
      assert.deepEqual(cache.stats(), before);
    } finally { cache.dispose(); }
  });

  it("restoring into a cache without room throws KVCacheFullError and frees what it took", async () => {
    const { cache, seq } = await filledCache();
    const small = createKVCache(await runtimeFor("simd"), { layers: LAYERS, pageSize: 8, maxTokens: 16 }); // 2 pages a layer: 16 < 21 tokens
    try {
      assert.throws(() => small.restore(cache.snapshot(seq)), KVCacheFullError);
      assert.equal(small.stats().pagesUsed, 0);
      assert.deepEqual(small.stats().sequences, []);
    } finally { cache.dispose(); small.dispose(); }
  });

  it("batched decode over sequences of different lengths equals one-by-one decode", async () => {
    const rt = await runtimeFor("simd");
    const [H, KV, D] = [8, 2, 32];
    const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }], pageSize: 16 });
    try {
      const seqs = [1, 17, 300, 64].map((n, i) => {
        const s = cache.createSequence();
        cache.append(s, 0, randomArray(n * KV * D, i), randomArray(n * KV * D, 50 + i));
        return s;
      });
      const items = seqs.map((seq, i) => ({ seq, q: randomArray(H * D, 100 + i) }));
      const batched = cache.attentionBatch(items, 0, { numHeads: H });
      items.forEach((it, i) => assert.deepEqual(batched[i], cache.attention(it.seq, 0, { q: it.q, numHeads: H }), `sequence ${i}`));
      cache.free(seqs[1]!);
      assert.throws(() => cache.attentionBatch(items, 0, { numHeads: H }), /items\[1\]\): sequence \d+ was freed|items\[1\]: sequence \d+ was freed/);
    } finally { cache.dispose(); }
  });
});
