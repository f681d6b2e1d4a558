#!/usr/bin/env node
// The gqa-wasm command line. `demo` (the default, what `npm start` runs) shows MHA vs GQA vs MQA
// vs variable GQA on synthetic Llama-3-8B-like shapes; `run`, `generate`, `logits` and `info`
// work on Hugging Face model folders.
import { formatBytes } from "./format.ts";
import { KV_DTYPES, type KVDtype } from "./kv/storage.ts";
import { BUFFER_DTYPES } from "./memory/wasm-buffer.ts";
import type { WeightChoice } from "./formats/quant.ts";

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
  serve     an OpenAI-compatible HTTP API (chat, completions, streaming, JSON schemas) with
            continuous batching
  info      what a model holds: architecture, parameters, KV heads, KV bytes vs MHA
  quantize  write a Hugging Face folder as a GGUF file (q8_0, q4_0, q5_0, q4_1, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m, q5_k_m, f16, bf16, f32)
  eval      perplexity on a text file; with --reference, KL divergence and top-1 agreement
  logits    the logits at every position of a list of token ids, as JSON
  generate  a greedy or sampled continuation of token ids, as JSON
  help      this text
`;

const SAMPLING_HELP = `  --max-new-tokens N         most tokens to generate (default: generation_config.json, else 256)
  --temperature T            0: greedy; unset: generation_config.json (greedy unless do_sample)
  --top-k K  --top-p P       sampling filters
  --seed S                   the sampling seed (a seed reproduces a run)
  --repetition-penalty R     > 1 discourages repeats
  --dtype f32|bf16|f16|q8_0|q4_0|q5_0|q4_1|q5_1|iq4_nl|q2_k|q3_k|q4_k|q5_k|q6_k|q4_k_m|q5_k_m|stored
                             how linear weights and embeddings live in memory (default: as the
                             files store them); q8_0 / q4_0 / q5_0 / q4_1 / q5_1 / iq4_nl / q2_k-q6_k quantize at load (GGUF's blocks;
                             the K-quants need rows of whole 256-weight super-blocks);
                             q4_k_m / q5_k_m: llama.cpp's mix (its Q6_K, Q5_K, Q5_0, Q5_1 a byte a weight,
                             as a file's loads); stored: a GGUF file's every block type as stored
                             (Q5_0 / Q5_1 / Q5_K / Q6_K too, which by default become a byte a
                             weight: faster, more bytes)
  --kv-dtype f32|f16|bf16|int8  how the KV cache stores K and V (default f32, exact; f16 halves its
                             bytes as llama.cpp's cache, logits within ~2e-4; bf16 half too, ~10x
                             coarser; int8 a quarter)
  --threads N|auto           worker threads sharing each layer (default 1; auto: one per core)
  --context N                the longest sequence in tokens (default: max_position_embeddings;
                             LongRoPE models such as Phi-3.5 / Phi-4-mini: 4096, where their short
                             factors hold; longer, up to max_position_embeddings, rotates by their
                             long ones, as llama.cpp chooses by its context size)
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
  serve: `usage: gqa-wasm serve --model DIR|FILE.gguf [options]

An OpenAI-compatible API: GET /v1/models, POST /v1/chat/completions, POST /v1/completions
(streaming, stop, seed, logprobs, response_format json_object / json_schema), GET /health.
Requests in flight decode together (continuous batching); repeated prompt prefixes are reused.

  --host 127.0.0.1           address to listen on (only this machine unless told otherwise)
  --port 8080                port (0: any free port; the address is printed)
  --model-id NAME            the model name clients send (default: the folder or file name)
  --api-key KEY              require Authorization: Bearer KEY (or set GQA_WASM_API_KEY)
  --max-sequences 8          requests decoding at once; more wait in a queue
  --max-queue 64             requests waiting; beyond it 503 with Retry-After
  --kv-tokens N              KV cache for all requests (default max-sequences x min(context, 4096))
  --max-body-bytes 4194304   largest request body (413 beyond)
  --chat-template-kwargs JSON  chat template variables for every chat request, e.g.
                             '{"enable_thinking": false}' (Qwen3); a request's chat_template_kwargs
                             are laid over them
  --reasoning-format auto|none|deepseek  deepseek: a thinking model's <think>...</think> goes to
                             reasoning_content, the answer to content (as llama-server); none:
                             the text as generated; auto (default, as llama-server): deepseek where
                             the chat template writes <think>. Requests may send reasoning_format
  --dtype f32|bf16|f16|q8_0|q4_0|q5_0|q4_1|q5_1|iq4_nl|q2_k|q3_k|q4_k|q5_k|q6_k|q4_k_m|q5_k_m|stored   --kv-dtype f32|f16|bf16|int8   --threads N|auto   --context N   (as for run)
`,
  run: `usage: gqa-wasm run --model DIR --prompt "..." [options]
       gqa-wasm run --model DIR --chat [--system "..."] [--prompt "..."]

Streams the continuation of the prompt to stdout (with --chat: the assistant's reply, through the
model's chat template). --chat without --prompt reads one user turn per line of stdin and keeps
the conversation in the KV cache between turns. Load time, prefill and decode tokens/s, KV-cache
bytes and why it stopped go to stderr (with a load progress bar on a terminal). Ctrl-C stops.

  --model DIR|FILE.gguf      a Hugging Face folder (config.json, safetensors, tokenizer.json)
                             or a GGUF file (its first split for -0000i-of-0000N.gguf)
  --prompt TEXT              the prompt (encoded with the model's special tokens, e.g. BOS)
  --chat                     use the chat template
  --system TEXT              a system message (with --chat)
  --chat-template-kwargs JSON  more chat template variables, e.g. '{"enable_thinking": false}' (Qwen3)
  --stop TEXT                stop at this text (it is not printed; may be given more than once)
${SAMPLING_HELP}`,
  quantize: `usage: gqa-wasm quantize --model DIR --dtype q8_0|q4_0|q5_0|q4_1|q5_1|iq4_nl|q2_k|q3_k|q4_k|q5_k|q6_k|q4_k_m|q5_k_m|f16|bf16|f32 --out FILE.gguf

Writes the folder's model as a GGUF file (version 3) that llama.cpp and gqa-wasm read: llama,
qwen2 or qwen3 metadata (llama3 rope scaling as rope_freqs.weight), norms in F32, linear weights and the embedding in --dtype (quantized as ggml's
reference quantizers do; rows must be whole blocks of 32, 256 for q2_k .. q6_k; q4_k_m / q5_k_m
are llama.cpp's Q4_K_M / Q5_K_M mixes: Q6_K for the LM head and half the layers' v / down, Q4_K /
Q5_K elsewhere, Q8_0 and Q5_0 / Q5_1 where rows are not whole 256-blocks; K-quant scales fitted
by llama.cpp's least-squares searches), q/k rows permuted as llama.cpp's
converter does, and the tokenizer (tokenizer.json) as tokenizer.ggml.* metadata with the chat
template.
`,
  eval: `usage: gqa-wasm eval --model M --text FILE [--reference M2] [--ctx N] [--dtype D] [--reference-dtype D] [--json]

Tokenizes FILE with M's tokenizer, cuts it into windows of --ctx tokens (default 512, or the
context if shorter), runs each from an empty cache and scores every next-token prediction:
perplexity; with --reference (a model with the same vocabulary, e.g. the f32 original of a
quantized M), the reference's perplexity, the mean KL(reference || M) of the next-token
distributions in nats, and the fraction of positions whose top-1 tokens agree. M and M2 are
folders or GGUF files; --dtype / --reference-dtype as for run (e.g. --dtype q4_0 on a folder).
`,
  info: `usage: gqa-wasm info --model DIR|FILE.gguf [--json]

Reads config.json and the safetensors headers (not the weights): architecture, parameters, KV
heads per layer, KV-cache bytes per token, and what the same model would need as MHA.

  --model DIR                the folder (config.json, model.safetensors or sharded + index)
  --json                     print the summary as JSON
`,
  logits: `usage: gqa-wasm logits --model DIR --tokens 1,2,3 --out FILE.json|FILE.npy [--dtype f32|bf16|f16|q8_0|q4_0|q5_0|q4_1|q5_1|iq4_nl|q2_k|q3_k|q4_k|q5_k|q6_k|q4_k_m|q5_k_m|stored]

Writes {"logits": [[...vocab floats] for every input position]}, row by row as the forward pass
goes; with a .npy name, numpy's format instead (float32 [positions, vocab], np.load reads it),
four times smaller for long runs. The ids are decimal, used as given (no BOS).
`,
  generate: `usage: gqa-wasm generate --model DIR --tokens 1,2,3 [options] [--json]

A continuation of the ids through the KV cache, stopping at EOS or --max-new-tokens; prints the
new ids ({"tokens": [...]} with --json).

${SAMPLING_HELP}`,
};

