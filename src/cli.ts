#!/usr/bin/env node
// The gqa-wasm command line. `demo` (the default, what `npm start` runs) shows MHA vs GQA vs MQA
// vs variable GQA on synthetic Llama-3-8B-like shapes.

async function enableRelaxedSimdOnNode20(): Promise<void> {
  // Node 20 accepts relaxed SIMD only behind a V8 flag, settable before the first compile.
  // Later Node versions run it by default; other hosts never reach this.
  const node = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
  if (!node || Number(node.split(".")[0]) >= 22) return;
  const v8 = await import("node:v8");
  v8.setFlagsFromString("--experimental-wasm-relaxed-simd");
}

const HELP = `usage: gqa-wasm <command> [options]

commands:
  demo      (default) MHA vs GQA-8 vs GQA-4 vs MQA vs DeciLM-7B variable GQA: KV-cache bytes
            per token, decode time per token, speed-up over MHA, error against float64
  info      a Hugging Face model folder (llama, qwen2, mistral, deci): architecture, parameters,
            KV heads per layer, KV-cache bytes per token, and what the same model needs as MHA
  logits    --model DIR --tokens 1,2,3 --out FILE.json [--dtype f32|bf16]: the logits at every
            position ({"logits": [[...vocab] per token]}); the ids are used as given (no BOS)
  generate  --model DIR --tokens 1,2,3 --max-new-tokens N [--temperature T --top-k K --top-p P
            --seed S --repetition-penalty R] --json [--dtype ...]: a continuation through the KV
            cache (greedy at temperature 0, the default), {"tokens": [new ids]}
  help      this text

demo options:
  --contexts 512,2048,8192   context lengths to time
  --heads 32                 query heads
  --head-dim 128             head dimension
  --repeats 15               timed calls per shape (median reported)
  --build relaxed|simd       force a kernel build (default: the best this engine runs)
  --model none               skip the synthetic-model generation at the end

info options:
  --model DIR                the folder (config.json, model.safetensors or sharded + index)
  --json                     print the summary as JSON
`;

function parseFlags(args: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) throw new UsageError(`unexpected argument '${a}'`);
    const [name, inline] = a.slice(2).split("=", 2) as [string, string | undefined];
    const value = inline ?? args[++i];
    if (value === undefined) throw new UsageError(`--${name} needs a value`);
    flags.set(name, value);
  }
  return flags;
}

class UsageError extends Error {}

function intList(flags: Map<string, string>, name: string): number[] | undefined {
  const raw = flags.get(name);
  if (raw === undefined) return undefined;
  const xs = raw.split(",").map(Number);
  if (xs.some((x) => !Number.isInteger(x) || x <= 0)) throw new UsageError(`--${name} takes positive integers, got '${raw}'`);
  return xs;
}

function int(flags: Map<string, string>, name: string): number | undefined {
  const xs = intList(flags, name);
  if (xs && xs.length !== 1) throw new UsageError(`--${name} takes one positive integer`);
  return xs?.[0];
}

async function main(argv: string[]): Promise<number> {
  const [command = "demo", ...rest] = argv;
  if (command === "help" || command === "--help" || command === "-h" || rest.includes("--help")) {
    process.stdout.write(HELP);
    return 0;
  }
  if (command === "info") return info(rest);
  if (command === "logits" || command === "generate") return runModel(command, rest);
  if (command !== "demo") throw new UsageError(`unknown command '${command}'`);
  const flags = parseFlags(rest);
  for (const name of flags.keys()) {
    if (!["contexts", "heads", "head-dim", "repeats", "build", "model"].includes(name)) throw new UsageError(`unknown option --${name}`);
  }
  const build = flags.get("build");
  if (build !== undefined && build !== "relaxed" && build !== "simd") throw new UsageError(`--build is relaxed or simd, got '${build}'`);
  await enableRelaxedSimdOnNode20();
  const { createRuntime } = await import("./runtime/runtime.ts");
  const { runDemo, runModelDemo } = await import("./demo.ts");
  const rt = await createRuntime({ build: build as "relaxed" | "simd" | undefined });
  runDemo(rt, {
    contexts: intList(flags, "contexts"),
    numHeads: int(flags, "heads"),
    headDim: int(flags, "head-dim"),
    repeats: int(flags, "repeats"),
  });
  if (flags.get("model") !== "none") {
    process.stdout.write("\n");
    runModelDemo(rt);
  }
  return 0;
}

function formatBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
}

function tokenList(raw: string | undefined): number[] {
  if (!raw) throw new UsageError("--tokens needs a comma-separated list of token ids");
  const ids = raw.split(",").map(Number);
  if (ids.some((t) => !Number.isInteger(t) || t < 0)) throw new UsageError(`--tokens takes non-negative integers, got '${raw}'`);
  return ids;
}

