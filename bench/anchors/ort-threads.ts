// onnxruntime-web at a given thread count, in its own process (its thread count is fixed when
// its wasm starts): prints one JSON line of median milliseconds for the thread benchmark's cases.
//   node --import tsx bench/anchors/ort-threads.ts THREADS QUICK(0|1)
import * as ort from "onnxruntime-web";
import { measureAsync } from "../harness.ts";
import { ortGroupQueryAttention, ortMatMul } from "./onnxruntime-web.ts";
import { seededArray as random } from "../../src/random.ts";

const threads = Number(process.argv[2]);
const quick = process.argv[3] === "1";
ort.env.wasm.numThreads = threads; // before the first session: the anchors module set 1


const [H, KV, D] = [32, 8, 128];
const S = quick ? 128 : 512, past = quick ? 1024 : 8192;
const [M, N, K] = quick ? [64, 512, 512] : [128, 2048, 2048];
const result: Record<string, number> = {};
{
  const c = await ortGroupQueryAttention(random(S * H * D, 1), random(S * KV * D, 2), random(S * KV * D, 3), S, 0, H, KV, D);
  await c.run();
  result.prefill = (await measureAsync(() => c.run(), { minSamples: 3, maxTimeS: 2 })).medianMs;
  await c.dispose();
}
{
  const c = await ortMatMul(random(M * K, 4), random(N * K, 5), M, N, K);
  await c.run();
  result.matmul = (await measureAsync(() => c.run())).medianMs;
  await c.dispose();
}
{
  const c = await ortGroupQueryAttention(random(H * D, 6), random((past + 1) * KV * D, 7), random((past + 1) * KV * D, 8), 1, past, H, KV, D);
  await c.run();
  result.decode = (await measureAsync(() => c.run())).medianMs;
  await c.dispose();
}
console.log(JSON.stringify(result));
process.exit(0); // ORT's worker threads would keep the process alive
