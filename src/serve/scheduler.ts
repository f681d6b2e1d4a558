// Continuous batching over the paged KV cache: every sequence in flight advances in one forward
// pass per step (one pass over the weights for all of them). Decoding sequences bring one token
// each; new requests join at step boundaries and their prompts are prefilled in chunks inside the
// same steps, so running streams keep flowing. A request reserves the KV pages its prompt and
// max_tokens can need before it starts (so it never runs out half-way), waits in a bounded queue
// while they are taken, and frees them the moment it finishes or is aborted. Finished sequences
// stay as a prefix cache: a prompt that starts with tokens already cached (a shared system
// prompt, the earlier turns of a conversation) forks those pages instead of recomputing them.
import { WasmOutOfMemoryError } from "../errors.ts";
import type { KVCache, KVSequence } from "../kv/kv-cache.ts";
import { TextStream, yieldToEventLoop } from "../model/generation.ts";
import { Sampler, topKOf } from "../model/sampling.ts";
import type { TextTokenizer } from "../model/tokenizer.ts";
import type { TransformerModel } from "../model/transformer.ts";
import type { TokenConstraint } from "./json-constraint.ts";

export interface CompletionJob {
  /** The whole prompt as ids. */
  prompt: readonly number[];
  /** Most tokens to generate (the context may end it sooner). */
  maxTokens: number;
  temperature: number;
  topP: number;
  topK?: number;
  seed: number;
  /** OpenAI's penalties: subtracted from a token's logit per occurrence / once if it occurred, over the generated tokens. */
  frequencyPenalty: number;
  presencePenalty: number;
  stopTokens: ReadonlySet<number>;
  stopStrings: readonly string[];
  /** Log-probabilities of each chosen token, with this many alternatives (0: only the chosen one). */
  logprobs?: number;
  /** A token mask per step (constrained decoding); its end is an end of the generation. */
  constraint?: TokenConstraint;
  signal?: AbortSignal;
  /** Called for each generated token, in order, once. */
  onToken?: (event: TokenEvent) => void;
}

export interface TokenEvent {
  token: number;
  /** New text this token completes (held back while it could become a stop string). */
  text: string;
  logprob?: number;
  topLogprobs?: { token: number; logprob: number }[];
}

export type CompletionFinish = "stop" | "length" | "aborted";

export interface CompletionOutcome {
  tokens: number[];
  text: string;
  finishReason: CompletionFinish;
  promptTokens: number;
  /** Prompt tokens whose K/V came from the prefix cache. */
  cachedPromptTokens: number;
  /** Seconds from submission to the first token. */
  timeToFirstToken: number;
}

/** The queue is full: try again later (HTTP 503 with Retry-After). */
export class ServerBusyError extends Error {
  constructor(message: string, readonly retryAfterSeconds = 1) { super(message); this.name = "ServerBusyError"; }
}

export interface SchedulerOptions {
  /** Most sequences decoding at once (default 8). */
  maxSequences?: number;
  /** Most requests waiting for a free slot or pages (default 64). */
  maxQueue?: number;
  /** Prompt tokens computed per step over all prefilling requests (default 64): bounds how long one step stalls running streams. */
  prefillChunk?: number;
  /** Most finished sequences kept for their prefixes (default 32). */
  maxPrefixEntries?: number;
  /** Called when a finished sequence joins the prefix cache (e.g. to save its K/V elsewhere). */
  onPrefixCached?: (seq: KVSequence, tokens: readonly number[]) => void;
}

/**
 * A cached sequence. `pins`: running requests forked from it; their reservations leave out the
 * pages they share with it, so it stays (and stays counted) until they end.
 */
interface PrefixEntry { seq: KVSequence; tokens: number[]; used: number; pins: number }

interface Running {
  job: CompletionJob;
  seq: KVSequence;
  /** Ids whose K/V the sequence holds. */
  cached: number[];
  /** Prompt tokens taken from the prefix cache. */
  reused: number;
  /** Tokens to feed next (the rest of the prompt, then the last sampled token). */
  pending: number[];
  generated: number[];
  counts: Map<number, number>;
  sampler: Sampler;
  text: TextStream;
  /** Pages per layer reserved for this request. */
  pages: number;
  /** The prefix entry it forked, if any. */
  pinned?: PrefixEntry;
  submitted: number;
  firstTokenAt?: number;
  resolve: (o: CompletionOutcome) => void;
  reject: (e: unknown) => void;
}

