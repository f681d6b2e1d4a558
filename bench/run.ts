// npm run bench: our kernels against onnxruntime-web, tfjs-backend-wasm and plain JS, and against
// the machine's limits (the roofline from a wasm memory-read probe and an FMA-peak probe), all in
// one run on the same inputs. Prints a table and writes bench/results/latest.json.
//   --quick            fewer cases and samples (a smoke run)
//   --builds a,b       kernel builds to time (default: every build this engine validates)
//   --out FILE         where to write the JSON
//   --only core|kv|threads|step|model|quality|sampling|serve  run one part
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname } from "node:path";
import { createRuntime, maxAbsDiff, type KernelBuild, type Runtime } from "../src/index.ts";
import { printTable } from "../src/demo.ts";
import { measure, measureAsync, probeGops, probeReadGBps, type Timing } from "./harness.ts";
import { ortGroupQueryAttention, ortMatMul, type OrtCase } from "./anchors/onnxruntime-web.ts";
import { initTfjs, tfjsMatMul } from "./anchors/tfjs-wasm.ts";
import { plainAttention, plainLinear } from "./anchors/plain-js.ts";
import { kvCases, type KvRow } from "./kv-cases.ts";
import { threadCases, type ThreadRow } from "./thread-cases.ts";
import { stepCases, type StepRow } from "./step-cases.ts";
import { modelCases, type ModelRow } from "./model-cases.ts";
import { qualityCases, type QualityRow } from "./quality-cases.ts";
import { serveCases } from "./serve-cases.ts";
import { seededArray as random, seededTrainedLike } from "../src/random.ts";
import { Sampler } from "../src/model/sampling.ts";
import { bufferBytes, type BufferDtype } from "../src/memory/wasm-buffer.ts";
import { isQuantDtype } from "../src/formats/quant.ts";
import { WEIGHT_FORMATS } from "../src/runtime/kernel-exports.ts";

const argv = process.argv.slice(2);
const flag = (name: string) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
const quick = argv.includes("--quick");
const only = flag("only");
const outFile = flag("out") ?? new URL("./results/latest.json", import.meta.url).pathname;


// ---- the machine's limits, per build ----
/** A compute probe's G operations/s (probeGops), cached per build. */
function probePeak(rt: Runtime, cache: Map<KernelBuild, number>, probe: "probe_fma" | "probe_dot_i7", opsPerIter: number): number {
  let peak = cache.get(rt.build);
  if (peak === undefined) cache.set(rt.build, peak = probeGops(rt, probe, opsPerIter));
  return peak;
}

const peakCache = new Map<KernelBuild, number>();
/** GFLOP/s of 12 independent FMA chains. */
const fmaPeakGflops = (rt: Runtime) => probePeak(rt, peakCache, "probe_fma", 96);

const dotPeakCache = new Map<KernelBuild, number>();
/** G operations/s (a product and an add each) of the integer panels' 7-bit dot and 16-bit add (relaxed build). */
const dotPeakGops = (rt: Runtime) => probePeak(rt, dotPeakCache, "probe_dot_i7", 384);

const readCache = new Map<number, number>();
/** GB/s of a wasm SIMD read loop over a buffer of this many bytes (probeReadGBps, cached per size: the loop is the same in both builds). */
function readGBps(rt: Runtime, bytes: number): number {
  const size = Math.max(64, Math.ceil(bytes / 64) * 64);
  let gbps = readCache.get(size);
  if (gbps === undefined) readCache.set(size, gbps = probeReadGBps(rt, size));
  return gbps;
}

// ---- cases ----
interface Row {
  kind: "decode" | "prefill" | "matmul";
  name: string;
  build: KernelBuild;
  flops: number;
  bytes: number;
  ms: number;
  gflops: number;
  gbps: number;
  rooflineMs: number;
  rooflineFraction: number;
  bound: "memory" | "compute";
  anchors: Record<string, { ms: number; speedup: number }>;
  maxDiffVsOrt?: number;
}

const rows: Row[] = [];

