// The edge, for real: the Cloudflare Worker example serves a SmolLM2-135M-shaped Q4_0 GGUF from
// R2 byte shards (miniflare's local R2, workerd), streaming generation and chat; and, measured in
// a process of its own, loading the same shards as one stream, filling a 2048-token int8 KV
// cache and decoding stays under 128 MB of JS heap + external memory (wasm memory included).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createRuntime, loadModel } from "../src/index.ts";
import { withWorkerExample } from "./conformance/web-hosts.ts";
import { edgeModelShards, edgeShardFiles, SHARD_BYTES } from "./edge-model.ts";

describe("the edge: a SmolLM2-135M-shaped Q4_0 model in a 128 MB Worker", function () {
  this.timeout(300_000);

  it("loads from 25 MiB shards as one stream, fills a 2048-token int8 KV cache and decodes within 128 MB of live JS + wasm memory", () => {
    const dir = edgeModelShards();
    const child = fileURLToPath(new URL("./edge-memory-child.ts", import.meta.url));
    const r = spawnSync(process.execPath, ["--experimental-wasm-relaxed-simd", "--expose-gc", "--import", "tsx", child, dir], { encoding: "utf8", timeout: 240_000 });
    assert.equal(r.status, 0, r.stderr);
    const m = JSON.parse(r.stdout.trim().split("\n").pop()!) as { peakJsAndExternalBytes: number; wasmMemoryBytes: number; kvTokens: number; kvBytes: number; tokens: number[]; fileBytes: number };
    assert.equal(m.kvTokens, 2048 - 8 + 7);
    assert.ok(m.fileBytes > 70e6 && m.fileBytes < 80e6, `a ${m.fileBytes}-byte file`);
    assert.ok(m.wasmMemoryBytes <= 108 << 20, `wasm memory ${m.wasmMemoryBytes}`);
    assert.ok(m.peakJsAndExternalBytes < 128 << 20, `peak JS heap + external ${(m.peakJsAndExternalBytes / 2 ** 20).toFixed(1)} MiB (wasm ${(m.wasmMemoryBytes / 2 ** 20).toFixed(1)} MiB)`);
    console.log(`      peak JS heap + external: ${(m.peakJsAndExternalBytes / 2 ** 20).toFixed(1)} MiB, of which wasm memory ${(m.wasmMemoryBytes / 2 ** 20).toFixed(1)} MiB; KV cache ${(m.kvBytes / 2 ** 20).toFixed(1)} MiB`);
  });

  it("the Worker streams /model/generate and /model/chat from R2 shards, the same tokens as Node, inside its memory budget", async () => {
    const shards = edgeShardFiles();
    assert.ok(Object.values(shards).every((b) => b.length <= SHARD_BYTES) && Object.keys(shards).length >= 3);
    const whole = new Uint8Array(Object.values(shards).reduce((s, b) => s + b.length, 0));
    let at = 0;
    for (const b of Object.values(shards)) { whole.set(b, at); at += b.length; }
    const rt = await createRuntime();
    const node = await loadModel(rt, { "model.gguf": whole });
    const prompt = "The keys and values";
    const wantText = (await node.generate(prompt, { maxNewTokens: 8, temperature: 0 }).done).text;
    const chat = node.chat();
    const wantChat = await chat.send("Hi there", { maxNewTokens: 6, temperature: 0 }).done;
    node.dispose();
    await withWorkerExample(shards, async (url) => {
      const gen = await fetch(new URL(`/model/generate?prompt=${encodeURIComponent(prompt)}&maxNewTokens=8`, url));
      assert.equal(gen.status, 200, await gen.clone().text());
      assert.match(gen.headers.get("content-type")!, /^text\/plain/);
      assert.equal(await gen.text(), wantText);
      assert.ok(Number(gen.headers.get("x-wasm-memory-bytes")) <= 108 << 20);
      const sse = await fetch(new URL("/model/chat", url), { method: "POST", body: JSON.stringify({ messages: [{ role: "user", content: "Hi there" }], maxNewTokens: 6 }) });
      assert.equal(sse.status, 200);
      assert.equal(sse.headers.get("content-type"), "text/event-stream");
      const events = (await sse.text()).split("\n\n").filter(Boolean).map((e) => JSON.parse(e.replace(/^data: /, "")) as { text?: string; done?: boolean; tokens?: number[]; wasmMemoryBytes?: number });
      const done = events.at(-1)!;
      assert.equal(done.done, true);
      assert.deepEqual(done.tokens, wantChat.tokens);
      assert.equal(events.filter((e) => e.text).map((e) => e.text).join(""), wantChat.text);
      assert.ok(done.wasmMemoryBytes! <= 108 << 20);
      const bad = await fetch(new URL("/model/chat", url), { method: "POST", body: "{}" });
      assert.equal(bad.status, 400);
      assert.match(((await bad.json()) as { error: string }).error, /messages must be 1 to 64/);
    });
  });
});
