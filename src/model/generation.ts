// Generation through the paged KV cache: chunked prefill of what the cache does not hold yet,
// then one token at a time (sampled by a Sampler) until an EOS token, a stop string, the token
// budget, the context length or an AbortSignal ends it. Streams as an async iterator of tokens
// and their text; the text is held back while it might still become a stop string or ends in
// half a UTF-8 character.
import type { KVCache, KVSequence } from "../kv/kv-cache.ts";
import { Sampler, type SamplingOptions } from "./sampling.ts";
import type { TextTokenizer } from "./tokenizer.ts";
import type { TransformerModel } from "./transformer.ts";

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default: generation_config.json's max_new_tokens, else 256). */
  maxNewTokens?: number;
  /** Tokens that end the generation (default: the model's EOS ids); [] to run to maxNewTokens. */
  stopTokens?: readonly number[];
  /** Texts that end the generation; they are not part of the returned text. */
  stopStrings?: readonly string[];
  /** Aborting ends the stream after the step being consumed (or the prefill chunk) with finishReason "aborted". */
  signal?: AbortSignal;
  /** Prompt tokens per forward call during prefill (default 128). */
  prefillChunk?: number;
}

/** One generated token, streamed once; the steps' tokens are `GenerationResult.tokens`, in order. */
export interface GenerationStep {
  token: number;
  /**
   * New text this token completes (may be "" while text is held back). The last step carries
   * whatever was still held back; the steps' texts joined are `GenerationResult.text`.
   */
  text: string;
}

export type FinishReason = "eos" | "stop-string" | "max-tokens" | "context-full" | "aborted";

export interface GenerationResult {
  /** The generated ids (the stop token included, when one ended it). */
  tokens: number[];
  /** Their text, without special tokens and without the stop string. */
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  /** Prompt tokens whose K/V were already in the cache (a chat's earlier turns). */
  reusedTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  /** Prompt tokens computed per second of prefill. */
  prefillTokensPerSecond: number;
  /** Generated tokens per second after the first. */
  decodeTokensPerSecond: number;
  /** Bytes of KV-cache pages the sequence holds at the end. */
  kvCacheBytes: number;
}

/** What one generation runs on: the model, a sequence of its cache and the tokens it holds. */
export interface GenerationContext {
  model: TransformerModel;
  cache: KVCache;
  seq: KVSequence;
  /** Ids whose K/V the sequence holds, in order; updated as tokens are computed. */
  cached: number[];
  tokenizer?: TextTokenizer;
}

const now = () => (globalThis.performance ?? Date).now();
/** Only the last row's logits, left in wasm memory (read before the next pass). */
const LAST_RESIDENT = { logits: "last", resident: true } as const;

/**
 * Runs a generation of `prompt` (the whole text so far, as ids) in `ctx`: the longest prefix
 * that the cache already holds is reused, the rest is truncated away and recomputed.
 */
export class Generation implements AsyncIterable<GenerationStep> {
  private readonly steps: Generator<GenerationStep | undefined, GenerationResult>;
  private readonly endHandlers: ((result: GenerationResult | undefined) => void)[] = [];
  private readonly ended: Promise<GenerationResult>;
  private settle!: { resolve: (r: GenerationResult) => void; reject: (e: unknown) => void };
  private started = false;

  constructor(ctx: GenerationContext, prompt: readonly number[], options: GenerateOptions & { defaultStopTokens?: readonly number[] }) {
    this.steps = run(ctx, prompt, options, prepareSettings(ctx, prompt, options));
    this.ended = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    this.ended.catch(() => { /* the error reaches whoever iterates or awaits done */ });
  }

