import assert from "node:assert/strict";
import { CASES } from "./conformance/cases.ts";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

// The conformance cases (tests/conformance/cases.ts) in each command-line host, as separate
// processes: Node with and without relaxed SIMD, Deno and Bun (installed as dev dependencies).
const root = fileURLToPath(new URL("..", import.meta.url));
const driver = "tests/conformance/cli-driver.ts";
const bin = (name: string) => fileURLToPath(new URL(`../node_modules/.bin/${name}`, import.meta.url));

const hosts: { name: string; cmd: string; args: string[]; builds: RegExp }[] = [
  { name: "Node (relaxed SIMD flag)", cmd: process.execPath, args: ["--experimental-wasm-relaxed-simd", "--import", "tsx", driver], builds: /relaxed x2/ },
  { name: "Node (no flag: the plain SIMD build)", cmd: process.execPath, args: ["--import", "tsx", driver], builds: /simd x2/ },
  { name: "Deno", cmd: bin("deno"), args: ["run", "-A", driver], builds: /relaxed x2/ },
  { name: "Bun", cmd: bin("bun"), args: [driver], builds: /relaxed x2/ },
];

describe("conformance in every command-line host", function () {
  this.timeout(180_000);
  for (const h of hosts) {
    it(`${h.name} passes every case on each build it runs, on 1 and 2 threads`, () => {
      const r = spawnSync(h.cmd, h.args, { cwd: root, encoding: "utf8", timeout: 170_000 });
      const out = `${r.stdout}\n${r.stderr}`;
      const m = /conformance: (\d+) passed, (\d+) failed/.exec(r.stdout);
      assert.ok(m, `no result line:\n${out.slice(-2000)}`);
      assert.equal(Number(m[2]), 0, out.slice(-3000));
      assert.ok(Number(m[1]) >= 2 * CASES.length, `only ${m[1]} cases ran (${CASES.length} per build, 2 builds at least)`);
      assert.match(r.stdout, h.builds);
      assert.equal(r.status, 0, out.slice(-2000));
    });
  }
});
