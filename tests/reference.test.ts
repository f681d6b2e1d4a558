import assert from "node:assert/strict";
import { referenceAttention, referenceLinear } from "../src/reference.ts";

// The float64 references are the yardstick for every kernel test, so they are checked first on
// cases whose answer is known in closed form.
describe("float64 references", () => {
  it("attention with one key returns that key's value row", () => {
    const out = referenceAttention({ q: [1, 2, 3, 4], k: [5, 6], v: [7, 8], numHeads: 2, numKvHeads: 1, headDim: 2 });
    assert.deepEqual([...out], [7, 8, 7, 8]);
  });

  it("attention with equal scores averages the values", () => {
    const out = referenceAttention({ q: [0, 0], k: [1, 1, 2, 2, 3, 3], v: [1, 10, 2, 20, 6, 60], numHeads: 1, numKvHeads: 1, headDim: 2 });
    assert.deepEqual([...out], [3, 30]);
  });

  it("attention weights two keys by the softmax of their scaled scores", () => {
    // scores 0 and 2·0.5 = 1 → weights 1/(1+e), e/(1+e)
    const out = referenceAttention({ q: [2], k: [0, 1], v: [0, 1], numHeads: 1, numKvHeads: 1, headDim: 1, scale: 0.5 });
    assert.ok(Math.abs(out[0]! - Math.E / (1 + Math.E)) < 1e-15, "two-key softmax");
  });

  it("causal attention is bottom-right aligned and leaves key-less rows at 0", () => {
    // seqQ 3, seqK 2: query 0 sees no key, query 1 sees key 0, query 2 sees keys 0 and 1.
    const out = referenceAttention({ q: [0, 0, 0], k: [0, 0], v: [4, 8], numHeads: 1, numKvHeads: 1, headDim: 1, causal: true });
    assert.deepEqual([...out], [0, 4, 6]);
  });

  it("query head h reads KV head floor(h / group)", () => {
    const out = referenceAttention({ q: [1, 1, 1, 1], k: [0, 0], v: [3, 9], numHeads: 4, numKvHeads: 2, headDim: 1 });
    assert.deepEqual([...out], [3, 3, 9, 9]);
  });

  it("linear computes x·Wᵀ + b", () => {
    const y = referenceLinear([1, 2, 3, 4], [1, 0, 0, 1, 1, 1], [10, 20, 30], 2, 3);
    assert.deepEqual([...y], [11, 22, 33, 13, 24, 37]);
  });
});