interface Waiting { job: CompletionJob; submitted: number; resolve: (o: CompletionOutcome) => void; reject: (e: unknown) => void }

const now = () => (globalThis.performance ?? Date).now();

export class BatchScheduler {
  readonly maxSequences: number;
  readonly maxQueue: number;
  readonly prefillChunk: number;
  readonly maxPrefixEntries: number;
  /** Pages per layer the cache may hold. */
  readonly pageCapacity: number;
  private readonly queue: Waiting[] = [];
  private readonly running: Running[] = [];
  private readonly prefixes: PrefixEntry[] = [];
  private readonly onPrefixCached?: SchedulerOptions["onPrefixCached"];
  private reserved = 0;
  private clock = 0;
  private looping = false;
  private closed = false;
  /** Counters for /health and the tests. */
  readonly counters = { steps: 0, completed: 0, aborted: 0, failed: 0, prefixHits: 0 };

  constructor(private readonly model: TransformerModel, private readonly cache: KVCache, private readonly tokenizer: TextTokenizer | undefined, options: SchedulerOptions & { maxCacheTokens: number }) {
    const positive = (name: string, v: number | undefined, d: number) => {
      const x = v ?? d;
      if (!Number.isInteger(x) || x < 1) throw new RangeError(`BatchScheduler: ${name} must be a positive integer, got ${x}`);
      return x;
    };
    this.maxSequences = positive("maxSequences", options.maxSequences, 8);
    this.maxQueue = positive("maxQueue", options.maxQueue, 64);
    this.prefillChunk = positive("prefillChunk", options.prefillChunk, 64);
    this.maxPrefixEntries = options.maxPrefixEntries ?? 32;
    this.onPrefixCached = options.onPrefixCached;
    this.pageCapacity = Math.floor(positive("maxCacheTokens", options.maxCacheTokens, 1) / cache.pageSize);
  }

  /** Tokens of KV cache one request may need at most (prompt + max tokens). */
  get maxRequestTokens(): number { return (this.pageCapacity - 1) * this.cache.pageSize; }

  /** One sequence's share of the KV cache when maxSequences run at once, in tokens. */
  get sequenceShareTokens(): number { return (Math.floor(this.pageCapacity / this.maxSequences) - 1) * this.cache.pageSize; }

  /**
   * Queues a completion; the promise resolves when it ends (stop, length or aborted). A request
   * that cannot be queued is refused at once, by a throw (so that a server can still answer with
   * an error status before it starts a stream): ServerBusyError when the queue is full or the
   * scheduler closed, RangeError when it could never fit.
   */
  submit(job: CompletionJob): Promise<CompletionOutcome> {
    if (this.closed) throw new ServerBusyError("the server is shutting down");
    const need = this.pagesFor(job, 0);
    if (need > this.pageCapacity) {
      throw new RangeError(`the prompt (${job.prompt.length} tokens) and max_tokens (${job.maxTokens}) need ${need * this.cache.pageSize} tokens of KV cache; this server holds ${this.pageCapacity * this.cache.pageSize}`);
    }
    if (this.queue.length >= this.maxQueue) throw new ServerBusyError(`${this.running.length} sequences are running and ${this.queue.length} requests are waiting; try again shortly`);
    return new Promise((resolve, reject) => {
      this.queue.push({ job, submitted: now(), resolve, reject });
      this.kick();
    });
  }

  /** What the scheduler holds: for /health and the tests. */
  stats() {
    const kv = this.cache.stats();
    return {
      running: this.running.length, queued: this.queue.length,
      prefixEntries: this.prefixes.length, prefixTokens: this.prefixes.reduce((s, e) => s + e.tokens.length, 0),
      pagesUsed: kv.pagesUsed, pagesReserved: this.reserved, pageCapacityPerLayer: this.pageCapacity,
      liveSequences: kv.sequences.length, ...this.counters,
    };
  }

