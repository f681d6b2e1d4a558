import assert from "node:assert/strict";
import { Sampler } from "../src/model/sampling.ts";

describe("sampling", () => {
  const logits = Float32Array.from([0.1, 2.5, -1, 2.4, 0]);

  it("temperature 0 is argmax; top-k 1 is argmax at any temperature", () => {
    assert.equal(new Sampler().next(logits), 1);
    const s = new Sampler({ temperature: 5, topK: 1, seed: 3 });
    for (let i = 0; i < 50; i++) assert.equal(s.next(logits), 1);
  });

  it("draws tokens with their softmax probabilities at temperature 1", () => {
    const s = new Sampler({ temperature: 1, seed: 42 });
    const two = Float32Array.from([0, Math.log(2)]); // probabilities 1/3, 2/3
    let ones = 0;
    const n = 30_000;
    for (let i = 0; i < n; i++) ones += s.next(two);
    assert.ok(Math.abs(ones / n - 2 / 3) < 0.015, `frequency ${ones / n}`);
  });

  it("top-p keeps the smallest most-likely set reaching p", () => {
    const probs = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.2)]);
    const seen = (topP: number) => { const s = new Sampler({ temperature: 1, topP, seed: 9 }); const set = new Set<number>(); for (let i = 0; i < 2000; i++) set.add(s.next(probs)); return [...set].sort(); };
    assert.deepEqual(seen(0.5), [0]);
    assert.deepEqual(seen(0.6), [0, 1]);
    assert.deepEqual(seen(1), [0, 1, 2]);
  });

  it("top-p alone draws the nucleus's tokens with their renormalized probabilities; rows of -inf or NaN draw without failing", () => {
    const probs = Float32Array.from([Math.log(0.15), Math.log(0.5), Math.log(0.05), Math.log(0.3)]); // nucleus at 0.9: ids 1, 3, 0
    const s = new Sampler({ temperature: 1, topP: 0.9, seed: 3 }), counts = [0, 0, 0, 0], n = 30_000;
    for (let i = 0; i < n; i++) counts[s.next(probs)]!++;
    assert.equal(counts[2], 0);
    [[1, 0.5], [3, 0.3], [0, 0.15]].forEach(([t, p]) => assert.ok(Math.abs(counts[t!]! / n - p! / 0.95) < 0.015, `token ${t}: ${counts[t!]! / n}`));
    // Constrained decoding masks tokens with -inf; a broken row may hold NaN.
    assert.equal(new Sampler({ temperature: 1, topP: 0.5 }).next(Float32Array.from([-Infinity, -Infinity, -Infinity])), 0);
    assert.equal(new Sampler({ temperature: 1, topP: 0.5 }).next(Float32Array.from([-Infinity, 2, -Infinity])), 1);
    assert.equal(new Sampler({ temperature: 1, topP: 0.9, seed: 2 }).next(Float32Array.from([1, NaN, 5, NaN])), 2);
  });

  it("the same seed gives the same draws; the repetition penalty turns away from repeated tokens", () => {
    const draws = (seed: number) => { const s = new Sampler({ temperature: 1, seed }); return Array.from({ length: 20 }, () => s.next(logits)); };
    assert.deepEqual(draws(7), draws(7));
    assert.notDeepEqual(draws(7), draws(8));
    assert.equal(new Sampler({ repetitionPenalty: 2 }).next(logits, [1]), 3); // 2.5 / 2 < 2.4
    assert.equal(new Sampler({ repetitionPenalty: 2 }).next(Float32Array.from([-1, -3]), [0]), 0); // -1 · 2 > -3
  });

  it("rejects bad options, naming them", () => {
    assert.throws(() => new Sampler({ temperature: -0.5 }), /temperature must be >= 0/);
    assert.throws(() => new Sampler({ topK: 1.5 }), /topK must be a non-negative integer/);
    assert.throws(() => new Sampler({ topP: 0 }), /topP must be in \(0, 1\]/);
    assert.throws(() => new Sampler({ repetitionPenalty: 0 }), /repetitionPenalty must be > 0/);
  });
});

describe("sampling without sorting the vocabulary", () => {
  /** The kept candidates as the plain definition says: sort everything, cut at top-k, then at top-p. */
  function keptByDefinition(logits: Float32Array, temperature: number, topK: number, topP: number): number[] {
    let order = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]! || a - b);
    if (topK > 0) order = order.slice(0, topK);
    const w = order.map((t) => Math.exp((logits[t]! - logits[order[0]!]!) / temperature));
    const total = w.reduce((a, b) => a + b, 0);
    let c = 0;
    for (let i = 0; i < order.length; i++) { c += w[i]! / total; if (topP < 1 && c >= topP) return order.slice(0, i + 1); }
    return order;
  }

  it("draws only from the set the plain definition keeps, and from all of it, for random logits, top-k and top-p", () => {
    let seed = 5;
    const rand = () => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 2 ** 32; };
    for (let trial = 0; trial < 30; trial++) {
      const V = 5 + Math.floor(rand() * 60);
      const logits = Float32Array.from({ length: V }, () => Math.round((rand() * 6 - 3) * 4) / 4); // with ties
      const temperature = 0.5 + rand() * 1.5, topK = trial % 3 === 0 ? 0 : 1 + Math.floor(rand() * V), topP = trial % 2 === 0 ? 1 : 0.3 + rand() * 0.7;
      if (topK === 0 && topP === 1) continue;
      const want = new Set(keptByDefinition(logits, temperature, topK, topP));
      const s = new Sampler({ temperature, topK, topP, seed: trial });
      const seen = new Set<number>();
      for (let i = 0; i < 3000; i++) seen.add(s.next(logits));
      for (const t of seen) assert.ok(want.has(t), `trial ${trial}: drew ${t}, outside the kept set`);
      const likely = [...want].filter((t) => Math.exp((logits[t]! - Math.max(...logits)) / temperature) > 0.05);
      for (const t of likely) assert.ok(seen.has(t), `trial ${trial}: never drew ${t}`);
    }
  });

  for (const topK of [50, 0]) {
    it(`${topK ? "top-k 50 + " : ""}top-p 0.9 over a 152k vocabulary keeps the same set as the definition (flat and peaked logits, one ±0 tie)`, () => {
      const V = 151936;
      for (const logits of [Float32Array.from({ length: V }, (_, i) => Math.sin(i * 12.9898) * 8), Float32Array.from({ length: V }, (_, i) => (i % 1000 === 0 ? 20 + (i % 7) : Math.sin(i) * 3))]) {
        logits[5] = 0; logits[6] = -0;
        const want = new Set(keptByDefinition(logits, 0.7, topK, 0.9));
        const s = new Sampler({ temperature: 0.7, topK, topP: 0.9, seed: 1 });
        const seen = new Set<number>();
        for (let i = 0; i < (topK ? 400 : 100); i++) seen.add(s.next(logits));
        for (const t of seen) assert.ok(want.has(t), `drew ${t}, outside the kept set`);
        assert.ok(seen.size > 1);
      }
    });
  }
});
