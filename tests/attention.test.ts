import assert from "node:assert/strict";
import { referenceAttention, maxAbsDiff } from "../src/reference.ts";
import { BUILDS, maxAbs, randomArray, runtimeFor } from "./helpers.ts";
import { structBytes, writeStruct } from "../src/runtime/kernel-exports.ts";

interface Case {
  numHeads: number; numKvHeads: number; headDim: number; seqQ: number; seqK: number;
  causal?: boolean; slidingWindow?: number; scale?: number; softcap?: number; magnitude?: number;
}

let seed = 1;
function check(build: Parameters<typeof runtimeFor>[0], c: Case) {
  return async () => {
    const rt = await runtimeFor(build);
    const { numHeads, numKvHeads, headDim, seqQ, seqK } = c;
    const mag = c.magnitude ?? 1;
    const q = randomArray(seqQ * numHeads * headDim, seed++, mag);
    const k = randomArray(seqK * numKvHeads * headDim, seed++, mag);
    const v = randomArray(seqK * numKvHeads * headDim, seed++);
    const args = { q, k, v, numHeads, numKvHeads, headDim, causal: c.causal, slidingWindow: c.slidingWindow, scale: c.scale, softcap: c.softcap };
    const out = rt.attention(args);
    const ref = referenceAttention(args);
    assert.equal(out.length, ref.length);
    assert.ok(out.every(Number.isFinite), "output has non-finite values");
    const err = maxAbsDiff(out, ref);
    const tol = 2e-4 * Math.max(maxAbs(ref), 1e-30);
    assert.ok(err <= tol, `max abs error ${err.toExponential(3)} > ${tol.toExponential(3)}`);
  };
}

const name = (c: Case) =>
  `${c.numHeads}/${c.numKvHeads} heads, headDim ${c.headDim}, seqQ ${c.seqQ}, seqK ${c.seqK}` +
  `${c.causal ? ", causal" : ""}${c.slidingWindow ? `, sliding window ${c.slidingWindow}` : ""}${c.scale !== undefined ? `, scale ${c.scale}` : ""}${c.softcap ? `, soft-capped at ${c.softcap}` : ""}${c.magnitude ? `, |q|,|k| up to ${c.magnitude}` : ""}`;

