// The forward pass of a Llama-family decoder (llama, qwen2, mistral, deci), top to bottom like llama2.c's run.c: embedding, then per layer RMSNorm ->
// q/k/v projections -> RoPE -> append K/V to the paged cache -> grouped attention over the cache
// -> o projection + residual -> RMSNorm -> SwiGLU MLP + residual; final RMSNorm and the LM head.
import { createKVCache, type KVCache, type KVCacheOptions, type KVSequence } from "../kv/kv-cache.ts";
import { WasmBuffer, type BufferDtype } from "../memory/wasm-buffer.ts";
import type { Runtime } from "../runtime/runtime.ts";
import { isQuantDtype } from "../formats/quant.ts";
import { modelTensors, type GlobalRole, type LayerRole } from "./architecture.ts";
import type { ModelConfig } from "./config.ts";
import { ropeInverseFrequencies, ropeTable } from "./rope.ts";

/** The weights of one layer, resident in wasm memory, by role (architecture.ts). */
type LayerWeights = Record<Exclude<LayerRole, "qBias" | "kBias" | "vBias">, WasmBuffer> & Partial<Record<"qBias" | "kBias" | "vBias", WasmBuffer>>;

/** One sequence's share of a batched forward pass: the tokens to append after what it holds. */
export interface BatchItem { seq: KVSequence; tokens: readonly number[] }

export class TransformerModel {
  private readonly layers: LayerWeights[];
  private readonly finalNorm: WasmBuffer;
  /** [vocab, hidden] in the weight dtype; with tied embeddings also the LM head. */
  private readonly embedding: WasmBuffer;
  private readonly lmHead: WasmBuffer;
  private rope: { cos: WasmBuffer; sin: WasmBuffer; positions: number };
  private readonly owned: WasmBuffer[] = [];

