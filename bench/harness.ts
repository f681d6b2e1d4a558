import Benchmark from "benchmark";
import type { Runtime } from "../src/index.ts";

// Timing with benchmark.js: many samples, each the mean of a calibrated number of calls; we
// report the median sample (shared, noisy machines: medians, not means).
Benchmark.support.decompilation = false; // call our closures as they are, no re-compiled copies

export interface Timing {
  medianMs: number;
  /** The fastest sample: for the probes, which measure a limit, the closest to it. */
  minMs: number;
  samples: number;
  rme: number;
}

export interface MeasureOptions { maxTimeS?: number; minSamples?: number }

function summarise(b: Benchmark): Timing {
  if (b.error) throw b.error;
  const sample = [...b.stats.sample].sort((x, y) => x - y);
  return { medianMs: sample[sample.length >> 1]! * 1000, minMs: sample[0]! * 1000, samples: sample.length, rme: b.stats.rme };
}

/** Times a synchronous call. */
export function measure(fn: () => void, o: MeasureOptions = {}): Timing {
  const b = new Benchmark({ fn, maxTime: o.maxTimeS ?? 1, minSamples: o.minSamples ?? 5, initCount: 1 });
  b.run({ async: false });
  return summarise(b);
}

/** Times an asynchronous call (onnxruntime-web's session.run). */
export function measureAsync(fn: () => Promise<unknown>, o: MeasureOptions = {}): Promise<Timing> {
  return new Promise((resolve, reject) => {
    const b = new Benchmark({
      defer: true,
      fn: (deferred: { resolve(): void }) => { fn().then(() => deferred.resolve(), reject); },
      maxTime: o.maxTimeS ?? 1, minSamples: o.minSamples ?? 5, initCount: 1,
      onComplete: () => { try { resolve(summarise(b)); } catch (e) { reject(e); } },
    });
    b.run({ async: true });
  });
}

// ---- the machine's limits: probes (assembly/kernels/probes.ts) ----

/** G operations/s of a compute probe (`opsPerIter` operations an iteration; its fastest sample, the closest to the limit). */
export function probeGops(rt: Runtime, probe: "probe_fma" | "probe_dot_i7", opsPerIter: number, maxTimeS = 1): number {
  const iters = 1_000_000;
  for (let i = 0; i < 20; i++) rt.kernels[probe](10_000); // reach the optimizing tier
  return (opsPerIter * iters) / measure(() => rt.kernels[probe](iters), { maxTimeS, minSamples: 10 }).minMs / 1e6;
}

/** GB/s of the wasm SIMD read loop over a buffer of `bytes` (rounded up to 64; its fastest sample). */
export function probeReadGBps(rt: Runtime, bytes: number, maxTimeS = 1): number {
  const size = Math.max(64, Math.ceil(bytes / 64) * 64);
  const buf = rt.alloc(size / 4);
  try {
    buf.array.fill(1); // first touch outside the timing
    for (let i = 0; i < 5; i++) rt.kernels.probe_read(buf.ptr, size, 1);
    return size / measure(() => rt.kernels.probe_read(buf.ptr, size, 1), { maxTimeS, minSamples: 10 }).minMs / 1e6;
  } finally { buf.free(); }
}