const HELP = `usage: gqa-wasm <command> [options]\n\n${COMMANDS}`;

class UsageError extends Error {}
/** A user error that is not about the command line's shape: one line, exit 1. */
class CliError extends Error {}

type FlagSpec = Record<string, { type: "string" | "boolean"; multiple?: boolean }>;
type Flags = Record<string, string | boolean | string[] | undefined>;

/**
 * The command's flags, parsed strictly by node:util's parseArgs: unknown flags, missing values,
 * stray arguments and a flag given twice (unless it may repeat) are usage errors.
 */
function parseFlags(command: string, args: string[], spec: FlagSpec): Flags {
  const { parseArgs } = nodeUtil;
  // A negative number is a value, not an option: "--temperature -1" reads as "--temperature=-1".
  const joined: string[] = [];
  for (const a of args) {
    const prev = joined[joined.length - 1];
    if (prev !== undefined && /^-[0-9.]/.test(a) && /^--[^=]+$/.test(prev) && spec[prev.slice(2)]?.type === "string") joined[joined.length - 1] = `${prev}=${a}`;
    else joined.push(a);
  }
  args = joined;
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; options: FlagSpec; strict: true; allowPositionals: false; tokens: true }>>;
  try {
    parsed = parseArgs({ args, options: spec, strict: true, allowPositionals: false, tokens: true });
  } catch (e) {
    const err = e as Error & { code?: string };
    const option = /'(-[^' ]+)/.exec(err.message)?.[1];
    if (err.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") throw new UsageError(`unknown option ${option ?? ""} for ${command}`);
    if (err.code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") throw new UsageError(`unexpected argument '${/'([^']*)'/.exec(err.message)?.[1] ?? ""}'`);
    if (err.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      throw new UsageError(/does not take an argument/.test(err.message) ? `${option} takes no value` : `${option} needs a value${/ambiguous/.test(err.message) ? ` (write ${option}=VALUE for a value that starts with '-')` : ""}`);
    }
    throw new UsageError(err.message.split("\n")[0]!);
  }
  const seen = new Set<string>();
  for (const t of parsed.tokens ?? []) {
    if (t.kind !== "option") continue;
    if (seen.has(t.name) && !spec[t.name]?.multiple) throw new UsageError(`--${t.name} is given more than once`);
    seen.add(t.name);
  }
  return parsed.values as Flags;
}

