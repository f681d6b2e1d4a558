// The threads part of `npm run bench`: the same calls on 1, 2 and all cores' threads.
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { createKVCache, createRuntime, type KernelBuild, type Runtime } from "../src/index.ts";
import { measure } from "./harness.ts";
import { seededArray as random } from "../src/random.ts";
import { SMOLLM2_135M_SHAPE } from "../src/demo.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { syntheticWeights } from "../src/model/synthetic.ts";
import { TransformerModel } from "../src/model/transformer.ts";

export interface ThreadRow {
  case: string;
  threads: number;
  ms: number;
  /** against our one-thread time */
  speedup: number;
  /** onnxruntime-web on the same number of threads, where it has the case */
  ortMs?: number;
  /** ortMs / ms */
  vsOrt?: number;
}

/** onnxruntime-web's times at a thread count, measured in a child process. */
function ortAt(threads: number, quick: boolean): Record<string, number> {
  const script = fileURLToPath(new URL("./anchors/ort-threads.ts", import.meta.url));
  const r = spawnSync(process.execPath, ["--import", "tsx", script, String(threads), quick ? "1" : "0"], { encoding: "utf8", timeout: 600_000 });
  const line = r.stdout.trim().split("\n").pop() ?? "";
  try { return JSON.parse(line) as Record<string, number>; } catch {
    console.error(`  (onnxruntime-web on ${threads} threads gave no result: ${r.stderr.slice(-300)})`);
    return {};
  }
}


/**
 * Each case runs on every thread count in turn, round after round (its runtimes side by side),
 * and each count's time is the median of its rounds' medians: on a shared machine whose other
 * cores come and go, both sides of every ratio see the same moments.
 */
