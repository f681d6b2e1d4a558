import assert from "node:assert/strict";
import { CASES } from "./conformance/cases.ts";
import { runInChromium, runInWorkerd } from "./conformance/web-hosts.ts";

// The same conformance cases in Cloudflare's workerd (kernels imported as a compiled Module,
// as Workers require) and in headless Chromium (installed by .ci/run), served from 127.0.0.1.
describe("conformance in workerd and Chromium", function () {
  this.timeout(240_000);

  for (const build of ["relaxed", "simd"] as const) {
    it(`workerd (miniflare) passes every case with the ${build} build as an imported Module`, async () => {
      const r = await runInWorkerd(build);
      assert.equal(r.failed, 0, r.text);
      assert.ok(r.passed >= CASES.length, r.text);
      assert.match(r.text, new RegExp(`workerd: ${build} kernels, 1 thread`));
    });
  }

  for (const isolated of [false, true]) {
    it(`headless Chromium passes every case on both builds (${isolated ? "with" : "without"} COOP/COEP)`, async () => {
      const r = await runInChromium(isolated);
      assert.equal(r.isolated, isolated, "the page's crossOriginIsolated");
      assert.equal(r.failed, 0, r.text);
      assert.ok(r.passed >= 2 * CASES.length, r.text);
      assert.match(r.text, /chromium: relaxed kernels/);
      // Cross-origin isolated: a pool of 2 Web Workers, checked through the async calls.
      if (isolated) assert.match(r.text, /chromium: relaxed kernels, 2 threads \(asked; \d+ cores\)[\s\S]*ok   threads: GQA decode/);
      else assert.match(r.text, /1 thread \(auto\b|1 thread: /);
    });
  }
});
