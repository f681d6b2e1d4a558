import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { runBrowserExample, runWorkerExample } from "./conformance/web-hosts.ts";

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

  it("the browser page measures MHA, GQA-8 and MQA in a Web Worker and charts every point", async () => {
    const r = await runBrowserExample(process.env.GQA_SCREENSHOT);
    assert.equal(r.error, undefined);
    assert.equal(r.points!.length, 15);
    assert.deepEqual([...new Set(r.points!.map((p) => p.kvHeads))], [32, 8, 1]);
    for (const p of r.points!) assert.ok(p.ms >= 0 && Number.isFinite(p.ms), JSON.stringify(p));
  });

  it("the Deno script prints decode times for MHA, GQA-8 and MQA", () => {
    const deno = fileURLToPath(new URL("../node_modules/.bin/deno", import.meta.url));
    const r = spawnSync(deno, ["run", "-A", "examples/deno/decode.ts", "128,256"], { cwd: fileURLToPath(new URL("..", import.meta.url)), encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /gqa-wasm on Deno/);
    const rows = r.stdout.trim().split("\n").slice(2).map((l) => l.split("\t"));
    assert.deepEqual(rows.map((c) => [c[0], c[3]]), [["32", "32768"], ["8", "8192"], ["1", "1024"]]);
    for (const c of rows) for (const ms of c.slice(1, 3)) assert.ok(Number(ms) > 0, ms);
  });
});