  /** Calls `handler` once when the generation ends: with its result, or undefined after an error or an early break. @internal */
  onEnd(handler: (result: GenerationResult | undefined) => void): this {
    this.endHandlers.push(handler);
    return this;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerationStep> {
    if (this.started) throw new Error("a generation can be iterated once");
    this.started = true;
    let result: GenerationResult | undefined;
    let error: unknown = new Error("the generation's iteration was stopped before its end");
    try {
      const turns = new EventLoopTurns();
      for (;;) {
        // Macrotasks between tokens: timers, I/O and abort() get to run while we generate.
        if (turns.due()) await turns.take();
        const r = this.steps.next();
        if (r.done) { result = r.value; return; }
        if (r.value) yield r.value;
      }
    } catch (e) {
      error = e;
      throw e;
    } finally {
      for (const f of this.endHandlers) f(result);
      if (result) this.settle.resolve(result); else this.settle.reject(error);
    }
  }

  /** The result once the generation ends; consumes the stream if nobody iterates it. */
  get done(): Promise<GenerationResult> {
    if (!this.started) void (async () => { for await (const _ of this) { /* drained for the result */ } })().catch(() => {});
    return this.ended;
  }
}

interface Settings { maxNew: number; chunk: number; stopTokens: Set<number>; sampler: Sampler; text: TextStream }

/** Checks a generation's arguments up front, so that generate() itself throws on bad input. */
function prepareSettings(ctx: GenerationContext, prompt: readonly number[], options: GenerateOptions & { defaultStopTokens?: readonly number[] }): Settings {
  const maxNew = options.maxNewTokens ?? 256;
  if (!Number.isInteger(maxNew) || maxNew < 1) throw new RangeError(`generate: maxNewTokens must be a positive integer, got ${maxNew}`);
  const chunk = options.prefillChunk ?? 128;
  if (!Number.isInteger(chunk) || chunk < 1) throw new RangeError(`generate: prefillChunk must be a positive integer, got ${chunk}`);
  if (prompt.length === 0) throw new RangeError("generate: the prompt has no tokens");
  const V = ctx.model.config.vocabSize;
  for (const t of prompt) if (!Number.isInteger(t) || t < 0 || t >= V) throw new RangeError(`generate: token id ${t} is outside the vocabulary [0, ${V})`);
  const context = ctx.model.config.maxPositionEmbeddings;
  if (prompt.length >= context) {
    // A LongRoPE model runs a shorter context than it allows unless asked (its short factors).
    const s = ctx.model.config.ropeScaling, more = s?.type === "longrope" && s.maxPositionEmbeddings > context ? ` (load it with contextLength, --context, up to ${s.maxPositionEmbeddings})` : "";
    throw new RangeError(`generate: the prompt has ${prompt.length} tokens; the model's context is ${context}${more}`);
  }
  const stopStrings = (options.stopStrings ?? []).filter((s) => s.length > 0);
  if (stopStrings.length > 0 && !ctx.tokenizer) throw new RangeError("generate: stopStrings need a tokenizer (tokenizer.json in the model folder)");
  return {
    maxNew, chunk, stopTokens: new Set(options.stopTokens ?? options.defaultStopTokens ?? []),
    sampler: new Sampler(options, (x) => ctx.model.rt.argmaxResident(x)), text: new TextStream(ctx.tokenizer, stopStrings),
  };
}

function* run(ctx: GenerationContext, prompt: readonly number[], options: GenerateOptions, settings: Settings): Generator<GenerationStep | undefined, GenerationResult> {
  const { model, cache, seq, cached } = ctx;
  const { maxNew, chunk, stopTokens, sampler, text } = settings;
  const context = model.config.maxPositionEmbeddings;

  // Reuse the cached prefix; at least the last prompt token is recomputed for its logits.
  let reused = 0;
  while (reused < cached.length && reused < prompt.length - 1 && cached[reused] === prompt[reused]) reused++;
  if (reused < cached.length) { cache.truncate(seq, reused); cached.length = reused; }

  const tokens: number[] = [];
  let prefillSeconds = 0, decodeStart = 0;
  const aborted = () => options.signal?.aborted === true;
  if (aborted()) return finish("aborted");
  const prefillStart = now();
  let logits: Float32Array | undefined;
  for (let at = reused; at < prompt.length; at += chunk) {
    const part = prompt.slice(at, Math.min(prompt.length, at + chunk));
    logits = model.forward(cache, seq, part, LAST_RESIDENT); // read before the next pass
    cached.push(...part);
    if (at + chunk < prompt.length) {
      yield undefined;
      if (aborted()) return finish("aborted");
    }
  }
  prefillSeconds = (now() - prefillStart) / 1000;
  const history = [...prompt];
  const step = [0]; // a decode step's token: one array for all steps
  let reason: FinishReason = "max-tokens";
  // Each token is streamed exactly once, in order. What ends the generation is known before its
  // token is streamed, so the last step also carries the text held back until then (a possible
  // stop-string prefix, half a character); an EOS token is streamed with no text of its own. An
  // abort arrives while a step is being consumed: the stream ends there, and text still held
  // back is dropped (the result's text is what was streamed).
  for (;;) {
    const next = sampler.next(logits!, history);
    tokens.push(next);
    history.push(next);
    if (tokens.length === 1) decodeStart = now();
    let piece = "", end: FinishReason | undefined;
    if (stopTokens.has(next)) end = "eos";
    else {
      piece = text.push(next);
      if (text.stopped) end = "stop-string";
    }
    end ??= tokens.length >= maxNew ? "max-tokens" : history.length >= context ? "context-full" : undefined;
    if (end) {
      reason = end;
      yield { token: next, text: piece + text.flush() };
      break;
    }
    yield { token: next, text: piece };
    if (aborted()) { reason = "aborted"; break; }
    step[0] = next;
    logits = model.forward(cache, seq, step, LAST_RESIDENT);
    cached.push(next);
  }
  return finish(reason);

  function finish(finishReason: FinishReason): GenerationResult {
    const decodeSeconds = tokens.length > 1 ? (now() - decodeStart) / 1000 : 0;
    const computed = prompt.length - reused;
    return {
      tokens, text: finishReason === "aborted" ? text.streamed : text.text, finishReason, promptTokens: prompt.length, reusedTokens: reused,
      prefillSeconds, decodeSeconds,
      prefillTokensPerSecond: prefillSeconds ? computed / prefillSeconds : 0,
      decodeTokensPerSecond: decodeSeconds > 0 ? (tokens.length - 1) / decodeSeconds : 0,
      kvCacheBytes: sequenceBytes(cache, seq),
    };
  }
}

/** Bytes of the pages one sequence holds, over all layers. */
function sequenceBytes(cache: KVCache, seq: KVSequence): number {
  const s = cache.stats();
  return s.bytesPerTokenPerLayer.reduce((sum, perToken, layer) => sum + perToken * Math.ceil(seq.length(layer) / cache.pageSize) * cache.pageSize, 0);
}

/** Tokens a TextStream's window may hold past its settled text before it looks for a cut inside a run of U+FFFD. */
const HELD_TOKENS = 16;

/**
 * The text of the generated tokens as it becomes final: holds back a trailing partial UTF-8
 * character (U+FFFD) and any tail that could still grow into a stop string, and cuts at the first
 * stop string. Each token decodes only the ids since the text last ended in a whole character
 * (with the tokens before that point back to the previous one, so a decoder's start-of-text rules,
 * a stripped leading space, apply to both decodes alike), as Hugging Face's text-generation-inference
 * does: decoding every id again at each token cost 68 us a token at 64 tokens and 256 us at 2,000
 * (scratch/textcost.ts). Text ending in a whole character is the full decode's up to there, so the
 * text is the same; a decoder that rewrites text across that point (a cleanup of spaces before
 * punctuation) makes that token decode everything again.
 */
export class TextStream {
  private readonly ids: number[] = [];
  /** decode(ids[0, read)): it ends in a whole character, so later tokens cannot change it. */
  private settled = "";
  /** Each token decodes ids[window, ...); windowText = decode(ids[window, read)). */
  private window = 0;
  private read = 0;
  private windowText = "";
  private emitted = 0;
  text = "";
  stopped = false;
  constructor(private readonly tokenizer: TextTokenizer | undefined, private readonly stopStrings: readonly string[]) {}

