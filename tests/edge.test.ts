// The edge, for real: the Cloudflare Worker example serves a SmolLM2-135M-shaped Q4_0 GGUF from
// R2 byte shards (miniflare's local R2, workerd) through the OpenAI-compatible API; and, measured in
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

  it("the Worker serves the OpenAI API over the R2 shards: the same tokens as Node, streamed, inside its memory budget", async () => {
    const shards = edgeShardFiles();
    assert.ok(Object.values(shards).every((b) => b.length <= SHARD_BYTES) && Object.keys(shards).length >= 3);
    const whole = new Uint8Array(Object.values(shards).reduce((s, b) => s + b.length, 0));
    let at = 0;
    for (const b of Object.values(shards)) { whole.set(b, at); at += b.length; }
    const rt = await createRuntime();
    const node = await loadModel(rt, { "model.gguf": whole });
    const prompt = "The keys and values";
    const want = await node.generate(prompt, { maxNewTokens: 8, temperature: 0 }).done;
    const tok = node.tokenizer!;
    const wantChat = await node.generate(tok.encode(tok.applyChatTemplate([{ role: "user", content: "Hi there" }]), { addSpecialTokens: false }), { maxNewTokens: 6, temperature: 0 }).done;
    const bytes = tok.tokenBytes(node.config.vocabSize);
    node.dispose();
    await withWorkerExample(shards, async (url) => {
      const post = (path: string, body: unknown) => fetch(new URL(path, url), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      // Tokens compared as bytes (logprobs carry them): exact even where random weights make invalid UTF-8.
      const gen = await post("/v1/completions", { model: "model", prompt, max_tokens: 8, temperature: 0 });
      assert.equal(gen.status, 200, await gen.clone().text());
      const sse = await post("/v1/chat/completions", { model: "model", messages: [{ role: "user", content: "Hi there" }], max_tokens: 6, temperature: 0, stream: true, logprobs: true, stream_options: { include_usage: true } });
      assert.equal(sse.status, 200);
      assert.equal(sse.headers.get("content-type"), "text/event-stream; charset=utf-8");
      const events = (await sse.text()).split("\n\n").filter(Boolean).map((e) => e.replace(/^data: /, ""));
      assert.equal(events.pop(), "[DONE]");
      const chunks = events.map((e) => JSON.parse(e) as { choices: { logprobs: { content: { bytes: number[] }[] } | null; finish_reason: string | null }[]; usage: { completion_tokens: number } | null });
      const streamed = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []).flatMap((c) => c.bytes);
      const wantBytes = wantChat.tokens.filter((t) => bytes[t]).flatMap((t) => [...bytes[t]!]);
      assert.deepEqual(streamed, wantBytes);
      assert.equal(chunks.at(-1)!.usage!.completion_tokens, wantChat.tokens.length);
      const completion = (await gen.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
      assert.equal(completion.usage.completion_tokens, want.tokens.length);
      assert.equal(completion.choices[0]!.text, want.text);
      const health = await (await fetch(new URL("/health", url))).json() as { wasmMemoryBytes: number };
      assert.ok(health.wasmMemoryBytes <= 108 << 20, `wasm memory ${health.wasmMemoryBytes}`);
      const bad = await post("/v1/chat/completions", { model: "model" });
      assert.equal(bad.status, 400);
      assert.match(((await bad.json()) as { error: { message: string } }).error.message, /messages must be a non-empty list/);
    });
  });
});
