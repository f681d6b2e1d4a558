import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRuntime } from "../src/index.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { loadModel } from "../src/model/load.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../src/formats/half.ts";
import { greedyByRecomputing } from "./model-reference.ts";
import { base, models, randomWeights, referenceForward, textModel, writeModelFolder, writeTokenizer } from "./model-helpers.ts";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 60_000 });
const tokens = [3, 17, 0, 39, 5, 22];

describe("`gqa-wasm logits` and `gqa-wasm generate` on model folders", function () {
  this.timeout(120_000);
  const dirs: string[] = [];
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  /** `gqa-wasm logits` on the test tokens: the logits it writes, after checking it succeeded. */
  const cliLogits = (dir: string, ...flags: string[]): number[][] => {
    const outDir = mkdtempSync(join(tmpdir(), "gqa-logits-"));
    dirs.push(outDir);
    const out = join(outDir, "logits.json");
    const r = run("logits", "--model", dir, "--tokens", tokens.join(","), "--out", out, ...flags);
    assert.equal(r.status, 0, r.stderr);
    return (JSON.parse(readFileSync(out, "utf8")) as { logits: number[][] }).logits;
  };

  for (const [name, raw] of models) {
    it(`logits of a ${name} folder match the float64 reference at every position`, () => {
      const cfg = parseModelConfig(raw);
      const weights = randomWeights(cfg);
      const dir = writeModelFolder(raw, { weights, shards: 2 });
      dirs.push(dir);
      const logits = cliLogits(dir);
      const ref = referenceForward(cfg, weights, tokens);
      assert.equal(logits.length, tokens.length);
      logits.forEach((row, i) => {
        assert.equal(row.length, cfg.vocabSize);
        const err = Math.max(...row.map((v, j) => Math.abs(v - ref[i]![j]!)));
        assert.ok(err <= 2e-3, `position ${i}: ${err}`);
      });
    });
  }

  const sixteenBit = [
    { dtype: "BF16", model: models[0]!, round: (x: number) => bf16ToF32(f32ToBf16(x)), flags: ["--dtype", "bf16"] },
    { dtype: "F16", model: models[2]!, round: (x: number) => f16ToF32(f32ToF16(x)), flags: [] }, // qwen2: biases too
  ] as const;
  for (const { dtype, model: [name, raw], round, flags } of sixteenBit) {
    it(`${dtype} folders (${name}) load with 16-bit weights kept 16-bit, within 2e-2 of the reference on the stored weights`, () => {
      const cfg = parseModelConfig(raw);
      const weights = randomWeights(cfg);
      const dir = writeModelFolder(raw, { weights, dtype });
      dirs.push(dir);
      // The reference runs on what the file holds: every weight rounded to the 16-bit type.
      for (const [n, w] of weights) weights.set(n, Float32Array.from(w, round));
      const logits = cliLogits(dir, ...flags);
      const ref = referenceForward(cfg, weights, tokens);
      const err = Math.max(...logits.flatMap((row, i) => row.map((v, j) => Math.abs(v - ref[i]![j]!))));
      assert.ok(err <= 2e-2, `max error ${err}`);
    });
  }

  it("greedy generate through the KV cache equals recomputing the whole forward at every step", async () => {
    const raw = { ...base, model_type: "llama", num_key_value_heads: 2 };
    const dir = writeModelFolder(raw);
    dirs.push(dir);
    const r = run("generate", "--model", dir, "--tokens", "3,17,0", "--max-new-tokens", "8", "--temperature", "0", "--json");
    assert.equal(r.status, 0, r.stderr);
    const generated = (JSON.parse(r.stdout) as { tokens: number[] }).tokens;
    assert.equal(generated.length, 8);
    const rt = await createRuntime();
    const model = await loadModel(rt, dir);
    assert.deepEqual(generated, greedyByRecomputing(model.transformer, [3, 17, 0], 8));
    model.dispose();
    // Two worker threads share every layer and give the same tokens.
    const threaded = run("generate", "--model", dir, "--tokens", "3,17,0", "--max-new-tokens", "8", "--temperature", "0", "--json", "--threads", "2");
    assert.equal(threaded.status, 0, threaded.stderr);
    assert.deepEqual((JSON.parse(threaded.stdout) as { tokens: number[] }).tokens, generated);
  });

  it("sampling is reproducible from its seed and differs across seeds", () => {
    const dir = writeModelFolder({ ...base, model_type: "qwen2", num_key_value_heads: 2 });
    dirs.push(dir);
    const gen = (seed: number) => {
      const r = run("generate", "--model", dir, "--tokens", "3,17", "--max-new-tokens", "12", "--temperature", "1.5", "--top-k", "20", "--top-p", "0.95", "--seed", String(seed), "--repetition-penalty", "1.1", "--json");
      assert.equal(r.status, 0, r.stderr);
      return (JSON.parse(r.stdout) as { tokens: number[] }).tokens;
    };
    const a = gen(1);
    assert.equal(a.length, 12);
    assert.deepEqual(gen(1), a);
    assert.notDeepEqual(gen(2), a);
  });

  it("bad requests are one clear line on stderr", () => {
    const dir = writeModelFolder({ ...base, model_type: "llama", num_key_value_heads: 2 });
    dirs.push(dir);
    const cases: [string[], number, RegExp][] = [
      [["generate", "--model", dir, "--tokens", "1,99", "--json"], 1, /token id 99 is outside the vocabulary \[0, 40\)/],
      [["generate", "--model", dir, "--tokens", "1,2", "--temperature", "-1"], 2, /temperature must be >= 0, got -1/],
      [["generate", "--model", dir, "--tokens", "1,2", "--top-p", "1.5"], 2, /topP must be in \(0, 1\], got 1.5/],
      [["logits", "--model", dir, "--tokens", "1,2"], 2, /logits needs --out FILE.json/],
      [["logits", "--model", dir, "--tokens", "a,b", "--out", "/tmp/x.json"], 2, /--tokens takes decimal token ids separated by commas; item 1 of 'a,b' is 'a'/],
      [["run", "--model", dir], 2, /run needs --prompt TEXT \(or --chat/],
      [["run", "--model", dir, "--prompt", "hi"], 1, /has no tokenizer\.json; run needs one/],
      [["run", "--model", dir, "--prompt", "hi", "--system", "x"], 2, /--system needs --chat/],
      [["run", "--model", dir, "--prompt", "hi", "--chat-template-kwargs", "{}"], 2, /--chat-template-kwargs needs --chat/],
      [["run", "--model", dir, "--chat", "--chat-template-kwargs", "{enable_thinking: false}"], 2, /--chat-template-kwargs takes a JSON object, e\.g\. '\{"enable_thinking": false\}'; got '\{enable_thinking: false\}'/],
      [["run", "--model", dir, "--chat", "--chat-template-kwargs", '{"bos_token": 1}'], 2, /--chat-template-kwargs: chat template variables cannot set bos_token/],
      [["run", "--model", dir, "--prompt", "hi", "--dtype", "f8"], 2, /--dtype is f32, bf16, f16, q8_0, q4_0, q5_0, q4_1, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m, q5_k_m or stored, got 'f8'/],
      [["run", "--model", dir, "--prompt", "hi", "--kv-dtype", "f8"], 2, /--kv-dtype is f32, f16, bf16 or int8, got 'f8'/],
      [["run", "--model", join(dir, "nope"), "--prompt", "hi"], 1, /not a model folder \(no such directory\)/],
    ];
    for (const [args, status, message] of cases) {
      const r = run(...args);
      assert.equal(r.status, status, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });

  describe("`gqa-wasm run`", () => {
    let dir: string;
    before(() => { dir = writeModelFolder(textModel, { dtype: "BF16" }); writeTokenizer(dir); dirs.push(dir); });

    it("streams the continuation of a text prompt to stdout, the same text as the library, and its figures to stderr", async () => {
      const r = run("run", "--model", dir, "--prompt", "the theme", "--max-new-tokens", "10", "--temperature", "0");
      assert.equal(r.status, 0, r.stderr);
      const rt = await createRuntime();
      const model = await loadModel(rt, dir);
      assert.equal(model.transformer.weightDtype, "bf16", "16-bit weights stay 16-bit by default");
      const expected = await model.generate("the theme", { maxNewTokens: 10, temperature: 0 }).done;
      model.dispose();
      assert.equal(r.stdout, `${expected.text}\n`);
      assert.match(r.stderr, /^loaded .* in [\d.]+ s \(llama, bf16 weights, 1 thread \(the default\)\)$/m);
      assert.match(r.stderr, /^prefill: \d+ tokens at [\d.]+ tokens\/s; decode: 10 tokens at [\d.]+ tokens\/s; KV cache: [\d.]+ KiB; stop: max-tokens$/m);
      // A bf16 KV cache: half the bytes.
      const half = run("run", "--model", dir, "--prompt", "the theme", "--max-new-tokens", "10", "--temperature", "0", "--kv-dtype", "bf16");
      assert.equal(half.status, 0, half.stderr);
      const kib = (text: string) => Number(/KV cache: ([\d.]+) KiB/.exec(text)![1]);
      assert.equal(kib(half.stderr), kib(r.stderr) / 2);
    });

    it("--chat renders the chat template; turns read from stdin reuse the cached conversation", async () => {
      const one = run("run", "--model", dir, "--chat", "--system", "Be brief.", "--prompt", "Hi", "--max-new-tokens", "5", "--temperature", "0");
      assert.equal(one.status, 0, one.stderr);
      // Variables the template does not read change nothing.
      assert.equal(run("run", "--model", dir, "--chat", "--system", "Be brief.", "--prompt", "Hi", "--max-new-tokens", "5", "--temperature", "0", "--chat-template-kwargs", '{"enable_thinking": false}').stdout, one.stdout);
      const rt = await createRuntime();
      const model = await loadModel(rt, dir);
      const chat = model.chat({ system: "Be brief." });
      const first = await chat.send("Hi", { maxNewTokens: 5, temperature: 0 }).done;
      const second = await chat.send("More?", { maxNewTokens: 5, temperature: 0 }).done;
      model.dispose();
      assert.equal(one.stdout, `${first.text}\n`);
      const two = spawnSync(process.execPath, [cli, "run", "--model", dir, "--chat", "--system", "Be brief.", "--max-new-tokens", "5", "--temperature", "0"],
        { input: "Hi\nMore?\n", encoding: "utf8", timeout: 60_000 });
      assert.equal(two.status, 0, two.stderr);
      assert.equal(two.stdout, `${first.text}\n${second.text}\n`);
      assert.match(two.stderr, new RegExp(`\\(${second.reusedTokens} reused from the cache\\)`));
      // Interactive: the reply to a line comes before the next line is typed (stdin stays open).
      const child = spawn(process.execPath, [cli, "run", "--model", dir, "--chat", "--system", "Be brief.", "--max-new-tokens", "5", "--temperature", "0"]);
      let out = "";
      child.stdout.setEncoding("utf8"); // whole characters, however the chunks fall
      child.stdout.on("data", (d: string) => { out += d; });
      child.stdin.write("Hi\n");
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply while stdin stayed open: '${out}'`)), 30_000);
        child.stdout.on("data", () => { if (out.length >= first.text.length + 1) { clearTimeout(timer); resolve(); } });
      });
      assert.equal(out, `${first.text}\n`);
      child.stdin.end("More?\n");
      const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
      assert.equal(code, 0);
      assert.equal(out, `${first.text}\n${second.text}\n`);
    });
  });
});
