// The step part of `npm run bench`: what a decode step costs outside its kernel program. A
// SmolLM2-135M-shaped model generates through LanguageModel.generate() as an application calls
// it (prompt 128, greedy), on 1 and 2 threads; per token: the wall time, the time inside the
// program (rt.runKept: the kernels, the pool's hand-offs and barriers), the rest (the forward
// pass's bookkeeping, sampling, the generation's loop and its macrotasks) as a share of the
// step, and the bytes the step allocates on the JavaScript heap (V8's sampling heap profiler,
// objects already collected included). Rounds alternate the thread counts (medians of rounds).
import { Session } from "node:inspector/promises";
import { cpus } from "node:os";
import { createRuntime, type KernelBuild, type Runtime } from "../src/index.ts";
import { SMOLLM2_135M_SHAPE } from "../src/demo.ts";
import { expectedTensors } from "../src/model/architecture.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { LanguageModel } from "../src/model/language-model.ts";
import { TransformerModel } from "../src/model/transformer.ts";
import { seededArray as random } from "../src/random.ts";

export interface StepRow {
  weights: string;
  threads: number;
  /** wall time per generated token */
  msPerToken: number;
  /** of which inside the kernel program */
  programMsPerToken: number;
  /** (wall - program) / wall */
  outsideShare: number;
  /** JavaScript heap bytes allocated per token */
  heapBytesPerToken: number;
}

const PROMPT = 128;

export async function stepCases(build: KernelBuild, quick: boolean): Promise<StepRow[]> {
  const cfg = parseModelConfig(SMOLLM2_135M_SHAPE);
  const shapes = expectedTensors(cfg);
  const counts = [...new Set([1, Math.min(2, cpus().length)])];
  const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919) % cfg.vocabSize);
  const tokens = quick ? 32 : 64, rounds = quick ? 2 : 5;
  const rows: StepRow[] = [];
  for (const weights of quick ? (["q4_0"] as const) : (["q4_0", "bf16"] as const)) {
    const setups = await Promise.all(counts.map(async (threads) => {
      const rt = await createRuntime({ threads, build });
      let seed = 1;
      const transformer = new TransformerModel(rt, cfg, (n) => {
        const size = shapes.get(n)!.reduce((a, b) => a * b, 1);
        return n.endsWith("norm.weight") ? new Float32Array(size).fill(1) : random(size, seed++, 0.05);
      }, weights);
      const model = new LanguageModel(transformer, undefined, { eosTokenIds: [], sampling: { temperature: 0 } });
      const timed = timeProgram(rt);
      await generate(model, prompt, tokens, timed); // warm-up: V8's optimizing compiles
      return { threads, rt, model, timed, wall: [] as number[], program: [] as number[], heap: [] as number[] };
    }));
    try {
      for (let r = 0; r < rounds; r++) {
        for (const s of setups) {
          const g = await generate(s.model, prompt, tokens, s.timed);
          s.wall.push(g.msPerToken);
          s.program.push(g.programMsPerToken);
          s.heap.push(await heapBytesPerToken(s.model, prompt, tokens));
        }
      }
      for (const s of setups) {
        const ms = median(s.wall), program = median(s.program);
        rows.push({ weights, threads: s.threads, msPerToken: ms, programMsPerToken: program, outsideShare: (ms - program) / ms, heapBytesPerToken: median(s.heap) });
      }
    } finally {
      for (const s of setups) { s.model.dispose(); await s.rt.dispose(); }
    }
  }
  return rows;
}

/** Wraps rt.runKept to add up the milliseconds spent in kept programs (every forward pass of a generation). */
function timeProgram(rt: Runtime): { ms: number } {
  const timed = { ms: 0 };
  const run = rt.runKept.bind(rt);
  rt.runKept = (p) => {
    const t0 = performance.now();
    try { run(p); } finally { timed.ms += performance.now() - t0; }
  };
  return timed;
}

/** A generation of `tokens` tokens: per token after the first (whose step is the prefill), the wall time and the time in kept programs. */
async function generate(model: LanguageModel, prompt: number[], tokens: number, timed: { ms: number }): Promise<{ msPerToken: number; programMsPerToken: number }> {
  let at = 0, first = 0, programAtFirst = 0;
  for await (const _ of model.generate(prompt, { maxNewTokens: tokens })) {
    if (at++ === 0) { first = performance.now(); programAtFirst = timed.ms; }
  }
  return { msPerToken: (performance.now() - first) / (tokens - 1), programMsPerToken: (timed.ms - programAtFirst) / (tokens - 1) };
}

/** JavaScript heap bytes a generation allocates per token after the first (sampled about every 64 bytes). */
async function heapBytesPerToken(model: LanguageModel, prompt: number[], tokens: number): Promise<number> {
  const session = new Session();
  session.connect();
  try {
    let at = 0;
    for await (const _ of model.generate(prompt, { maxNewTokens: tokens })) {
      if (at++ === 0) {
        await session.post("HeapProfiler.enable");
        await session.post("HeapProfiler.startSampling", { samplingInterval: 64, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true } as never);
      }
    }
    const { profile } = await session.post("HeapProfiler.stopSampling") as unknown as { profile: { head: ProfileNode } };
    let bytes = 0;
    const walk = (n: ProfileNode): void => { bytes += n.selfSize; n.children.forEach(walk); };
    walk(profile.head);
    return bytes / (tokens - 1);
  } finally { session.disconnect(); }
}

interface ProfileNode { selfSize: number; children: ProfileNode[] }

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