const cases: { title: string; cases: Case[] }[] = [
  {
    title: "decode (seqQ 1): MHA, GQA, MQA over key counts with tails",
    cases: [
      ...[1, 2, 3, 5, 63, 64, 65, 127, 129, 1000].map((seqK) => ({ numHeads: 32, numKvHeads: 8, headDim: 128, seqQ: 1, seqK })),
      { numHeads: 8, numKvHeads: 8, headDim: 128, seqQ: 1, seqK: 300 },
      { numHeads: 16, numKvHeads: 1, headDim: 64, seqQ: 1, seqK: 300 },
      { numHeads: 9, numKvHeads: 3, headDim: 64, seqQ: 1, seqK: 4097 },
      { numHeads: 14, numKvHeads: 2, headDim: 64, seqQ: 1, seqK: 777 },
      { numHeads: 12, numKvHeads: 4, headDim: 80, seqQ: 1, seqK: 515 },
      { numHeads: 32, numKvHeads: 32, headDim: 128, seqQ: 1, seqK: 70 },
      { numHeads: 32, numKvHeads: 1, headDim: 128, seqQ: 1, seqK: 70 },
      // K/V of 6.5 MB: loaded ahead segment by segment (CONTIGUOUS_LOAD_AHEAD_BYTES), as pages are.
      { numHeads: 32, numKvHeads: 8, headDim: 128, seqQ: 1, seqK: 800 },
      { numHeads: 32, numKvHeads: 8, headDim: 128, seqQ: 3, seqK: 801, causal: true },
    ],
  },
  {
    title: "head dims, including ones not divisible by 4 or 8",
    cases: [40, 64, 72, 80, 96, 128, 1, 2, 3, 5, 13, 67, 130].map((headDim) => ({ numHeads: 6, numKvHeads: 2, headDim, seqQ: 3, seqK: 70 })),
  },
  {
    title: "prefill (seqQ = seqK), causal and not",
    cases: [
      { numHeads: 32, numKvHeads: 8, headDim: 128, seqQ: 67, seqK: 67, causal: true },
      { numHeads: 32, numKvHeads: 8, headDim: 128, seqQ: 67, seqK: 67, causal: false },
      { numHeads: 9, numKvHeads: 3, headDim: 64, seqQ: 150, seqK: 150, causal: true },
      { numHeads: 14, numKvHeads: 2, headDim: 64, seqQ: 33, seqK: 33, causal: true },
      { numHeads: 12, numKvHeads: 4, headDim: 72, seqQ: 129, seqK: 129, causal: false },
      { numHeads: 4, numKvHeads: 4, headDim: 96, seqQ: 200, seqK: 200, causal: true },
      { numHeads: 8, numKvHeads: 1, headDim: 40, seqQ: 65, seqK: 65, causal: true },
      { numHeads: 3, numKvHeads: 1, headDim: 7, seqQ: 5, seqK: 5, causal: true },
    ],
  },
  {
    title: "chunked prefill (seqQ < seqK, causal bottom-right) and short keys",
    cases: [
      { numHeads: 32, numKvHeads: 8, headDim: 128, seqQ: 16, seqK: 300, causal: true },
      { numHeads: 9, numKvHeads: 3, headDim: 64, seqQ: 7, seqK: 129, causal: true },
      { numHeads: 12, numKvHeads: 4, headDim: 80, seqQ: 64, seqK: 65, causal: true },
      { numHeads: 14, numKvHeads: 2, headDim: 64, seqQ: 40, seqK: 100, causal: false },
      // seqQ > seqK: the first queries see no key and return zeros.
      { numHeads: 4, numKvHeads: 2, headDim: 16, seqQ: 10, seqK: 4, causal: true },
      // Decode of groups of 2 (the 2x4 and 2x16 tiles; head_dim tails of 4 and 1 floats).
      { numHeads: 16, numKvHeads: 8, headDim: 128, seqQ: 1, seqK: 300, causal: true },
      { numHeads: 4, numKvHeads: 2, headDim: 37, seqQ: 1, seqK: 77, causal: true },
    ],
  },
  {
    title: "sliding window (Mistral): prefill, chunked prefill and decode, windows shorter and longer than a key block",
    cases: [
      { numHeads: 8, numKvHeads: 2, headDim: 64, seqQ: 200, seqK: 200, causal: true, slidingWindow: 50 },
      { numHeads: 8, numKvHeads: 2, headDim: 64, seqQ: 200, seqK: 200, causal: true, slidingWindow: 64 },
      { numHeads: 8, numKvHeads: 2, headDim: 64, seqQ: 200, seqK: 200, causal: true, slidingWindow: 130 },
      { numHeads: 32, numKvHeads: 8, headDim: 128, seqQ: 1, seqK: 1000, causal: true, slidingWindow: 77 },
      { numHeads: 9, numKvHeads: 3, headDim: 67, seqQ: 33, seqK: 300, causal: true, slidingWindow: 100 },
      { numHeads: 4, numKvHeads: 1, headDim: 16, seqQ: 9, seqK: 9, causal: true, slidingWindow: 1 },
      { numHeads: 4, numKvHeads: 4, headDim: 32, seqQ: 20, seqK: 20, causal: true, slidingWindow: 1000 },
      { numHeads: 8, numKvHeads: 2, headDim: 64, seqQ: 30, seqK: 300, causal: true, slidingWindow: 40, magnitude: 30 },
    ],
  },
  {
    title: "scores large enough that a naive exp overflows, and custom scales",
    cases: [
      { numHeads: 8, numKvHeads: 2, headDim: 64, seqQ: 1, seqK: 200, magnitude: 30 },
      { numHeads: 8, numKvHeads: 2, headDim: 64, seqQ: 20, seqK: 90, causal: true, magnitude: 30 },
      { numHeads: 4, numKvHeads: 4, headDim: 128, seqQ: 3, seqK: 70, scale: 1 },
      { numHeads: 4, numKvHeads: 1, headDim: 32, seqQ: 3, seqK: 70, scale: 0.01 },
      { numHeads: 4, numKvHeads: 2, headDim: 32, seqQ: 3, seqK: 70, scale: -0.3 },
    ],
  },
  {
    title: "soft-capped scores (Gemma 2): decode, causal prefill with a window, scores far past the cap",
    cases: [
      { numHeads: 8, numKvHeads: 4, headDim: 256, seqQ: 1, seqK: 300, softcap: 50, scale: 1 / 16 },
      { numHeads: 8, numKvHeads: 4, headDim: 64, seqQ: 40, seqK: 200, causal: true, slidingWindow: 70, softcap: 50 },
      { numHeads: 4, numKvHeads: 1, headDim: 32, seqQ: 20, seqK: 90, causal: true, softcap: 5, magnitude: 30 },
      { numHeads: 4, numKvHeads: 2, headDim: 16, seqQ: 3, seqK: 33, softcap: 0.5, magnitude: 3 },
    ],
  },
];