export async function threadCases(build: KernelBuild, quick: boolean): Promise<ThreadRow[]> {
  const counts = [...new Set([1, 2, cpus().length])];
  const rows: ThreadRow[] = [];
  const S = quick ? 128 : 512, past = quick ? 1024 : 8192;
  const [H, KV, D] = [32, 8, 128];
  const [M, N, K] = quick ? [64, 512, 512] : [128, 2048, 2048];
  const ROUNDS = quick ? 3 : 7;
  // A whole model's decode step (one kernel program per token), the SmolLM2-135M shape.
  const smol = parseModelConfig({ ...SMOLLM2_135M_SHAPE });
  const smolWeights = syntheticWeights(smol, { trainedLike: true });
  const ort = new Map(counts.map((threads) => [threads, ortAt(threads, quick)]));
  const runtimes = await Promise.all(counts.map((threads) => createRuntime({ build, threads })));
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
  /** `setup(rt)` makes the case on a runtime: the call to time, and what to free after. */
  const timed = (name: string, setup: (rt: Runtime) => { fn: () => void; free: () => void }, slow = false, ortKey?: string) => {
    const cases = runtimes.map(setup);
    try {
      for (const c of cases) for (let i = 0; i < 3; i++) c.fn();
      const samples = cases.map(() => [] as number[]);
      for (let round = 0; round < ROUNDS; round++) {
        cases.forEach((c, i) => samples[i]!.push(measure(c.fn, { minSamples: slow ? 2 : 3, maxTimeS: slow ? 0.3 : 0.15 }).medianMs));
      }
      const ms = samples.map(median);
      counts.forEach((threads, i) => {
        const ortMs = ortKey ? ort.get(threads)![ortKey] : undefined;
        const row: ThreadRow = { case: name, threads, ms: ms[i]!, speedup: ms[0]! / ms[i]!, ortMs, vsOrt: ortMs === undefined ? undefined : ortMs / ms[i]! };
        rows.push(row);
        console.error(`  threads ${name} x${threads}: ${row.ms.toFixed(3)} ms (${row.speedup.toFixed(2)}x one thread` +
          (ortMs === undefined ? ")" : `; onnxruntime-web ${ortMs.toFixed(2)} ms, ${row.vsOrt!.toFixed(2)}x)`));
      });
    } finally { for (const c of cases) c.free(); }
  };
  try {
    timed(`prefill ${H}/${KV}/${D} ${S} tokens causal`, (rt) => {
      const q = rt.upload(random(S * H * D, 1)), k = rt.upload(random(S * KV * D, 2)), v = rt.upload(random(S * KV * D, 3)), out = rt.alloc(S * H * D);
      return { fn: () => rt.attentionInto({ q, k, v, out, numHeads: H, numKvHeads: KV, headDim: D, causal: true }), free: () => { for (const b of [q, k, v, out]) b.free(); } };
    }, true, "prefill");
    timed(`MatMul ${M}x${N}x${K}`, (rt) => {
      const x = rt.upload(random(M * K, 4)), w = rt.upload(random(N * K, 5)), y = rt.alloc(M * N);
      return { fn: () => rt.linearInto({ x, weight: w, out: y, inFeatures: K, outFeatures: N }), free: () => { for (const b of [x, w, y]) b.free(); } };
    }, false, "matmul");
    timed(`decode ${H}/${KV}/${D} past ${past} (contiguous)`, (rt) => {
      const q = rt.upload(random(H * D, 6)), k = rt.upload(random(past * KV * D, 7)), v = rt.upload(random(past * KV * D, 8)), out = rt.alloc(H * D);
      return { fn: () => rt.attentionInto({ q, k, v, out, numHeads: H, numKvHeads: KV, headDim: D }), free: () => { for (const b of [q, k, v, out]) b.free(); } };
    }, false, "decode");
    timed(`decode ${H}/${KV}/${D} past ${past} (paged cache)`, (rt) => {
      const q = rt.upload(random(H * D, 6)), out = rt.alloc(H * D);
      const k = random(past * KV * D, 7), v = random(past * KV * D, 8);
      const cache = createKVCache(rt, { layers: [{ numKvHeads: KV, headDim: D }] });
      const seq = cache.createSequence();
      for (let t = 0; t < past; t += 1024) cache.append(seq, 0, k.slice(t * KV * D, (t + 1024) * KV * D), v.slice(t * KV * D, (t + 1024) * KV * D));
      return { fn: () => cache.attentionInto(seq, 0, { q, out, numHeads: H }), free: () => { cache.dispose(); q.free(); out.free(); } };
    });
    // One KV head: the threads split the keys (Flash-Decoding) and combine.
    timed(`decode MQA ${H}/1/${D} past ${past} (split-KV)`, (rt) => {
      const q = rt.upload(random(H * D, 9)), k = rt.upload(random(past * D, 10)), v = rt.upload(random(past * D, 11)), out = rt.alloc(H * D);
      return { fn: () => rt.attentionInto({ q, k, v, out, numHeads: H, numKvHeads: 1, headDim: D }), free: () => { for (const b of [q, k, v, out]) b.free(); } };
    });
    for (const dtype of quick ? ["q8_0"] as const : ["f32", "bf16", "q8_0"] as const) {
      timed(`SmolLM2-135M decode step, ${dtype} weights, context 128`, (rt) => {
        const model = new TransformerModel(rt, smol, (n) => smolWeights.get(n)!, dtype);
        const cache = model.createCache();
        const seq = cache.createSequence();
        model.forward(cache, seq, Array.from({ length: 128 }, (_, i) => (i * 31) % smol.vocabSize), { logits: "last" });
        let token = 0;
        return {
          fn: () => { model.forward(cache, seq, [token++ % smol.vocabSize], { logits: "last" }); cache.truncate(seq, 128); },
          free: () => { cache.dispose(); model.dispose(); },
        };
      }, true);
    }
  } finally { for (const rt of runtimes) await rt.dispose(); }
  // Rows by thread count, then case (the table's order).
  return counts.flatMap((threads) => rows.filter((r) => r.threads === threads));
}