  /**
   * Adds a sequence holding `tokens` (e.g. restored from a KV snapshot) to the prefix cache,
   * which owns it from now on: the next prompt starting with those tokens skips their prefill.
   */
  addPrefix(seq: KVSequence, tokens: readonly number[]): void {
    if (seq.length() !== tokens.length) throw new RangeError(`addPrefix: the sequence holds ${seq.length()} tokens, ${tokens.length} ids were given`);
    this.keepPrefix(seq, [...tokens]);
  }

  /** Frees the prefix cache (every page is free once nothing runs). */
  clearPrefixCache(): void {
    for (const e of [...this.prefixes]) if (e.pins === 0) this.dropPrefix(e);
  }

  /** Refuses new work, ends what waits and runs as aborted, frees everything. */
  close(): void {
    this.closed = true;
    for (const w of this.queue.splice(0)) w.reject(new ServerBusyError("the server is shutting down"));
    for (const r of [...this.running]) this.finish(r, "aborted");
    this.clearPrefixCache();
  }

  /** Pages per layer a request can take: all its tokens' pages but the whole ones it shares with a forked prefix of `shared` tokens. */
  private pagesFor(job: CompletionJob, shared: number): number {
    const tokens = Math.min(job.prompt.length + job.maxTokens, this.model.config.maxPositionEmbeddings);
    // One more page: a forked prefix's last, shared page is copied on its first write.
    return Math.ceil(tokens / this.cache.pageSize) + 1 - Math.floor(shared / this.cache.pageSize);
  }

  /** The cached entry sharing the longest prefix with `prompt` (never its last token: its logits are needed). */
  private bestPrefix(prompt: readonly number[]): { entry: PrefixEntry; length: number } | undefined {
    let best: { entry: PrefixEntry; length: number } | undefined;
    for (const entry of this.prefixes) {
      const limit = Math.min(entry.tokens.length, prompt.length - 1);
      let n = 0;
      while (n < limit && entry.tokens[n] === prompt[n]) n++;
      if (n > (best?.length ?? 0)) best = { entry, length: n };
    }
    return best;
  }

  private fits(need: number): boolean { return this.reserved + this.prefixPages() + need <= this.pageCapacity; }

  private kick(): void {
    if (this.looping) return;
    this.looping = true;
    void this.loop().finally(() => { this.looping = false; });
  }

  private async loop(): Promise<void> {
    while (this.running.length > 0 || this.queue.length > 0) {
      this.admit();
      for (const r of [...this.running]) if (r.job.signal?.aborted) this.finish(r, "aborted");
      if (this.running.length > 0) this.step();
      // A macrotask between steps: new requests, aborts and socket writes get to run.
      await yieldToEventLoop();
    }
  }

  /** Moves waiting requests into the batch while slots and pages allow, oldest first. */
  private admit(): void {
    while (this.queue.length > 0 && this.running.length < this.maxSequences) {
      const w = this.queue[0]!;
      if (w.job.signal?.aborted) { this.queue.shift(); w.resolve(emptyOutcome(w, "aborted")); this.counters.aborted++; continue; }
      let match = this.bestPrefix(w.job.prompt);
      let need = this.pagesFor(w.job, match?.length ?? 0);
      // Make room from the least recently used entries, keeping the one this request forks...
      while (!this.fits(need) && this.evictPrefix(match?.entry)) { /* evicted one */ }
      // ... and if that is not enough, that one too (the prompt is then computed in full).
      if (!this.fits(need) && match && match.entry.pins === 0) {
        this.dropPrefix(match.entry);
        match = undefined;
        need = this.pagesFor(w.job, 0);
        while (!this.fits(need) && this.evictPrefix()) { /* evicted one */ }
      }
      if (!this.fits(need)) return;
      this.queue.shift();
      this.start(w, need, match);
    }
  }