const nodeUtil = await import("node:util");
const nodePath = await import("node:path");

function str(flags: Flags, name: string): string | undefined {
  const v = flags[name];
  return typeof v === "string" ? v : undefined;
}

/** A decimal integer >= min: digits only (no "0x10", "1e1", "", "1.0"). */
function decimalInt(raw: string, what: string, min: number): number {
  const x = /^[0-9]+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(x) || x < min) throw new UsageError(`${what} takes ${min > 0 ? "positive" : "non-negative"} decimal integers, got '${raw}'`);
  return x;
}

function intList(flags: Flags, name: string): number[] | undefined {
  const raw = str(flags, name);
  if (raw === undefined) return undefined;
  return raw.split(",").map((item) => decimalInt(item, `--${name}`, 1));
}

function int(flags: Flags, name: string, min = 1): number | undefined {
  const raw = str(flags, name);
  return raw === undefined ? undefined : decimalInt(raw, `--${name}`, min);
}

/** A decimal number (e.g. 0.7, -1.5, 2e-3); no hex, no empty string, no Infinity. */
function decimalNumber(flags: Flags, name: string): number | undefined {
  const raw = str(flags, name);
  if (raw === undefined) return undefined;
  if (!/^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(raw) || !Number.isFinite(Number(raw))) throw new UsageError(`--${name} takes a decimal number, got '${raw}'`);
  return Number(raw);
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
  if (command === "quantize") return quantize(rest);
  if (command === "eval") return evalCommand(rest);
  if (command === "serve") return serve(rest);
  if (command === "logits" || command === "generate" || command === "run") return runModel(command, rest);
  if (command !== "demo") throw new UsageError(`unknown command '${command}'`);
  const flags = parseFlags("demo", rest, stringFlags("contexts", "heads", "head-dim", "repeats", "build", "model"));
  const build = str(flags, "build");
  if (build !== undefined && build !== "relaxed" && build !== "simd") throw new UsageError(`--build is relaxed or simd, got '${build}'`);
  const model = str(flags, "model");
  if (model !== undefined && model !== "none") throw new UsageError(`--model takes only 'none' here (gqa-wasm run --model DIR runs a folder), got '${model}'`);
  const options = { contexts: intList(flags, "contexts"), numHeads: int(flags, "heads"), headDim: int(flags, "head-dim"), repeats: int(flags, "repeats") };
  await enableRelaxedSimdOnNode20();
  const { createRuntime } = await import("./runtime/runtime.ts");
  const { runDemo, runModelDemo } = await import("./demo.ts");
  const rt = await createRuntime({ build: build as "relaxed" | "simd" | undefined });
  runDemo(rt, options);
  if (model !== "none") {
    process.stdout.write("\n");
    await runModelDemo(rt);
  }
  return 0;
}

function stringFlags(...names: string[]): FlagSpec {
  return Object.fromEntries(names.map((n) => [n, { type: "string" as const }]));
}

/** --tokens: decimal ids separated by commas ("1,,2", "0x10", "1e1" and "" are usage errors). */
function tokenList(raw: string | undefined): number[] {
  if (!raw) throw new UsageError("--tokens needs a comma-separated list of token ids");
  return raw.split(",").map((item, i) => {
    if (!/^[0-9]+$/.test(item)) throw new UsageError(`--tokens takes decimal token ids separated by commas; item ${i + 1} of '${raw}' is '${item}'`);
    return decimalInt(item, "--tokens", 0);
  });
}

