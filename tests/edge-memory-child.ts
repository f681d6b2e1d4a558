// Run by tests/edge.test.ts in its own process: loads the edge model from its shards as one
// stream (as the Worker does from R2), fills a 2048-token int8 KV cache, decodes, and prints the
// peak of live JS heap + external memory (which holds the wasm memory) and the wasm memory
// itself, sampled at every chunk of the load, every KV fill step and every decoded token.
import { createReadStream, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { createRuntime, loadModel } from "../src/index.ts";
import { seededArray } from "../src/random.ts";

const dir = process.argv[2]!;
const shards = readdirSync(dir).filter((f) => f.startsWith("model.gguf.")).sort();
const size = shards.reduce((s, f) => s + statSync(join(dir, f)).size, 0);
async function* concatenated() { for (const f of shards) for await (const chunk of createReadStream(join(dir, f), { highWaterMark: 1 << 20 })) yield new Uint8Array(chunk as Buffer); }
const stream = Readable.toWeb(Readable.from(concatenated())) as unknown as ReadableStream<Uint8Array>;

// Live memory: a full collection before each sample (started with --expose-gc), so that chunks
// already handed on, which V8 would collect under a Worker's limit, do not count.
let peak = 0;
const gc = (globalThis as { gc?: () => void }).gc!;
const sample = () => { gc(); const m = process.memoryUsage(); peak = Math.max(peak, m.heapUsed + m.external); };
const rt = await createRuntime({ maxMemoryBytes: 108 << 20 });
const model = await loadModel(rt, { "model.gguf": { stream, size } }, { cache: { dtype: "int8", maxTokens: 2048 }, onProgress: sample });
sample();
const cfg = model.config;
const cache = model.kvCache();
const seq = cache.createSequence();
for (let t = 0; t < 2048 - 8; t += 256) {
  const n = Math.min(256, 2048 - 8 - t);
  cfg.kvHeadsPerLayer.forEach((kv, layer) => cache.append(seq, layer, seededArray(n * kv * cfg.headDim, layer + 1, 0.5), seededArray(n * kv * cfg.headDim, layer + 2, 0.5)));
  sample();
}
const tokens: number[] = [];
let logits = model.transformer.forward(cache, seq, [5], { logits: "last" });
for (let i = 0; i < 6; i++) {
  let best = 0;
  for (let v = 1; v < logits.length; v++) if (logits[v]! > logits[best]!) best = v;
  tokens.push(best);
  logits = model.transformer.forward(cache, seq, [best], { logits: "last" });
  sample();
}
console.log(JSON.stringify({ peakJsAndExternalBytes: peak, wasmMemoryBytes: rt.stats().memoryBytes, kvTokens: seq.length(0), kvBytes: cache.stats().totalBytes, tokens, fileBytes: size }));