  /**
   * Uploads the weights: `tensor(name, dtype)` gives each Hugging Face tensor as float32, or as
   * the raw bits of `dtype` when it is 16-bit and the checkpoint stores it so (no conversion),
   * or as a WasmBuffer already filled (a GGUF tensor streamed into wasm memory), taken over as it
   * is. Other linear weights and embeddings are stored as `weightDtype` (16-bit stays 16-bit in
   * wasm memory; q8_0 / q4_0 are quantized here), norms and biases as f32.
   */
  constructor(readonly rt: Runtime, readonly config: ModelConfig, tensor: (name: string, dtype: BufferDtype) => Float32Array | Uint16Array | WasmBuffer, readonly weightDtype: BufferDtype = "f32") {
    // Uploaded weights are tracked as they go, so a failure part-way (out of memory, a bad
    // tensor) frees them and leaves the runtime as it was.
    try {
      const f32 = (name: string) => {
        const data = tensor(name, "f32");
        if (data instanceof WasmBuffer && data.dtype === "f32") return this.own(data);
        if (!(data instanceof Float32Array)) throw new TypeError(`TransformerModel: ${name} must come as float32`);
        return this.own(rt.upload(data, "f32"));
      };
      // Linear weights [out, in] and the embedding [vocab, hidden]; quantized ones a row of
      // `inFeatures` at a time (blocks never span rows).
      const weight = (name: string, inFeatures: number) => {
        const data = tensor(name, isQuantDtype(weightDtype) ? "f32" : weightDtype);
        // Already resident (a GGUF tensor streamed into wasm memory): taken over as it is.
        if (data instanceof WasmBuffer) return this.own(data);
        return this.own(isQuantDtype(weightDtype) ? rt.upload(data as Float32Array, weightDtype, inFeatures) : rt.upload(data, weightDtype));
      };
      // The architecture's tensors, by role: norms and biases f32, the rest in the weight dtype.
      const layers: Partial<Record<LayerRole, WasmBuffer>>[] = config.kvHeadsPerLayer.map(() => ({}));
      const globals: Partial<Record<GlobalRole, WasmBuffer>> = {};
      for (const t of modelTensors(config)) {
        const buffer = t.kind === "norm" || t.kind === "bias" ? f32(t.name) : weight(t.name, t.inFeatures!);
        if (t.layer === undefined) globals[t.role as GlobalRole] = buffer;
        else layers[t.layer]![t.role as LayerRole] = buffer;
      }
      this.layers = layers as LayerWeights[];
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
   * On an error the sequence is rolled back to what it held before.
   */
  forward(cache: KVCache, seq: KVSequence, tokens: readonly number[], options: { logits?: "all" | "last" } = {}): Float32Array {
    return this.forwardBatch(cache, [{ seq, tokens }], options);
  }

  /**
   * One pass over the weights for several sequences at once (continuous batching): each item's
   * tokens are appended after what its sequence holds, the linear layers run on all their rows
   * together, RoPE and attention per sequence at its own positions. Returns the logits of every
   * row [rows, vocab] in item order, or with `logits: "last"` each item's last row [items, vocab].
   * On an error every sequence is rolled back to what it held before.
   */
  forwardBatch(cache: KVCache, items: readonly BatchItem[], options: { logits?: "all" | "last" } = {}): Float32Array {
    const starts = items.map(({ seq }) => seq.length(0));
    try {
      return this.forwardRows(cache, items, starts, options.logits ?? "all");
    } catch (e) {
      items.forEach(({ seq }, i) => {
        if (!seq.isFreed && seq.lengths.some((n) => n > starts[i]!)) cache.truncate(seq, starts[i]!);
      });
      throw e;
    }
  }

  private forwardRows(cache: KVCache, items: readonly BatchItem[], starts: readonly number[], logitRows: "all" | "last"): Float32Array {
    const c = this.config, rt = this.rt;
    const { hiddenSize: hd, numHeads: H, headDim: D, intermediateSize: ff, vocabSize: V } = c;
    if (items.length === 0) throw new RangeError("forward: no sequences");
    if (new Set(items.map(({ seq }) => seq)).size !== items.length) throw new RangeError("forward: a sequence appears twice in one batch");
    let n = 0;
    items.forEach(({ tokens }, i) => {
      if (tokens.length === 0) throw new RangeError("forward: no tokens");
      for (const t of tokens) if (!Number.isInteger(t) || t < 0 || t >= V) throw new RangeError(`forward: token id ${t} is outside the vocabulary [0, ${V})`);
      const end = starts[i]! + tokens.length;
      if (end > c.maxPositionEmbeddings) throw new RangeError(`forward: position ${end} exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
      if (end > this.rope.positions) this.growRope(end);
      n += tokens.length;
    });
    // Row ranges of the items in the batch.
    const firstRow: number[] = [];
    items.reduce((row, { tokens }) => { firstRow.push(row); return row + tokens.length; }, 0);
    const buffers: WasmBuffer[] = [];
    const tmp = (len: number) => { const b = rt.alloc(len); buffers.push(b); return b; };
    try {
      // From 4 rows up the linear layers run on `m` rows, n rounded up to whole 4-row GEMM
      // tiles: the kernel's rows past the last tile go one at a time, slower per row than a
      // zero-padded tile (SmolLM2-135M bf16, 11 tokens: 241 ms unpadded, 201 ms padded); below 4
      // rows that one-row path is the faster one (2 tokens: 75 vs 107 ms). Padding rows are zeros
      // and stay out of norms, RoPE, attention and the cache.
      const m = n < 4 ? n : Math.ceil(n / 4) * 4;
      const x = tmp(m * hd), h = tmp(m * hd), q = tmp(m * H * D), attn = tmp(m * H * D), o = tmp(m * hd);
      const gate = tmp(m * ff), up = tmp(m * ff), down = tmp(m * hd);
      const xs = x.array;
      items.forEach(({ tokens }, i) => tokens.forEach((t, j) => xs.set(this.embedding.subarray(t * hd, (t + 1) * hd).toFloat32Array(), (firstRow[i]! + j) * hd)));
      // K and V of the new tokens, sized for the layer with the most KV heads, reused by every layer.
      const maxKv = Math.max(...c.kvHeadsPerLayer);
      const kAll = tmp(m * maxKv * D), vAll = tmp(m * maxKv * D);
      const linear = (input: WasmBuffer, w: WasmBuffer, out: WasmBuffer, inF: number, outF: number, bias?: WasmBuffer) =>
        rt.linearInto({ x: input, weight: w, bias, out, inFeatures: inF, outFeatures: outF });
      const residual = (into: WasmBuffer, add: WasmBuffer) => { const a = into.array, b = add.array; for (let i = 0; i < a.length; i++) a[i]! += b[i]!; };
      const rows = (buf: WasmBuffer, i: number, width: number) => buf.subarray(firstRow[i]! * width, (firstRow[i]! + items[i]!.tokens.length) * width);
      this.layers.forEach((L, l) => {
        const kvHeads = c.kvHeadsPerLayer[l]!, kvDim = kvHeads * D;
        const kb = kAll.subarray(0, m * kvDim), vb = vAll.subarray(0, m * kvDim);
        rt.kernels.rmsnorm_f32(x.ptr, L.inputNorm.ptr, h.ptr, hd, c.rmsNormEps, 0, n);
        // q, k and v in one call (one hand-off to the worker pool), as gate and up below.
        rt.linearsInto([
          { x: h, weight: L.q, bias: L.qBias, out: q, inFeatures: hd, outFeatures: H * D },
          { x: h, weight: L.k, bias: L.kBias, out: kb, inFeatures: hd, outFeatures: kvDim },
          { x: h, weight: L.v, bias: L.vBias, out: vb, inFeatures: hd, outFeatures: kvDim },
        ]);
        items.forEach(({ seq, tokens }, i) => {
          const count = tokens.length, qi = rows(q, i, H * D), ki = rows(kb, i, kvDim);
          rt.kernels.rope_f32(qi.ptr, count, H, D, this.rope.cos.ptr, this.rope.sin.ptr, starts[i]!);
          rt.kernels.rope_f32(ki.ptr, count, kvHeads, D, this.rope.cos.ptr, this.rope.sin.ptr, starts[i]!);
          // Copies: appending may grow memory, which would detach views of kb / vb.
          cache.append(seq, l, ki.toFloat32Array(), rows(vb, i, kvDim).toFloat32Array());
        });
        // Every sequence's attention in one call: one hand-off to the worker pool per layer.
        cache.attentionBatchInto(items.map(({ seq }, i) => ({ seq, q: rows(q, i, H * D), out: rows(attn, i, H * D) })), l, { numHeads: H, slidingWindow: c.slidingWindow });
        linear(attn, L.o, o, H * D, hd);
        residual(x, o);
        rt.kernels.rmsnorm_f32(x.ptr, L.postNorm.ptr, h.ptr, hd, c.rmsNormEps, 0, n);
        rt.linearsInto([
          { x: h, weight: L.gate, out: gate, inFeatures: hd, outFeatures: ff },
          { x: h, weight: L.up, out: up, inFeatures: hd, outFeatures: ff },
        ]);
        rt.kernels.swiglu_f32(gate.ptr, up.ptr, gate.ptr, n * ff);
        linear(gate, L.down, down, ff, hd);
        residual(x, down);
      });
      rt.kernels.rmsnorm_f32(x.ptr, this.finalNorm.ptr, h.ptr, hd, c.rmsNormEps, 0, n);
      if (logitRows === "all") {
        const logits = tmp(m * V);
        linear(h, this.lmHead, logits, hd, V);
        return logits.subarray(0, n * V).toFloat32Array();
      }
      // Only each item's last row goes through the LM head, gathered into consecutive rows.
      const last = items.length === 1 ? h.subarray((n - 1) * hd, n * hd) : tmp(items.length * hd);
      if (items.length > 1) {
        const hs = h.array, ls = last.array;
        items.forEach(({ tokens }, i) => { const r = firstRow[i]! + tokens.length - 1; ls.set(hs.subarray(r * hd, (r + 1) * hd), i * hd); });
      }
      const logits = tmp(items.length * V);
      linear(last, this.lmHead, logits, hd, V);
      return logits.toFloat32Array();
    } finally {
      for (const b of buffers) b.free();
    }
  }

  /** Frees every weight. */
  dispose(): void {
    for (const b of this.owned) b.free();
    this.rope?.cos.free(); this.rope?.sin.free();
    this.owned.length = 0;
  }

  private own(b: WasmBuffer): WasmBuffer { this.owned.push(b); return b; }

  private ropeTables(positions: number): { cos: WasmBuffer; sin: WasmBuffer; positions: number } {
    const t = ropeTable(positions, ropeInverseFrequencies(this.config.headDim, this.config.ropeTheta, this.config.ropeScaling));
    return { cos: this.rt.upload(t.cos), sin: this.rt.upload(t.sin), positions };
  }

  private growRope(positions: number): void {
    const next = this.ropeTables(Math.min(this.config.maxPositionEmbeddings, Math.max(positions, 2 * this.rope.positions)));
    this.rope.cos.free(); this.rope.sin.free();
    this.rope = next;
  }
}
