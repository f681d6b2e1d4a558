import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

// The README's `npm start` runs dist/cli.js (built by `prepare`); here it runs on small contexts.
const cli = fileURLToPath(new URL("../dist/cli.js", import.meta.url));

function run(...args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 120_000 });
}

describe("gqa-wasm CLI", () => {
  it("demo prints MHA / GQA-8 / GQA-4 / MQA / DeciLM rows with the expected KV bytes per token and small errors", () => {
    const r = run("demo", "--contexts", "64,130", "--repeats", "2");
    assert.equal(r.status, 0, r.stderr);
    const rows = new Map<string, string[]>();
    for (const line of r.stdout.split("\n")) {
      const m = /^(MHA|GQA-8|GQA-4|MQA|DeciLM-7B var\.)\s+(.*)$/.exec(line);
      if (m) rows.set(m[1]!, m[2]!.trim().split(/\s{2,}/));
    }
    assert.deepEqual([...rows.keys()], ["MHA", "GQA-8", "GQA-4", "MQA", "DeciLM-7B var."]);
    // 32 layers x K and V x kvHeads x 128 x 4 bytes
    assert.equal(rows.get("MHA")![1], "1.0 MiB");
    assert.equal(rows.get("GQA-8")![1], "256.0 KiB");
    assert.equal(rows.get("MQA")![1], "32.0 KiB");
    assert.equal(rows.get("DeciLM-7B var.")![1], "67.0 KiB"); // 67 KV heads over 32 layers
    // columns: KV heads, KV bytes/token, ms/tok @64, ms/tok @130, x MHA @64, x MHA @130, max err
    for (const [name, cells] of rows) {
      assert.equal(cells.length, 7, `${name}: ${cells.join(" | ")}`);
      assert.ok(Number(cells[6]) < 1e-5, `${name}: max error ${cells[6]}`);
      for (const ms of cells.slice(2, 4)) assert.ok(Number(ms) > 0, `${name}: time ${ms}`);
    }
    assert.deepEqual(rows.get("MHA")!.slice(4, 6), ["1.00x", "1.00x"]);
    // Node 20 gets relaxed SIMD from the CLI's own V8 flag.
    assert.match(r.stdout, /relaxed kernels/);
    // Then the synthetic-model generation, with its speeds and how to run a real folder.
    assert.match(r.stdout, /Synthetic SmolLM2-135M-shaped model \(135M parameters[\s\S]*prefill 11 tokens: [\d.]+ tokens\/s; greedy decode through the paged KV cache: [\d.]+ tokens\/s/);
    assert.match(r.stdout, /gqa-wasm run --model DIR --prompt/);
  });

  it("prints help (each command its own), and rejects unknown commands and options with a pointer to the usage and exit code 2", () => {
    const help = run("--help");
    assert.equal(help.status, 0);
    assert.match(help.stdout, /usage: gqa-wasm <command>/);
    for (const command of ["demo", "run", "info", "logits", "generate"]) {
      const r = run(command, "--help");
      assert.equal(r.status, 0);
      assert.match(r.stdout, new RegExp(`^usage: gqa-wasm ${command} `));
    }
    for (const args of [["frobnicate"], ["demo", "--bogus", "1"], ["demo", "--contexts", "0"], ["demo", "--build", "avx"]]) {
      const r = run(...args);
      assert.equal(r.status, 2, args.join(" "));
      assert.match(r.stderr, /^gqa-wasm: .*\n\(gqa-wasm (demo )?--help for usage\)\n$/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace for a usage error");
    }
  });
});
