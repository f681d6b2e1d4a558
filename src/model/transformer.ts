// The forward pass of a Llama-family decoder (llama, qwen2, qwen3, smollm3, mistral, deci, gemma2, gemma3_text, granite, phi3), top to bottom like llama2.c's run.c:
// embedding (Gemma, Granite: scaled), then per layer RMSNorm -> q/k/v projections -> (Qwen3, Gemma 3: RMSNorm of each head of q and k) -> RoPE
// (not in SmolLM3's NoPE layers; Gemma 3's sliding layers with their own theta; Phi-4-mini's on part of each head) -> K/V written into the paged cache -> grouped
// attention over the cache (Mistral's and Gemma's sliding window; Gemma 2's soft-capped scores) -> o projection + residual (Gemma: the
// output RMS-normalised first; Granite: scaled) -> RMSNorm -> SwiGLU (Gemma: GeGLU) MLP + residual (likewise); final RMSNorm and the
// LM head (Gemma 2: soft-capped logits; Granite: scaled). The whole pass is one kernel program (a Program): every op a wasm kernel on buffers
// allocated once (RunState), phases separated by barriers, so with threads it is one hand-off to
// the worker pool instead of one per op, and the activations never come back to JavaScript. A
// decode step runs the program built for the last step of its shape again, with only its
// positions, lengths and block tables rewritten (buildStep, refresh).
import { createKVCache, type BlockTable, type KVCache, type KVCacheOptions, type KVSequence, type PagedAttentionCalls } from "../kv/kv-cache.ts";
import { bufferBytes, WasmBuffer, type BufferDtype } from "../memory/wasm-buffer.ts";
import type { Program } from "../runtime/program.ts";
import { EMBED_KERNELS } from "../runtime/kernel-exports.ts";
import type { Runtime } from "../runtime/runtime.ts";
import type { Job } from "../threads/pool.ts";
import { isQuantDtype, unfitRows, weightDtypeOf, type WeightChoice } from "../formats/quant.ts";
import { ARCHITECTURES, modelTensors, type GlobalRole, type LayerRole } from "./architecture.ts";
import { ModelConfigError, type ModelConfig } from "./config.ts";
import { ropeAttentionFactor, ropeInverseFrequencies, ropeTable } from "./rope.ts";

/**
 * The weights of one layer, resident in wasm memory, by role (architecture.ts). q, k and v
 * (and their biases), and gate and up, are views of one buffer each when they share a dtype
 * (`qkv`, `qkvBias`, `gateUp`: concatenated at load), so a one-row pass projects each group in
 * one call (one stream of weights, one claim range for the threads).
 */
type OptionalRole = "qBias" | "kBias" | "vBias" | "oBias" | "qNorm" | "kNorm" | "attnOutNorm" | "ffnOutNorm" | "qkv" | "gateUp";
type LayerWeights = Record<Exclude<LayerRole, OptionalRole>, WasmBuffer> & Partial<Record<OptionalRole | "qkvBias", WasmBuffer>>;

/** A forward pass's activations in wasm memory, for up to `rows` rows and `items` sequences. */
interface RunState {
  rows: number; items: number;
  /** The pass's token ids (i32), one per row: the program looks their embedding rows up itself. */
  ids: WasmBuffer;
  /** The residual stream [rows, hidden], and its normalised copy. */
  x: WasmBuffer; h: WasmBuffer;
  /** q, k and v of a pass of n rows, one after the other ([n, q], [n, kv], [n, kv]): of one row, the output of one fused call. */
  qkv: WasmBuffer; attn: WasmBuffer;
  /** gate then up ([n, ff] each), likewise. */
  gateUp: WasmBuffer;
  /** Each sequence's last row, normalised, and its logits. */
  last: WasmBuffer; logits: WasmBuffer;
  /** Each thread's scratch for the linear kernels (16-bit weight panels, inputs a call quantizes itself): linearScratchBytes per thread. */
  linearScratch: WasmBuffer; linearScratchBytes: number;
  /** Each thread's OwnInput: OWN_INPUT_ROWS rows of the widest input (ownFloats f32 each), and their quantized copy (ownQaBytes each). */
  own: WasmBuffer; ownFloats: number; ownQa: WasmBuffer; ownQaBytes: number;
  /** The input of the linear layers on quantized weights, quantized once for all threads and calls. */
  qa: WasmBuffer;
}

/**
 * A decode step's program kept for the next step of its shape (threads, token counts per item)
 * on `cache`, with its view of the logits (remade when memory grows).
 */
interface KeptStep { threads: number; counts: readonly number[]; cache: KVCache; program: Program; refresh(items: readonly BatchItem[], starts: readonly number[]): boolean; logits?: Float32Array }
/** Kept decode programs: a server alternates a few shapes (batch sizes). */
const KEPT_STEPS = 4;
/**
 * Rows up to which a pass on several threads has every thread compute a linear call's input
 * itself (RMSNorm, SwiGLU; OwnInput) rather than the threads each a part before a barrier.
 */
const OWN_INPUT_ROWS = 4;

/**
 * Each thread's own copy of the input of the linear calls that follow (thread t: f32[t], and
 * quantized at qa[t] where a weight reads it so): in a pass of a few rows (decode) every thread
 * normalises (RMSNorm) or activates (SwiGLU) all of them itself, the same values, and goes on to
 * its share of the calls with no barrier between: a row is a microsecond or less of work, a
 * barrier 2-5 us, and its thread split left one thread idle on one row.
 */
interface OwnInput { f32: readonly number[]; qa: readonly number[] }