  private start(w: Waiting, pages: number, match: { entry: PrefixEntry; length: number } | undefined): void {
    const { job } = w;
    const prompt = job.prompt;
    const reused = match?.length ?? 0;
    let seq: KVSequence;
    if (match) {
      seq = this.cache.fork(match.entry.seq);
      this.cache.truncate(seq, reused);
      match.entry.used = ++this.clock;
      match.entry.pins++;
      this.counters.prefixHits++;
    } else seq = this.cache.createSequence();
    this.reserved += pages;
    this.running.push({
      job, seq, cached: prompt.slice(0, reused), reused, pending: prompt.slice(reused),
      generated: [], counts: new Map(), pages, pinned: match?.entry, submitted: w.submitted,
      sampler: new Sampler({ temperature: job.temperature, topP: job.topP, topK: job.topK, seed: job.seed }),
      text: new TextStream(this.tokenizer, job.stopStrings), resolve: w.resolve, reject: w.reject,
    });
  }

  /** One forward pass for every running sequence: a token each for decoders, prompt chunks for the rest. */
  private step(): void {
    let budget = this.prefillChunk;
    const batch: { r: Running; tokens: number[] }[] = [];
    for (const r of this.running) {
      const decoding = r.generated.length > 0;
      if (decoding) { batch.push({ r, tokens: r.pending }); continue; }
      if (budget === 0) continue;
      const take = Math.min(budget, r.pending.length);
      budget -= take;
      batch.push({ r, tokens: r.pending.slice(0, take) });
    }
    if (batch.length === 0) return;
    this.counters.steps++;
    const items = batch.map(({ r, tokens }) => ({ seq: r.seq, tokens }));
    let logits: Float32Array;
    try {
      logits = this.model.forwardBatch(this.cache, items, { logits: "last", resident: true });
    } catch (e) {
      // The pass was rolled back for every sequence. Out of memory, the prefix cache goes first
      // (its pages back to the runtime) and the pass is tried again once; else they all end with
      // the error, and the memory their pages held goes back to the runtime for the next requests.
      let error = e;
      if (e instanceof WasmOutOfMemoryError && this.prefixes.some((p) => p.pins === 0)) {
        this.clearPrefixCache();
        this.cache.releaseFreePages();
        try {
          logits = this.model.forwardBatch(this.cache, items, { logits: "last", resident: true });
          error = undefined;
        } catch (again) { error = again; }
      }
      if (error !== undefined) {
        for (const { r } of batch) this.fail(r, error);
        this.cache.releaseFreePages();
        return;
      }
    }
    // The logits are a view of wasm memory: each row that picks a token is copied out before
    // anything else runs (advance may end a request, and what that frees or takes could grow memory).
    const V = this.model.config.vocabSize;
    const rows = batch.map(({ r, tokens }, i) => (r.pending.length === tokens.length ? logits.slice(i * V, (i + 1) * V) : undefined));
    batch.forEach(({ r, tokens }, i) => {
      r.cached.push(...tokens);
      r.pending = r.pending.slice(tokens.length);
      if (r.pending.length > 0) return; // prefill goes on next step
      try {
        this.advance(r, rows[i]!);
      } catch (e) {
        this.fail(r, e);
      }
    });
  }

  /** Picks the next token of a sequence whose inputs are all computed, streams it, decides whether it ends. `z`: its logits (a copy, changed here). */
  private advance(r: Running, z: Float32Array): void {
    const { job } = r;
    if (job.frequencyPenalty !== 0 || job.presencePenalty !== 0) {
      for (const [t, n] of r.counts) z[t]! -= n * job.frequencyPenalty + job.presencePenalty;
    }
    const constraint = job.constraint;
    if (constraint) {
      const allowed = constraint.allowed();
      for (let t = 0; t < z.length; t++) if (!allowed[t]) z[t] = -Infinity;
    }
    const token = r.sampler.next(z);
    if (!Number.isFinite(z[token]!)) throw new Error("constrained decoding: no token can continue the output");
    r.firstTokenAt ??= now();
    r.generated.push(token);
    r.counts.set(token, (r.counts.get(token) ?? 0) + 1);
    const event: TokenEvent = { token, text: "" };
    if (job.logprobs !== undefined) Object.assign(event, tokenLogprobs(z, token, job.logprobs));
    let end: CompletionFinish | undefined;
    if (job.stopTokens.has(token)) end = "stop";
    else {
      event.text = r.text.push(token);
      if (r.text.stopped) end = "stop";
      else if (constraint) {
        constraint.accept(token);
        if (constraint.finished) end = "stop";
      }
    }
    if (!end && r.generated.length >= job.maxTokens) end = "length";
    if (!end && r.cached.length + 1 >= this.model.config.maxPositionEmbeddings) end = "length";
    if (end) event.text += r.text.flush();
    job.onToken?.(event);
    if (end) this.finish(r, end);
    else r.pending = [token];
  }

