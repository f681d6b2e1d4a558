// The serving part of `npm run bench` (--only serve): the OpenAI-compatible handler driven
// in-process (Request objects, streamed responses read as a client reads them) on a synthetic
// SmolLM2-135M-shaped model.
//  - continuous batching: 1, 4, 8, 16 concurrent streams (prompt 16 tokens, 64 new tokens each,
//    greedy), aggregate tokens/s over the whole run and time to first token p50 / p99, at 1 and
//    2 threads;
//  - the prefix cache: a request after another with the same 1,000-token system prompt, time to
//    its first token against the first one's;
//  - constrained decoding: a JSON-schema token mask per step at a 49,152-token vocabulary (real
//    word pieces: the most frequent pre-tokenized pieces of the Markdown in node_modules), against
//    one decode step.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRuntime, LanguageModel, TextTokenizer, type Runtime } from "../src/index.ts";
import { median, SMOLLM2_135M_SHAPE } from "../src/demo.ts";
import { expectedTensors } from "../src/model/architecture.ts";
import { parseModelConfig } from "../src/model/config.ts";
import { byteLevelTokenizer } from "../src/model/synthetic.ts";
import { TransformerModel } from "../src/model/transformer.ts";
import { seededArray as random } from "../src/random.ts";
import { createOpenAIServer, type OpenAIServer } from "../src/serve/openai.ts";
import { compileSchema, JsonConstraint, TokenTable } from "../src/serve/json-constraint.ts";
import type { BufferDtype } from "../src/memory/wasm-buffer.ts";

export interface ServeRow {
  model: string; weights: BufferDtype; threads: number; streams: number;
  tokens: number; seconds: number; aggregateTokensPerSecond: number;
  /** aggregate tokens/s over one stream's, same thread count */
  speedup: number;
  ttftP50Ms: number; ttftP99Ms: number;
  /** forward passes (steps) the run took */
  steps: number;
}
export interface PrefixRow { systemTokens: number; coldMs: number; warmMs: number; speedup: number }
export interface ConstraintRow { vocabulary: number; steps: number; maskMeanMs: number; maskP99Ms: number; decodeStepMs: number; fractionOfStep: number }

const PROMPT = 16, NEW_TOKENS = 64;
const now = () => performance.now();
const percentile = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]!; };

function smolLM(rt: Runtime, weights: BufferDtype): LanguageModel {
  const cfg = parseModelConfig(SMOLLM2_135M_SHAPE);
  const shapes = expectedTensors(cfg);
  const elements = (n: string) => shapes.get(n)!.reduce((a, b) => a * b, 1);
  let seed = 1;
  const transformer = new TransformerModel(rt, cfg, (n) => n.endsWith("norm.weight") ? new Float32Array(elements(n)).fill(1) : random(elements(n), seed++, 0.05), weights);
  const files = byteLevelTokenizer();
  const tokenizer = new TextTokenizer(JSON.parse(files["tokenizer.json"]), JSON.parse(files["tokenizer_config.json"]));
  // No EOS: every stream runs to max_tokens.
  return new LanguageModel(transformer, tokenizer, { eosTokenIds: [], sampling: {} });
}

/** A streamed completion read as a client reads it: times of its first token and its end, tokens received. */
async function streamCompletion(api: OpenAIServer, prompt: number[], maxTokens: number): Promise<{ first: number; end: number; tokens: number }> {
  const res = await api.fetch(new Request("http://bench/v1/completions", {
    method: "POST", headers: { "content-type": "application/json" },
    // logprobs 0: every token sends an event, even one whose text is held back.
    body: JSON.stringify({ model: "bench", prompt, max_tokens: maxTokens, temperature: 0, stream: true, logprobs: 0 }),
  }));
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let first = 0, tokens = 0, buffered = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(6, cut);
      buffered = buffered.slice(cut + 2);
      if (event === "[DONE]") continue;
      const n = (JSON.parse(event) as { choices: { logprobs: { tokens: string[] } | null }[] }).choices[0]?.logprobs?.tokens.length ?? 0;
      if (n > 0 && tokens === 0) first = now();
      tokens += n;
    }
  }
  return { first, end: now(), tokens };
}

