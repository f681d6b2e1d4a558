import assert from "node:assert/strict";
import { createRuntime, type Runtime } from "../src/index.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { TransformerModel } from "../src/model/transformer.ts";
import { models, randomWeights, referenceForward } from "./model-helpers.ts";

describe("model forward pass against a float64 reference", function () {
  this.timeout(60_000);
  let rt: Runtime;
  before(async () => { rt = await createRuntime(); });

  const tokens = [3, 17, 0, 39, 5, 5, 22, 8, 1, 30];
  for (const [name, raw] of models) {
    it(`${name}: logits at every position within 2e-3, prefill in chunks and decode through the paged cache`, () => {
      const cfg = parseModelConfig(raw);
      const w = randomWeights(cfg);
      const ref = referenceForward(cfg, w, tokens);
      const model = new TransformerModel(rt, cfg, (n) => w.get(n)!);
      const cache = model.createCache({ pageSize: 4 });
      try {
        const seq = cache.createSequence();
        const chunks = [tokens.slice(0, 6), tokens.slice(6, 7), tokens.slice(7, 8), tokens.slice(8)];
        let row = 0;
        for (const chunk of chunks) {
          const logits = model.forward(cache, seq, chunk);
          for (let i = 0; i < chunk.length; i++, row++) {
            const got = logits.subarray(i * cfg.vocabSize, (i + 1) * cfg.vocabSize);
            const err = Math.max(...ref[row]!.map((v, j) => Math.abs(v - got[j]!)));
            assert.ok(err <= 2e-3, `position ${row}: max |logit error| ${err}`);
          }
        }
        assert.equal(seq.length(0), tokens.length);
      } finally { cache.dispose(); model.dispose(); }
    });
  }

  it("bf16 weights stay 16-bit and the logits stay within 2e-2 of the f32 reference", () => {
    const cfg = parseModelConfig(models[0]![1]);
    const w = randomWeights(cfg);
    const ref = referenceForward(cfg, w, tokens);
    const model = new TransformerModel(rt, cfg, (n) => w.get(n)!, "bf16");
    const cache = model.createCache();
    try {
      const logits = model.forward(cache, cache.createSequence(), tokens);
      let err = 0;
      ref.forEach((r, i) => r.forEach((v, j) => { err = Math.max(err, Math.abs(v - logits[i * cfg.vocabSize + j]!)); }));
      assert.ok(err <= 2e-2, `max |logit error| ${err}`);
      assert.ok(err > 0, "16-bit weights change the logits a little");
    } finally { cache.dispose(); model.dispose(); }
  });

  it("rejects token ids outside the vocabulary, naming them", () => {
    const cfg = parseModelConfig(models[0]![1]);
    const w = randomWeights(cfg);
    const model = new TransformerModel(rt, cfg, (n) => w.get(n)!);
    const cache = model.createCache();
    try {
      assert.throws(() => model.forward(cache, cache.createSequence(), [1, 40]), /token id 40 is outside the vocabulary \[0, 40\)/);
    } finally { cache.dispose(); model.dispose(); }
  });
});