export interface ForwardOptions {
  /** "all" (default): every row's logits; "last": each item's last row's. */
  logits?: "all" | "last";
  /** With "last": a view of the logits in wasm memory instead of a copy (see forward). */
  resident?: boolean;
}

/** One sequence's share of a batched forward pass: the tokens to append after what it holds. */
export interface BatchItem { seq: KVSequence; tokens: readonly number[] }

const DEFAULT_FORWARD: ForwardOptions = {};
const NO_TOKENS: readonly number[] = [];
/** Numbers forward passes, so a batch holding a sequence twice is found without a Set. */
let passCount = 0;

export class TransformerModel {
  private readonly layers: LayerWeights[];
  private readonly finalNorm: WasmBuffer;
  /** [vocab, hidden] in the weight dtype; with tied embeddings also the LM head. */
  private readonly embedding: WasmBuffer;
  private readonly lmHead: WasmBuffer;
  /** RoPE tables for positions [0, positions): [0] every layer's, [1] the sliding layers' where they have their own theta (Gemma 3). */
  private rope: { tables: { cos: WasmBuffer; sin: WasmBuffer }[]; positions: number };
  private state?: RunState;
  /** Programs of recent decode steps, by shape, the most recently used first (see forwardRows). */
  private steps: KeptStep[] = [];
  private readonly owned: WasmBuffer[] = [];
  /** forward()'s batch of one and forwardBatch()'s starts, reused: a decode step allocates nothing. */
  private readonly single: [BatchItem] = [{ seq: undefined!, tokens: NO_TOKENS }];
  private readonly starts: number[] = [];