for (const build of BUILDS) {
  describe(`attention (${build} build) against the float64 reference`, () => {
    for (const group of cases) {
      describe(group.title, () => {
        for (const c of group.cases) it(name(c), check(build, c));
      });
    }

    it("takes subarray views with non-zero offsets", async () => {
      const rt = await runtimeFor(build);
      const [H, KV, D, S] = [6, 3, 20, 33];
      const pool = randomArray(5 + 2 * S * H * D + 2 * S * KV * D + 100, 99);
      const q = pool.subarray(5, 5 + S * H * D);
      const k = pool.subarray(7 + S * H * D, 7 + S * H * D + S * KV * D);
      const v = pool.subarray(11 + S * H * D + S * KV * D, 11 + S * H * D + 2 * S * KV * D);
      const args = { q, k, v, numHeads: H, numKvHeads: KV, headDim: D, causal: true };
      const out = rt.attention(args);
      assert.ok(maxAbsDiff(out, referenceAttention(args)) <= 2e-4 * maxAbs(out), "subarray inputs");
      assert.equal(out.byteOffset, 0);
    });

    it("zero-copy attentionInto equals the copying call", async () => {
      const rt = await runtimeFor(build);
      const [H, KV, D, SQ, SK] = [8, 2, 64, 5, 130];
      const qa = randomArray(SQ * H * D, 1), ka = randomArray(SK * KV * D, 2), va = randomArray(SK * KV * D, 3);
      const q = rt.upload(qa), k = rt.upload(ka), v = rt.upload(va), out = rt.alloc(SQ * H * D);
      try {
        rt.attentionInto({ q, k, v, out, numHeads: H, numKvHeads: KV, headDim: D, causal: true });
        const copied = rt.attention({ q: qa, k: ka, v: va, numHeads: H, numKvHeads: KV, headDim: D, causal: true });
        assert.deepEqual(out.toFloat32Array(), copied);
      } finally {
        for (const b of [q, k, v, out]) b.free();
      }
    });

    it("variable GQA: a DeciLM-7B-like stack of layers, each with its own KV-head count", async () => {
      const rt = await runtimeFor(build);
      const kvHeads = [4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4];
      const [H, D, SQ, SK] = [32, 128, 2, 40];
      let x = randomArray(SQ * H * D, 5);
      for (const [layer, KV] of kvHeads.entries()) {
        const k = randomArray(SK * KV * D, 100 + layer), v = randomArray(SK * KV * D, 200 + layer);
        const args = { q: x, k, v, numHeads: H, numKvHeads: KV, headDim: D, causal: true };
        const out = rt.attention(args);
        const ref = referenceAttention(args);
        assert.ok(maxAbsDiff(out, ref) <= 2e-4 * maxAbs(ref), `layer ${layer} (${KV} KV heads)`);
        x = out.map((o, i) => o * 4 + x[i]! * 0.5); // the next layer's queries depend on this output
      }
    });

    for (const [H, KV, D, SQ, SK, W] of [[12, 4, 40, 37, 90, 0], [16, 4, 128, 3, 3100, 0], [12, 4, 40, 37, 400, 150]] as const) it(`splits over KV-head and query ranges compute the same result as one call (${H}/${KV} heads x ${D}, ${SQ} queries of ${SK} keys${W ? `, sliding window ${W}` : ""})`, async () => {
      // (The second: K/V of 6.3 MB, whose decode rows load each segment's rows of the call's heads ahead. The third:
      // a window whose start falls at other places in the key blocks for each query range.)
      const rt = await runtimeFor(build);
      const q = rt.upload(randomArray(SQ * H * D, 7)), k = rt.upload(randomArray(SK * KV * D, 8));
      const v = rt.upload(randomArray(SK * KV * D, 9)), whole = rt.alloc(SQ * H * D), parts = rt.alloc(SQ * H * D);
      const state = rt.alloc(rt.kernels.attention_scratch_bytes(H, KV, D) / 4);
      const call = rt.alloc(structBytes("AttentionCall") / 4);
      try {
        rt.attentionInto({ q, k, v, out: whole, numHeads: H, numKvHeads: KV, headDim: D, causal: true, ...(W ? { slidingWindow: W } : {}) });
        parts.array.fill(NaN); // a range that is skipped or done twice shows up
        writeStruct(rt.memory, call.ptr, "AttentionCall", { q: q.ptr, k: k.ptr, v: v.ptr, out: parts.ptr, seqQ: SQ, seqK: SK, numHeads: H, numKvHeads: KV, headDim: D,
          scale: 1 / Math.sqrt(D), causal: 1, window: W, pages: 0, pageSize: 0, dtype: 0, softcap: 0 });
        for (const [h0, h1] of [[0, 1], [1, 4]]) {
          for (const [i0, i1] of SQ > 10 ? [[0, 10], [10, 11], [11, SQ]] : [[0, 1], [1, SQ]]) {
            rt.kernels.attention_f32(call.ptr, h0!, h1!, i0!, i1!, 0, SK, 0, state.ptr);
          }
        }
        assert.deepEqual(parts.toFloat32Array(), whole.toFloat32Array());
      } finally {
        for (const b of [q, k, v, whole, parts, state, call]) b.free();
      }
    });
  });
}