const SAMPLING_FLAGS = ["max-new-tokens", "temperature", "top-k", "top-p", "seed", "repetition-penalty"];
const MODEL_FLAGS: Record<"logits" | "generate" | "run", FlagSpec> = {
  logits: stringFlags("model", "tokens", "out", "dtype"),
  generate: { ...stringFlags("model", "tokens", "dtype", "kv-dtype", "threads", "context", ...SAMPLING_FLAGS), json: { type: "boolean" } },
  run: { ...stringFlags("model", "prompt", "system", "chat-template-kwargs", "dtype", "kv-dtype", "threads", "context", ...SAMPLING_FLAGS), stop: { type: "string", multiple: true }, chat: { type: "boolean" } },
};

/** A flag whose value is one of `values` (a usage error otherwise), or undefined. */
function oneOf<const T extends string>(flags: Flags, name: string, values: readonly T[]): T | undefined {
  const v = str(flags, name);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw new UsageError(`--${name} is ${values.join(" or ")}, got '${v}'`);
  return v as T;
}

/** --chat-template-kwargs JSON: an object of chat template variables (e.g. '{"enable_thinking": false}'). */
async function templateKwargs(flags: Flags): Promise<Record<string, unknown> | undefined> {
  const raw = str(flags, "chat-template-kwargs");
  if (raw === undefined) return undefined;
  let value: unknown;
  try { value = JSON.parse(raw); } catch { throw new UsageError(`--chat-template-kwargs takes a JSON object, e.g. '{"enable_thinking": false}'; got '${raw}'`); }
  const { checkTemplateVariables } = await import("./model/chat-template.ts");
  try { return checkTemplateVariables(value); } catch (e) { throw new UsageError(`--chat-template-kwargs: ${(e as Error).message}`); }
}

/** Generation options from the flags (unset ones fall back to the model's generation_config.json). */
async function generationOptions(flags: Flags): Promise<import("./model/generation.ts").GenerateOptions> {
  const stops = flags.stop as string[] | undefined;
  const options = {
    maxNewTokens: int(flags, "max-new-tokens"), temperature: decimalNumber(flags, "temperature"), topK: decimalNumber(flags, "top-k"), topP: decimalNumber(flags, "top-p"),
    seed: decimalNumber(flags, "seed"), repetitionPenalty: decimalNumber(flags, "repetition-penalty"),
    stopStrings: stops?.length ? stops : undefined,
  };
  const { Sampler } = await import("./model/sampling.ts");
  try { new Sampler(options); } catch (e) { throw new UsageError((e as Error).message); }
  return options;
}

/**
 * A weight dtype flag: one of the runtime's buffer dtypes (f32, bf16, f16, q8_0, q4_0, q5_0, q4_1,
 * q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k; not q6_k_u8, q5_k_u8, q5_0_u8 or q5_1_u8, how Q6_K, Q5_K, Q5_0 and Q5_1 live in memory), q4_k_m / q5_k_m (llama.cpp's mixes), or when loading, stored
 * (a GGUF file's every block type the kernels compute on, as stored).
 */
function bufferDtype(flags: Flags, name: string, loading = true): WeightChoice | "stored" | undefined {
  const raw = str(flags, name), choices: readonly string[] = [...BUFFER_DTYPES.filter((d) => !d.endsWith("_u8")), "q4_k_m", "q5_k_m", ...(loading ? ["stored"] : [])];
  if (raw !== undefined && !choices.includes(raw)) {
    throw new UsageError(`--${name} is ${choices.slice(0, -1).join(", ")} or ${choices.at(-1)}, got '${raw}'`);
  }
  return raw as WeightChoice | "stored" | undefined;
}

/** Checks the flags loadForCli reads (callers check before they open files or load). */
function checkLoadFlags(flags: Flags): void {
  bufferDtype(flags, "dtype");
  const kvDtype = str(flags, "kv-dtype");
  if (kvDtype !== undefined && !(KV_DTYPES as readonly string[]).includes(kvDtype)) throw new UsageError(`--kv-dtype is ${KV_DTYPES.slice(0, -1).join(", ")} or ${KV_DTYPES.at(-1)}, got '${kvDtype}'`);
  const threads = str(flags, "threads");
  if (threads !== undefined && threads !== "auto") int(flags, "threads");
  int(flags, "context");
}

