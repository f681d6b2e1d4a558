// gqa-wasm eval: perplexity, KL divergence and top-1 agreement, checked against the same
// statistics computed plainly from the forward pass's logits in float64.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRuntime, loadModel, type Runtime } from "../src/index.ts";
import { evaluate } from "../src/model/eval.ts";
import { textModel, writeModelFolder, writeTokenizer } from "./model-helpers.ts";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));

/**
 * Next-token log-probabilities of every position, from forward passes over the window in chunks
 * of 128 positions as evaluate reads them (a quantized model's linear layers compute a chunk of
 * 2 rows on 8-bit activations, one of 128 in f32: the chunks matter for the last digits).
 */
function logProbs(model: Awaited<ReturnType<typeof loadModel>>, window: number[]): number[][] {
  const cache = model.transformer.createCache(), seq = cache.createSequence(), V = model.config.vocabSize;
  const logits = new Float32Array(window.length * V);
  for (let at = 0; at < window.length; at += 128) logits.set(model.transformer.forward(cache, seq, window.slice(at, at + 128)), at * V);
  cache.dispose();
  return window.map((_, i) => {
    const row = Array.from(logits.subarray(i * V, (i + 1) * V));
    const max = Math.max(...row), lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
    return row.map((x) => x - lse);
  });
}

describe("gqa-wasm eval", function () {
  this.timeout(120_000);
  let rt: Runtime, dir: string;
  before(async () => { rt = await createRuntime(); dir = writeModelFolder({ ...textModel, hidden_size: 64, intermediate_size: 96 }); writeTokenizer(dir); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("perplexity, mean KL(reference || model) and top-1 agreement equal a plain float64 computation, window by window", async () => {
    const model = await loadModel(rt, dir, { dtype: "q4_0" }), reference = await loadModel(rt, dir);
    const ids = Array.from({ length: 300 }, (_, i) => (i * 37 + 5) % model.config.vocabSize);
    const ctx = 130; // windows of 130, 130 and 40 tokens; the first crosses a 128-position chunk
    const r = evaluate(model.transformer, ids, { ctx, reference: reference.transformer });
    let nll = 0, refNll = 0, kl = 0, agree = 0, n = 0;
    for (let at = 0; at + 1 < ids.length; at += ctx) {
      const w = ids.slice(at, at + ctx);
      const [lp, rlp] = [logProbs(model, w), logProbs(reference, w)];
      for (let i = 0; i + 1 < w.length; i++) {
        nll -= lp[i]![w[i + 1]!]!; refNll -= rlp[i]![w[i + 1]!]!;
        kl += rlp[i]!.reduce((s, x, v) => s + Math.exp(x) * (x - lp[i]![v]!), 0);
        const argmax = (a: number[]) => a.indexOf(Math.max(...a));
        if (argmax(lp[i]!) === argmax(rlp[i]!)) agree++;
        n++;
      }
    }
    assert.deepEqual([r.windows, r.scored, r.tokens], [3, n, 300]);
    assert.ok(Math.abs(r.perplexity - Math.exp(nll / n)) <= 1e-6 * r.perplexity, `${r.perplexity} vs ${Math.exp(nll / n)}`);
    assert.ok(Math.abs(r.referencePerplexity! - Math.exp(refNll / n)) <= 1e-6 * r.referencePerplexity!, `${r.referencePerplexity} vs ${Math.exp(refNll / n)}`);
    assert.ok(Math.abs(r.meanKl! - kl / n) <= 1e-9 + 1e-6 * kl / n, `${r.meanKl} vs ${kl / n}`);
    assert.equal(r.top1Agreement, agree / n);
    assert.ok(r.meanKl! > 0, "4-bit weights change the distributions");
    const self = evaluate(reference.transformer, ids, { ctx, reference: reference.transformer });
    assert.equal(self.meanKl, 0);
    assert.equal(self.top1Agreement, 1);
    assert.throws(() => evaluate(model.transformer, ids, { ctx: 1 }), /ctx must be an integer in \[2, 512\]/);
    assert.throws(() => evaluate(model.transformer, [3]), /at least 2 are needed/);
    model.dispose(); reference.dispose();
  });

  it("prints perplexity, KL and top-1 agreement for a quantized model against its f32 original (folder and GGUF), or --json", () => {
    const work = mkdtempSync(join(tmpdir(), "gqa-eval-"));
    try {
      const text = join(work, "text.txt");
      writeFileSync(text, "the theme in a café is the theme of the day. ".repeat(40));
      const gguf = join(work, "m.gguf");
      assert.equal(spawnSync(process.execPath, [cli, "quantize", "--model", dir, "--dtype", "q8_0", "--out", gguf]).status, 0);
      const r = spawnSync(process.execPath, [cli, "eval", "--model", gguf, "--reference", dir, "--text", text, "--ctx", "64"], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^model: .*m\.gguf \(q8_0 weights\); reference: .* \(f32 weights\)\ntokens: \d+ in \d+ window\(s\) of up to 64; \d+ predictions scored\nperplexity: [\d.]+ \(reference: [\d.]+\)\nmean KL\(reference \|\| model\): [\d.e+-]+ nats; top-1 agreement: [\d.]+%\n$/);
      const j = spawnSync(process.execPath, [cli, "eval", "--model", dir, "--dtype", "q4_0", "--text", text, "--json"], { encoding: "utf8", timeout: 60_000 });
      assert.equal(j.status, 0, j.stderr);
      const parsed = JSON.parse(j.stdout) as { perplexity: number; ctx: number };
      assert.ok(parsed.perplexity > 1 && parsed.ctx === 512);
      const missing = spawnSync(process.execPath, [cli, "eval", "--model", dir, "--text", join(work, "nope.txt")], { encoding: "utf8" });
      assert.equal(missing.status, 1);
      assert.match(missing.stderr, /^gqa-wasm: .*nope\.txt: no such file\n$/);
    } finally { rmSync(work, { recursive: true, force: true }); }
  });
});