function promptOf(seed: number, length: number): number[] {
  let s = seed * 7919 + 1;
  // Ids of the byte-level tokenizer's real tokens (3..263), so that text decodes.
  return Array.from({ length }, () => 3 + ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % 261));
}

export async function serveCases(quick: boolean): Promise<{ serveRows: ServeRow[]; prefixRows: PrefixRow[]; constraintRows: ConstraintRow[] }> {
  const serveRows: ServeRow[] = [], prefixRows: PrefixRow[] = [];
  const streamCounts = quick ? [1, 4] : [1, 4, 8, 16];
  let decodeStepMs = 0;
  // Q8_0 (what people download) at 1 and 2 threads; f32 at 1 thread for contrast: its one-row
  // GEMV is bound by memory, Q8_0's by integer arithmetic, and batching saves memory traffic.
  const configs: [BufferDtype, number][] = quick ? [["q8_0", 1]] : [["q8_0", 1], ["q8_0", 2], ["f32", 1]];
  for (const [weights, threads] of configs) {
    const rt = await createRuntime({ threads });
    const model = smolLM(rt, weights);
    const api = createOpenAIServer(model, { modelId: "bench", maxSequences: 16, maxCacheTokens: 16 * 128 + 2048 });
    try {
      await streamCompletion(api, promptOf(999, PROMPT), 8); // warm-up
      let one = 0;
      for (const streams of streamCounts) {
        const rounds: { seconds: number; tokens: number; ttft: number[]; steps: number }[] = [];
        for (let round = 0; round < (quick ? 1 : 3); round++) {
          api.scheduler.clearPrefixCache();
          const steps0 = api.scheduler.counters.steps;
          const start = now();
          const results = await Promise.all(Array.from({ length: streams }, (_, i) => streamCompletion(api, promptOf(round * 100 + i, PROMPT), NEW_TOKENS)));
          const seconds = (Math.max(...results.map((r) => r.end)) - start) / 1000;
          rounds.push({ seconds, tokens: results.reduce((s, r) => s + r.tokens, 0), ttft: results.map((r) => r.first - start), steps: api.scheduler.counters.steps - steps0 });
        }
        const mid = rounds.sort((a, b) => a.tokens / a.seconds - b.tokens / b.seconds)[rounds.length >> 1]!;
        const rate = mid.tokens / mid.seconds;
        if (streams === 1) { one = rate; if (threads === 1 && weights === "q8_0") decodeStepMs = 1000 * mid.seconds / mid.tokens; }
        serveRows.push({
          model: "SmolLM2-135M", weights, threads, streams, tokens: mid.tokens, seconds: mid.seconds, aggregateTokensPerSecond: rate,
          speedup: rate / one, ttftP50Ms: median(mid.ttft), ttftP99Ms: percentile(mid.ttft, 0.99), steps: mid.steps,
        });
        console.error(`  serve: ${weights}, ${threads} thread(s), ${streams} stream(s): ${rate.toFixed(1)} tok/s aggregate`);
      }
      if (threads === 1 && weights === "q8_0") {
        // The prefix cache: the same 1,000-token system prompt, a different question.
        const system = quick ? 300 : 1000;
        const cold: number[] = [], warm: number[] = [];
        for (let round = 0; round < (quick ? 1 : 3); round++) {
          api.scheduler.clearPrefixCache();
          const sys = promptOf(5000 + round, system);
          const timed = async (user: number) => { const t = now(); await streamCompletion(api, [...sys, ...promptOf(user, 8)], 1); return now() - t; };
          cold.push(await timed(1));
          warm.push(await timed(2));
        }
        prefixRows.push({ systemTokens: system, coldMs: median(cold), warmMs: median(warm), speedup: median(cold) / median(warm) });
      }
    } finally {
      api.close();
      model.dispose();
      await rt.dispose();
    }
  }
  return { serveRows, prefixRows, constraintRows: [constraintCase(decodeStepMs, quick)] };
}

