import Benchmark from "benchmark";

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