  push(id: number): string {
    if (!this.tokenizer) return "";
    this.ids.push(id);
    let full = this.decoded();
    for (const s of this.stopStrings) {
      const at = full.indexOf(s, Math.max(0, this.emitted - s.length));
      if (at >= 0) { full = full.slice(0, at); this.stopped = true; }
    }
    let end = full.length;
    if (!this.stopped) {
      while (end > this.emitted && full[end - 1] === "\uFFFD") end--;
      end -= longestStopPrefix(full.slice(0, end), this.stopStrings);
    }
    this.text = full;
    return this.take(Math.max(end, this.emitted));
  }

  /** The text of every id so far (decode(ids)), from the ids since the last whole character. */
  private decoded(): string {
    const tok = this.tokenizer!, ids = this.ids;
    const recent = tok.decode(ids.slice(this.window));
    const consistent = recent.startsWith(this.windowText);
    const full = consistent ? this.settled + recent.slice(this.windowText.length) : tok.decode(ids);
    if (!full.endsWith("\uFFFD")) this.settle(ids.length, full, recent);
    else if (consistent && ids.length - this.read > HELD_TOKENS) {
      // A long run ending in U+FFFD (bytes that make no character: a model gone astray) would
      // grow the window without end: all but the last few tokens settle where the text decoded
      // in two parts there is the text decoded whole (then no character spans the cut, and any
      // unfinished one before it has already met the byte that ends it).
      const cut = ids.length - 4, before = tok.decode(ids.slice(this.window, cut));
      if (before.startsWith(this.windowText) && before + tok.decode(ids.slice(cut)) === recent) this.settle(cut, this.settled + before.slice(this.windowText.length), before);
    }
    return full;
  }