function record(rt: Runtime, kind: Row["kind"], name: string, flops: number, bytes: number, ours: Timing,
  anchors: Record<string, Timing | undefined>, maxDiffVsOrt?: number, integerPanels = false): void {
  const memMs = bytes / (readGBps(rt, bytes) * 1e6);
  // Computed in the integer panels' 7-bit dots (16 products an instruction): against their peak, not the FMAs'.
  const fmaMs = flops / ((integerPanels ? dotPeakGops(rt) : fmaPeakGflops(rt)) * 1e6);
  const rooflineMs = Math.max(memMs, fmaMs);
  const row: Row = {
    kind, name, build: rt.build, flops, bytes, ms: ours.medianMs,
    gflops: flops / ours.medianMs / 1e6, gbps: bytes / ours.medianMs / 1e6,
    rooflineMs, rooflineFraction: rooflineMs / ours.medianMs, bound: memMs > fmaMs ? "memory" : "compute",
    anchors: {}, maxDiffVsOrt,
  };
  for (const [anchor, t] of Object.entries(anchors)) if (t) row.anchors[anchor] = { ms: t.medianMs, speedup: t.medianMs / ours.medianMs };
  rows.push(row);
  const a = Object.entries(row.anchors).map(([n, x]) => `${n} ${x.ms.toFixed(2)} ms (${x.speedup.toFixed(2)}x)`).join(", ");
  console.error(`  ${kind} ${name} [${rt.build}]: ${row.ms.toFixed(3)} ms, ${(100 * row.rooflineFraction).toFixed(0)}% of roofline (${row.bound}); ${a}`);
}

async function attentionCase(runtimes: Runtime[], kind: "decode" | "prefill", H: number, KV: number, D: number, past: number, seqQ: number): Promise<void> {
  const seqK = past + seqQ, causal = kind === "prefill";
  const q = random(seqQ * H * D, 1), k = random(seqK * KV * D, 2), v = random(seqK * KV * D, 3);
  const visiblePairs = causal ? (seqQ * (seqQ + 1)) / 2 + seqQ * past : seqQ * seqK;
  const flops = 4 * H * D * visiblePairs;
  const bytes = (2 * seqK * KV * D + 2 * seqQ * H * D) * 4;
  const name = kind === "decode" ? `${H}/${KV}/${D} past ${past}` : `${H}/${KV}/${D} ${seqQ} tokens causal`;
  const slow = kind === "prefill";
  const ort: OrtCase = await ortGroupQueryAttention(q, k, v, seqQ, past, H, KV, D);
  try {
    const ortOut = await ort.run();
    const ortT = await measureAsync(() => ort.run(), slow ? { minSamples: 3, maxTimeS: 2 } : {});
    const js = new Float32Array(q.length);
    const jsT = measure(() => plainAttention(q, k, v, js, seqQ, seqK, H, KV, D, causal), { minSamples: slow ? 2 : 5, maxTimeS: slow ? 0.5 : 1 });
    for (const rt of runtimes) {
      const qb = rt.upload(q), kb = rt.upload(k), vb = rt.upload(v), out = rt.alloc(q.length);
      try {
        const args = { q: qb, k: kb, v: vb, out, numHeads: H, numKvHeads: KV, headDim: D, causal };
        for (let i = 0; i < 5; i++) rt.attentionInto(args);
        const t = measure(() => rt.attentionInto(args), slow ? { minSamples: 5, maxTimeS: 2 } : {});
        record(rt, kind, name, flops, bytes, t, { "onnxruntime-web": ortT, "plain JS": jsT }, maxAbsDiff(out.array, ortOut));
      } finally { for (const b of [qb, kb, vb, out]) b.free(); }
    }
  } finally { await ort.dispose(); }
}

