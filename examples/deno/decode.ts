// A Deno script: decode time against the KV-cache size for MHA, GQA and MQA on this machine,
// then a short generation with a tiny model.
//   deno run -A examples/deno/decode.ts [contexts, e.g. 512,2048]
// (In a project of your own, map "gqa-wasm" to "npm:gqa-wasm" in deno.json.)
import { createKVCache, createRuntime, loadModel, syntheticModelFiles } from "gqa-wasm";

const contexts = (Deno.args[0] ?? "512,2048").split(",").map(Number);
const [numHeads, headDim] = [32, 128];
const rt = await createRuntime({ threads: "auto" });
console.log(`gqa-wasm on Deno ${Deno.version.deno}: ${rt.build} kernels, ${rt.threadInfo}`);
console.log(["KV heads", ...contexts.map((c) => `ms @${c}`), "KV bytes/token"].join("\t"));
for (const kvHeads of [32, 8, 1]) {
  const cache = createKVCache(rt, { layers: [{ numKvHeads: kvHeads, headDim }] });
  const seq = cache.createSequence();
  const times: string[] = [];
  for (const context of contexts) {
    while (seq.length() < context) {
      const n = Math.min(512, context - seq.length());
      const rows = new Float32Array(n * kvHeads * headDim).map(() => Math.random() - 0.5);
      cache.append(seq, 0, rows, rows);
    }
    const q = new Float32Array(numHeads * headDim).map(() => Math.random() - 0.5);
    cache.attention(seq, 0, { q, numHeads }); // warm-up
    const t = performance.now();
    for (let i = 0; i < 5; i++) cache.attention(seq, 0, { q, numHeads });
    times.push(((performance.now() - t) / 5).toFixed(2));
  }
  console.log([kvHeads, ...times, cache.stats().bytesPerToken].join("\t"));
  cache.dispose();
}
// A generation with a tiny GQA model loaded from files in memory (synthetic weights: noise text).
const model = await loadModel(rt, syntheticModelFiles());
const generation = model.generate("Deno decodes", { maxNewTokens: 16, temperature: 0 });
let text = "";
for await (const step of generation) text += step.text;
console.log(`generation: ${JSON.stringify(text)} (${(await generation.done).tokens.length} tokens)`);
model.dispose();
await rt.dispose();
