// The OpenAI-compatible API in the Cloudflare Worker example (workerd through miniflare): the
// shared Durable Object batches concurrent streams; a conversation's Durable Object keeps its KV
// snapshot in storage, so after a restart (a new isolate) the next turn needs no prefill of the
// earlier ones and continues exactly as an uninterrupted conversation does.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createOpenAIServer, createRuntime, loadModel, syntheticModelFiles } from "../src/index.ts";
import { folderToGGUF } from "../src/model/gguf-export.ts";
import { withWorkerExample } from "./conformance/web-hosts.ts";

interface ChatCompletion { choices: { message: { content: string }; finish_reason: string }[]; usage: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details: { cached_tokens: number } } }

describe("the Worker example serves the OpenAI API from Durable Objects", function () {
  this.timeout(240_000);
  let work: string, r2: Record<string, Uint8Array>;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "gqa-worker-serve-"));
    const dir = join(work, "model");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(dir);
    for (const [name, data] of Object.entries(syntheticModelFiles())) writeFileSync(join(dir, name), data);
    // Q8_0: the quantized kernels give the same bits whatever rows share a batch.
    r2 = { "model.gguf.00": await folderToGGUF(dir, { dtype: "q8_0" }) };
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  const chat = async (url: URL, messages: { role: string; content: string }[], conversation?: string) => {
    const r = await fetch(new URL("/v1/chat/completions", url), {
      method: "POST", headers: { "content-type": "application/json", ...(conversation ? { "x-conversation-id": conversation } : {}) },
      body: JSON.stringify({ model: "model", messages, max_tokens: 10, temperature: 0 }),
    });
    assert.equal(r.status, 200, await r.clone().text());
    return (await r.json()) as ChatCompletion;
  };

  it("answers /v1/models, chat and completions (streamed), concurrent streams equal their solo runs, bad requests are OpenAI errors", async () => {
    // The reply's bytes in Node (logprobs carry each token's bytes: exact even where the random
    // model's bytes are not valid UTF-8, which decoders may render differently).
    const bytesOf = (r: { choices: { logprobs: { content: { bytes: number[] }[] } }[] }) => r.choices[0]!.logprobs.content.flatMap((c) => c.bytes);
    const request = { model: "model", messages: [{ role: "user", content: "The keys" }], max_tokens: 10, temperature: 0, logprobs: true };
    const rt = await createRuntime();
    const node = await loadModel(rt, { "model.gguf": r2["model.gguf.00"]! });
    // As the example serves: int8 K/V pages (f32 pages round differently, and a random model can flip a token on that).
    const nodeApi = createOpenAIServer(node, { modelId: "model", kvDtype: "int8", maxCacheTokens: 2048 });
    const expected = bytesOf(await (await nodeApi.fetch(new Request("http://node/v1/chat/completions", { method: "POST", body: JSON.stringify(request) }))).json());
    nodeApi.close();
    node.dispose();
    await withWorkerExample(r2, async (url) => {
      const models = await (await fetch(new URL("/v1/models", url))).json() as { data: { id: string }[] };
      assert.deepEqual(models.data.map((m) => m.id), ["model"]);
      const r = await fetch(new URL("/v1/chat/completions", url), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(request) });
      const worker = await r.json() as { choices: { message: { content: string }; logprobs: { content: { bytes: number[] }[] } }[] };
      assert.deepEqual(bytesOf(worker), expected, "the same tokens as Node");
      const complete = async (prompt: string) => {
        const r = await fetch(new URL("/v1/completions", url), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "model", prompt, max_tokens: 10, temperature: 0, stream: true }) });
        assert.equal(r.headers.get("content-type"), "text/event-stream; charset=utf-8");
        const events = (await r.text()).split("\n\n").filter(Boolean).map((e) => e.replace(/^data: /, ""));
        assert.equal(events.at(-1), "[DONE]");
        return events.slice(0, -1).map((e) => (JSON.parse(e) as { choices: { text: string }[] }).choices[0]!.text).join("");
      };
      const prompts = ["a", "bb", "ccc", "dddd"].map((p) => `prompt ${p}`);
      const solo: string[] = [];
      for (const p of prompts) solo.push(await complete(p));
      assert.deepEqual(await Promise.all(prompts.map(complete)), solo, "streams decoded together equal their solo runs");
      const health = await (await fetch(new URL("/health", url))).json() as { scheduler: { completed: number; failed: number; steps: number }; wasmMemoryBytes: number };
      assert.equal(health.scheduler.failed, 0);
      assert.ok(health.wasmMemoryBytes <= 108 << 20);
      const bad = await fetch(new URL("/v1/chat/completions", url), { method: "POST", body: JSON.stringify({ model: "model", messages: [], max_tokens: 1 }) });
      assert.equal(bad.status, 400);
      assert.match(((await bad.json()) as { error: { message: string } }).error.message, /non-empty list/);
      const badId = await fetch(new URL("/v1/models", url), { headers: { "x-conversation-id": "../x" } });
      assert.equal(badId.status, 400);
    });
  });

  it("a conversation resumes from its Durable Object's storage after a restart, with no prefill, as if never interrupted", async () => {
    const persistDir = join(work, "do-storage");
    const turn1 = [{ role: "user", content: "Hello there" }];
    let reply1 = "", uninterrupted!: ChatCompletion;
    await withWorkerExample(r2, async (url) => {
      const a = await chat(url, turn1, "alice");
      reply1 = a.choices[0]!.message.content;
      // The same two turns without a restart, in another conversation.
      const b = await chat(url, turn1, "bob");
      assert.equal(b.choices[0]!.message.content, reply1);
      uninterrupted = await chat(url, [...turn1, { role: "assistant", content: reply1 }, { role: "user", content: "Go on" }], "bob");
    }, persistDir);
    // A new Worker (a new isolate, nothing in memory) on the same storage.
    await withWorkerExample(r2, async (url) => {
      const resumed = await chat(url, [...turn1, { role: "assistant", content: reply1 }, { role: "user", content: "Go on" }], "alice");
      assert.equal(resumed.choices[0]!.message.content, uninterrupted.choices[0]!.message.content);
      assert.equal(resumed.usage.prompt_tokens, uninterrupted.usage.prompt_tokens);
      assert.equal(resumed.usage.prompt_tokens_details.cached_tokens, uninterrupted.usage.prompt_tokens_details.cached_tokens);
      assert.ok(resumed.usage.prompt_tokens_details.cached_tokens >= 20, `the earlier turn came from storage: ${resumed.usage.prompt_tokens_details.cached_tokens} of ${resumed.usage.prompt_tokens} tokens cached`);
      // A conversation never seen starts afresh.
      const fresh = await chat(url, turn1, "carol");
      assert.equal(fresh.usage.prompt_tokens_details.cached_tokens, 0);
      assert.equal(fresh.choices[0]!.message.content, reply1);
    }, persistDir);
  });
});
