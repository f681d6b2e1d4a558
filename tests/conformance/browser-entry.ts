// The browser conformance driver: a page loads this bundle, which runs the cases on both
// builds on the main thread, and, in a cross-origin-isolated page, a pool of 2 Web Workers on
// one shared memory through the async calls (the main thread may not block), checked against
// one thread.
import { createRuntime, type Runtime } from "../../src/index.ts";
import { runCases } from "./cases.ts";
import { seededArray as random } from "../../src/random.ts";


/** Async calls on a 2-thread pool must give exactly what one thread gives (head/query/column splits). */
async function threadCases(one: Runtime, pool: Runtime, print: (l: string) => void): Promise<{ passed: number; failed: number }> {
  let passed = 0, failed = 0;
  const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
  const cases: [string, () => Promise<boolean>][] = [
    ["threads: GQA decode 32/8/128 (heads apart)", async () => {
      const args = { q: random(32 * 128, 1), k: random(500 * 8 * 128, 2), v: random(500 * 8 * 128, 3), numHeads: 32, numKvHeads: 8, headDim: 128 };
      return same(await pool.attentionAsync(args), one.attention(args));
    }],
    ["threads: causal prefill 9/3/64, 150 tokens (queries apart)", async () => {
      const args = { q: random(150 * 9 * 64, 4), k: random(150 * 3 * 64, 5), v: random(150 * 3 * 64, 6), numHeads: 9, numKvHeads: 3, headDim: 64, causal: true };
      return same(await pool.attentionAsync(args), one.attention(args));
    }],
    ["threads: linear 16x500x300 (columns apart)", async () => {
      const args = { x: random(16 * 300, 7), weight: random(500 * 300, 8), inFeatures: 300, outFeatures: 500 };
      return same(await pool.linearAsync(args), one.linear(args));
    }],
    ["threads: a blocking call on the main thread is a clear error", async () => {
      try { pool.linear({ x: random(16 * 300, 7), weight: random(500 * 300, 8), inFeatures: 300, outFeatures: 500 }); } catch (e) {
        return /main thread cannot block/.test((e as Error).message);
      }
      return false;
    }],
  ];
  for (const [name, run] of cases) {
    let ok = false;
    try { ok = await run(); } catch (e) { print(`  FAIL ${name}: ${(e as Error).message}`); }
    if (ok) { passed++; print(`  ok   ${name}`); } else { failed++; print(`  FAIL ${name}`); }
  }
  return { passed, failed };
}

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
      if (self.crossOriginIsolated) {
        const pool = await createRuntime({ wasm: new URL(`/build/gqa-${build}-threads.wasm`, location.href), threads: 2 });
        lines.push(`chromium: ${pool.build} kernels, ${pool.threadInfo}`);
        const t = await threadCases(rt, pool, (l) => lines.push(l));
        passed += t.passed; failed += t.failed;
        await pool.dispose();
      }
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
