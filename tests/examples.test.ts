import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createRuntime, loadModel, syntheticModelFiles } from "../src/index.ts";
import { runBrowserExample, runGgufPage, runWorkerExample } from "./conformance/web-hosts.ts";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { folderToGGUF } from "../src/model/gguf-export.ts";
import { textModel, writeModelFolder, writeTokenizer } from "./model-helpers.ts";

// The examples run as a user would run them.
describe("examples", function () {
  this.timeout(180_000);

  it("the Cloudflare Worker decodes through the KV cache inside its memory budget, and rejects bad or too-large requests clearly", async () => {
    const [gqa, mha, bad, huge] = await runWorkerExample(["/?kvHeads=8&context=2048", "/?kvHeads=32&context=1024", "/?kvHeads=5", "/?kvHeads=32&context=20000"]);
    assert.equal(gqa!.status, 200, JSON.stringify(gqa!.body));
    assert.equal(gqa!.body.kvBytesPerToken, 2 * 8 * 128 * 4);
    assert.equal(mha!.body.kvBytesPerToken, 2 * 32 * 128 * 4);
    assert.ok((gqa!.body.wasmMemoryBytes as number) <= 96 << 20, `wasm memory ${gqa!.body.wasmMemoryBytes}`);
    assert.equal((gqa!.body.outputSample as number[]).length, 4);
    assert.equal(bad!.status, 400);
    assert.match(bad!.body.error as string, /kvHeads must divide 32, got 5/);
    assert.equal(huge!.status, 507, JSON.stringify(huge!.body)); // 20000 tokens x 32 KiB > the 96 MiB budget
    assert.match(huge!.body.error as string, /limit is 96.0 MiB/);
  });

  it("the Cloudflare Worker generates text with the tiny model, the same tokens as Node, inside its memory budget", async () => {
    const prompt = "The keys and values";
    const [gen, bad] = await runWorkerExample([`/generate?prompt=${encodeURIComponent(prompt)}&maxNewTokens=12`, "/generate?maxNewTokens=0"]);
    assert.equal(gen!.status, 200, JSON.stringify(gen!.body));
    const rt = await createRuntime();
    const model = await loadModel(rt, syntheticModelFiles());
    const expected = await model.generate(prompt, { maxNewTokens: 12, temperature: 0 }).done;
    model.dispose();
    assert.deepEqual(gen!.body.tokens, expected.tokens);
    assert.equal(gen!.body.text, expected.text);
    assert.ok((gen!.body.wasmMemoryBytes as number) <= 96 << 20);
    assert.equal(bad!.status, 400);
    assert.match(bad!.body.error as string, /maxNewTokens must be an integer in \[1, 256\], got 0/);
  });

  it("the browser page measures MHA, GQA-8 and MQA in a Web Worker, charts every point, and streams a generation", async () => {
    const r = await runBrowserExample(process.env.GQA_SCREENSHOT);
    assert.equal(r.error, undefined);
    assert.equal(r.points!.length, 15);
    assert.deepEqual([...new Set(r.points!.map((p) => p.kvHeads))], [32, 8, 1]);
    for (const p of r.points!) assert.ok(p.ms >= 0 && Number.isFinite(p.ms), JSON.stringify(p));
    // ... then streams a generation of the tiny model into the page: the same tokens as Node.
    const rt = await createRuntime();
    const model = await loadModel(rt, syntheticModelFiles());
    const expected = await model.generate("The attention heads share their keys and values", { maxNewTokens: 40, temperature: 0 }).done;
    model.dispose();
    assert.deepEqual(r.generation!.tokens, expected.tokens);
    assert.equal(r.generation!.shown, expected.text, "the streamed pieces on the page add up to the text");
  });

  it("the browser's GGUF page loads a model by URL (the second visit from Cache Storage, no download) or from a picked file, and streams the same tokens as Node", async () => {
    const dir = writeModelFolder({ ...textModel, hidden_size: 64, intermediate_size: 96 });
    writeTokenizer(dir);
    const work = mkdtempSync(join(tmpdir(), "gqa-gguf-page-"));
    try {
      const file = join(work, "model.gguf");
      writeFileSync(file, await folderToGGUF(dir, { dtype: "q4_0" }));
      const prompt = "The theme of the keys";
      const rt = await createRuntime();
      const model = await loadModel(rt, file);
      const expected = await model.generate(prompt, { maxNewTokens: 12, temperature: 0 }).done;
      model.dispose();
      const r = await runGgufPage(file, prompt, 12);
      for (const [i, visit] of r.visits.entries()) {
        assert.equal(visit.error, undefined);
        assert.deepEqual(visit.tokens, expected.tokens, `visit ${i + 1}`);
        assert.equal(visit.shown, expected.text);
      }
      assert.deepEqual(r.visits.map((v) => v.cached), [false, true], "the second visit reads Cache Storage");
      assert.equal(r.modelRequests, 1, "the model was downloaded once");
      assert.deepEqual(r.picked.tokens, expected.tokens, "a picked file gives the same tokens");
    } finally {
      rmSync(work, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the Deno script prints decode times for MHA, GQA-8 and MQA, then the tiny model's generation (the same text as Node)", async () => {
    const deno = fileURLToPath(new URL("../node_modules/.bin/deno", import.meta.url));
    const r = spawnSync(deno, ["run", "-A", "examples/deno/decode.ts", "128,256"], { cwd: fileURLToPath(new URL("..", import.meta.url)), encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /gqa-wasm on Deno/);
    const rows = r.stdout.trim().split("\n").slice(2, 5).map((l) => l.split("\t"));
    assert.deepEqual(rows.map((c) => [c[0], c[3]]), [["32", "32768"], ["8", "8192"], ["1", "1024"]]);
    for (const c of rows) for (const ms of c.slice(1, 3)) assert.ok(Number(ms) > 0, ms);
    const rt = await createRuntime();
    const model = await loadModel(rt, syntheticModelFiles());
    const expected = await model.generate("Deno decodes", { maxNewTokens: 16, temperature: 0 }).done;
    model.dispose();
    assert.match(r.stdout, new RegExp(`^generation: ${JSON.stringify(expected.text).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} \\(16 tokens\\)$`, "m"));
  });
});
