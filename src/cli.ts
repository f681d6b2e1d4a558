#!/usr/bin/env node
// The gqa-wasm command line. `demo` (the default, what `npm start` runs) shows MHA vs GQA vs MQA
// vs variable GQA on synthetic Llama-3-8B-like shapes; `run`, `generate`, `logits` and `info`
// work on Hugging Face model folders.
import { formatBytes } from "./format.ts";

async function enableRelaxedSimdOnNode20(): Promise<void> {
  // Node 20 accepts relaxed SIMD only behind a V8 flag, settable before the first compile.
  // Later Node versions run it by default; other hosts never reach this.
  const node = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
  if (!node || Number(node.split(".")[0]) >= 22) return;
  const v8 = await import("node:v8");
  v8.setFlagsFromString("--experimental-wasm-relaxed-simd");
}

const COMMANDS = `commands (gqa-wasm <command> --help for its options):
  demo      (default) MHA vs GQA-8 vs GQA-4 vs MQA vs DeciLM-7B variable GQA decode, then a
            synthetic SmolLM2-135M-shaped generation
  run       generate text with a Hugging Face model folder (streamed), or chat with it
  info      what a model folder holds: architecture, parameters, KV heads, KV bytes vs MHA
  logits    the logits at every position of a list of token ids, as JSON
  generate  a greedy or sampled continuation of token ids, as JSON
  help      this text
`;

const SAMPLING_HELP = `  --max-new-tokens N         most tokens to generate (default: generation_config.json, else 256)
  --temperature T            0: greedy; unset: generation_config.json (greedy unless do_sample)
  --top-k K  --top-p P       sampling filters
  --seed S                   the sampling seed (a seed reproduces a run)
  --repetition-penalty R     > 1 discourages repeats
  --dtype f32|bf16|f16       how linear weights live in memory (default: as the files store them)
  --kv-dtype f32|bf16|int8   how the KV cache stores K and V (default f32; bf16 halves its bytes)
  --threads N|auto           worker threads sharing each layer (default 1; auto: one per core)
`;

const COMMAND_HELP: Record<string, string> = {
  demo: `usage: gqa-wasm demo [options]    (what npm start runs)

MHA vs GQA-8 vs GQA-4 vs MQA vs DeciLM-7B variable GQA: KV-cache bytes per token, decode time per
token, speed-up over MHA, error against float64; then a synthetic SmolLM2-135M-shaped model's
prefill and greedy decode through the paged KV cache, with tokens/s.

  --contexts 512,2048,8192   context lengths to time
  --heads 32                 query heads
  --head-dim 128             head dimension
  --repeats 15               timed calls per shape (median reported)
  --build relaxed|simd       force a kernel build (default: the best this engine runs)
  --model none               skip the synthetic-model generation at the end
`,
  run: `usage: gqa-wasm run --model DIR --prompt "..." [options]
       gqa-wasm run --model DIR --chat [--system "..."] [--prompt "..."]

Streams the continuation of the prompt to stdout (with --chat: the assistant's reply, through the
model's chat template). --chat without --prompt reads one user turn per line of stdin and keeps
the conversation in the KV cache between turns. Load time, prefill and decode tokens/s, KV-cache
bytes and why it stopped go to stderr (with a load progress bar on a terminal). Ctrl-C stops.

  --model DIR                config.json, safetensors (one file or shards), tokenizer.json
  --prompt TEXT              the prompt (encoded with the model's special tokens, e.g. BOS)
  --chat                     use the chat template
  --system TEXT              a system message (with --chat)
  --stop TEXT                stop at this text (it is not printed)
${SAMPLING_HELP}`,
  info: `usage: gqa-wasm info --model DIR [--json]

Reads config.json and the safetensors headers (not the weights): architecture, parameters, KV
heads per layer, KV-cache bytes per token, and what the same model would need as MHA.

  --model DIR                the folder (config.json, model.safetensors or sharded + index)
  --json                     print the summary as JSON
`,
  logits: `usage: gqa-wasm logits --model DIR --tokens 1,2,3 --out FILE.json [--dtype f32|bf16|f16]

Writes {"logits": [[...vocab floats] for every input position]}; the ids are used as given (no BOS).
`,
  generate: `usage: gqa-wasm generate --model DIR --tokens 1,2,3 [options] [--json]

A continuation of the ids through the KV cache, stopping at EOS or --max-new-tokens; prints the
new ids ({"tokens": [...]} with --json).

${SAMPLING_HELP}`,
};

const HELP = `usage: gqa-wasm <command> [options]\n\n${COMMANDS}`;

function parseFlags(args: string[], booleans: string[] = []): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) throw new UsageError(`unexpected argument '${a}'`);
    const [name, inline] = a.slice(2).split("=", 2) as [string, string | undefined];
    if (booleans.includes(name)) { flags.set(name, inline ?? "true"); continue; }
    const value = inline ?? args[++i];
    if (value === undefined) throw new UsageError(`--${name} needs a value`);
    flags.set(name, value);
  }
  return flags;
}