async function loadForCli(flags: Flags, showProgress: boolean) {
  const dtype = bufferDtype(flags, "dtype");
  const kvDtype = str(flags, "kv-dtype") as KVDtype | undefined;
  await enableRelaxedSimdOnNode20();
  const { createRuntime } = await import("./runtime/runtime.ts");
  const { loadModel } = await import("./model/load.ts");
  const rawThreads = str(flags, "threads");
  const threads = rawThreads === undefined || rawThreads === "auto" ? rawThreads : int(flags, "threads");
  const rt = await createRuntime({ threads });
  const bar = showProgress ? progressBar() : undefined;
  const start = performance.now();
  try {
    const model = await loadModel(rt, str(flags, "model")!, { dtype, onProgress: bar?.update, cache: kvDtype ? { dtype: kvDtype } : undefined, contextLength: int(flags, "context") });
    return { model, loadSeconds: (performance.now() - start) / 1000 };
  } catch (e) {
    await rt.dispose();
    throw e;
  } finally {
    bar?.end();
  }
}

/** One line on stderr, rewritten in place, when stderr is a terminal (silent otherwise). */
function terminalLine() {
  const tty = process.stderr.isTTY === true;
  let last = "";
  return {
    show: (line: string) => { if (tty && line !== last) { process.stderr.write(`\r${line}`); last = line; } },
    end: () => { if (tty && last) process.stderr.write("\r\x1b[K"); },
  };
}

/** A load progress bar (terminalLine). */
function progressBar() {
  const line = terminalLine();
  return {
    update: (p: import("./model/load.ts").LoadProgress) => {
      const f = p.totalBytes > 0 ? p.doneBytes / p.totalBytes : 1, width = 30, fill = Math.round(f * width);
      line.show(`${p.phase === "read" ? "reading  " : "uploading"} [${"#".repeat(fill)}${".".repeat(width - fill)}] ${(100 * f).toFixed(0).padStart(3)}% of ${formatBytes(p.totalBytes)}`);
    },
    end: line.end,
  };
}

async function runModel(command: "logits" | "generate" | "run", args: string[]): Promise<number> {
  const flags = parseFlags(command, args, MODEL_FLAGS[command]);
  if (!str(flags, "model")) throw new UsageError(`${command} needs --model DIR`);
  if (command === "logits") return logits(flags);
  checkLoadFlags(flags);
  const options = await generationOptions(flags);
  if (command === "generate") {
    const tokens = tokenList(str(flags, "tokens"));
    const { model } = await loadForCli(flags, false);
    const result = await model.generate(tokens, options).done;
    process.stdout.write(flags.json ? `${JSON.stringify({ tokens: result.tokens })}\n` : `${result.tokens.join(",")}\n`);
    return 0;
  }
  const chat = flags.chat === true;
  const prompt = str(flags, "prompt");
  if (prompt === undefined && !chat) throw new UsageError("run needs --prompt TEXT (or --chat to read turns from stdin)");
  if (flags.system !== undefined && !chat) throw new UsageError("--system needs --chat");
  if (flags["chat-template-kwargs"] !== undefined && !chat) throw new UsageError("--chat-template-kwargs needs --chat");
  const templateVariables = await templateKwargs(flags);
  const { model, loadSeconds } = await loadForCli(flags, true);
  const where = str(flags, "model");
  if (!model.tokenizer) throw new CliError(`${where} has no tokenizer.json; run needs one (generate --tokens works on ids)`);
  if (chat && !model.tokenizer.hasChatTemplate) throw new CliError(`${where} has no chat template (tokenizer_config.json chat_template or chat_template.jinja); run it without --chat`);
  process.stderr.write(`loaded ${where} in ${loadSeconds.toFixed(2)} s (${model.config.modelType}, ${model.transformer.weightDtype} weights, ${model.transformer.rt.threadInfo})\n`);
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
  const conversation = model.chat({ system: str(flags, "system"), templateVariables });
  // A turn longer than this many bytes cannot fit the context (a token is rarely over 16 bytes):
  // it is refused before it is decoded or tokenized, and never held whole in memory.
  const maxTurnBytes = Math.max(64 << 10, 16 * model.config.maxPositionEmbeddings);
  const turns = prompt !== undefined ? [{ text: prompt, bytes: Buffer.byteLength(prompt) }] : userTurns(maxTurnBytes);
  for await (const turn of turns) {
    if (abort.signal.aborted) break;
    if (turn.text === undefined || turn.bytes > maxTurnBytes) {
      process.stderr.write(`gqa-wasm: this turn is ${formatBytes(turn.bytes)}, more than the ${formatBytes(maxTurnBytes)} a turn may be for a ${model.config.maxPositionEmbeddings}-token context; it was not sent\n`);
      continue;
    }
    let generation;
    try {
      generation = conversation.send(turn.text, { ...options, signal: abort.signal });
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      process.stderr.write(`gqa-wasm: ${e.message}\n`);
      continue;
    }
    await stream(generation);
  }
  return 0;
}

/**
 * `logits`: the output file is opened before the model loads (a bad path fails at once), and
 * written as the forward pass goes, a chunk of positions at a time: JSON row by row, or with a
 * .npy name numpy's format (float32 [positions, vocab]), so no output size is held whole in memory.
 */