  /** ids[0, upTo) decode to `text` for good; `decodedFromWindow`: ids[window, upTo) decoded. */
  private settle(upTo: number, text: string, decodedFromWindow: string): void {
    this.windowText = this.read === this.window ? decodedFromWindow : this.tokenizer!.decode(this.ids.slice(this.read, upTo));
    this.window = this.read;
    this.read = upTo;
    this.settled = text;
  }

  /** The text handed out so far. */
  get streamed(): string { return this.text.slice(0, this.emitted); }

  /** What was held back, once the generation has ended. */
  flush(): string { return this.take(this.text.length); }

  private take(end: number): string {
    const piece = this.text.slice(this.emitted, end);
    this.emitted = Math.max(this.emitted, end);
    return piece;
  }
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
function longestStopPrefix(text: string, stops: readonly string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
      if (text.endsWith(s.slice(0, n))) { best = n; break; }
    }
  }
  return best;
}

/** The longest a loop of steps goes without a macrotask: timers, I/O and abort() wait at most this, and a step. */
const TURN_MS = 10;

/**
 * Macrotasks between a generation's tokens, at most one every TURN_MS: one took 50-100 us between
 * SmolLM2-shaped decode steps on the 2-core VM (a setImmediate round trip with the caches cold:
 * scratch/stepjs2.ts), 1-2% of a 5 ms step when taken at every token. The first is taken at once.
 * (The server's batch loop takes one every step: a request that arrives joins the next step.)
 */
export class EventLoopTurns {
  private last = -Infinity;
  /** Whether TURN_MS have passed since the last macrotask. */
  due(): boolean { return now() - this.last >= TURN_MS; }
  /** One macrotask (yieldToEventLoop). */
  async take(): Promise<void> {
    await yieldToEventLoop();
    this.last = now();
  }
}

/** One macrotask: setImmediate where it exists (Node, Bun, Deno), else a MessageChannel round trip. */
export function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (f: () => void) => void };
  if (g.setImmediate) return new Promise((resolve) => g.setImmediate!(resolve));
  if (typeof MessageChannel !== "undefined") {
    return new Promise((resolve) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => { ch.port1.close(); resolve(); };
      ch.port2.postMessage(0);
    });
  }
  return new Promise((resolve) => setTimeout(resolve, 0));
}