class UsageError extends Error {}
/** A user error that is not about the command line's shape: one line, exit 1. */
class CliError extends Error {}

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
  if (command === "help" || command === "--help" || command === "-h") {
    process.stdout.write(HELP);
    return 0;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(COMMAND_HELP[command] ?? HELP);
    return 0;
  }
  if (command === "info") return info(rest);
  if (command === "logits" || command === "generate" || command === "run") return runModel(command, rest);
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
    await runModelDemo(rt);
  }
  return 0;
}


function tokenList(raw: string | undefined): number[] {
  if (!raw) throw new UsageError("--tokens needs a comma-separated list of token ids");
  const ids = raw.split(",").map(Number);
  if (ids.some((t) => !Number.isInteger(t) || t < 0)) throw new UsageError(`--tokens takes non-negative integers, got '${raw}'`);
  return ids;
}

const SAMPLING_FLAGS = ["max-new-tokens", "temperature", "top-k", "top-p", "seed", "repetition-penalty"];
const MODEL_FLAGS: Record<"logits" | "generate" | "run", string[]> = {
  logits: ["model", "tokens", "out", "dtype"],
  generate: ["model", "tokens", "dtype", "kv-dtype", "threads", ...SAMPLING_FLAGS],
  run: ["model", "prompt", "system", "stop", "dtype", "kv-dtype", "threads", ...SAMPLING_FLAGS],
};

/** Generation options from the flags (unset ones fall back to the model's generation_config.json). */
async function generationOptions(flags: Map<string, string>): Promise<import("./model/generation.ts").GenerateOptions> {
  const number = (name: string) => {
    const raw = flags.get(name);
    if (raw === undefined) return undefined;
    const x = Number(raw);
    if (!Number.isFinite(x)) throw new UsageError(`--${name} takes a number, got '${raw}'`);
    return x;
  };
  const options = {
    maxNewTokens: int(flags, "max-new-tokens"), temperature: number("temperature"), topK: number("top-k"), topP: number("top-p"),
    seed: number("seed"), repetitionPenalty: number("repetition-penalty"),
    stopStrings: flags.has("stop") ? [flags.get("stop")!] : undefined,
  };
  const { Sampler } = await import("./model/sampling.ts");
  try { new Sampler(options); } catch (e) { throw new UsageError((e as Error).message); }
  return options;
}

async function loadForCli(flags: Map<string, string>, showProgress: boolean) {
  const dtype = flags.get("dtype");
  if (dtype !== undefined && dtype !== "f32" && dtype !== "bf16" && dtype !== "f16") throw new UsageError(`--dtype is f32, bf16 or f16, got '${dtype}'`);
  const kvDtype = flags.get("kv-dtype");
  if (kvDtype !== undefined && kvDtype !== "f32" && kvDtype !== "bf16" && kvDtype !== "int8") throw new UsageError(`--kv-dtype is f32, bf16 or int8, got '${kvDtype}'`);
  await enableRelaxedSimdOnNode20();
  const { createRuntime } = await import("./runtime/runtime.ts");
  const { loadModel } = await import("./model/load.ts");
  const rawThreads = flags.get("threads");
  const threads = rawThreads === undefined || rawThreads === "auto" ? rawThreads : int(flags, "threads");
  const rt = await createRuntime({ threads: threads as "auto" | number | undefined });
  const bar = showProgress ? progressBar() : undefined;
  const start = performance.now();
  try {
    const model = await loadModel(rt, flags.get("model")!, { dtype, onProgress: bar?.update, cache: kvDtype ? { dtype: kvDtype } : undefined });
    return { model, loadSeconds: (performance.now() - start) / 1000 };
  } finally {
    bar?.end();
  }
}

/** A one-line progress bar on stderr when it is a terminal (silent otherwise). */
function progressBar() {
  const tty = process.stderr.isTTY === true;
  let last = "";
  return {
    update: (p: import("./model/load.ts").LoadProgress) => {
      if (!tty) return;
      const f = p.totalBytes > 0 ? p.doneBytes / p.totalBytes : 1, width = 30, fill = Math.round(f * width);
      const line = `${p.phase === "read" ? "reading  " : "uploading"} [${"#".repeat(fill)}${".".repeat(width - fill)}] ${(100 * f).toFixed(0).padStart(3)}% of ${formatBytes(p.totalBytes)}`;
      if (line !== last) { process.stderr.write(`\r${line}`); last = line; }
    },
    end: () => { if (tty && last) process.stderr.write("\r\x1b[K"); },
  };
}