async function logits(flags: Flags): Promise<number> {
  const tokens = tokenList(str(flags, "tokens"));
  const out = str(flags, "out");
  if (!out) throw new UsageError("logits needs --out FILE.json (or FILE.npy)");
  checkLoadFlags(flags);
  const fs = await import("node:fs/promises");
  const handle = await fs.open(out, "w").catch((e: NodeJS.ErrnoException) => {
    throw new CliError(`cannot write ${out} (${e.code === "EISDIR" ? "it is a directory" : e.code === "ENOENT" ? "no such directory" : e.code === "EACCES" ? "permission denied" : e.code ?? e.message})`);
  });
  let ok = false;
  try {
    const { model } = await loadForCli(flags, false);
    const V = model.config.vocabSize;
    const npy = /\.npy$/i.test(out);
    const pending: (string | Uint8Array)[] = [];
    let pendingBytes = 0;
    const write = async (part: string | Uint8Array, force = false) => {
      pending.push(part);
      pendingBytes += part.length;
      if (pendingBytes < (4 << 20) && !force) return;
      for (const p of pending.splice(0)) await (typeof p === "string" ? handle.write(p) : handle.write(p));
      pendingBytes = 0;
    };
    await write(npy ? npyHeader([tokens.length, V]) : '{"logits": [');
    const cache = model.transformer.createCache();
    const seq = cache.createSequence();
    const CHUNK = 128;
    for (let at = 0; at < tokens.length; at += CHUNK) {
      const part = tokens.slice(at, at + CHUNK);
      const rows = model.transformer.forward(cache, seq, part);
      if (npy) await write(new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength).slice());
      else for (let i = 0; i < part.length; i++) await write(`${at + i > 0 ? "," : ""}${JSON.stringify(Array.from(rows.subarray(i * V, (i + 1) * V)))}`);
    }
    await write(npy ? new Uint8Array(0) : "]}\n", true);
    ok = true;
    return 0;
  } finally {
    await handle.close();
    if (!ok) await fs.rm(out, { force: true });
  }
}

/** The header of a version 1.0 .npy file holding little-endian float32 of `shape`, C order. */
function npyHeader(shape: number[]): Uint8Array {
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")}${shape.length === 1 ? "," : ""}), }`;
  const unpadded = 10 + dict.length + 1;
  dict += " ".repeat((64 - (unpadded % 64)) % 64) + "\n";
  const out = new Uint8Array(10 + dict.length);
  out.set([0x93, ...new TextEncoder().encode("NUMPY"), 1, 0, dict.length & 0xff, dict.length >> 8]);
  out.set(new TextEncoder().encode(dict), 10);
  return out;
}

/**
 * The user's turns of a --chat run: each non-empty line of stdin, as soon as it is typed. A line
 * longer than `maxBytes` is not kept: its bytes are counted and dropped, and it comes as
 * { text: undefined, bytes } so the caller can refuse it and go on.
 */
async function* userTurns(maxBytes: number): AsyncGenerator<{ text?: string; bytes: number }> {
  const ask = () => { if (process.stdin.isTTY) process.stderr.write("> "); };
  let parts: Buffer[] = [], bytes = 0;
  const line = () => {
    const result = bytes > maxBytes ? { bytes } : { text: Buffer.concat(parts).toString("utf8").replace(/\r$/, "").trim(), bytes };
    parts = []; bytes = 0;
    return result;
  };
  ask();
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    let from = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, from)) {
      bytes += nl - from;
      if (bytes <= maxBytes) parts.push(chunk.subarray(from, nl));
      from = nl + 1;
      const turn = line();
      if (turn.text !== "") yield turn;
      ask();
    }
    bytes += chunk.length - from;
    if (bytes <= maxBytes) parts.push(chunk.subarray(from));
    else parts = [];
  }
  const turn = line();
  if (turn.bytes > 0 && turn.text !== "") yield turn;
}

