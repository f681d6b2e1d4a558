// The browser conformance driver: a page loads this bundle, which runs the cases on the best
// build the browser validates, on 1 thread and (with cross-origin isolation) on 2 threads in
// Web Workers... once the pool runs there; today threads fall back to 1 and say why.
import { createRuntime } from "../../src/index.ts";
import { runCases } from "./cases.ts";

declare global { interface Window { conformance?: { passed: number; failed: number; lines: string[] } } }

async function main(): Promise<void> {
  const lines: string[] = [];
  let passed = 0, failed = 0;
  try {
    for (const build of ["relaxed", "simd"] as const) {
      const rt = await createRuntime({ wasm: new URL(`/build/gqa-${build}.wasm`, location.href), threads: "auto" });
      lines.push(`chromium: ${rt.build} kernels, ${rt.threadInfo}, crossOriginIsolated=${self.crossOriginIsolated}`);
      const r = await runCases(rt, `chromium ${rt.build}`, (l) => lines.push(l));
      passed += r.passed; failed += r.failed;
    }
  } catch (e) {
    failed++;
    lines.push(`error: ${(e as Error).stack}`);
  }
  lines.push(`conformance: ${passed} passed, ${failed} failed`);
  document.body.textContent = lines.join("\n");
  window.conformance = { passed, failed, lines };
}

void main();