async function runModel(command: "logits" | "generate" | "run", args: string[]): Promise<number> {
  const booleans = command === "logits" ? [] : command === "generate" ? ["json"] : ["chat"];
  const flags = parseFlags(args, booleans);
  for (const name of flags.keys()) if (!MODEL_FLAGS[command].includes(name) && !booleans.includes(name)) throw new UsageError(`unknown option --${name} for ${command}`);
  if (!flags.get("model")) throw new UsageError(`${command} needs --model DIR`);
  if (command === "logits") {
    const tokens = tokenList(flags.get("tokens"));
    if (!flags.get("out")) throw new UsageError("logits needs --out FILE.json");
    const { model } = await loadForCli(flags, false);
    const cache = model.transformer.createCache();
    const logits = model.transformer.forward(cache, cache.createSequence(), tokens);
    const V = model.config.vocabSize;
    const rows = tokens.map((_, i) => Array.from(logits.subarray(i * V, (i + 1) * V)));
    const { writeFile } = await import("node:fs/promises");
    await writeFile(flags.get("out")!, JSON.stringify({ logits: rows }));
    return 0;
  }
  const options = await generationOptions(flags);
  if (command === "generate") {
    const tokens = tokenList(flags.get("tokens"));
    const { model } = await loadForCli(flags, false);
    const result = await model.generate(tokens, options).done;
    process.stdout.write(flags.has("json") ? `${JSON.stringify({ tokens: result.tokens })}\n` : `${result.tokens.join(",")}\n`);
    return 0;
  }
  const chat = flags.has("chat");
  const prompt = flags.get("prompt");
  if (prompt === undefined && !chat) throw new UsageError("run needs --prompt TEXT (or --chat to read turns from stdin)");
  if (flags.has("system") && !chat) throw new UsageError("--system needs --chat");
  const { model, loadSeconds } = await loadForCli(flags, true);
  if (!model.tokenizer) throw new CliError(`${flags.get("model")} has no tokenizer.json; run needs one (generate --tokens works on ids)`);
  process.stderr.write(`loaded ${flags.get("model")} in ${loadSeconds.toFixed(2)} s (${model.config.modelType}, ${model.transformer.weightDtype} weights, ${model.transformer.rt.threadInfo})\n`);
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  const stream = async (generation: import("./model/generation.ts").Generation) => {
    for await (const step of generation) process.stdout.write(step.text);
    const r = await generation.done;
    process.stdout.write("\n");
    process.stderr.write(
      `prefill: ${r.promptTokens - r.reusedTokens} tokens at ${r.prefillTokensPerSecond.toFixed(1)} tokens/s` +
      `${r.reusedTokens ? ` (${r.reusedTokens} reused from the cache)` : ""}; ` +
      `decode: ${r.tokens.length} tokens at ${r.decodeTokensPerSecond.toFixed(1)} tokens/s; ` +
      `KV cache: ${formatBytes(r.kvCacheBytes)}; stop: ${r.finishReason}\n`);
  };
  if (!chat) {
    await stream(model.generate(prompt!, { ...options, signal: abort.signal }));
    return 0;
  }
  const conversation = model.chat({ system: flags.get("system") });
  for await (const turn of prompt !== undefined ? [prompt] : userTurns()) {
    if (abort.signal.aborted) break;
    await stream(conversation.send(turn, { ...options, signal: abort.signal }));
  }
  return 0;
}

/** The user's turns of a --chat run: each non-empty line of stdin, as soon as it is typed. */
async function* userTurns(): AsyncGenerator<string> {
  const { createInterface } = await import("node:readline");
  const lines = createInterface({ input: process.stdin, terminal: false });
  const ask = () => { if (process.stdin.isTTY) process.stderr.write("> "); };
  try {
    ask();
    for await (const line of lines) {
      if (line.trim()) yield line.trim();
      ask();
    }
  } finally {
    lines.close();
  }
}

async function info(args: string[]): Promise<number> {
  const flags = parseFlags(args, ["json"]);
  const json = flags.delete("json");
  for (const name of flags.keys()) if (name !== "model") throw new UsageError(`unknown option --${name}`);
  const dir = flags.get("model");
  if (!dir) throw new UsageError("info needs --model DIR");
  const { inspectModel, summarizeModel } = await import("./model/folder.ts");
  const s = summarizeModel(await inspectModel(dir));
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

const argv = process.argv.slice(2);
const command = argv[0] ?? "demo";
main(argv).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`gqa-wasm: ${e.message}\n(gqa-wasm ${COMMAND_HELP[command] ? `${command} ` : ""}--help for usage)\n`);
      process.exitCode = 2;
    } else if (e instanceof CliError || e instanceof Error && (e.name === "RangeError" || e.name === "TypeError" || e.name.startsWith("Wasm") ||
      e.name === "ModelConfigError" || e.name === "SafetensorsError" || e.name === "KVCacheFullError")) {
      process.stderr.write(`gqa-wasm: ${e.message}\n`);
      process.exitCode = 1;
    } else {
      throw e;
    }
  },
);
