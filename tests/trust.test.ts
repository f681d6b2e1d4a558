// Hostile and careless input, one case per defect found by probing (issue #13): each failed
// before its fix. Errors must be one clear line, allocate nothing out of proportion, never hang,
// and leave the runtime usable.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  createKVCache, createRuntime, inspectModel, KVCacheFullError, loadModel, ModelConfigError, parseModelConfig, TemplateError, TextTokenizer, type Runtime,
} from "../src/index.ts";
import { byteLevelTokenizer } from "../src/model/synthetic.ts";
import { base, textModel, writeModelFolder, writeTokenizer } from "./model-helpers.ts";

const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));
const run = (args: string[], input?: string) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 60_000, input });
const oneLine = (stderr: string) => {
  assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
  return stderr;
};
const gqa = { ...base, model_type: "llama", num_key_value_heads: 2 };

describe("trust: hostile files and careless input", function () {
  this.timeout(120_000);
  const dirs: string[] = [];
  const tmp = (prefix = "gqa-trust-") => { const d = mkdtempSync(join(tmpdir(), prefix)); dirs.push(d); return d; };
  const folder = (config: Record<string, unknown>, opts?: Parameters<typeof writeModelFolder>[1]) => { const d = writeModelFolder(config, opts); dirs.push(d); return d; };
  let rt: Runtime;
  before(async () => { rt = await createRuntime(); });
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  describe("resident buffers belong to their runtime", () => {
    it("a WasmBuffer of another runtime is refused by attentionInto, linearInto and the KV cache, and nothing of this runtime is written", async () => {
      const other = await createRuntime();
      const mine = rt.upload(Float32Array.from({ length: 256 }, (_, i) => i));
      const before = mine.toFloat32Array();
      const [q, k, v, out] = [64, 64, 64, 64].map((n) => rt.alloc(n));
      const foreign = other.alloc(64);
      for (const name of ["q", "k", "v", "out"] as const) {
        const args = { q, k, v, out, numHeads: 1, numKvHeads: 1, headDim: 64, [name]: foreign };
        assert.throws(() => rt.attentionInto(args), { name: "TypeError", message: new RegExp(`attentionInto: ${name} is a WasmBuffer of another runtime`) });
      }
      const w = rt.alloc(64 * 4), y = rt.alloc(4);
      assert.throws(() => rt.linearInto({ x: foreign, weight: w, out: y, inFeatures: 64, outFeatures: 4 }), /linearInto: x is a WasmBuffer of another runtime/);
      assert.throws(() => rt.linearInto({ x: q, weight: other.alloc(256), out: y, inFeatures: 64, outFeatures: 4 }), /linearInto: weight is a WasmBuffer of another runtime/);
      assert.throws(() => rt.linearInto({ x: q, weight: w, out: other.alloc(4), inFeatures: 64, outFeatures: 4 }), /linearInto: out is a WasmBuffer of another runtime/);
      const cache = createKVCache(rt, { layers: [{ numKvHeads: 1, headDim: 64 }] });
      const seq = cache.createSequence();
      cache.append(seq, 0, new Float32Array(64).fill(1), new Float32Array(64).fill(2));
      assert.throws(() => cache.attentionInto(seq, 0, { q: foreign, out, numHeads: 1 }), /KVCache.attentionInto: q is a WasmBuffer of another runtime/);
      assert.throws(() => cache.attentionInto(seq, 0, { q, out: foreign, numHeads: 1 }), /KVCache.attentionInto: out is a WasmBuffer of another runtime/);
      assert.deepEqual(mine.toFloat32Array(), before, "no buffer of this runtime was touched");
      cache.attentionInto(seq, 0, { q, out, numHeads: 1 });
      assert.ok(out.array.every((x) => x === 2), "the runtime and the cache stay usable");
      cache.dispose();
    });
  });

  describe("config.json sizes are bounded before anything is allocated", () => {
    it("huge layer, head and vocabulary counts are refused at once with the bound they exceed", () => {
      for (const [key, value] of [["num_hidden_layers", 1e9], ["num_hidden_layers", 1e6], ["num_attention_heads", 1e7], ["vocab_size", 1e12], ["max_position_embeddings", 1e15]] as const) {
        assert.throws(() => parseModelConfig({ ...gqa, [key]: value }), { name: "ModelConfigError", message: new RegExp(`${key} is ${value}, over the \\d+ this runtime accepts`) });
      }
      assert.throws(() => parseModelConfig({ ...base, model_type: "deci", num_hidden_layers: 2, num_key_value_heads_per_layer: [4, 1e9] }), /num_key_value_heads_per_layer/);
    });

    it("a layer count the files cannot hold is refused before the tensors are listed, from folders and through the CLI", async () => {
      const dir = folder(gqa);
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...gqa, num_hidden_layers: 1000 }));
      await assert.rejects(inspectModel(dir), /num_hidden_layers is 1000, but the safetensors files hold only \d+ tensors/);
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...gqa, num_hidden_layers: 1e9 }));
      const r = run(["info", "--model", dir]);
      assert.equal(r.status, 1);
      assert.match(oneLine(r.stderr), /^gqa-wasm: .*num_hidden_layers is 1000000000, over the 1024 this runtime accepts\n$/);
    });

    it("an odd head_dim is refused (rotary embeddings rotate pairs), as Hugging Face does", () => {
      assert.throws(() => parseModelConfig({ ...gqa, head_dim: 7 }), /RoPE would rotate 7 elements of each head \(head_dim 7\); rotary embeddings rotate pairs/);
      assert.throws(() => parseModelConfig({ ...gqa, hidden_size: 36, num_attention_heads: 4 }), /RoPE would rotate 9 elements of each head \(head_dim 9\)/);
      // Partial rotary: the rotated part must be pairs; the head itself may then be any size.
      assert.throws(() => parseModelConfig({ ...gqa, head_dim: 16, partial_rotary_factor: 0.35 }), /RoPE would rotate 5 elements of each head \(head_dim 16 x partial_rotary_factor 0\.35\)/);
      assert.throws(() => parseModelConfig({ ...gqa, head_dim: 16, partial_rotary_factor: 0.01 }), /RoPE would rotate 0 elements of each head \(head_dim 16 x partial_rotary_factor 0\.01\)/);
      assert.equal(parseModelConfig({ ...gqa, head_dim: 7, partial_rotary_factor: 0.6 }).rotaryDim, 4);
    });
  });

  describe("threads", () => {
    it("more threads than the host can run are refused at once, by createRuntime and by --threads", async () => {
      await assert.rejects(createRuntime({ threads: 999 }), { name: "RangeError", message: /999 threads asked; this host has \d+ cores, and a runtime takes at most \d+/ });
      const dir = folder(gqa);
      const r = run(["generate", "--model", dir, "--tokens", "1,2", "--threads", "999"]);
      assert.equal(r.status, 1);
      assert.match(oneLine(r.stderr), /^gqa-wasm: createRuntime: 999 threads asked/);
    });
  });

  describe("chat templates are untrusted code with a budget", () => {
    const tokenizer = (template: string) => {
      const files = byteLevelTokenizer({ chatTemplate: template });
      return new TextTokenizer(JSON.parse(files["tokenizer.json"]), JSON.parse(files["tokenizer_config.json"]), "tokenizer.json", undefined, "dir/tokenizer_config.json");
    };
    const messages = [{ role: "user", content: "hi" }];
    for (const [what, template, error] of [
      ["a huge range()", "{% for i in range(100000000) %}x{% endfor %}", /range\(\) of 100000000 items is over the chat template's limit/],
      ["nested loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", /ran over \d+ evaluation steps/],
      ["an array doubled in a loop", "{% set ns = namespace(a=[1]) %}{% for i in range(60) %}{% set ns.a = ns.a + ns.a %}{% endfor %}", /ran over \d+ evaluation steps/],
      ["a string doubled in a loop", "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", /produced over \d+ characters/],
      ["unbounded recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", /the chat template failed on these messages/],
    ] as const) {
      it(`${what} ends with a TemplateError naming the file, and the tokenizer stays usable`, () => {
        const tok = tokenizer(template);
        assert.throws(() => tok.applyChatTemplate(messages), (e: Error) => e instanceof TemplateError && error.test(e.message) && e.message.startsWith("dir/tokenizer_config.json: "));
        assert.equal(tok.decode(tok.encode("still works")), "still works");
      });
    }

    it("real templates render as before (ChatML, raise_exception, strftime_now), and a syntax error names the file the template came from", () => {
      const tok = tokenizer("{% if messages[0]['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{{ strftime_now('%Y') }}");
      assert.equal(tok.applyChatTemplate(messages), `<user>hi${new Date().getFullYear()}`);
      assert.throws(() => tok.applyChatTemplate([{ role: "tool", content: "x" }]), /the chat template raised: no tools/);
      assert.throws(() => tokenizer("{% for %}"), (e: Error) => e instanceof TemplateError && /^dir\/tokenizer_config\.json: the chat template does not parse/.test(e.message));
      const files = byteLevelTokenizer({ chatTemplate: null });
      assert.throws(() => new TextTokenizer(JSON.parse(files["tokenizer.json"]), {}, "tokenizer.json", { text: "{% if %}", source: "dir/chat_template.jinja" }), /^TemplateError: dir\/chat_template\.jinja: /);
    });

    it("`run --chat` with a hostile template fails in one line", () => {
      const dir = folder(textModel);
      writeTokenizer(dir, { chatTemplate: "{% for i in range(100000000) %}x{% endfor %}" });
      const r = run(["run", "--model", dir, "--chat", "--prompt", "hi", "--max-new-tokens", "2"]);
      assert.equal(r.status, 1);
      assert.match(oneLine(r.stderr), /gqa-wasm: .*tokenizer_config\.json: range\(\) of 100000000 items is over/);
    });
  });

  describe("model files stay inside the model's folder, and are regular files", () => {
    const sharded = () => folder(gqa, { shards: 2 });
    const setShard = (dir: string, name: string) => {
      const indexPath = join(dir, "model.safetensors.index.json");
      const index = JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map: Record<string, string> };
      const first = Object.values(index.weight_map)[0]!;
      for (const [k, v] of Object.entries(index.weight_map)) if (v === first) index.weight_map[k] = name;
      writeFileSync(indexPath, JSON.stringify(index));
      return first;
    };

    for (const name of ["../outside/model.safetensors", "/etc/passwd", "sub/model.safetensors", "..", "http://127.0.0.1:1/x.safetensors", "a\\b.safetensors"]) {
      it(`a shard named ${JSON.stringify(name)} in the index is refused`, async () => {
        const dir = sharded();
        const first = setShard(dir, name);
        // A real shard where the path would lead, to be sure it is not read.
        mkdirSync(join(dir, "..", "outside"), { recursive: true });
        writeFileSync(join(dir, "..", "outside", "model.safetensors"), readFileSync(join(dir, first)));
        await assert.rejects(loadModel(rt, dir), (e: Error) => e instanceof ModelConfigError && e.message.includes(`shard ${JSON.stringify(name)} is not a plain file name in the model's folder`));
      });
    }

    it("an http(s) folder's index cannot send the loader to another origin", async () => {
      const dir = sharded();
      let otherHits = 0;
      const other = createServer((_, res) => { otherHits++; res.writeHead(404).end(); });
      await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
      setShard(dir, `http://127.0.0.1:${(other.address() as { port: number }).port}/model.safetensors`);
      const server = createServer((req, res) => {
        try { res.writeHead(200).end(readFileSync(join(dir, decodeURIComponent(new URL(req.url!, "http://x").pathname)))); } catch { res.writeHead(404).end(); }
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      try {
        await assert.rejects(loadModel(rt, `http://127.0.0.1:${(server.address() as { port: number }).port}/`), /is not a plain file name/);
        assert.equal(otherHits, 0, "the other origin was never asked");
      } finally { server.close(); other.close(); }
    });

    it("a FIFO named as a shard is refused instead of hanging the load; so are directories", async () => {
      const dir = sharded();
      setShard(dir, "pipe.safetensors");
      execFileSync("mkfifo", [join(dir, "pipe.safetensors")]);
      await assert.rejects(loadModel(rt, dir), /pipe\.safetensors: not a regular file \(a FIFO\)/);
      const single = folder(gqa);
      rmSync(join(single, "model.safetensors"));
      mkdirSync(join(single, "model.safetensors"));
      const r = run(["generate", "--model", single, "--tokens", "1"]);
      assert.equal(r.status, 1);
      assert.match(oneLine(r.stderr), /model\.safetensors: not a regular file \(a directory\)\n$/);
      const fifoConfig = folder(gqa);
      rmSync(join(fifoConfig, "config.json"));
      execFileSync("mkfifo", [join(fifoConfig, "config.json")]);
      await assert.rejects(inspectModel(fifoConfig), /config\.json: not a regular file \(a FIFO\)/);
    });

    it("--model naming a file says so", () => {
      const dir = folder(gqa);
      const r = run(["info", "--model", join(dir, "config.json")]);
      assert.equal(r.status, 1);
      assert.match(oneLine(r.stderr), /not a model folder \(it is a file; give the folder/);
    });
  });

  describe("weights", () => {
    for (const dtype of ["F32", "BF16", "F16"] as const) {
      it(`a ${dtype} checkpoint with a NaN or an infinity fails at load, naming the tensor, and frees what it uploaded`, async () => {
        const cfg = parseModelConfig(gqa);
        const { syntheticWeights } = await import("../src/model/synthetic.ts");
        const weights = syntheticWeights(cfg);
        weights.get("model.layers.1.mlp.up_proj.weight")![17] = dtype === "F16" ? Infinity : NaN;
        const dir = folder(gqa, { weights, dtype });
        const live = rt.stats().persistentLiveBytes;
        await assert.rejects(loadModel(rt, dir), { name: "ModelConfigError", message: /tensor 'model\.layers\.1\.mlp\.up_proj\.weight' holds a non-finite value \(NaN or infinity\) at element 17/ });
        assert.equal(rt.stats().persistentLiveBytes, live);
      });
    }
  });

  describe("command line", () => {
    it("--tokens takes decimal ids only: empty items, hex and exponents are usage errors", () => {
      const dir = folder(gqa);
      for (const tokens of ["1,,2", "0x10,1e1", "1,", ",1", "1.0", " 1", "+1", "-1"]) {
        const r = run(["generate", "--model", dir, `--tokens=${tokens}`]);
        assert.equal(r.status, 2, `${tokens}: ${r.stderr}`);
        assert.match(oneLine(r.stderr), /^gqa-wasm: --tokens takes decimal token ids separated by commas; item \d+ of '.*' is '.*'\n/);
      }
    });

    it("flags are parsed strictly: a flag given twice, an unknown flag, a stray argument, a value on a switch, hex numbers", () => {
      const dir = folder(gqa);
      const cases: [string[], RegExp][] = [
        [["generate", "--model", dir, "--tokens", "1", "--seed", "1", "--seed", "2"], /--seed is given more than once/],
        [["generate", "--model", dir, "--model", dir, "--tokens", "1"], /--model is given more than once/],
        [["generate", "--model", dir, "--tokens", "1", "--temprature", "0"], /unknown option --temprature for generate/],
        [["generate", "--model", dir, "--tokens", "1", "extra"], /unexpected argument 'extra'/],
        [["generate", "--model", dir, "--tokens", "1", "--json=yes"], /--json takes no value/],
        [["generate", "--model", dir, "--tokens", "1", "--temperature", "0x1"], /--temperature takes a decimal number, got '0x1'/],
        [["generate", "--model", dir, "--tokens", "1", "--max-new-tokens", "1e3"], /--max-new-tokens takes positive decimal integers, got '1e3'/],
        [["generate", "--model", dir, "--tokens", "1", "--threads", "two"], /--threads takes positive decimal integers, got 'two'/],
        [["info", "--model"], /--model needs a value/],
      ];
      for (const [args, message] of cases) {
        const r = run(args);
        assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
        assert.match(oneLine(r.stderr), message);
      }
      // --stop may repeat, and a negative number is a value.
      const ok = run(["generate", "--model", dir, "--tokens", "1", "--temperature", "-0", "--max-new-tokens", "2"]);
      assert.equal(ok.status, 0, ok.stderr);
    });

    it("logits checks its output path before loading the model: a directory or an unwritable path is one line", () => {
      const dir = folder(gqa);
      const outDir = tmp();
      for (const [out, why] of [[outDir, "it is a directory"], [join(outDir, "missing", "x.json"), "no such directory"]] as const) {
        // A model folder that does not exist: the path is checked first, so its error is the one shown.
        const r = run(["logits", "--model", join(dir, "nope"), "--tokens", "1,2", "--out", out]);
        assert.equal(r.status, 1);
        assert.equal(oneLine(r.stderr), `gqa-wasm: cannot write ${out} (${why})\n`);
      }
      const bad = run(["logits", "--model", join(dir, "nope"), "--tokens", "1,2", "--out", join(outDir, "x.json")]);
      assert.match(oneLine(bad.stderr), /not a model folder/);
      assert.throws(() => readFileSync(join(outDir, "x.json")), /ENOENT/, "a failed run leaves no partial file");
    });

    it("logits writes 600 positions x 49,152 logits as .npy (numpy's format) and big JSON row by row; both hold the same numbers", async () => {
      const wide = { ...gqa, hidden_size: 16, intermediate_size: 16, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 49152, max_position_embeddings: 1024 };
      const dir = folder(wide);
      const outDir = tmp();
      const ids = Array.from({ length: 600 }, (_, i) => (i * 7919) % 49152);
      const r = run(["logits", "--model", dir, "--tokens", ids.join(","), "--out", join(outDir, "l.npy")]);
      assert.equal(r.status, 0, r.stderr);
      const npy = readFileSync(join(outDir, "l.npy"));
      assert.deepEqual([...npy.subarray(0, 8)], [0x93, ...Buffer.from("NUMPY"), 1, 0]);
      const headerLength = npy.readUInt16LE(8);
      assert.equal((10 + headerLength) % 64, 0, "data 64-byte aligned, as numpy writes it");
      assert.match(npy.subarray(10, 10 + headerLength).toString("latin1"), /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(600, 49152\), \} *\n$/);
      assert.equal(npy.length, 10 + headerLength + 600 * 49152 * 4);
      const values = new Float32Array(npy.buffer.slice(npy.byteOffset + 10 + headerLength, npy.byteOffset + npy.length));
      // The same numbers as JSON for the first 130 positions (past one 128-position chunk): the
      // first chunk bit for bit; past it the 2-position chunk runs the GEMV path where the
      // .npy run's 128-position chunk ran the GEMM tiles, which round differently.
      const j = run(["logits", "--model", dir, "--tokens", ids.slice(0, 130).join(","), "--out", join(outDir, "l.json")]);
      assert.equal(j.status, 0, j.stderr);
      const json = JSON.parse(readFileSync(join(outDir, "l.json"), "utf8")) as { logits: number[][] };
      assert.equal(json.logits.length, 130);
      for (const p of [0, 127]) assert.deepEqual(json.logits[p], Array.from(values.subarray(p * 49152, (p + 1) * 49152)), `position ${p}`);
      for (const p of [128, 129]) {
        const err = Math.max(...json.logits[p]!.map((x, v) => Math.abs(x - values[p * 49152 + v]!)));
        assert.ok(err < 1e-4, `position ${p}: ${err}`);
      }
    });

    it("a --chat turn too long for the context is refused with a message and the conversation goes on; a 10 MB line is never held whole", () => {
      const dir = folder({ ...textModel, max_position_embeddings: 64 });
      writeTokenizer(dir);
      const huge = "word ".repeat(2_000_000); // 10 MB
      const r = run(["run", "--model", dir, "--chat", "--max-new-tokens", "3", "--temperature", "0"], `${huge}\n${"many words ".repeat(40)}\nHi\n`);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /gqa-wasm: this turn is 9\.5 MiB, more than the 64\.0 KiB a turn may be for a 64-token context; it was not sent\n/);
      assert.match(r.stderr, /gqa-wasm: chat: with this message the conversation is \d+ tokens, and the model's context is 64; the message was not added\n/);
      assert.match(r.stderr, /decode: 3 tokens/, "the short turn after them is answered");
      const replies = r.stdout.split("\n").filter((l) => l.length > 0);
      assert.equal(replies.length, 1, r.stdout);
    });

    it("--chat on a model without a chat template says what to do on the command line", () => {
      const dir = folder(textModel);
      writeTokenizer(dir, { chatTemplate: null });
      const r = run(["run", "--model", dir, "--chat", "--prompt", "hi"]);
      assert.equal(r.status, 1);
      assert.match(oneLine(r.stderr), /has no chat template \(tokenizer_config\.json chat_template or chat_template\.jinja\); run it without --chat\n$/);
      assert.doesNotMatch(r.stderr, /generate\(\)/);
    });
  });

  describe("streaming", () => {
    it("every token is streamed exactly once, and the last step carries what was held back", async () => {
      const dir = folder(textModel);
      writeTokenizer(dir);
      const model = await loadModel(rt, dir);
      try {
        const free = await model.generate("the theme", { temperature: 0, maxNewTokens: 12, stopTokens: [] }).done;
        // A stop string that begins with the text's last character: that character is held back
        // until the end, and must come out on the last real step.
        const last = free.text.at(-1)!;
        const cases = [
          { stopStrings: [`${last}\u0001never`], maxNewTokens: 12, reason: "max-tokens" },
          { stopTokens: [free.tokens[4]!], maxNewTokens: 12, reason: "eos" },
        ];
        for (const { reason, ...options } of cases) {
          const g = model.generate("the theme", { temperature: 0, stopTokens: [], ...options });
          const steps: { token: number; text: string }[] = [];
          for await (const step of g) steps.push(step);
          const result = await g.done;
          assert.equal(result.finishReason, reason);
          assert.deepEqual(steps.map((s) => s.token), result.tokens, `${reason}: one step per token`);
          assert.equal(steps.map((s) => s.text).join(""), result.text);
          if (reason === "max-tokens") assert.ok(steps.at(-1)!.text.endsWith(last), "the held-back character rides on the last step");
        }
      } finally { model.dispose(); }
    });
  });

  describe("small things", () => {
    it("maxMemoryBytes / initialMemoryBytes that are not positive numbers are a RangeError naming the option", async () => {
      for (const bad of [NaN, -1, 0, Infinity, "64MB"]) {
        await assert.rejects(createRuntime({ maxMemoryBytes: bad as number }), { name: "RangeError", message: /createRuntime: maxMemoryBytes must be a positive number of bytes/ });
        await assert.rejects(createRuntime({ initialMemoryBytes: bad as number }), { name: "RangeError", message: /initialMemoryBytes must be a positive number/ });
      }
    });

    it("WasmBuffer.set refuses an offset that is not a whole index instead of writing at 0", () => {
      const b = rt.upload(new Float32Array([1, 2, 3, 4]));
      for (const offset of [NaN, 0.5, -1, Infinity]) assert.throws(() => b.set([9], offset), RangeError);
      assert.deepEqual([...b.array], [1, 2, 3, 4]);
      b.set([9], 3);
      assert.deepEqual([...b.array], [1, 2, 3, 9]);
    });

    it("KVCacheFullError counts pages consistently", () => {
      const cache = createKVCache(rt, { layers: [{ numKvHeads: 1, headDim: 8 }], pageSize: 1, maxTokens: 25 });
      const seq = cache.createSequence();
      cache.append(seq, 0, new Float32Array(8), new Float32Array(8));
      const err = (() => { try { cache.append(seq, 0, new Float32Array(8 * 26), new Float32Array(8 * 26)); } catch (e) { return e as Error; } })();
      assert.ok(err instanceof KVCacheFullError);
      assert.match(err.message, /26 more page\(s\) of \d+ bytes needed for a 1x8 layer, \d+ free \(26 page\(s\) asked, \d+ free, \d+ of at most 25 allocated\)/);
      cache.dispose();
    });

    it("ModelConfigError is what a bad folder throws, whatever the host", async () => {
      await assert.rejects(inspectModel(join(tmp(), "nothing-here")), ModelConfigError);
    });
  });

  describe("GGUF tokenizer metadata", () => {
    it("a SentencePiece vocabulary with a million-character token is read at once (merges are not derived from such tokens)", async () => {
      const { ggufTokenizer } = await import("../src/model/gguf-model.ts");
      const tokens = ["<unk>", "<s>", "</s>", "a", "b", "ab", "x".repeat(1_000_000)];
      const t = ggufTokenizer(new Map<string, never>([["tokenizer.ggml.model", "llama" as never], ["tokenizer.ggml.tokens", tokens as never], ["tokenizer.ggml.scores", tokens.map(() => 0) as never]]), "x.gguf")!;
      assert.deepEqual((t.json.model as { merges: string[][] }).merges, [["a", "b"]]);
      const many = Array.from({ length: 120_000 }, (_, i) => `${"y".repeat(58)}${i}`); // 59 to 64 characters each
      assert.throws(() => ggufTokenizer(new Map<string, never>([["tokenizer.ggml.model", "llama" as never], ["tokenizer.ggml.tokens", many as never], ["tokenizer.ggml.scores", many.map(() => 0) as never]]), "x.gguf"),
        /too large to derive SentencePiece merges from/);
    });
  });

  describe("npm test itself", () => {
    it("a failing run ends with its failures even when something still holds the event loop", () => {
      const dir = tmp();
      const spec = join(dir, "holds-the-loop.spec.ts");
      writeFileSync(spec, `import assert from "node:assert/strict";\nsetInterval(() => {}, 1000);\nit("fails", () => assert.equal(1, 2));\n`);
      const config = JSON.parse(readFileSync(fileURLToPath(new URL("../.mocharc.json", import.meta.url)), "utf8")) as Record<string, unknown>;
      writeFileSync(join(dir, ".mocharc.json"), JSON.stringify({ ...config, spec: [spec] }));
      const mocha = fileURLToPath(new URL("../node_modules/mocha/bin/mocha.js", import.meta.url));
      const r = spawnSync(process.execPath, [mocha, "--config", join(dir, ".mocharc.json")], { encoding: "utf8", timeout: 60_000, cwd: fileURLToPath(new URL("..", import.meta.url)) });
      assert.notEqual(r.signal, "SIGTERM", "mocha did not end by itself");
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /1 failing/);
    });
  });
});