/** A 49,152-token vocabulary of real word pieces: the 256 bytes, then the most frequent GPT-2-style pre-tokenized pieces of node_modules' Markdown. */
function wordPieceVocabulary(size: number): (Uint8Array | undefined)[] {
  const counts = new Map<string, number>();
  const root = fileURLToPath(new URL("../node_modules", import.meta.url));
  const pieces = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  let files = 0;
  const walk = (dir: string, depth: number) => {
    if (depth > 4 || files > 3000) return;
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      let st;
      try { st = statSync(path); } catch { continue; }
      if (st.isDirectory()) walk(path, depth + 1);
      else if (name.endsWith(".md") && st.size < 2e6) {
        files++;
        for (const m of readFileSync(path, "utf8").matchAll(pieces)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
      }
    }
  };
  walk(root, 0);
  const utf8 = new TextEncoder();
  const vocab: (Uint8Array | undefined)[] = [undefined, undefined, undefined, ...Array.from({ length: 256 }, (_, b) => Uint8Array.of(b))];
  const seen = new Set(vocab.filter(Boolean).map((b) => String.fromCharCode(...b!)));
  for (const [piece] of [...counts].sort((a, b) => b[1] - a[1])) {
    if (vocab.length >= size) break;
    const bytes = utf8.encode(piece);
    const key = String.fromCharCode(...bytes);
    if (bytes.length > 1 && !seen.has(key)) { seen.add(key); vocab.push(bytes); }
  }
  // A small corpus: the rest are longer pieces made of frequent ones (as BPE merges make them).
  const top = vocab.slice(259, 2259);
  let s = 1;
  while (vocab.length < size) {
    const a = top[(s = (Math.imul(s, 1103515245) + 12345) >>> 0) % top.length]!, b = top[(s = (Math.imul(s, 1103515245) + 12345) >>> 0) % top.length]!;
    const joined = new Uint8Array([...a, ...b]), key = String.fromCharCode(...joined);
    if (!seen.has(key)) { seen.add(key); vocab.push(joined); }
  }
  return vocab;
}

/** Mask time per step of a schema-constrained generation (random allowed tokens), the mask applied to a row of logits as the scheduler does. */
function constraintCase(decodeStepMs: number, quick: boolean): ConstraintRow {
  const V = 49152;
  const vocab = wordPieceVocabulary(V);
  const table = new TokenTable(vocab, [2]);
  const node = compileSchema({
    type: "object", required: ["name", "age", "tags", "bio"],
    properties: { name: { type: "string" }, age: { type: "integer" }, tags: { type: "array", items: { type: "string" }, maxItems: 5 }, bio: { type: "string", maxLength: 200 }, score: { type: "number" } },
  });
  const logits = new Float32Array(V);
  const times: number[] = [];
  let s = 7;
  // The first runs warm up the JIT and are not timed.
  const warmup = 3;
  for (let run = 0; run < warmup + (quick ? 3 : 20); run++) {
    const c = new JsonConstraint(table, node);
    for (let step = 0; step < 100 && !c.finished; step++) {
      const t = now();
      const mask = c.allowed();
      for (let i = 0; i < V; i++) if (!mask[i]) logits[i] = -Infinity;
      if (run >= warmup) times.push(now() - t);
      const allowed: number[] = [];
      for (let i = 0; i < V; i++) if (mask[i]) allowed.push(i);
      // Mostly short tokens, so that strings end and the structure moves on.
      const short = allowed.filter((id) => id === 2 || vocab[id]!.length <= 2);
      const pool = (s = (Math.imul(s, 1103515245) + 12345) >>> 0) % 4 === 0 || short.length === 0 ? allowed : short;
      const id = pool[(s = (Math.imul(s, 1103515245) + 12345) >>> 0) % pool.length]!;
      c.accept(id);
    }
  }
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  return { vocabulary: V, steps: times.length, maskMeanMs: mean, maskP99Ms: percentile(times, 0.99), decodeStepMs, fractionOfStep: mean / decodeStepMs };
}
