// The conformance driver for command-line hosts: node (with and without relaxed SIMD), deno,
// bun. Runs the cases on every kernel build the host validates, and on 2 threads where the host
// has them; ends with "N passed, M failed" and exit code 1 on any failure.
import { createRuntime, type KernelBuild } from "../../src/index.ts";
import { runCases } from "./cases.ts";

const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string }; process?: { versions: { node: string }; exitCode?: number } };
const host = g.Deno ? `deno ${g.Deno.version.deno}` : g.Bun ? `bun ${g.Bun.version}` : `node ${g.process?.versions.node}`;
let passed = 0, failed = 0;
const configs: { build: KernelBuild; threads?: number }[] = [{ build: "simd" }, { build: "relaxed" }, { build: "relaxed", threads: 2 }, { build: "simd", threads: 2 }];
const ran: string[] = [];
for (const config of configs) {
  let rt;
  try {
    rt = await createRuntime(config);
  } catch (e) {
    console.log(`  skip ${config.build}${config.threads ? ` x${config.threads}` : ""}: ${(e as Error).message}`);
    continue;
  }
  const label = `${host} ${rt.build}${rt.threads > 1 ? ` x${rt.threads}` : ""}`;
  ran.push(label);
  const r = await runCases(rt, label, console.log);
  passed += r.passed; failed += r.failed;
  await rt.dispose();
}
console.log(`host: ${host}; ran: ${ran.join(", ")}`);
console.log(`conformance: ${passed} passed, ${failed} failed`);
if (failed > 0 || passed === 0) {
  if (g.process) g.process.exitCode = 1;
  else if (g.Deno) (g.Deno as unknown as { exit(c: number): void }).exit(1);
}