/** `eval`: perplexity, and KL divergence / top-1 agreement against a reference. */
async function evalCommand(args: string[]): Promise<number> {
  const flags = parseFlags("eval", args, { ...stringFlags("model", "text", "reference", "ctx", "dtype", "reference-dtype", "threads"), json: { type: "boolean" } });
  const modelPath = str(flags, "model"), textPath = str(flags, "text"), refPath = str(flags, "reference");
  if (!modelPath) throw new UsageError("eval needs --model M");
  if (!textPath) throw new UsageError("eval needs --text FILE");
  const ctx = int(flags, "ctx");
  checkLoadFlags(flags);
  const refDtype = bufferDtype(flags, "reference-dtype");
  const fs = await import("node:fs/promises");
  const stat = await fs.stat(textPath).catch(() => undefined);
  if (!stat?.isFile()) throw new CliError(`${textPath}: no such file`);
  if (stat.size > 256 << 20) throw new CliError(`${textPath}: ${formatBytes(stat.size)} is more text than eval reads (256 MiB)`);
  const text = await fs.readFile(textPath, "utf8");
  const { model } = await loadForCli(flags, false);
  if (!model.tokenizer) throw new CliError(`${modelPath} has no tokenizer; eval tokenizes the text with it`);
  let reference;
  if (refPath) {
    const { loadModel } = await import("./model/load.ts");
    reference = await loadModel(model.transformer.rt, refPath, { dtype: refDtype });
  }
  const ids = model.tokenizer.encode(text);
  const { evaluate } = await import("./model/eval.ts");
  const bar = progressLine("scoring");
  let r;
  try {
    r = evaluate(model.transformer, ids, { ctx, reference: reference?.transformer, onProgress: bar.update });
  } finally { bar.end(); }
  if (flags.json) { process.stdout.write(`${JSON.stringify(r)}\n`); return 0; }
  process.stdout.write([
    `model: ${modelPath} (${model.transformer.weightDtype} weights)${refPath ? `; reference: ${refPath} (${reference!.transformer.weightDtype} weights)` : ""}`,
    `tokens: ${r.tokens} in ${r.windows} window(s) of up to ${r.ctx}; ${r.scored} predictions scored`,
    `perplexity: ${r.perplexity.toFixed(4)}${r.referencePerplexity !== undefined ? ` (reference: ${r.referencePerplexity.toFixed(4)})` : ""}`,
    ...(r.meanKl !== undefined ? [`mean KL(reference || model): ${r.meanKl.toExponential(3)} nats; top-1 agreement: ${(100 * r.top1Agreement!).toFixed(2)}%`] : []),
  ].join("\n") + "\n");
  return 0;
}

/** "label 40% (done / total)" as a terminalLine. */
function progressLine(label: string) {
  const line = terminalLine();
  return { update: (done: number, total: number) => line.show(`${label} ${(100 * done / total).toFixed(0).padStart(3)}% (${done} / ${total})`), end: line.end };
}

/** `quantize`: a Hugging Face folder written as a GGUF file llama.cpp reads. */
async function quantize(args: string[]): Promise<number> {
  const flags = parseFlags("quantize", args, stringFlags("model", "dtype", "out"));
  const dir = str(flags, "model"), out = str(flags, "out"), dtype = (bufferDtype(flags, "dtype", false) as WeightChoice | undefined) ?? "q8_0";
  if (!dir) throw new UsageError("quantize needs --model DIR");
  if (!out || !/\.gguf$/i.test(out)) throw new UsageError("quantize needs --out FILE.gguf");
  const fs = await import("node:fs/promises");
  const handle = await fs.open(out, "w").catch((e: NodeJS.ErrnoException) => { throw new CliError(`cannot write ${out} (${e.code ?? e.message})`); });
  let ok = false;
  try {
    const { writeFolderGGUF } = await import("./model/gguf-export.ts");
    const start = performance.now();
    // Written as the folder streams in (each file read once, rows converted a few MiB at a time).
    const size = await writeFolderGGUF(dir, { dtype, name: dir.replace(/\/+$/, "").split("/").pop() }, async (bytes, position) => { await handle.write(bytes, 0, bytes.length, position); });
    ok = true;
    process.stderr.write(`wrote ${out}: ${formatBytes(size)}, ${dtype} weights, in ${((performance.now() - start) / 1000).toFixed(2)} s\n`);
    return 0;
  } finally {
    await handle.close();
    if (!ok) await fs.rm(out, { force: true });
  }
}