async function runModel(command: "logits" | "generate", args: string[]): Promise<number> {
  const json = args.includes("--json");
  const flags = parseFlags(args.filter((a) => a !== "--json"));
  const allowed = command === "logits" ? ["model", "tokens", "out", "dtype"]
    : ["model", "tokens", "max-new-tokens", "temperature", "top-k", "top-p", "seed", "repetition-penalty", "dtype"];
  for (const name of flags.keys()) if (!allowed.includes(name)) throw new UsageError(`unknown option --${name} for ${command}`);
  const dir = flags.get("model");
  if (!dir) throw new UsageError(`${command} needs --model DIR`);
  const tokens = tokenList(flags.get("tokens"));
  const dtype = flags.get("dtype") ?? "f32";
  if (dtype !== "f32" && dtype !== "bf16" && dtype !== "f16") throw new UsageError(`--dtype is f32, bf16 or f16, got '${dtype}'`);
  let maxNew = 0;
  let sampling: import("./model/sampling.ts").SamplingOptions = {};
  if (command === "generate") {
    maxNew = int(flags, "max-new-tokens") ?? 16;
    const number = (name: string) => {
      const raw = flags.get(name);
      if (raw === undefined) return undefined;
      const x = Number(raw);
      if (!Number.isFinite(x)) throw new UsageError(`--${name} takes a number, got '${raw}'`);
      return x;
    };
    sampling = { temperature: number("temperature"), topK: number("top-k"), topP: number("top-p"), seed: number("seed"), repetitionPenalty: number("repetition-penalty") };
    const { Sampler } = await import("./model/sampling.ts");
    try { new Sampler(sampling); } catch (e) { throw new UsageError((e as Error).message); }
  } else if (!flags.get("out")) throw new UsageError("logits needs --out FILE.json");
  await enableRelaxedSimdOnNode20();
  const { createRuntime } = await import("./runtime/runtime.ts");
  const { loadModel, generate } = await import("./model/load.ts");
  const rt = await createRuntime();
  const model = await loadModel(rt, dir, { dtype });
  if (command === "generate") {
    const out = generate(model, tokens, { maxNewTokens: maxNew, sampling });
    process.stdout.write(json ? `${JSON.stringify({ tokens: out })}\n` : `${out.join(",")}\n`);
    return 0;
  }
  const cache = model.createCache();
  const logits = model.forward(cache, cache.createSequence(), tokens);
  const V = model.config.vocabSize;
  const rows = tokens.map((_, i) => Array.from(logits.subarray(i * V, (i + 1) * V)));
  const { writeFile } = await import("node:fs/promises");
  await writeFile(flags.get("out")!, JSON.stringify({ logits: rows }));
  return 0;
}

async function info(args: string[]): Promise<number> {
  const json = args.includes("--json");
  const flags = parseFlags(args.filter((a) => a !== "--json"));
  for (const name of flags.keys()) if (name !== "model") throw new UsageError(`unknown option --${name}`);
  const dir = flags.get("model");
  if (!dir) throw new UsageError("info needs --model DIR");
  const { inspectModelFolder, summarizeModel } = await import("./model/folder.ts");
  const s = summarizeModel(await inspectModelFolder(dir));
  if (json) { process.stdout.write(`${JSON.stringify(s)}\n`); return 0; }
  const kv = s.kvHeadsPerLayer;
  process.stdout.write([
    `model: ${dir}`,
    `architecture: ${s.architecture}`,
    `parameters: ${s.parameters.toLocaleString("en-US")} (${formatBytes(s.weightBytes)} of weights)`,
    `layers: ${s.layers}, query heads: ${s.numHeads}, head_dim: ${s.headDim}`,
    `KV heads per layer: ${new Set(kv).size === 1 ? `${kv[0]} in every layer` : kv.join(",")}`,
    `KV cache per token (f32): ${formatBytes(s.kvBytesPerToken)}; as MHA: ${formatBytes(s.mhaKvBytesPerToken)} (${(s.mhaKvBytesPerToken / s.kvBytesPerToken).toFixed(1)}x more)`,
  ].join("\n") + "\n");
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`gqa-wasm: ${e.message}\n\n${HELP}`);
      process.exitCode = 2;
    } else if (e instanceof Error && (e.name === "RangeError" || e.name === "TypeError" || e.name.startsWith("Wasm") ||
      e.name === "ModelConfigError" || e.name === "SafetensorsError")) {
      process.stderr.write(`gqa-wasm: ${e.message}\n`);
      process.exitCode = 1;
    } else {
      throw e;
    }
  },
);
