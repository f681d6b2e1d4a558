// `npm run fuzz -- --minutes N [--only TEXT]`: runs every fuzz property with fresh seeds, round
// after round, until N minutes have passed; prints the cases run per property and, on a failure,
// the seed and path that reproduce it (fc.assert's report), then exits 1.
import { parseArgs } from "node:util";
import fc from "fast-check";
import { fuzzRuntime, PROPERTIES } from "./properties.ts";

const { values } = parseArgs({ options: { minutes: { type: "string", default: "5" }, only: { type: "string" } }, strict: true });
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error(`--minutes takes a positive number, got '${values.minutes}'`);
const chosen = PROPERTIES.filter((p) => !values.only || p.name.includes(values.only));
const rt = await fuzzRuntime();
const end = Date.now() + minutes * 60_000;
const cases = new Map(chosen.map((p) => [p.name, 0]));
let rounds = 0;
while (Date.now() < end) {
  for (const { name, runs, property } of chosen) {
    if (Date.now() >= end) break;
    const seed = (Math.random() * 2 ** 31) | 0;
    const counted = property({ rt }).beforeEach((previous) => { cases.set(name, cases.get(name)! + 1); return previous(); });
    try {
      await fc.assert(counted, { seed, numRuns: runs, endOnFailure: true });
    } catch (e) {
      const cause = (e as Error).cause as Error | undefined;
      console.error(`FAILED: ${name}\n${(e as Error).message}${cause ? `\ncaused by: ${cause.stack ?? cause}` : ""}`);
      process.exit(1);
    }
  }
  rounds++;
  console.log(`round ${rounds}: ${[...cases.values()].reduce((a, b) => a + b, 0)} cases so far`);
}
for (const [name, n] of cases) console.log(`${String(n).padStart(8)}  ${name}`);
console.log(`fuzz: ${[...cases.values()].reduce((a, b) => a + b, 0)} cases in ${minutes} min, 0 failures`);
process.exit(0);
