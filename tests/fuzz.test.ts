// The bounded fuzz run of `npm test`: every property of tests/fuzz/properties.ts with a fixed
// seed (reproducible), a few thousand cases in all. `npm run fuzz -- --minutes N` soaks longer.
import fc from "fast-check";
import type { Runtime } from "../src/index.ts";
import { fuzzRuntime, PROPERTIES } from "./fuzz/properties.ts";

describe("fuzz (fast-check, seeded): hostile files and random API sequences", function () {
  this.timeout(180_000);
  let rt: Runtime;
  const counts: string[] = [];
  before(async () => { rt = await fuzzRuntime(); });
  after(() => { console.log(`      fuzz: ${counts.join("; ")}`); });

  PROPERTIES.forEach(({ name, runs, property }, i) => {
    it(name, async () => {
      let cases = 0;
      const counted = property({ rt }).beforeEach((previous) => { cases++; return previous(); });
      await fc.assert(counted, { seed: 0x5eed + i, numRuns: runs, endOnFailure: true });
      counts.push(`${cases} cases`);
    });
  });
});