async function matmulCase(runtimes: Runtime[], M: number, N: number, K: number, weights: BufferDtype = "f32"): Promise<void> {
  // Weights shaped like a checkpoint's (scale 0.02): their quantized blocks get real scales (K-quant
  // super-block scales mostly f16 subnormals, which uniform weights of scale 1 never gave).
  const x = random(M * K, 4), w = seededTrainedLike(N * K, K, 5);
  const flops = 2 * M * N * K, bytes = (M * K + M * N) * 4 + bufferBytes(weights, N * K, K);
  const ort = await ortMatMul(x, w, M, N, K);
  const tf = tfjsMatMul(x, w, M, N, K);
  try {
    await ort.run();
    const ortT = await measureAsync(() => ort.run());
    tf.run();
    const tfT = measure(() => tf.run());
    const y = new Float32Array(M * N);
    const jsT = measure(() => plainLinear(x, w, y, M, N, K), { minSamples: 2, maxTimeS: 0.5 });
    for (const rt of runtimes) {
      const xb = rt.upload(x), wb = isQuantDtype(weights) ? rt.upload(w, weights, K) : rt.upload(w, weights), out = rt.alloc(M * N);
      try {
        const args = { x: xb, weight: wb, out, inFeatures: K, outFeatures: N };
        for (let i = 0; i < 5; i++) rt.linearInto(args);
        const t = measure(() => rt.linearInto(args));
        // The relaxed build's unsigned formats (no f32 rows) pack integer panels from 12 rows.
        const panels = isQuantDtype(weights) && M >= 12 && rt.kernels.linear_quant_f32_rows(WEIGHT_FORMATS[weights]) === 2147483647;
        record(rt, "matmul", `${M}x${N}x${K}${weights === "f32" ? "" : ` ${weights} weights`}`, flops, bytes, t, { "onnxruntime-web": ortT, "tfjs-wasm": tfT, "plain JS": jsT }, undefined, panels);
      } finally { for (const b of [xb, wb, out]) b.free(); }
    }
  } finally { tf.dispose(); await ort.dispose(); }
}