  private finish(r: Running, reason: CompletionFinish): void {
    this.release(r);
    if (reason === "aborted") {
      this.cache.free(r.seq);
      this.counters.aborted++;
    } else {
      this.keepPrefix(r.seq, r.cached);
      this.counters.completed++;
    }
    r.resolve({
      tokens: r.generated, text: reason === "aborted" ? r.text.streamed : r.text.text, finishReason: reason,
      promptTokens: r.job.prompt.length, cachedPromptTokens: r.reused,
      timeToFirstToken: r.firstTokenAt === undefined ? 0 : (r.firstTokenAt - r.submitted) / 1000,
    });
  }

  private fail(r: Running, e: unknown): void {
    if (!this.running.includes(r)) return;
    this.release(r);
    if (!r.seq.isFreed) this.cache.free(r.seq);
    this.counters.failed++;
    r.reject(e);
  }

  private release(r: Running): void {
    this.running.splice(this.running.indexOf(r), 1);
    this.reserved -= r.pages;
    if (r.pinned) r.pinned.pins--;
  }

  /** A finished sequence's tokens stay cached; an entry that is a prefix of it is dropped. */
  private keepPrefix(seq: KVSequence, tokens: number[]): void {
    if (this.maxPrefixEntries === 0 || tokens.length === 0) { this.cache.free(seq); return; }
    // Entries this one extends are of no more use, unless running requests still lean on them.
    for (const e of [...this.prefixes]) {
      if (e.pins === 0 && e.tokens.length <= tokens.length && e.tokens.every((t, j) => tokens[j] === t)) this.dropPrefix(e);
    }
    this.prefixes.push({ seq, tokens: [...tokens], used: ++this.clock, pins: 0 });
    while (this.prefixes.length > this.maxPrefixEntries && this.evictPrefix()) { /* evicted one */ }
    if (!seq.isFreed) this.onPrefixCached?.(seq, tokens);
  }

  /** Frees the least recently used entry that no running request forked (other than `keep`); false if there is none. */
  private evictPrefix(keep?: PrefixEntry): boolean {
    let lru: PrefixEntry | undefined;
    for (const e of this.prefixes) if (e.pins === 0 && e !== keep && (!lru || e.used < lru.used)) lru = e;
    if (!lru) return false;
    this.dropPrefix(lru);
    return true;
  }

  private dropPrefix(e: PrefixEntry): void {
    this.prefixes.splice(this.prefixes.indexOf(e), 1);
    this.cache.free(e.seq);
  }

  /** Pages per layer the prefix cache holds (counted in full even where running sequences share them). */
  private prefixPages(): number {
    return this.prefixes.reduce((s, e) => s + Math.ceil(e.tokens.length / this.cache.pageSize), 0);
  }
}

function emptyOutcome(w: Waiting, finishReason: CompletionFinish): CompletionOutcome {
  return { tokens: [], text: "", finishReason, promptTokens: w.job.prompt.length, cachedPromptTokens: 0, timeToFirstToken: 0 };
}

/** log-softmax of the chosen token and of the `top` most likely ones, over the logits the sampler saw. */
function tokenLogprobs(z: Float32Array, token: number, top: number): Pick<TokenEvent, "logprob" | "topLogprobs"> {
  let max = -Infinity;
  for (let t = 0; t < z.length; t++) if (z[t]! > max) max = z[t]!;
  let sum = 0;
  for (let t = 0; t < z.length; t++) sum += Math.exp(z[t]! - max);
  const logZ = max + Math.log(sum);
  return {
    logprob: z[token]! - logZ,
    topLogprobs: top > 0 ? topKOf(z, Math.min(top, z.length)).map((t) => ({ token: t, logprob: z[t]! - logZ })) : [],
  };
}