  /**
   * Uploads the weights: `tensor(name, dtype)` gives each Hugging Face tensor as float32, or as
   * the raw bits of `dtype` when it is 16-bit and the checkpoint stores it so (no conversion),
   * or as a WasmBuffer already filled (a GGUF tensor streamed into wasm memory), taken over as it
   * is. Other linear weights and embeddings are stored as `weightDtype` (16-bit stays 16-bit in
   * wasm memory; q8_0 / q4_0 / q5_0 / q4_k / q6_k are quantized here, or per tensor for
   * "q4_k_m" / "q5_k_m": weightDtypeOf), norms and biases as f32. Float32 tensors are Hugging
   * Face's values (Gemma's norm weights w, to which 1 is added here); a buffer is taken in the
   * runtime's form (GGUF's: Gemma's norms already 1 + w).
   */
  constructor(readonly rt: Runtime, readonly config: ModelConfig, tensor: (name: string, dtype: BufferDtype) => Float32Array | Uint16Array | WasmBuffer, readonly weightDtype: WeightChoice = "f32") {
    // Uploaded weights are tracked as they go, so a failure part-way (out of memory, a bad
    // tensor) frees them and leaves the runtime as it was.
    try {
      const f32 = (name: string, offset = 0) => {
        const data = tensor(name, "f32");
        if (data instanceof WasmBuffer && data.dtype === "f32") return this.own(data);
        if (!(data instanceof Float32Array)) throw new TypeError(`TransformerModel: ${name} must come as float32`);
        return this.own(rt.upload(offset === 0 ? data : data.map((v) => v + offset), "f32"));
      };
      const normOffset = ARCHITECTURES[config.modelType].normWeightOffset ?? 0;
      // Linear weights [out, in] and the embedding [vocab, hidden]; quantized ones a row of
      // `inFeatures` at a time (blocks never span rows).
      const weight = (name: string, inFeatures: number) => {
        const dtype = weightDtypeOf(weightDtype, name, inFeatures, config);
        const data = tensor(name, isQuantDtype(dtype) ? "f32" : dtype);
        // Already resident (a GGUF tensor streamed into wasm memory): taken over as it is.
        if (data instanceof WasmBuffer) return this.own(data);
        const unfit = isQuantDtype(dtype) ? unfitRows(dtype, inFeatures, name) : undefined;
        if (unfit) throw new ModelConfigError(unfit);
        return this.own(isQuantDtype(dtype) ? rt.upload(data as Float32Array, dtype, inFeatures) : rt.upload(data, dtype));
      };
      // The architecture's tensors, by role: norms and biases f32, the rest in the weight dtype.
      const layers: Partial<Record<LayerRole, WasmBuffer>>[] = config.kvHeadsPerLayer.map(() => ({}));
      const globals: Partial<Record<GlobalRole, WasmBuffer>> = {};
      for (const t of modelTensors(config)) {
        const buffer = t.kind === "norm" ? f32(t.name, normOffset) : t.kind === "bias" ? f32(t.name) : weight(t.name, t.inFeatures!);
        if (t.layer === undefined) globals[t.role as GlobalRole] = buffer;
        else layers[t.layer]![t.role as LayerRole] = buffer;
      }
      this.layers = layers.map((L, l) => this.fuseLayer(L as LayerWeights, l));
      this.finalNorm = globals.finalNorm!;
      this.embedding = globals.embedding!;
      this.lmHead = globals.lmHead ?? this.embedding;
      this.rope = this.ropeTables(Math.min(config.maxPositionEmbeddings, 256));
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /** A paged KV cache shaped for this model (one layer entry per decoder layer). */
  createCache(options: Omit<KVCacheOptions, "layers"> = {}): KVCache {
    return createKVCache(this.rt, { ...options, layers: this.config.kvHeadsPerLayer.map((numKvHeads) => ({ numKvHeads, headDim: this.config.headDim })) });
  }

  /**
   * Runs `tokens` (appended after what `seq` holds) through the model, appending their K/V to
   * the cache, and returns the logits [tokens.length, vocab], or with `logits: "last"` only
   * those of the last token [vocab] (all a generation needs; the LM head is the largest matmul).
   * With `resident: true` (and "last") the logits are not copied out of wasm memory: the view
   * is valid until the next forward pass of this model, or until wasm memory grows (any
   * allocation may grow it), so read or copy it at once. On an error the sequence is rolled
   * back to what it held before.
   */
  forward(cache: KVCache, seq: KVSequence, tokens: readonly number[], options: ForwardOptions = DEFAULT_FORWARD): Float32Array {
    const item = this.single[0];
    item.seq = seq; item.tokens = tokens;
    try {
      return this.forwardBatch(cache, this.single, options);
    } finally {
      item.seq = undefined!; item.tokens = NO_TOKENS; // nothing of the caller's kept
    }
  }

  /**
   * One pass over the weights for several sequences at once (continuous batching): each item's
   * tokens are appended after what its sequence holds, the linear layers run on all their rows
   * together, RoPE and attention per sequence at its own positions. Returns the logits of every
   * row [rows, vocab] in item order, or with `logits: "last"` each item's last row [items, vocab]
   * (with `resident: true` a view of wasm memory, as forward() says).
   * On an error every sequence is rolled back to what it held before.
   */
  forwardBatch(cache: KVCache, items: readonly BatchItem[], options: ForwardOptions = DEFAULT_FORWARD): Float32Array {
    const starts = this.starts;
    starts.length = items.length;
    for (let i = 0; i < items.length; i++) starts[i] = items[i]!.seq.length(0);
    const logits = options.logits ?? "all";
    if (options.resident && logits !== "last") throw new RangeError("forward: resident logits are the last rows' (logits: \"last\")");
    try {
      return this.forwardRows(cache, items, starts, logits, options.resident ?? false);
    } catch (e) {
      items.forEach(({ seq }, i) => {
        if (!seq.isFreed && seq.lengths.some((n) => n > starts[i]!)) cache.truncate(seq, starts[i]!);
      });
      throw e;
    }
  }

  private forwardRows(cache: KVCache, items: readonly BatchItem[], starts: readonly number[], logitRows: "all" | "last", resident: boolean): Float32Array {
    const c = this.config, rt = this.rt;
    const { vocabSize: V } = c;
    if (items.length === 0) throw new RangeError("forward: no sequences");
    const pass = ++passCount;
    let n = 0;
    for (let i = 0; i < items.length; i++) {
      const { seq, tokens } = items[i]!;
      if (seq.lastPass === pass) throw new RangeError("forward: a sequence appears twice in one batch");
      seq.lastPass = pass;
      if (tokens.length === 0) throw new RangeError("forward: no tokens");
      for (let j = 0; j < tokens.length; j++) {
        const t = tokens[j]!;
        if (!Number.isInteger(t) || t < 0 || t >= V) throw new RangeError(`forward: token id ${t} is outside the vocabulary [0, ${V})`);
      }
      const end = starts[i]! + tokens.length;
      if (end > c.maxPositionEmbeddings) throw new RangeError(`forward: position ${end} exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
      if (end > this.rope.positions) this.growRope(end);
      n += tokens.length;
    }
    // The linear kernels take any row count (a row tail is the kernel's job): no padding.
    const state = this.runState(n, items.length);
    // The token ids, item after item (the program's first calls put their embeddings into the residual stream).
    const ids = rt.memory.i32;
    let at = state.ids.ptr >>> 2;
    for (let i = 0; i < items.length; i++) {
      const tokens = items[i]!.tokens;
      for (let j = 0; j < tokens.length; j++) ids[at++] = tokens[j]!;
    }
    // Pages for the new tokens' K/V in every layer (rolled back by forwardBatch on an error).
    for (let i = 0; i < items.length; i++) cache.reserveLayers(items[i]!.seq, this.layers.length, items[i]!.tokens.length);
    if (logitRows === "all") {
      // A pass of its own logits [rows, vocab]: built, run once, freed.
      const logits = rt.alloc(n * V);
      try {
        const { program } = this.build(cache, items, starts, state, { logits, lastOnly: false });
        try { rt.runKept(program); } finally { program.dispose(); }
        return logits.toFloat32Array();
      } finally { logits.free(); }
    }
    // A decode step runs the program of the last step of its shape again, pointed at this step's
    // sequences and positions (a few stores); a new shape, or one the program no longer fits
    // (a block table outgrown, attention split another way), builds one. The programs used most
    // recently are kept.
    let step = this.keptStep(cache, items);
    if (step && !step.refresh(items, starts)) { this.dropStep(step); step = undefined; }
    if (!step) {
      step = { threads: rt.threads, counts: items.map(({ tokens }) => tokens.length), cache, ...this.build(cache, items, starts, state, { logits: state.logits.subarray(0, items.length * V), lastOnly: true }) };
      this.steps.unshift(step);
      if (this.steps.length > KEPT_STEPS) this.dropStep(this.steps[KEPT_STEPS]!);
    }
    rt.runKept(step.program);
    const memory = rt.memory.f32;
    if (step.logits?.buffer !== memory.buffer) step.logits = memory.subarray(state.logits.ptr >>> 2, (state.logits.ptr >>> 2) + items.length * V);
    return resident ? step.logits : step.logits.slice();
  }

  /** A new program for a pass, pointed at it (buildStep); its memory freed if that fails. */
  private build(cache: KVCache, items: readonly BatchItem[], starts: readonly number[], state: RunState, outputs: { logits: WasmBuffer; lastOnly: boolean }): { program: Program; refresh: KeptStep["refresh"] } {
    const p = this.rt.keepProgram();
    try {
      const step = this.buildStep(p, cache, items, starts, state, outputs);
      if (!step.refresh(items, starts)) throw new Error("forward: a program no longer fits the step it was built for");
      return { program: p, refresh: step.refresh };
    } catch (e) { p.dispose(); throw e; }
  }

  /**
   * Builds a forward pass of `items` (their token counts) into p; its `refresh(items, starts)`
   * points the calls at the sequences and positions of a step (block tables, RoPE positions,
   * K/V write positions, attention lengths) before each run, or returns false when the program
   * no longer fits them. The logits of every row [rows, vocab], or with `lastOnly` each item's
   * last row's [items, vocab].
   */
  private buildStep(p: Program, cache: KVCache, items: readonly BatchItem[], starts: readonly number[], state: RunState, { logits, lastOnly }: { logits: WasmBuffer; lastOnly: boolean }): { refresh(items: readonly BatchItem[], starts: readonly number[]): boolean } {
    const c = this.config, rt = this.rt;
    const { hiddenSize: hd, numHeads: H, headDim: D, intermediateSize: ff, vocabSize: V, rmsNormEps: eps } = c;
    const n = items.reduce((sum, { tokens }) => sum + tokens.length, 0);
    const T = p.threads, f32 = 4;
    // Row ranges of the items in the batch.
    const firstRow: number[] = [];
    items.reduce((r, { tokens }) => { firstRow.push(r); return r + tokens.length; }, 0);
    const rowsOf = (i: number) => items[i]!.tokens.length;
    // This pass's rows of the activations.
    const s = {
      x: state.x.subarray(0, n * hd), h: state.h.subarray(0, n * hd), q: state.qkv.subarray(0, n * H * D), attn: state.attn.subarray(0, n * H * D),
      gate: state.gateUp.subarray(0, n * ff), up: state.gateUp.subarray(n * ff, 2 * n * ff), last: state.last.subarray(0, items.length * hd),
    };
    const rowPtr = (buf: WasmBuffer, r: number, width: number) => buf.ptr + r * width * f32;
    const view = (buf: WasmBuffer, i: number, width: number) => buf.subarray(firstRow[i]! * width, (firstRow[i]! + rowsOf(i)) * width);
    /** Rows [0, count) cut into up to T ranges (a thread each), the first thread taking any remainder. */
    const rowRanges = (count: number, min = 1) => {
      const parts = Math.max(1, Math.min(T, Math.floor(count / min)));
      return Array.from({ length: parts }, (_, t) => [Math.floor((t * count) / parts), Math.floor(((t + 1) * count) / parts)] as const);
    };
    // Linear layers on quantized weights read their input quantized to 8 bits per 32-block
    // (as llama.cpp's vec_dot does), below the rows from which their kernel computes in f32 on
    // dequantized weight panels (rt.readsQuantizedX; a prefill chunk): quantized once for all
    // their calls and threads into state.qa by the threads that made the input (after RMSNorm,
    // after SwiGLU), or else in a phase of its own when the input has 4 rows or more; a decode
    // step's o projection and LM head quantize their few hundred inputs in each call instead (a
    // phase costs a barrier). On several threads, a pass of a few rows gives every thread its own
    // copy of the input after RMSNorm and SwiGLU instead (OwnInput).
    // Each returns where the quantized input is, or undefined (the calls quantize it).
    const nb = (K: number) => Math.ceil(K / 32);
    const readsQuantized = (weights: readonly WasmBuffer[], rows: number) => weights.some((w) => rt.readsQuantizedX(w.dtype, rows));
    // Gemma, Granite: an attention or MLP output (in h) yet to be added into x, RMS-normalised by a
    // weight (Gemma) or scaled (Granite), by the threads of the RMSNorm that reads x next, each its
    // own rows (no barrier between).
    let pendingAdd: { norm: WasmBuffer } | { scale: number } | undefined;
    const addPending = (t: number, r0: number, r1: number) => {
      if (!pendingAdd) return;
      if ("norm" in pendingAdd) p.add(t, { kernel: "rmsnorm_add_f32", args: [s.h.ptr, pendingAdd.norm.ptr, s.x.ptr, hd, eps, r0, r1] });
      else p.add(t, { kernel: "add_scaled_f32", args: [rowPtr(s.h, r0, hd), rowPtr(s.x, r0, hd), (r1 - r0) * hd, pendingAdd.scale] });
    };
    /**
     * The attention or MLP output x·Wᵀ (+ bias) into the residual stream: added by the linear
     * kernel itself (fused), or, normalised first by `outNorm` (Gemma) or scaled (Granite), into h
     * for the next RMSNorm's threads to add.
     */
    const addToResidual = (x: WasmBuffer, weight: WasmBuffer, inFeatures: number, qa: number | OwnInput | undefined, outNorm: WasmBuffer | undefined, bias?: WasmBuffer) => {
      const pending = outNorm ? { norm: outNorm } : c.residualScale !== undefined ? { scale: c.residualScale } : undefined;
      if (pending) { linear(x, weight, s.h, inFeatures, hd, qa, { bias }); pendingAdd = pending; }
      else linear(x, weight, s.x, inFeatures, hd, qa, { accumulate: true, bias });
    };
    // A pass of a few rows on several threads: each thread's copies (OwnInput), reused by every
    // RMSNorm and SwiGLU of the pass (but for an RMSNorm whose threads first add a pending output
    // into x: Gemma, Granite).
    const own: OwnInput | undefined = T > 1 && n <= OWN_INPUT_ROWS ? {
      f32: Array.from({ length: T }, (_, t) => state.own.ptr + t * state.ownFloats * f32),
      qa: Array.from({ length: T }, (_, t) => state.ownQa.ptr + t * state.ownQaBytes),
    } : undefined;
    /** Each thread's own `rows` rows of `K` at own.f32[t] quantized into own.qa[t]. */
    const quantizeOwn = (own: OwnInput, rows: number, K: number) => {
      for (let t = 0; t < T; t++) p.add(t, rt.quantizeJob(own.f32[t]!, rows, K, own.qa[t]!, 0, rows * nb(K)));
    };
    /**
     * RMSNorm of x into h, each thread quantizing the rows it normalised when a weight read next
     * is quantized; or (`toOwn`) into each thread's OwnInput, for linear calls that take it.
     */
    const rmsnorm = (w: WasmBuffer, next: readonly WasmBuffer[], toOwn = true) => {
      const quantize = readsQuantized(next, n);
      if (own && toOwn && !pendingAdd) {
        for (let t = 0; t < T; t++) p.add(t, { kernel: "rmsnorm_f32", args: [s.x.ptr, w.ptr, own.f32[t]!, hd, eps, 0, n] });
        if (quantize) quantizeOwn(own, n, hd);
        return own;
      }
      rowRanges(n).forEach(([r0, r1], t) => {
        addPending(t, r0, r1);
        p.add(t, { kernel: "rmsnorm_f32", args: [s.x.ptr, w.ptr, s.h.ptr, hd, eps, r0, r1] });
        if (quantize) p.add(t, rt.quantizeJob(s.h.ptr, n, hd, state.qa.ptr, r0 * nb(hd), r1 * nb(hd)));
      });
      p.barrier();
      pendingAdd = undefined;
      return quantize ? state.qa.ptr : undefined;
    };
    /** Quantizes x [rows, K] for `next` in a phase of its own when worth it. */
    const quantizeFor = (x: WasmBuffer, rows: number, K: number, next: WasmBuffer) => {
      if (!readsQuantized([next], rows) || rows < 4) return undefined;
      p.addPerThread(rt.quantizeJobs(x.ptr, rows, K, state.qa.ptr, T));
      p.barrier();
      return state.qa.ptr;
    };
    const slot = state.linearScratchBytes;
    /** x·Wᵀ into out; x read quantized at qa (where the weight reads it so), or each thread's own copy (OwnInput; x gives the shape). */
    const linear = (x: WasmBuffer, weight: WasmBuffer, out: WasmBuffer, inFeatures: number, outFeatures: number, qa: number | OwnInput | undefined, extra: { bias?: WasmBuffer; accumulate?: boolean } = {}) => {
      const own = typeof qa === "object" ? qa : undefined, readsQ = rt.readsQuantizedX(weight.dtype, x.length / inFeatures);
      const quantizedX = readsQ ? (own ? own.qa[0] : qa as number | undefined) : undefined;
      const jobs = rt.linearThreadJobs({ x, weight, out, inFeatures, outFeatures, ...extra }, T, quantizedX, (t, bytes) => {
        if (bytes > slot) throw new RangeError(`forward: a linear call needs ${bytes} bytes of scratch; the RunState holds ${slot}`);
        return state.linearScratch.ptr + t * slot;
      });
      if (own) jobs.forEach((job, t) => { job.args[0] = (readsQ ? own.qa : own.f32)[t]!; });
      p.addPerThread(jobs);
    };
    // What a step changes: each item's block table per layer, the positions its RoPE and K/V
    // write calls start from, and the attention calls' lengths.
    const tables = items.map(() => [] as BlockTable[]);
    const positioned = items.map(() => [] as number[]); // [variable, offset from the item's first position] pairs
    const attention: PagedAttentionCalls[] = [];
    // The rows' embeddings into the residual stream (Gemma: scaled), each thread the rows the
    // first RMSNorm gives it (the same rowRanges), so no barrier stands between them.
    rowRanges(n).forEach(([r0, r1], t) => {
      p.add(t, { kernel: EMBED_KERNELS[this.embedding.dtype], args: [this.embedding.ptr, hd, state.ids.ptr, r0, r1, s.x.ptr] });
      if (c.embeddingScale !== undefined) p.add(t, { kernel: "scale_f32", args: [rowPtr(s.x, r0, hd), rowPtr(s.x, r0, hd), (r1 - r0) * hd, c.embeddingScale] });
    });
    if (own) p.barrier(); // every thread normalises every row
    this.layers.forEach((L, l) => {
      const kvHeads = c.kvHeadsPerLayer[l]!, kvDim = kvHeads * D;
      // Mistral's window in every layer; Gemma's in its sliding layers (Gemma 3's rotate by their own theta).
      const sliding = c.slidingWindow !== undefined && (c.slidingLayers?.[l] ?? true);
      const attentionArgs = { numHeads: H, slidingWindow: sliding ? c.slidingWindow : undefined, scale: c.attentionScale, softcap: c.attentionSoftcap };
      const rope = this.rope.tables[sliding && this.rope.tables.length > 1 ? 1 : 0]!;
      const qDim = H * D, k = state.qkv.subarray(n * qDim, n * (qDim + kvDim)), v = state.qkv.subarray(n * (qDim + kvDim), n * (qDim + 2 * kvDim));
      const nope = c.nopeLayers?.[l] === true;
      const hq = rmsnorm(L.inputNorm, [L.q, L.k, L.v]);
      if (n === 1 && L.qkv) linear(s.h, L.qkv, state.qkv.subarray(0, qDim + 2 * kvDim), hd, qDim + 2 * kvDim, hq, { bias: L.qkvBias });
      else {
        linear(s.h, L.q, s.q, hd, qDim, hq, { bias: L.qBias });
        linear(s.h, L.k, k, hd, kvDim, hq, { bias: L.kBias });
        linear(s.h, L.v, v, hd, kvDim, hq, { bias: L.vBias });
      }
      p.barrier();
      // (Qwen3, Gemma 3: each head of q and k RMS-normalised in place,) RoPE on q and k, then K/V into
      // the cache's pages (kv_write): each sequence's rows on a thread, or a lone long
      // sequence's rows over all of them.
      items.forEach(({ seq }, i) => {
        const q0 = firstRow[i]!, count = rowsOf(i), table = cache.blockTable(p, seq, l);
        tables[i]!.push(table);
        const write = cache.writeJob(l, table.ptr, rowPtr(k, q0, kvDim), rowPtr(v, q0, kvDim), count, starts[i]!);
        const ranges = items.length >= T ? [[0, count] as const] : rowRanges(count, 4);
        ranges.forEach(([r0, r1], j) => {
          const t = items.length >= T ? i : j, pos = starts[i]! + r0;
          const ropeQ: Job = { kernel: "rope_f32", args: [rowPtr(s.q, q0 + r0, H * D), r1 - r0, H, D, c.rotaryDim, rope.cos.ptr, rope.sin.ptr, pos] };
          const ropeK: Job = { kernel: "rope_f32", args: [rowPtr(k, q0 + r0, kvDim), r1 - r0, kvHeads, D, c.rotaryDim, rope.cos.ptr, rope.sin.ptr, pos] };
          const kv: Job = { kernel: "kv_write", args: [write.args[0]!, write.args[1]!, r0, r1, ...write.args.slice(4)] };
          if (L.qNorm && L.kNorm) {
            const q = rowPtr(s.q, q0 + r0, H * D), kr = rowPtr(k, q0 + r0, kvDim);
            p.add(t, { kernel: "rmsnorm_f32", args: [q, L.qNorm.ptr, q, D, eps, 0, (r1 - r0) * H] });
            p.add(t, { kernel: "rmsnorm_f32", args: [kr, L.kNorm.ptr, kr, D, eps, 0, (r1 - r0) * kvHeads] });
          }
          // (SmolLM3's NoPE layers: no rotation.)
          if (!nope) { p.add(t, ropeQ); p.add(t, ropeK); positioned[i]!.push(p.variable(ropeQ, 7), r0, p.variable(ropeK, 7), r0); }
          p.add(t, kv);
          positioned[i]!.push(p.variable(kv, 9), 0);
        });
      });
      // A sequence a thread (a batch of at least as many as threads): its attention runs on the
      // thread that rotated its q and wrote its K/V (KVCache.attentionCalls deals them alike), so
      // no barrier between; split over the threads, each reads what the others wrote.
      if (items.length < T) p.barrier();
      attention.push(cache.attentionCalls(p, items.map(({ seq }, i) => ({ seq, q: view(s.q, i, H * D), out: view(s.attn, i, H * D), table: tables[i]![l] })), l, attentionArgs));
      p.barrier();
      const aq = quantizeFor(s.attn, n, H * D, L.o);
      addToResidual(s.attn, L.o, H * D, aq, L.attnOutNorm, L.oBias);
      p.barrier();
      const hq2 = rmsnorm(L.ffnNorm, [L.gate, L.up]);
      if (n === 1 && L.gateUp) linear(s.h, L.gateUp, state.gateUp.subarray(0, 2 * ff), hd, 2 * ff, hq2);
      else {
        linear(s.h, L.gate, s.gate, hd, ff, hq2);
        linear(s.h, L.up, s.up, hd, ff, hq2);
      }
      p.barrier();
      // SwiGLU (GeGLU) in quads of elements, or in 32-blocks whose thread quantizes them for the
      // down projection (rows of ff are whole blocks), in whole 256-blocks where rows are (the
      // relaxed build's K-quants read super-blocks of x, which a thread quantizes from the x it made).
      // (OwnInput: every thread all of it, into its own copy, then its share of the down projection.)
      const total = n * ff, activation = c.activation === "gelu_tanh" ? "geglu_tanh_f32" : "swiglu_f32";
      let gq: number | OwnInput | undefined = own;
      if (own) {
        for (let t = 0; t < T; t++) p.add(t, { kernel: activation, args: [s.gate.ptr, s.up.ptr, own.f32[t]!, total] });
        if (rt.readsQuantizedX(L.down.dtype, n)) quantizeOwn(own, n, ff);
      } else {
        const fuse = rt.readsQuantizedX(L.down.dtype, n) && ff % 32 === 0, unit = fuse ? (ff % 256 === 0 ? 256 : 32) : 4;
        rowRanges(Math.ceil(total / unit)).forEach(([a, b], t) => {
          const off = a * unit * f32;
          p.add(t, { kernel: activation, args: [s.gate.ptr + off, s.up.ptr + off, s.gate.ptr + off, Math.min(b * unit, total) - a * unit] });
          if (fuse) p.add(t, rt.quantizeJob(s.gate.ptr, n, ff, state.qa.ptr, (a * unit) / 32, (b * unit) / 32));
        });
        p.barrier();
        gq = fuse ? state.qa.ptr : quantizeFor(s.gate, n, ff, L.down);
      }
      addToResidual(s.gate, L.down, ff, gq, L.ffnOutNorm);
      p.barrier();
    });
    /** Gemma 2: every logit capped at ±finalSoftcap; Granite: scaled by logitScale; in quads over the threads. */
    function finishLogits() {
      if (c.finalSoftcap === undefined && c.logitScale === undefined) return;
      p.barrier();
      const total = logits.length;
      rowRanges(Math.ceil(total / 4)).forEach(([a, b], t) => {
        const args = [logits.ptr + a * 16, logits.ptr + a * 16, Math.min(b * 4, total) - a * 4];
        if (c.logitScale !== undefined) p.add(t, { kernel: "scale_f32", args: [...args, c.logitScale] });
        if (c.finalSoftcap !== undefined) p.add(t, { kernel: "softcap_f32", args: [...args, c.finalSoftcap] });
      });
    }
    if (!lastOnly) {
      rmsnorm(this.finalNorm, [], false); // into h, which linearCalls reads (and quantizes for itself)
      rt.linearCalls(p, { x: s.h, weight: this.lmHead, out: logits, inFeatures: hd, outFeatures: V });
      finishLogits();
    } else if (own && !pendingAdd) {
      // Only each item's last row is normalised and goes through the LM head, gathered into
      // consecutive rows: by every thread into its own copy (OwnInput) ...
      const rows = items.length;
      for (let t = 0; t < T; t++) {
        items.forEach((_, i) => p.add(t, { kernel: "rmsnorm_f32", args: [rowPtr(s.x, firstRow[i]! + rowsOf(i) - 1, hd), this.finalNorm.ptr, own.f32[t]! + i * hd * f32, hd, eps, 0, 1] }));
      }
      if (rt.readsQuantizedX(this.lmHead.dtype, rows)) quantizeOwn(own, rows, hd);
      linear(s.last, this.lmHead, logits, hd, V, own);
      finishLogits();
    } else {
      // ... or a thread a row.
      items.forEach((_, i) => {
        const last = firstRow[i]! + rowsOf(i) - 1;
        addPending(i, last, last + 1);
        p.add(i, { kernel: "rmsnorm_f32", args: [rowPtr(s.x, last, hd), this.finalNorm.ptr, rowPtr(s.last, i, hd), hd, eps, 0, 1] });
      });
      p.barrier();
      linear(s.last, this.lmHead, logits, hd, V, quantizeFor(s.last, items.length, hd, this.lmHead));
      finishLogits();
    }
    const positions = positioned.map((pairs) => Int32Array.from(pairs));
    // The sequence and table version each item's tables were last written for: a step that took
    // no new page skips them (every layer's table of a sequence changes with its one version).
    const written = items.map(() => ({ seq: undefined as KVSequence | undefined, version: -1 }));
    return {
      refresh: (now, nowStarts) => {
        for (let i = 0; i < now.length; i++) {
          const seq = now[i]!.seq, pos0 = nowStarts[i]!, pairs = positions[i]!, held = written[i]!;
          if (held.seq !== seq || held.version !== seq.tablesVersion) {
            for (let l = 0; l < tables[i]!.length; l++) if (!cache.writeTable(tables[i]![l]!, seq, l)) return false;
            held.seq = seq; held.version = seq.tablesVersion;
          }
          for (let j = 0; j < pairs.length; j += 2) p.set(pairs[j]!, pos0 + pairs[j + 1]!);
        }
        for (let l = 0; l < attention.length; l++) if (!attention[l]!.refresh(now)) return false;
        return true;
      },
    };
  }

  /** The kept program of this step's shape on `cache`, moved to the front (the most recently used); undefined when none is kept. */
  private keptStep(cache: KVCache, items: readonly BatchItem[]): KeptStep | undefined {
    const steps = this.steps, threads = this.rt.threads;
    for (let k = 0; k < steps.length; k++) {
      const step = steps[k]!, counts = step.counts;
      if (step.cache !== cache || step.threads !== threads || counts.length !== items.length) continue;
      let same = true;
      for (let i = 0; i < counts.length && same; i++) same = counts[i] === items[i]!.tokens.length;
      if (!same) continue;
      for (let j = k; j > 0; j--) steps[j] = steps[j - 1]!;
      steps[0] = step;
      return step;
    }
    return undefined;
  }

  private dropStep(step: KeptStep): void {
    this.steps.splice(this.steps.indexOf(step), 1);
    step.program.dispose();
  }

  private dropSteps(): void {
    for (const step of this.steps.splice(0)) step.program.dispose();
  }

  /**
   * The activations of a forward pass (llama2.c's RunState): allocated once, grown when a pass
   * has more rows or sequences than any before, freed with the model.
   */
  private runState(rows: number, items: number): RunState {
    const have = this.state;
    return have && have.rows >= rows && have.items >= items ? have : this.growRunState(rows, items);
  }

  private growRunState(rows: number, items: number): RunState {
    const have = this.state, c = this.config, maxKv = Math.max(...c.kvHeadsPerLayer);
    const R = Math.max(rows, have?.rows ?? 0), I = Math.max(items, have?.items ?? 0);
    this.freeRunState();
    const made: WasmBuffer[] = [];
    const buf = (len: number) => { const b = this.rt.alloc(len); made.push(b); return b; };
    // Scratch for the largest linear call of a pass of R rows, whichever weight dtype.
    const k = this.rt.kernels, T = this.rt.threads;
    const widths = [c.hiddenSize, c.numHeads * c.headDim, c.intermediateSize];
    const slot = Math.max(...widths.map((K) => Math.max(k.linear_quant_scratch_bytes(R, K), k.linear_panel_scratch_bytes(R, K))));
    const linearScratchBytes = Math.ceil(slot / 64) * 64;
    const qaBytes = Math.max(...widths.map((K) => k.linear_quant_scratch_bytes(R, K)));
    const ownFloats = Math.ceil((OWN_INPUT_ROWS * Math.max(...widths)) / 16) * 16;
    const ownQaBytes = Math.ceil(Math.max(...widths.map((K) => k.linear_quant_scratch_bytes(OWN_INPUT_ROWS, K))) / 64) * 64;
    try {
      this.state = {
        linearScratch: buf(Math.max(1, (T * linearScratchBytes) / 4)), linearScratchBytes,
        own: buf(T * ownFloats), ownFloats, ownQa: buf((T * ownQaBytes) / 4), ownQaBytes,
        rows: R, items: I, ids: buf(R),
        x: buf(R * c.hiddenSize), h: buf(R * c.hiddenSize), qkv: buf(R * (c.numHeads + 2 * maxKv) * c.headDim), attn: buf(R * c.numHeads * c.headDim),
        gateUp: buf(2 * R * c.intermediateSize),
        last: buf(I * c.hiddenSize), logits: buf(I * c.vocabSize),
        qa: buf(Math.ceil(qaBytes / 4)),
      };
    } catch (e) {
      for (const b of made) b.free();
      throw e;
    }
    return this.state!;
  }

  private freeRunState(): void {
    if (!this.state) return;
    for (const b of Object.values(this.state)) if (b instanceof WasmBuffer) b.free();
    this.state = undefined;
    this.dropSteps(); // their calls point into the activations
  }

  /** Frees every weight and the activations. */
  dispose(): void {
    this.freeRunState();
    for (const b of this.owned) b.free();
    for (const t of this.rope?.tables ?? []) { t.cos.free(); t.sin.free(); }
    this.owned.length = 0;
  }

  private own(b: WasmBuffer): WasmBuffer { this.owned.push(b); return b; }

  /**
   * q/k/v (and biases) and gate/up of a layer concatenated into one buffer each, the parts becoming
   * views of it (see LayerWeights); stored so (Phi-3), the parts are made views of it.
   */
  private fuseLayer(L: LayerWeights, layer: number): LayerWeights {
    if (L.qkv && L.gateUp) {
      const c = this.config, hd = c.hiddenSize, qRows = c.numHeads * c.headDim, kvRows = c.kvHeadsPerLayer[layer]! * c.headDim, ff = c.intermediateSize;
      return { ...L, q: L.qkv.subarray(0, qRows * hd), k: L.qkv.subarray(qRows * hd, (qRows + kvRows) * hd), v: L.qkv.subarray((qRows + kvRows) * hd, (qRows + 2 * kvRows) * hd),
        gate: L.gateUp.subarray(0, ff * hd), up: L.gateUp.subarray(ff * hd, 2 * ff * hd) };
    }
    const fused = { ...L };
    const qkv = this.concatenate([L.q, L.k, L.v] as const);
    if (qkv) {
      [fused.q, fused.k, fused.v] = qkv.parts;
      fused.qkv = qkv.whole;
      if (L.qBias && L.kBias && L.vBias) {
        const bias = this.concatenate([L.qBias, L.kBias, L.vBias] as const)!;
        [fused.qBias, fused.kBias, fused.vBias] = bias.parts;
        fused.qkvBias = bias.whole;
      } else if (L.qBias || L.kBias || L.vBias) fused.qkv = undefined; // some biases only: calls per part
    }
    const gateUp = this.concatenate([L.gate, L.up] as const);
    if (gateUp) {
      [fused.gate, fused.up] = gateUp.parts;
      fused.gateUp = gateUp.whole;
    }
    return fused;
  }

  /**
   * Owned buffers of one dtype (and row length) copied one after the other into a new buffer,
   * which replaces them: returns it and views of it in their place; undefined (nothing changed)
   * when their dtypes differ (a GGUF file may store v in more bits than q and k).
   */
  private concatenate<P extends readonly WasmBuffer[]>(parts: P): { whole: WasmBuffer; parts: { -readonly [I in keyof P]: WasmBuffer } } | undefined {
    const [first] = parts;
    if (!first || parts.some((b) => b.dtype !== first.dtype || b.rowLength !== first.rowLength)) return undefined;
    const whole = this.own(this.rt.alloc(parts.reduce((n, b) => n + b.length, 0), first.dtype, first.rowLength));
    const u8 = this.rt.memory.u8;
    let at = 0;
    const views = parts.map((b) => {
      u8.copyWithin(whole.ptr + bufferBytes(first.dtype, at, first.rowLength), b.ptr, b.ptr + b.byteLength);
      const view = whole.subarray(at, at + b.length);
      at += b.length;
      this.owned.splice(this.owned.indexOf(b), 1);
      b.free();
      return view;
    });
    return { whole, parts: views as { -readonly [I in keyof P]: WasmBuffer } };
  }

  private ropeTables(positions: number): { tables: { cos: WasmBuffer; sin: WasmBuffer }[]; positions: number } {
    const c = this.config;
    const frequencies = [ropeInverseFrequencies(c.rotaryDim, c.ropeTheta, c.ropeScaling, c.maxPositionEmbeddings)];
    if (c.localRopeTheta !== undefined) frequencies.push(ropeInverseFrequencies(c.rotaryDim, c.localRopeTheta));
    const scale = ropeAttentionFactor(c.ropeScaling);
    const made: WasmBuffer[] = [];
    const upload = (data: Float32Array) => { const b = this.rt.upload(data); made.push(b); return b; };
    try {
      return { tables: frequencies.map((f) => { const t = ropeTable(positions, f, scale); return { cos: upload(t.cos), sin: upload(t.sin) }; }), positions };
    } catch (e) {
      for (const b of made) b.free();
      throw e;
    }
  }

  private growRope(positions: number): void {
    const next = this.ropeTables(Math.min(this.config.maxPositionEmbeddings, Math.max(positions, 2 * this.rope.positions)));
    for (const t of this.rope.tables) { t.cos.free(); t.sin.free(); }
    this.rope = next;
    this.dropSteps(); // their RoPE calls read the old tables
  }
}