async function info(args: string[]): Promise<number> {
  const flags = parseFlags("info", args, { model: { type: "string" }, json: { type: "boolean" } });
  const dir = str(flags, "model");
  if (!dir) throw new UsageError("info needs --model DIR");
  const { inspectModel, summarizeModel } = await import("./model/folder.ts");
  const { ggufTarget } = await import("./model/files.ts");
  const gguf = ggufTarget(dir);
  let types = "";
  let s;
  if (gguf) {
    const { inspectGGUF, ROPE_FACTORS_TENSOR } = await import("./model/gguf-model.ts");
    const found = await inspectGGUF(gguf.files, gguf.name);
    const tensors = new Map([...found.tensors].map(([name, t]) => [name, t.tensor]));
    s = summarizeModel({ config: found.config, tensors });
    if (found.ropeFactors.has(ROPE_FACTORS_TENSOR)) s.rope += `, per-frequency factors (${ROPE_FACTORS_TENSOR}, read at load)`;
    const count = new Map<string, number>();
    for (const t of tensors.values()) count.set(t.type, (count.get(t.type) ?? 0) + 1);
    types = [...count].map(([t, n]) => `${t} x${n}`).join(", ");
    const { conversionTarget, ggufConversions } = await import("./model/load.ts");
    const converted = ggufConversions([...tensors.values()].filter((t) => t.shape.length === 2).map((t) => t.type));
    types += converted.size === 0 ? " (computed on as stored)" : `; converted at load: ${[...converted].map(([t, n]) => `${t} x${n} to ${conversionTarget(t).toUpperCase()}`).join(", ")} (--dtype to choose)`;
    const name = found.metadata.get("general.name");
    const tok = found.tokenizer;
    const vocab = tok ? Object.keys((tok.json.model as { vocab: object }).vocab).length : 0;
    types += `\n${typeof name === "string" ? `GGUF name: ${name}; ` : ""}tokenizer: ${tok ? `${found.metadata.get("tokenizer.ggml.model")}, ${vocab} tokens${tok.config.chat_template ? ", with a chat template" : ""}` : "none in the file"}`;
  } else {
    s = summarizeModel(await inspectModel(dir));
  }
  if (flags.json) { process.stdout.write(`${JSON.stringify(s)}\n`); return 0; }
  const kv = s.kvHeadsPerLayer;
  process.stdout.write([
    `model: ${dir}`,
    `architecture: ${s.architecture}`,
    `parameters: ${s.parameters.toLocaleString("en-US")} (${formatBytes(s.weightBytes)} of weights)`,
    `layers: ${s.layers}, query heads: ${s.numHeads}, head_dim: ${s.headDim}`,
    `RoPE: ${s.rope}`,
    ...(s.slidingWindow ? [`sliding window: ${s.slidingWindow}`] : []),
    ...(s.scaling ? [`scaling: ${s.scaling}`] : []),
    ...(types ? [`GGUF tensor types: ${types}`] : []),
    `KV heads per layer: ${new Set(kv).size === 1 ? `${kv[0]} in every layer` : kv.join(",")}`,
    `KV cache per token (f32): ${formatBytes(s.kvBytesPerToken)}; as MHA: ${formatBytes(s.mhaKvBytesPerToken)} (${(s.mhaKvBytesPerToken / s.kvBytesPerToken).toFixed(1)}x more)`,
  ].join("\n") + "\n");
  return 0;
}

async function serve(args: string[]): Promise<number> {
  const flags = parseFlags("serve", args, stringFlags("model", "host", "port", "model-id", "api-key", "max-sequences", "max-queue", "kv-tokens", "max-body-bytes", "chat-template-kwargs", "reasoning-format", "dtype", "kv-dtype", "threads", "context"));
  const dir = str(flags, "model");
  if (!dir) throw new UsageError("--model is required");
  checkLoadFlags(flags);
  const port = int(flags, "port", 0) ?? 8080;
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  const host = str(flags, "host") ?? "127.0.0.1";
  const { modelIdOf } = await import("./serve/openai.ts");
  const options = {
    modelId: str(flags, "model-id") ?? modelIdOf(nodePath.resolve(dir)),
    apiKey: str(flags, "api-key") ?? (process.env.GQA_WASM_API_KEY || undefined),
    maxSequences: int(flags, "max-sequences"), maxQueue: int(flags, "max-queue"), maxCacheTokens: int(flags, "kv-tokens"),
    maxBodyBytes: int(flags, "max-body-bytes"), kvDtype: str(flags, "kv-dtype") as KVDtype | undefined,
    chatTemplateKwargs: await templateKwargs(flags),
    reasoningFormat: oneOf(flags, "reasoning-format", ["auto", "none", "deepseek"] as const),
  };
  const { model } = await loadForCli(flags, true);
  const { serveNode } = await import("./serve/node.ts");
  const server = await serveNode(model, { ...options, host, port });
  process.stderr.write(`gqa-wasm: serving '${options.modelId}' at ${server.url}/v1 (${options.apiKey ? "API key required" : "no API key"}); Ctrl-C stops\n`);
  await new Promise<void>((resolve) => {
    const stop = () => { process.off("SIGINT", stop); process.off("SIGTERM", stop); resolve(); };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  await server.close();
  model.dispose();
  return 0;
}

/** Errors that are the user's input (a file, a flag's value, memory), printed as one line. */
const USER_ERRORS = new Set(["RangeError", "TypeError", "ModelConfigError", "SafetensorsError", "KVCacheFullError", "TemplateError", "GGUFError"]);

const argv = process.argv.slice(2);
const command = argv[0] ?? "demo";
main(argv).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`gqa-wasm: ${e.message}\n(gqa-wasm ${COMMAND_HELP[command] ? `${command} ` : ""}--help for usage)\n`);
      process.exitCode = 2;
    } else if (e instanceof CliError || e instanceof Error && (USER_ERRORS.has(e.name) || e.name.startsWith("Wasm"))) {
      process.stderr.write(`gqa-wasm: ${e.message.split("\n")[0]}\n`);
      process.exitCode = 1;
    } else {
      throw e;
    }
  },
).finally(() => {
  // Worker threads and stdin must not keep a finished command alive.
  if (process.exitCode !== undefined) setTimeout(() => process.exit(), 50).unref();
});
