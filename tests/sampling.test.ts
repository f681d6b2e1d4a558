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
