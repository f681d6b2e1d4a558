// The Cloudflare Worker conformance driver: workerd refuses to compile wasm bytes, so the
// kernels come in as an imported WebAssembly.Module (a CompiledWasm module), as in a real Worker.
// GET / runs the cases on that build and answers with one line each and the closing counts.
// @ts-expect-error: resolved by workerd's module rules, not by TypeScript
import kernels from "./gqa-kernels.wasm";
import { createRuntime } from "../../src/index.ts";
import { runCases } from "./cases.ts";

export default {
  async fetch(): Promise<Response> {
    const lines: string[] = [];
    try {
      const rt = await createRuntime({ wasm: kernels as WebAssembly.Module, threads: "auto" });
      lines.push(`workerd: ${rt.build} kernels, ${rt.threadInfo}`);
      const r = await runCases(rt, `workerd ${rt.build}`, (l) => lines.push(l));
      lines.push(`conformance: ${r.passed} passed, ${r.failed} failed`);
    } catch (e) {
      lines.push(`conformance: 0 passed, 1 failed (${(e as Error).stack})`);
    }
    return new Response(lines.join("\n"));
  },
};