async function main(): Promise<void> {
  const wanted = flag("builds")?.split(",") as KernelBuild[] | undefined;
  const runtimes: Runtime[] = [];
  for (const build of wanted ?? (["relaxed", "simd"] as const)) {
    try { runtimes.push(await createRuntime({ build })); } catch (e) {
      if (wanted) throw e;
      console.error(`(skipping the ${build} build: ${(e as Error).message})`);
    }
  }
  await initTfjs();
  console.error(`gqa-wasm bench: ${runtimes.map((r) => r.build).join(" + ")} builds, 1 thread, ${cpus()[0]?.model ?? "?"}, Node ${process.versions.node}`);

  if (only === undefined || only === "core") {
    const pasts = quick ? [512] : [512, 2048, 8192];
    for (const [H, KV, D] of [[32, 8, 128], [9, 3, 64], [14, 2, 64]] as const) {
      for (const past of pasts) await attentionCase(runtimes, "decode", H, KV, D, past, 1);
    }
    const variantPast = quick ? 512 : 2048;
    await attentionCase(runtimes, "decode", 32, 32, 128, variantPast, 1);
    await attentionCase(runtimes, "decode", 32, 1, 128, variantPast, 1);
    await attentionCase(runtimes, "prefill", 32, 8, 128, 0, quick ? 128 : 512);
    for (const [M, N, K] of quick ? [[1, 1024, 1024], [64, 512, 512]] : [[1, 4096, 4096], [128, 2048, 2048], [512, 512, 512]]) {
      await matmulCase(runtimes, M!, N!, K!);
    }
    // Decode is bound by weight bytes: the GEMV with 16-bit and block-quantized weights (the
    // anchors use f32); prefill's GEMM with quantized weights too.
    for (const weights of ["bf16", "q8_0", "q4_0", "q5_0", "q4_1", "q5_1", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q6_k_u8", "q5_0_u8", "q5_1_u8", "q5_k_u8"] as const) await matmulCase(runtimes, 1, quick ? 1024 : 4096, quick ? 1024 : 4096, weights);
    for (const weights of ["q8_0", "q4_0", "q5_0", "q4_1", "q5_1", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q6_k_u8", "q5_0_u8", "q5_1_u8", "q5_k_u8"] as const) await matmulCase(runtimes, quick ? 64 : 128, quick ? 512 : 2048, quick ? 512 : 2048, weights);
  }
  // The KV cache on the best build.
  const best = runtimes[0]!;
  const kvRows: KvRow[] = only !== undefined && only !== "kv" ? [] : kvCases(best, quick, (bytes, flops, probeBytes) =>
    Math.max(bytes / (readGBps(best, probeBytes) * 1e6), flops / (fmaPeakGflops(best) * 1e6)));
  const threadRows: ThreadRow[] = only !== undefined && only !== "threads" ? [] : await threadCases(best.build, quick);
  const stepRows: StepRow[] = only !== undefined && only !== "step" ? [] : await stepCases(best.build, quick);
  const modelRows: ModelRow[] = only !== undefined && only !== "model" ? [] : modelCases(best, quick, (bytes) => readGBps(best, bytes));
  const qualityRows: QualityRow[] = only !== undefined && only !== "quality" ? [] : await qualityCases(best, quick);
  const serve = only !== undefined && only !== "serve" ? { serveRows: [], prefixRows: [], constraintRows: [] } : await serveCases(quick);
  // Sampling a token from a row of logits (SmolLM2's and Qwen2.5's vocabularies), as generation does per token.
  const samplingRows = only !== undefined && only !== "sampling" ? [] : [49152, 151936].flatMap((V) => {
    const logits = Float32Array.from({ length: V }, (_, i) => Math.sin(i * 12.9898) * 8);
    return ([["greedy", {}], ["top-k 50 + top-p 0.9, T 0.7", { temperature: 0.7, topK: 50, topP: 0.9 }], ["top-p 0.9, T 0.7", { temperature: 0.7, topP: 0.9 }]] as const).map(([what, o]) => {
      const sampler = new Sampler({ ...o, seed: 1 });
      return { vocabulary: V, what, ms: measure(() => sampler.next(logits), { maxTimeS: 0.5 }).medianMs };
    });
  });

  // ---- report ----
  const anchorNames = ["onnxruntime-web", "tfjs-wasm", "plain JS"];
  const header = ["case", "build", "ms", "GB/s", "GFLOP/s", "roofline ms", "% roofline", "bound", ...anchorNames.map((a) => `x ${a}`)];
  const table = rows.map((r) => [
    `${r.kind} ${r.name}`, r.build, r.ms.toFixed(3), r.gbps.toFixed(1), r.gflops.toFixed(1), r.rooflineMs.toFixed(3),
    `${(100 * r.rooflineFraction).toFixed(0)}%`, r.bound,
    ...anchorNames.map((a) => (r.anchors[a] ? `${r.anchors[a]!.speedup.toFixed(2)}x` : "-")),
  ]);
  console.log("");
  if (rows.length > 0) printTable(console.log, header, table);
  if (kvRows.length > 0) {
    console.log("");
    printTable(console.log, ["KV cache case", "build", "ms", "GB/s", "% roofline", "ratio", "vs", "rel. err vs f32", "bytes/token"], kvRows.map((r) => [
      r.case, r.build, r.ms.toFixed(3), r.gbps.toFixed(1), `${(100 * r.rooflineFraction).toFixed(0)}%`,
      r.versus ? `${r.versus.ratio.toFixed(2)}x` : "-", r.versus?.what ?? "-",
      r.relErrorVsF32 !== undefined ? r.relErrorVsF32.toExponential(1) : "-", r.bytesPerToken !== undefined ? String(r.bytesPerToken) : "-",
    ]));
  }
  if (stepRows.length > 0) {
    console.log("");
    printTable(console.log, ["decode step (SmolLM2-135M shape, generate())", "threads", "ms / token", "in the program", "outside it", "JS heap bytes / token"], stepRows.map((r) => [
      r.weights, String(r.threads), r.msPerToken.toFixed(3), r.programMsPerToken.toFixed(3), `${(100 * r.outsideShare).toFixed(1)}%`, r.heapBytesPerToken.toFixed(0),
    ]));
  }
  if (threadRows.length > 0) {
    console.log("");
    printTable(console.log, ["threads case", "threads", "ms", "x one thread", "onnxruntime-web ms", "x onnxruntime-web"], threadRows.map((r) => [
      r.case, String(r.threads), r.ms.toFixed(3), `${r.speedup.toFixed(2)}x`,
      r.ortMs === undefined ? "-" : r.ortMs.toFixed(2), r.vsOrt === undefined ? "-" : `${r.vsOrt.toFixed(2)}x`,
    ]));
  }
  if (modelRows.length > 0) {
    console.log("");
    printTable(console.log, ["model (synthetic)", "weights", "context", "decode tok/s", "prefill tok/s", "weight MB/token", "bound tok/s", "% weight bound", "% weight+KV bound"], modelRows.map((r) => [
      r.model, r.weights, String(r.context), r.decodeTokensPerSecond.toFixed(1), r.prefillTokensPerSecond.toFixed(1),
      (r.weightBytesPerToken / 1e6).toFixed(0), r.weightBoundTokensPerSecond.toFixed(1),
      `${(100 * r.fractionOfWeightBound).toFixed(0)}%`, `${(100 * r.fractionOfWeightAndKvBound).toFixed(0)}%`,
    ]));
    console.log(`bound = weight bytes per token / read bandwidth of a 256 MiB buffer (${modelRows[0]!.readGBps.toFixed(1)} GB/s); prefill = a 128-token chunk on top of context - 128 cached tokens; 1 thread.`);
  }
  if (samplingRows.length > 0) {
    console.log("");
    printTable(console.log, ["sampling one token", "vocabulary", "ms"], samplingRows.map((r) => [r.what, String(r.vocabulary), r.ms.toFixed(3)]));
  }
  if (serve.serveRows.length > 0) {
    console.log("");
    printTable(console.log, ["serving (synthetic, in-process HTTP handler)", "weights", "threads", "streams", "aggregate tok/s", "x one stream", "TTFT p50 ms", "TTFT p99 ms", "steps"], serve.serveRows.map((r) => [
      r.model, r.weights, String(r.threads), String(r.streams), r.aggregateTokensPerSecond.toFixed(1), `${r.speedup.toFixed(2)}x`, r.ttftP50Ms.toFixed(0), r.ttftP99Ms.toFixed(0), String(r.steps),
    ]));
    console.log("serving = streamed /v1/completions, each stream a 16-token prompt and 64 greedy tokens, all started together; aggregate = all tokens / time until the last stream ends (median of 3 rounds).");
    for (const r of serve.prefixRows) console.log(`prefix cache: a ${r.systemTokens}-token system prompt already cached: first token after ${r.warmMs.toFixed(0)} ms instead of ${r.coldMs.toFixed(0)} ms (${r.speedup.toFixed(1)}x sooner)`);
    for (const r of serve.constraintRows) console.log(`constrained decoding: JSON-schema token mask at a ${r.vocabulary}-token vocabulary: ${r.maskMeanMs.toFixed(3)} ms mean, ${r.maskP99Ms.toFixed(3)} ms p99 over ${r.steps} steps = ${(100 * r.fractionOfStep).toFixed(1)}% of a decode step (${r.decodeStepMs.toFixed(1)} ms, 1 stream, 1 thread)`);
  }
  if (qualityRows.length > 0) {
    console.log("");
    printTable(console.log, ["quality (synthetic, vs f32)", "weights", "mean KL (nats)", "top-1 agreement", "perplexity", "f32 perplexity"], qualityRows.map((r) => [
      r.model, r.variant, r.meanKl.toExponential(2), `${(100 * r.top1Agreement).toFixed(1)}%`, r.perplexity.toFixed(0), r.referencePerplexity.toFixed(0),
    ]));
    console.log(`quality = gqa-wasm eval's measures over ${qualityRows[0]!.tokens} next-token predictions (windows of 128 pseudo-random ids).`);
  }
  console.log("");
  console.log("x anchor = anchor median time / our median time (higher is better). roofline = max(bytes / read GB/s at that size, FLOPs / FMA peak; for the relaxed build's integer-panel GEMMs FLOPs / the 7-bit dot peak), the probes at their fastest sample.");
  const probes = {
    fmaPeakGflops: Object.fromEntries([...peakCache]),
    dotI7PeakGops: Object.fromEntries([...dotPeakCache]),
    readGBpsByBytes: Object.fromEntries([...readCache].map(([k, v]) => [k, +v.toFixed(2)])),
  };
  if (peakCache.size > 0) console.log(`probes: FMA peak ${Object.entries(probes.fmaPeakGflops).map(([b, g]) => `${b} ${g.toFixed(1)} GFLOP/s`).join(", ")}${dotPeakCache.size > 0 ? `; 7-bit dot peak ${[...dotPeakCache].map(([b, g]) => `${b} ${g.toFixed(1)} GOP/s`).join(", ")}` : ""}`);
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, JSON.stringify({
    date: new Date().toISOString(), node: process.versions.node, cpu: cpus()[0]?.model, threads: 1, quick, probes, rows, kvRows, threadRows, stepRows, modelRows, qualityRows, samplingRows, ...serve,
  }, null, 2));
  console.log(`wrote ${outFile}`);
}

await main();
