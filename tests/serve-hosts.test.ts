// The same OpenAI-compatible handler on every server host: `gqa-wasm serve` (Node), Deno.serve
// and Bun.serve, each started as a user would and driven by the official openai client.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { createRuntime, loadModel, syntheticModelFiles } from "../src/index.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name: string) => join(root, "node_modules", ".bin", name);

/** Starts a server process and resolves with its base URL from the line it prints. */
function start(cmd: string, args: string[]): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`no address within 60 s:\n${output}`)); }, 60_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(output);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1]!, output: () => output }); }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`exited with ${code} before listening:\n${output}`)); });
  });
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) { resolve(child.exitCode); return; }
    const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.removeAllListeners("exit");
    child.on("exit", (code) => { clearTimeout(kill); resolve(code); });
    child.kill("SIGTERM");
  });
}

describe("serve on Node (gqa-wasm serve), Deno and Bun", function () {
  this.timeout(180_000);
  let dir: string, expected: string;
  const messages = [{ role: "user" as const, content: "Which host is this?" }];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "gqa-serve-"));
    for (const [name, data] of Object.entries(syntheticModelFiles())) writeFileSync(join(dir, name), data);
    const rt = await createRuntime();
    const model = await loadModel(rt, syntheticModelFiles());
    const tok = model.tokenizer!;
    expected = (await model.generate(tok.encode(tok.applyChatTemplate(messages), { addSpecialTokens: false }), { maxNewTokens: 12, temperature: 0 }).done).text;
    model.dispose();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const hosts: [string, () => [string, string[]], string][] = [
    ["Node: gqa-wasm serve", () => [process.execPath, ["dist/cli.js", "serve", "--model", dir, "--port", "0", "--model-id", "tiny"]], "tiny"],
    ["Deno.serve", () => [bin("deno"), ["run", "-A", "examples/deno/serve.ts", "--port", "0"]], "tiny"],
    ["Bun.serve", () => [bin("bun"), ["examples/bun/serve.ts", "--port", "0"]], "tiny"],
  ];
  for (const [name, command, id] of hosts) {
    it(`${name}: chat streamed and not, the same text as in-process`, async () => {
      const [cmd, args] = command();
      const { child, url } = await start(cmd, args);
      try {
        const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
        assert.deepEqual((await client.models.list()).data.map((m) => m.id), [id]);
        const r = await client.chat.completions.create({ model: id, messages, max_tokens: 12, temperature: 0 });
        assert.equal(r.choices[0]!.message.content, expected);
        const s = await client.chat.completions.create({ model: id, messages, max_tokens: 12, temperature: 0, stream: true });
        let text = "";
        for await (const c of s) text += c.choices[0]?.delta.content ?? "";
        assert.equal(text, expected);
        await assert.rejects(client.chat.completions.create({ model: id, messages, n: 3 }), (e: unknown) => e instanceof OpenAI.BadRequestError);
      } finally {
        const code = await stop(child);
        if (name.startsWith("Node")) assert.equal(code, 0, "SIGTERM stops gqa-wasm serve cleanly");
      }
    });
  }

  it("gqa-wasm serve: --api-key (or GQA_WASM_API_KEY) guards /v1, bad flags are one-line usage errors", async () => {
    const { child, url } = await start(process.execPath, ["dist/cli.js", "serve", "--model", dir, "--port", "0", "--api-key", "k1"]);
    try {
      const id = dir.split("/").pop()!;
      assert.equal((await new OpenAI({ baseURL: `${url}/v1`, apiKey: "k1", maxRetries: 0 }).models.list()).data[0]!.id, id, "the model id defaults to the folder name");
      await assert.rejects(new OpenAI({ baseURL: `${url}/v1`, apiKey: "k2", maxRetries: 0 }).models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
      assert.equal((await fetch(`${url}/health`)).status, 200, "/health needs no key");
    } finally {
      await stop(child);
    }
    const { spawnSync } = await import("node:child_process");
    for (const [args, message] of [[["--port", "70000"], /--port must be at most 65535/], [["--max-sequences", "0"], /--max-sequences takes positive decimal integers/], [["--kv-dtype", "f8"], /--kv-dtype is f32, f16, bf16 or int8/]] as const) {
      const r = spawnSync(process.execPath, ["dist/cli.js", "serve", "--model", dir, ...args], { cwd: root, encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, message);
    }
  });
});
