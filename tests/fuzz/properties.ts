// The fuzz / property suite (fast-check): hostile bytes and JSON for every file format the
// runtime reads, and random sequences of KV-cache operations checked against a plain model of
// what each sequence must hold. `npm test` runs each property a bounded number of times with a
// fixed seed (tests/fuzz.test.ts); `npm run fuzz -- --minutes N` runs them with fresh seeds
// until the time is up (tests/fuzz/soak.ts).
//
// What a property allows: the documented error classes (one clear line) or success with its
// invariants; anything else (another error type, a wrong value, a leak) is a failure.
import fc from "fast-check";
import {
  ChatTemplate, createKVCache, createRuntime, KVCacheFullError, KVSnapshotError, loadModel, ModelConfigError, parseSafetensors, readFloat32,
  referenceAttention, SafetensorsError, TemplateError, TextTokenizer, WasmOutOfMemoryError, writeSafetensors, type KVCache, type KVSequence, type Runtime,
} from "../../src/index.ts";
import { byteLevelTokenizer, syntheticModelFiles, TINY_CHAT_MODEL } from "../../src/model/synthetic.ts";
import { GGUFError, parseGGUFHeader, writeGGUF, type GGUFValue } from "../../src/formats/gguf.ts";
import { ggufTokenizer } from "../../src/model/gguf-model.ts";
import { folderToGGUF } from "../../src/model/gguf-export.ts";
import { KV_DTYPES } from "../../src/kv/storage.ts";
import { withRandomBlocks } from "../model-helpers.ts";

export interface FuzzContext { rt: Runtime }

export interface FuzzProperty {
  name: string;
  /** Cases per run in `npm test`. */
  runs: number;
  property: (ctx: FuzzContext) => fc.IRawProperty<unknown[]>;
}

/** Throws `e` unless it is one of the expected error classes. */
function expectOnly(e: unknown, ...classes: (abstract new (...a: never[]) => Error)[]): void {
  if (classes.some((c) => e instanceof c)) {
    const message = (e as Error).message;
    if (message.length === 0 || message.length > 2000) throw new Error(`an error message of ${message.length} characters: ${message.slice(0, 200)}`);
    return;
  }
  throw e;
}

// ---------------------------------------------------------------- safetensors

const validSafetensors = writeSafetensors({
  "a.weight": { dtype: "F32", shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i / 7) },
  "b.weight": { dtype: "BF16", shape: [5], data: Float32Array.from({ length: 5 }, (_, i) => -i) },
  "c.bias": { dtype: "F16", shape: [2, 1, 2], data: new Float32Array([1, 2, 3, 4]) },
}, { format: "pt" });

/** A parse that succeeded must describe tensors that lie inside the file and read back. */
function checkParsed(bytes: Uint8Array): void {
  let file;
  try {
    file = parseSafetensors(bytes, "fuzz.safetensors");
  } catch (e) { expectOnly(e, SafetensorsError); return; }
  for (const [name, t] of file.tensors) {
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (t.byteLength !== elements * (t.dtype === "F32" ? 4 : 2)) throw new Error(`${name}: ${t.byteLength} bytes for ${elements} elements of ${t.dtype}`);
    if (readFloat32(file, name).length !== elements) throw new Error(`${name}: wrong element count read`);
  }
}

const mutation = fc.record({
  writes: fc.array(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), { maxLength: 6 }),
  cut: fc.option(fc.nat(), { nil: undefined }),
  append: fc.uint8Array({ maxLength: 16 }),
  headerLength: fc.option(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { nil: undefined }),
});

type Mutation = { writes: { at: number; byte: number }[]; cut?: number; append: Uint8Array; headerLength?: bigint };

function mutate(base: Uint8Array, m: Mutation): Uint8Array {
  let bytes = Uint8Array.from(base);
  for (const w of m.writes) bytes[w.at % bytes.length] = w.byte;
  if (m.cut !== undefined) bytes = bytes.subarray(0, m.cut % (bytes.length + 1));
  if (m.append.length) { const grown = new Uint8Array(bytes.length + m.append.length); grown.set(bytes); grown.set(m.append, bytes.length); bytes = grown; }
  if (m.headerLength !== undefined && bytes.length >= 8) new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(0, m.headerLength, true);
  return bytes;
}

/** A header as JSON, from plausible and implausible pieces. */
const headerJson = fc.dictionary(
  fc.oneof(fc.constantFrom("a", "b", "__metadata__", "x.weight", ""), fc.string({ maxLength: 8 })),
  fc.oneof(
    fc.record({
      dtype: fc.oneof(fc.constantFrom("F32", "F16", "BF16", "I8", "F64", "f32"), fc.jsonValue()),
      shape: fc.oneof(fc.array(fc.oneof(fc.integer({ min: -2, max: 9 }), fc.constantFrom(2 ** 31, 2 ** 53, 1.5)), { maxLength: 4 }), fc.jsonValue()),
      data_offsets: fc.oneof(fc.tuple(fc.integer({ min: -4, max: 300 }), fc.integer({ min: -4, max: 300 })), fc.jsonValue()),
    }, { requiredKeys: [] }),
    fc.dictionary(fc.string({ maxLength: 4 }), fc.string({ maxLength: 4 })),
    fc.jsonValue(),
  ),
  { maxKeys: 5 },
);

function fileWithHeader(header: string, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

// ---------------------------------------------------------------- GGUF

const validGGUF = writeGGUF({
  "general.architecture": { type: "string", value: "llama" }, "llama.block_count": { type: "u32", value: 1 },
  "tokenizer.ggml.tokens": { type: "array", itemType: "string", value: ["a", "b", "ab"] }, "x.f": { type: "f32", value: 1.5 },
}, {
  "token_embd.weight": { shape: [2, 32], type: "Q8_0", data: new Uint8Array(68) },
  "blk.0.attn_q.weight": { shape: [1, 64], type: "Q4_0", data: new Uint8Array(36) },
  "output_norm.weight": { shape: [4], type: "F32", data: new Uint8Array(16) },
});

/** A parse that succeeded describes tensors inside the data section, not overlapping. */
function checkGGUF(bytes: Uint8Array): void {
  let header;
  try { header = parseGGUFHeader(bytes, bytes.length, "fuzz.gguf"); } catch (e) { expectOnly(e, GGUFError); return; }
  const spans = [...header.tensors.values()].sort((a, b) => a.offset - b.offset);
  spans.forEach((t, i) => {
    if (t.offset < header.dataOffset || t.offset + t.byteLength > bytes.length) throw new Error(`${t.name} lies outside the data`);
    if (i > 0 && t.offset < spans[i - 1]!.offset + spans[i - 1]!.byteLength) throw new Error(`${t.name} overlaps`);
  });
}

// ---------------------------------------------------------------- model folders

const CONFIG_KEYS = ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
  "vocab_size", "rms_norm_eps", "rope_theta", "rope_scaling", "max_position_embeddings", "tie_word_embeddings", "sliding_window", "num_key_value_heads_per_layer",
  "hidden_act", "mlp_bias", "attention_bias", "eos_token_id", "bos_token_id",
  // Gemma 2's and 3's
  "layer_types", "sliding_window_pattern", "query_pre_attn_scalar", "rope_local_base_freq", "hidden_activation", "attn_logit_softcapping", "final_logit_softcapping",
  // Granite's
  "embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling",
  // Phi's
  "partial_rotary_factor", "original_max_position_embeddings"];

const hostileNumber = fc.oneof(
  fc.integer({ min: -3, max: 300 }), fc.constantFrom(0, 1, 2, 3, 7, 64, 1e6, 1e9, 1e12, 2 ** 31, 2 ** 53, -1, 0.5, NaN, 1e308),
);
const configValue = fc.oneof(hostileNumber, fc.jsonValue({ maxDepth: 2 }), fc.constantFrom("llama", "qwen2", "mistral", "deci", "gemma", "gemma2", "gemma3_text", "granite", "phi3", "silu", "gelu", "gelu_pytorch_tanh"),
  fc.array(fc.constantFrom("sliding_attention", "full_attention", "x"), { maxLength: 4 }),
  fc.record({ rope_type: fc.constantFrom("llama3", "linear", "dynamic", "yarn", "default", "longrope", "su"), factor: hostileNumber, low_freq_factor: hostileNumber, high_freq_factor: hostileNumber, original_max_position_embeddings: hostileNumber,
    short_factor: fc.array(hostileNumber, { maxLength: 5 }), long_factor: fc.array(hostileNumber, { maxLength: 5 }), attention_factor: hostileNumber }, { requiredKeys: [] }),
  fc.array(hostileNumber, { maxLength: 6 }));

const templateFragment = fc.constantFrom(
  "{% for m in messages %}", "{% endfor %}", "{{ m.content }}", "{{ m['role'] }}", "{% if add_generation_prompt %}", "{% endif %}", "{% else %}",
  "{% for i in range(100000) %}", "{% for i in range(3) %}", "{{ i }}", "{% set ns = namespace(a=[1], s='x') %}", "{% set ns.a = ns.a + ns.a %}",
  "{% set ns.s = ns.s + ns.s %}", "{{ raise_exception('no') }}", "{% macro f(n) %}{{ f(n) }}{% endmacro %}", "{{ f(1) }}", "{{ bos_token }}",
  "{{ messages | length }}", "{{ 'x' | indent(50) }}", "{{ strftime_now('%d %b %Y') }}", "{{ loop.index }}", "{%", "}}", "<|im_start|>", "\n", "{{ messages[0].content | trim }}",
);
const hostileTemplate = fc.array(templateFragment, { maxLength: 12 }).map((parts) => parts.join(""));

type Files = Record<string, Uint8Array | string>;
const TINY_FUZZ_MODEL = { ...TINY_CHAT_MODEL, num_hidden_layers: 2, hidden_size: 32, intermediate_size: 48, num_attention_heads: 4, max_position_embeddings: 64 };
/** Gemma 3's layout (four norms a layer, q/k norms, a sliding layer of window 3, its own theta). */
const TINY_GEMMA3 = { ...TINY_FUZZ_MODEL, model_type: "gemma3_text", num_key_value_heads: 1, head_dim: 8, layer_types: ["sliding_attention", "full_attention"], sliding_window: 3 };
/** Phi-4-mini's layout (fused qkv and gate/up, RoPE on 3/4 of each head of 8, LongRoPE's 3 factors a list). */
const TINY_PHI = { ...TINY_FUZZ_MODEL, model_type: "phi3", num_key_value_heads: 2, partial_rotary_factor: 0.75, original_max_position_embeddings: 16,
  rope_scaling: { type: "longrope", short_factor: [1, 1.5, 2], long_factor: [1, 4, 16] } };
const tinyFiles = (config: Record<string, unknown> = TINY_FUZZ_MODEL): Files => syntheticModelFiles(config, { dtype: "F32" });

/** Replaces the value at a random path of a JSON value (objects and arrays), or the whole of it. */
function replaceAt(json: unknown, path: number[], value: unknown): unknown {
  if (path.length === 0 || json === null || typeof json !== "object") return value;
  const keys = Object.keys(json as object);
  if (keys.length === 0) return value;
  const key = keys[path[0]! % keys.length]!;
  const copy: Record<string, unknown> = Array.isArray(json) ? [...json] as unknown as Record<string, unknown> : { ...(json as Record<string, unknown>) };
  copy[key] = replaceAt((json as Record<string, unknown>)[key], path.slice(1), value);
  return copy;
}

/**
 * Loads `files` on `rt`: either a documented error, with every byte it uploaded freed, or a
 * model that generates a couple of tokens and frees all it took when disposed.
 */
async function loadOrRefuse(rt: Runtime, files: Files): Promise<void> {
  // The scratch arena keeps what it grew to between calls; everything else must come back.
  const held = () => rt.stats().persistentLiveBytes - rt.stats().scratchReservedBytes;
  const live = held();
  let model;
  try {
    model = await loadModel(rt, files);
  } catch (e) {
    expectOnly(e, ModelConfigError, SafetensorsError, WasmOutOfMemoryError, RangeError);
    if (held() !== live) throw new Error(`a refused load left ${held() - live} bytes allocated`);
    return;
  }
  try {
    // A 13-token prompt: its prefill takes the linear kernels' GEMM paths (f32 or integer panels from 12 rows), decode the GEMV.
    const prompt = Array.from({ length: 13 }, (_, i) => (i * 7 + 1) % model.config.vocabSize);
    const result = await model.generate(prompt, { maxNewTokens: 2, temperature: 0 }).done;
    if (result.tokens.length === 0 || result.tokens.some((t) => !(t >= 0 && t < model.config.vocabSize))) throw new Error(`generated ${JSON.stringify(result.tokens)}`);
    if (model.tokenizer?.hasChatTemplate) {
      try { model.tokenizer.applyChatTemplate([{ role: "user", content: "hi" }]); } catch (e) { expectOnly(e, TemplateError); }
    }
  } catch (e) {
    expectOnly(e, RangeError);
  } finally {
    model.dispose();
  }
  if (held() !== live) throw new Error(`a disposed model left ${held() - live} bytes allocated`);
}

let ggufModel: Uint8Array | undefined;
/** gemma2, gemma3 and phi3 GGUF files (the architectures llama.cpp fixes constants or tensors of). */
const gemmaModels: (Uint8Array | undefined)[] = [];
const quantModels: Partial<Record<"q5_0" | "q4_1" | "iq4_nl" | "q4_k" | "q6_k", Uint8Array>> = {};
let randomBlocksModel: Uint8Array | undefined;

// ---------------------------------------------------------------- KV cache

interface SeqModel { layers: { k: number[]; v: number[] }[] }
interface KVReal { cache: KVCache; seqs: (KVSequence | undefined)[]; rt: Runtime; shapes: { numKvHeads: number; headDim: number }[] }
interface KVModel { seqs: (SeqModel | undefined)[]; capacity: number }

const pick = (m: KVModel, i: number) => {
  const live = m.seqs.map((s, j) => (s ? j : -1)).filter((j) => j >= 0);
  return live.length ? live[i % live.length]! : -1;
};

function rowsOf(n: number, width: number, seed: number): number[] {
  return Array.from({ length: n * width }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 2);
}

/** The cache holds exactly what the model says, and its page counts follow the lengths. */
function checkSeq(r: KVReal, m: KVModel, i: number): void {
  const seq = r.seqs[i]!, model = m.seqs[i]!;
  r.shapes.forEach((_, layer) => {
    const { k, v } = r.cache.readLayer(seq, layer);
    const want = model.layers[layer]!;
    if (k.length !== want.k.length || k.some((x, j) => x !== Math.fround(want.k[j]!)) || v.some((x, j) => x !== Math.fround(want.v[j]!))) {
      throw new Error(`sequence ${i} layer ${layer}: the cache does not hold what was appended`);
    }
  });
  const pages = r.cache.stats().sequences.find((s) => s.id === seq.id)!.pages;
  const want = model.layers.reduce((s, l, layer) => s + Math.ceil(l.k.length / (r.shapes[layer]!.numKvHeads * r.shapes[layer]!.headDim) / r.cache.pageSize), 0);
  if (pages !== want) throw new Error(`sequence ${i}: ${pages} pages for lengths needing ${want}`);
}

class CreateCommand implements fc.Command<KVModel, KVReal> {
  check = () => true;
  run(m: KVModel, r: KVReal) { r.seqs.push(r.cache.createSequence()); m.seqs.push({ layers: r.shapes.map(() => ({ k: [], v: [] })) }); }
  toString = () => "create";
}

class AppendCommand implements fc.Command<KVModel, KVReal> {
  constructor(readonly which: number, readonly layer: number, readonly n: number, readonly seed: number) {}
  check = (m: KVModel) => pick(m, this.which) >= 0;
  run(m: KVModel, r: KVReal) {
    const i = pick(m, this.which), layer = this.layer % r.shapes.length, { numKvHeads, headDim } = r.shapes[layer]!;
    const k = rowsOf(this.n, numKvHeads * headDim, this.seed), v = rowsOf(this.n, numKvHeads * headDim, this.seed + 1);
    const before = r.cache.stats().pagesUsed;
    try {
      r.cache.append(r.seqs[i]!, layer, Float32Array.from(k), Float32Array.from(v));
    } catch (e) {
      expectOnly(e, KVCacheFullError);
      if (r.cache.stats().pagesUsed !== before) throw new Error("a failed append changed the pages in use");
      checkSeq(r, m, i);
      return;
    }
    m.seqs[i]!.layers[layer]!.k.push(...k);
    m.seqs[i]!.layers[layer]!.v.push(...v);
    checkSeq(r, m, i);
  }
  toString = () => `append(${this.which}, layer ${this.layer}, ${this.n} tokens)`;
}

class ForkCommand implements fc.Command<KVModel, KVReal> {
  constructor(readonly which: number) {}
  check = (m: KVModel) => pick(m, this.which) >= 0;
  run(m: KVModel, r: KVReal) {
    const i = pick(m, this.which);
    r.seqs.push(r.cache.fork(r.seqs[i]!));
    m.seqs.push({ layers: m.seqs[i]!.layers.map((l) => ({ k: [...l.k], v: [...l.v] })) });
    checkSeq(r, m, m.seqs.length - 1);
  }
  toString = () => `fork(${this.which})`;
}

class TruncateCommand implements fc.Command<KVModel, KVReal> {
  constructor(readonly which: number, readonly keep: number) {}
  check = (m: KVModel) => pick(m, this.which) >= 0;
  run(m: KVModel, r: KVReal) {
    const i = pick(m, this.which), seq = r.seqs[i]!;
    const shortest = Math.min(...r.shapes.map((_, l) => seq.length(l)));
    const n = this.keep % (shortest + 1);
    r.cache.truncate(seq, n);
    m.seqs[i]!.layers.forEach((l, layer) => { const w = r.shapes[layer]!.numKvHeads * r.shapes[layer]!.headDim; l.k.length = n * w; l.v.length = n * w; });
    checkSeq(r, m, i);
  }
  toString = () => `truncate(${this.which}, ${this.keep})`;
}

class FreeCommand implements fc.Command<KVModel, KVReal> {
  constructor(readonly which: number) {}
  check = (m: KVModel) => pick(m, this.which) >= 0;
  run(m: KVModel, r: KVReal) {
    const i = pick(m, this.which);
    r.cache.free(r.seqs[i]!);
    let threw = false;
    try { r.cache.readLayer(r.seqs[i]!, 0); } catch { threw = true; }
    if (!threw) throw new Error("a freed sequence could still be read");
    r.seqs[i] = undefined;
    m.seqs[i] = undefined;
  }
  toString = () => `free(${this.which})`;
}

class SnapshotCommand implements fc.Command<KVModel, KVReal> {
  constructor(readonly which: number, readonly flip: number | undefined) {}
  check = (m: KVModel) => pick(m, this.which) >= 0;
  run(m: KVModel, r: KVReal) {
    const i = pick(m, this.which);
    const bytes = r.cache.snapshot(r.seqs[i]!);
    if (this.flip !== undefined) {
      bytes[this.flip % bytes.length]! ^= 1 << (this.flip % 8);
      const before = r.cache.stats();
      try { r.cache.restore(bytes); } catch (e) {
        expectOnly(e, KVSnapshotError);
        const after = r.cache.stats();
        if (after.pagesUsed !== before.pagesUsed || after.sequences.length !== before.sequences.length) throw new Error("a refused snapshot changed the cache");
        return;
      }
      throw new Error("a corrupted snapshot was restored");
    }
    try {
      r.seqs.push(r.cache.restore(bytes));
    } catch (e) { expectOnly(e, KVCacheFullError); return; }
    m.seqs.push({ layers: m.seqs[i]!.layers.map((l) => ({ k: [...l.k], v: [...l.v] })) });
    checkSeq(r, m, m.seqs.length - 1);
  }
  toString = () => `snapshot(${this.which}${this.flip === undefined ? "" : `, flip ${this.flip}`})`;
}

class AttentionCommand implements fc.Command<KVModel, KVReal> {
  constructor(readonly which: number, readonly layer: number, readonly group: number, readonly seed: number) {}
  check = (m: KVModel) => pick(m, this.which) >= 0;
  run(m: KVModel, r: KVReal) {
    const i = pick(m, this.which), layer = this.layer % r.shapes.length, { numKvHeads, headDim } = r.shapes[layer]!;
    const want = m.seqs[i]!.layers[layer]!;
    if (want.k.length === 0) return;
    const numHeads = numKvHeads * (1 + (this.group % 3));
    const q = Float32Array.from(rowsOf(1, numHeads * headDim, this.seed));
    const out = r.cache.attention(r.seqs[i]!, layer, { q, numHeads });
    const ref = referenceAttention({ q, k: Float32Array.from(want.k), v: Float32Array.from(want.v), numHeads, numKvHeads, headDim, causal: true });
    const scale = Math.max(1, ...Array.from(ref, Math.abs));
    for (let j = 0; j < out.length; j++) if (!(Math.abs(out[j]! - ref[j]!) <= 1e-4 * scale)) throw new Error(`attention differs from the float64 reference at ${j}: ${out[j]} vs ${ref[j]}`);
  }
  toString = () => `attention(${this.which}, layer ${this.layer})`;
}

const kvCommands = [
  fc.constant(new CreateCommand()),
  fc.tuple(fc.nat(), fc.nat(), fc.integer({ min: 1, max: 9 }), fc.nat(1000)).map(([w, l, n, s]) => new AppendCommand(w, l, n, s)),
  fc.nat().map((w) => new ForkCommand(w)),
  fc.tuple(fc.nat(), fc.nat()).map(([w, k]) => new TruncateCommand(w, k)),
  fc.nat().map((w) => new FreeCommand(w)),
  fc.tuple(fc.nat(), fc.option(fc.nat(), { nil: undefined, freq: 2 })).map(([w, f]) => new SnapshotCommand(w, f)),
  fc.tuple(fc.nat(), fc.nat(), fc.nat(), fc.nat(1000)).map(([w, l, g, s]) => new AttentionCommand(w, l, g, s)),
];

// ---------------------------------------------------------------- the properties

export const PROPERTIES: FuzzProperty[] = [
  {
    name: "safetensors: arbitrary bytes are parsed or refused with SafetensorsError",
    runs: 1000,
    property: () => fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => checkParsed(bytes)),
  },
  {
    name: "safetensors: a valid file mutated (bytes, length, header size) is parsed consistently or refused",
    runs: 1500,
    property: () => fc.property(mutation, (m) => checkParsed(mutate(validSafetensors, m))),
  },
  {
    name: "safetensors: hostile headers (dtypes, shapes, offsets, metadata) are parsed consistently or refused",
    runs: 1500,
    property: () => fc.property(headerJson, fc.nat(400), fc.boolean(), (header, dataBytes, asText) => {
      checkParsed(fileWithHeader(asText ? JSON.stringify(header).slice(0, -1) : JSON.stringify(header), dataBytes));
    }),
  },
  {
    name: "GGUF: arbitrary bytes and a valid file mutated (bytes, length) are parsed consistently or refused with GGUFError",
    runs: 1500,
    property: () => fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }).map((b) => Uint8Array.from([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, ...b])), mutation.map((m) => ({ m }))), (input) => {
      checkGGUF(input instanceof Uint8Array ? input : mutate(validGGUF, { ...input.m, headerLength: undefined }));
    }),
  },
  {
    name: "GGUF models: a valid model file (llama3 rope scaling as rope_freqs.weight) mutated loads and generates, or is refused, with nothing left allocated",
    runs: 150,
    property: ({ rt }) => fc.asyncProperty(mutation, async (m) => {
      // With llama3 rope scaling, so that rope_freqs.weight is among what is mutated.
      ggufModel ??= await folderToGGUF(syntheticModelFiles({ ...TINY_CHAT_MODEL, num_hidden_layers: 2, hidden_size: 32, intermediate_size: 64, num_attention_heads: 4, max_position_embeddings: 64,
        rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } }, { dtype: "F32" }), { dtype: "q8_0" });
      await loadOrRefuse(rt, { "model.gguf": mutate(ggufModel, { ...m, headerLength: undefined }) });
    }),
  },
  {
    name: "GGUF models: gemma3, gemma2 and phi3 files (norms as 1 + w, sliding layers, q/k norms, soft-caps; fused qkv and ffn_up, LongRoPE's factor tensors) mutated load and generate, or are refused, with nothing left allocated",
    runs: 150,
    property: ({ rt }) => fc.asyncProperty(fc.constantFrom(0, 1, 2), mutation, async (which, m) => {
      gemmaModels[which] ??= await folderToGGUF(tinyFiles([
        { ...TINY_GEMMA3, model_type: "gemma2", intermediate_size: 64, layer_types: undefined, query_pre_attn_scalar: 8, attn_logit_softcapping: 2, final_logit_softcapping: 3 },
        { ...TINY_GEMMA3, num_hidden_layers: 6, intermediate_size: 64, layer_types: undefined, query_pre_attn_scalar: 8, rope_local_base_freq: 10000 },
        { ...TINY_PHI, intermediate_size: 64 },
      ][which]!), { dtype: "q8_0" });
      await loadOrRefuse(rt, { "model.gguf": mutate(gemmaModels[which]!, { ...m, headerLength: undefined }) });
    }),
  },
  {
    name: "GGUF models with Q5_0, Q4_1, IQ4_NL, Q4_K or Q6_K weights: the file mutated loads and generates, or is refused, with nothing left allocated",
    runs: 60,
    property: ({ rt }) => fc.asyncProperty(fc.constantFrom("q5_0", "q4_1", "iq4_nl", "q4_k", "q6_k") as fc.Arbitrary<"q5_0" | "q4_1" | "iq4_nl" | "q4_k" | "q6_k">, mutation, async (dtype, m) => {
      const hidden = dtype === "q5_0" || dtype === "q4_1" || dtype === "iq4_nl" ? 32 : 256; // K-quant rows are whole 256-weight super-blocks
      quantModels[dtype] ??= await folderToGGUF(syntheticModelFiles({ ...TINY_CHAT_MODEL, num_hidden_layers: 1, hidden_size: hidden, intermediate_size: hidden, num_attention_heads: 4, max_position_embeddings: 64 }, { dtype: "F32" }), { dtype });
      await loadOrRefuse(rt, { "model.gguf": mutate(quantModels[dtype]!, { ...m, headerLength: undefined }) });
    }),
  },
  {
    name: "GGUF models of Q2_K, Q3_K, IQ4_XS, Q5_K and Q5_1 weights (kept as stored or converted at load): the file mutated loads and generates, or is refused, with nothing left allocated",
    runs: 40,
    property: ({ rt }) => fc.asyncProperty(mutation, async (m) => {
      const types = ["Q2_K", "Q3_K", "IQ4_XS", "Q5_K", "Q5_1"] as const;
      randomBlocksModel ??= withRandomBlocks(await folderToGGUF(syntheticModelFiles({ ...TINY_CHAT_MODEL, num_hidden_layers: 1, hidden_size: 256, intermediate_size: 256, num_attention_heads: 4, max_position_embeddings: 64 }, { dtype: "F32" }), { dtype: "f32" }), (i) => types[i % types.length]!).file;
      await loadOrRefuse(rt, { "model.gguf": mutate(randomBlocksModel, { ...m, headerLength: undefined }) });
    }),
  },
  {
    name: "GGUF tokenizer metadata: hostile tokens, types, scores, merges and ids make a working tokenizer or a ModelConfigError",
    runs: 300,
    property: () => fc.property(
      fc.constantFrom("gpt2", "llama", "bert", 5),
      fc.array(fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom("a", "b", "ab", "▁", "▁a", "<unk>", "<s>", "</s>", "<0x41>"), fc.nat(3000).map((n) => "x".repeat(n))), { maxLength: 40 }),
      fc.array(fc.oneof(fc.integer({ min: -2, max: 8 }), fc.jsonValue({ maxDepth: 0 })), { maxLength: 40 }),
      fc.array(fc.oneof(fc.double({ noNaN: false }), fc.jsonValue({ maxDepth: 0 })), { maxLength: 40 }),
      fc.array(fc.oneof(fc.constantFrom("a b", "ab c", "a", " ", "x x"), fc.string({ maxLength: 5 })), { maxLength: 20 }),
      fc.record({ bos: fc.integer({ min: -1, max: 50 }), eos: fc.integer({ min: -1, max: 50 }), pre: fc.constantFrom("gpt-2", "default", "smollm", "llama-bpe", "qwen2", "gpt-4o", "falcon", "") }),
      (model, tokens, types, scores, merges, ids) => {
        const metadata = new Map<string, GGUFValue>([
          ["tokenizer.ggml.model", model as GGUFValue], ["tokenizer.ggml.tokens", tokens], ["tokenizer.ggml.token_type", types as GGUFValue[]],
          ["tokenizer.ggml.scores", scores.length === tokens.length ? scores as GGUFValue[] : tokens.map(() => 0)], ["tokenizer.ggml.merges", merges],
          ["tokenizer.ggml.bos_token_id", ids.bos], ["tokenizer.ggml.eos_token_id", ids.eos], ["tokenizer.ggml.pre", ids.pre],
        ]);
        let built;
        try { built = ggufTokenizer(metadata, "fuzz.gguf"); } catch (e) { expectOnly(e, ModelConfigError); return; }
        if (!built) return;
        let tok;
        try { tok = new TextTokenizer(built.json, built.config); } catch (e) { expectOnly(e, ModelConfigError); return; }
        try { tok.decode(tok.encode("ab a▁b xx")); } catch (e) { expectOnly(e, ModelConfigError); }
      }),
  },
  {
    name: "model folders: hostile config.json values load or are refused, with nothing left allocated",
    runs: 300,
    property: ({ rt }) => fc.asyncProperty(fc.dictionary(fc.constantFrom(...CONFIG_KEYS), configValue, { minKeys: 1, maxKeys: 3 }), fc.boolean(), fc.constantFrom(TINY_FUZZ_MODEL, TINY_GEMMA3, TINY_PHI), async (changes, whole, base) => {
      const files = tinyFiles(base);
      const config = JSON.parse(files["config.json"] as string) as Record<string, unknown>;
      files["config.json"] = whole ? JSON.stringify(changes) : JSON.stringify({ ...config, ...changes });
      await loadOrRefuse(rt, files);
    }),
  },
  {
    name: "model folders: a valid model.safetensors mutated (bytes, cut, appended, header length) streams in and generates, or is refused, with nothing left allocated",
    runs: 150,
    property: ({ rt }) => fc.asyncProperty(mutation, fc.constantFrom("F32", "BF16") as fc.Arbitrary<"F32" | "BF16">, async (m, dtype) => {
      const files = syntheticModelFiles(TINY_FUZZ_MODEL, { dtype });
      files["model.safetensors"] = mutate(files["model.safetensors"] as Uint8Array, m);
      await loadOrRefuse(rt, files);
    }),
  },
  {
    name: "model folders: hostile shard indexes (names, paths, URLs, maps) are refused",
    runs: 200,
    property: ({ rt }) => fc.asyncProperty(fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      fc.record({ weight_map: fc.dictionary(fc.oneof(fc.constantFrom("model.embed_tokens.weight", "model.norm.weight"), fc.string({ maxLength: 6 })),
        fc.oneof(fc.constantFrom("model.safetensors", "../model.safetensors", "/etc/passwd", "http://127.0.0.1:9/x", ".", "a/b", "missing.safetensors", ""), fc.jsonValue({ maxDepth: 1 })), { maxKeys: 4 }) }),
    ), async (index) => {
      const files = tinyFiles();
      files["model.safetensors.index.json"] = JSON.stringify(index);
      await loadOrRefuse(rt, files);
    }),
  },
  {
    name: "model folders: hostile generation_config.json and tokenizer_config.json (chat templates included) load or are refused",
    runs: 300,
    property: ({ rt }) => fc.asyncProperty(
      fc.jsonValue({ maxDepth: 2 }),
      fc.record({ chat_template: fc.oneof(hostileTemplate, fc.jsonValue({ maxDepth: 2 })), bos_token: fc.jsonValue({ maxDepth: 1 }), eos_token: fc.jsonValue({ maxDepth: 1 }), add_bos_token: fc.jsonValue({ maxDepth: 0 }) }, { requiredKeys: [] }),
      fc.boolean(),
      async (generation, tokenizerConfig, badJson) => {
        const files = tinyFiles();
        files["generation_config.json"] = badJson ? "{\"eos_token_id\": [1, " : JSON.stringify(generation);
        files["tokenizer_config.json"] = JSON.stringify(tokenizerConfig);
        await loadOrRefuse(rt, files);
      }),
  },
  {
    name: "tokenizer.json: a valid tokenizer with one value replaced anywhere is read and used, or refused with ModelConfigError",
    runs: 400,
    property: () => fc.property(fc.array(fc.nat(), { maxLength: 5 }), fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(null, -1, 1e9, "BPE", "ByteLevel", [], {})), (path, value) => {
      const files = byteLevelTokenizer();
      const json = replaceAt(JSON.parse(files["tokenizer.json"]), path, value);
      let tok;
      try { tok = new TextTokenizer(json, JSON.parse(files["tokenizer_config.json"])); } catch (e) { expectOnly(e, ModelConfigError); return; }
      try {
        const ids = tok.encode("hello wörld 🙂");
        tok.decode(ids);
      } catch (e) { expectOnly(e, ModelConfigError); }
    }),
  },
  {
    name: "chat templates: hostile Jinja renders or ends with a TemplateError within its budget",
    runs: 600,
    property: () => fc.property(hostileTemplate, fc.array(fc.record({ role: fc.constantFrom("user", "assistant", "system", "tool"), content: fc.string({ maxLength: 20 }) }), { maxLength: 4 }), (text, messages) => {
      let template;
      try { template = new ChatTemplate(text, "fuzz.jinja"); } catch (e) { expectOnly(e, TemplateError); return; }
      try {
        const out = template.render({ messages, add_generation_prompt: true, bos_token: "<s>" });
        if (typeof out !== "string") throw new Error("rendered a non-string");
      } catch (e) { expectOnly(e, TemplateError); }
    }),
  },
  {
    name: "KV snapshots: arbitrary and corrupted bytes are restored exactly or refused, the cache unchanged (every storage type)",
    runs: 600,
    property: ({ rt }) => fc.property(fc.constantFrom(...KV_DTYPES), fc.oneof(fc.uint8Array({ maxLength: 120 }), mutation.map((m) => ({ m }))), (dtype, input) => {
      const cache = createKVCache(rt, { layers: [{ numKvHeads: 2, headDim: 4 }, { numKvHeads: 1, headDim: 4 }], pageSize: 2, maxTokens: 16, dtype });
      try {
        const seq = cache.createSequence();
        cache.append(seq, 0, Float32Array.from(rowsOf(3, 8, 1)), Float32Array.from(rowsOf(3, 8, 2)));
        cache.append(seq, 1, Float32Array.from(rowsOf(3, 4, 3)), Float32Array.from(rowsOf(3, 4, 4)));
        const good = cache.snapshot(seq);
        const bytes = input instanceof Uint8Array ? input : mutate(good, input.m);
        const before = cache.stats();
        let restored;
        try { restored = cache.restore(bytes); } catch (e) {
          expectOnly(e, KVSnapshotError, KVCacheFullError);
          if (cache.stats().pagesUsed !== before.pagesUsed) throw new Error("a refused restore changed the pages in use");
          return;
        }
        if (bytes.length !== good.length || bytes.some((b, i) => b !== good[i])) throw new Error("a snapshot that differs from the saved one was restored");
        for (const layer of [0, 1]) {
          const a = cache.readLayer(seq, layer), b = cache.readLayer(restored, layer);
          if (a.k.some((x, i) => x !== b.k[i]) || a.v.some((x, i) => x !== b.v[i])) throw new Error("restored K/V differ");
        }
      } finally { cache.dispose(); }
    }),
  },
  {
    name: "OpenAI API: hostile request bodies get a response or an OpenAI error (never a 500), one line each, and every page comes back",
    runs: 400,
    property: ({ rt }) => fc.asyncProperty(fc.oneof(
      { arbitrary: apiRequest, weight: 10 },
      { arbitrary: fc.record({ path: fc.constantFrom("/v1/chat/completions", "/v1/completions"), body: fc.oneof(fc.string({ maxLength: 40 }), fc.string({ minLength: 5000, maxLength: 5000 })) }), weight: 1 },
    ), async ({ path, body }) => {
      const { api } = await fuzzApi(rt);
      const res = await api.fetch(new Request(`http://fuzz${path}`, { method: "POST", headers: { "content-type": "application/json" }, body }));
      const text = await res.text();
      if (![200, 400, 404, 413].includes(res.status)) throw new Error(`status ${res.status}: ${text.slice(0, 300)}`);
      if (res.status === 200) {
        if (res.headers.get("content-type")?.startsWith("text/event-stream")) {
          const events = text.split("\n\n").filter(Boolean);
          if (events.at(-1) !== "data: [DONE]") throw new Error(`a stream that did not end with [DONE]: ${text.slice(-300)}`);
        } else if (!Array.isArray((JSON.parse(text) as { choices?: unknown }).choices)) throw new Error(`no choices: ${text.slice(0, 300)}`);
      } else {
        const message = (JSON.parse(text) as { error?: { message?: unknown } }).error?.message;
        if (typeof message !== "string" || message.length === 0 || message.length > 2000 || message.includes("\n")) throw new Error(`not a one-line error: ${text.slice(0, 300)}`);
      }
      const stats = api.scheduler.stats();
      if (stats.failed !== 0) throw new Error(`${stats.failed} requests failed inside the scheduler`);
      if (stats.running !== 0 || stats.queued !== 0) throw new Error("a request is still running after its response was read");
      api.scheduler.clearPrefixCache();
      if (api.cache.stats().pagesUsed !== 0) throw new Error(`${api.cache.stats().pagesUsed} pages still used`);
    }),
  },
  {
    name: "KV cache API: random append / fork / truncate / free / snapshot / restore / attention sequences agree with a plain model, and every page comes back",
    runs: 400,
    property: ({ rt }) => fc.property(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 8, max: 40 }), fc.commands(kvCommands, { maxCommands: 80, size: "medium" }), (pageSize, maxTokens, commands) => {
      const shapes = [{ numKvHeads: 2, headDim: 8 }, { numKvHeads: 1, headDim: 5 }];
      const cache = createKVCache(rt, { layers: shapes, pageSize, maxTokens });
      const real: KVReal = { cache, seqs: [], rt, shapes };
      try {
        // Two sequences to start with, so that every command has something to work on.
        const model: KVModel = { seqs: [], capacity: maxTokens };
        new CreateCommand().run(model, real);
        new CreateCommand().run(model, real);
        fc.modelRun(() => ({ model, real }), commands);
        for (const s of real.seqs) if (s) cache.free(s);
        const stats = cache.stats();
        if (stats.pagesUsed !== 0 || stats.sequences.length !== 0) throw new Error(`${stats.pagesUsed} pages still used after every sequence was freed`);
        if (stats.pagesFree !== stats.pagesTotal) throw new Error("free pages do not add up");
      } finally { cache.dispose(); }
    }),
  },
];

// ---------------------------------------------------------------- the OpenAI-compatible API

const apiValue = fc.oneof(
  fc.integer({ min: -5, max: 2000 }), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null), fc.string({ maxLength: 12 }),
  fc.array(fc.oneof(fc.integer({ min: -2, max: 300 }), fc.string({ maxLength: 6 })), { maxLength: 5 }), fc.dictionary(fc.string({ maxLength: 6 }), fc.integer(), { maxKeys: 3 }),
);
const toolCallItem = fc.record({ id: fc.string({ maxLength: 6 }), type: fc.constantFrom("function", "x"),
  function: fc.oneof(fc.record({ name: fc.constantFrom("f", "get", "x y"), arguments: fc.oneof(fc.constantFrom("{}", "{\"a\": 1}", "{", "[1]"), fc.string({ maxLength: 8 })) }), apiValue) }, { requiredKeys: [] });
const message = fc.record({
  role: fc.oneof({ arbitrary: fc.constantFrom("system", "developer", "user", "assistant"), weight: 8 }, { arbitrary: fc.oneof(fc.constant("tool"), fc.string({ maxLength: 5 })), weight: 2 }),
  content: fc.oneof({ arbitrary: fc.string({ maxLength: 40 }), weight: 6 }, { arbitrary: fc.array(fc.record({ type: fc.constantFrom("text", "text", "image_url"), text: fc.string({ maxLength: 10 }) }), { maxLength: 3 }), weight: 2 }, { arbitrary: apiValue, weight: 1 }),
  tool_calls: fc.oneof(fc.array(toolCallItem, { maxLength: 2 }), apiValue), tool_call_id: fc.oneof(fc.string({ maxLength: 6 }), apiValue),
}, { requiredKeys: ["role", "content"] });
const toolSpec = fc.record({ type: fc.constantFrom("function", "function", "retrieval"),
  function: fc.oneof(fc.record({ name: fc.oneof(fc.constantFrom("f", "get_weather", "bad name"), fc.string({ maxLength: 70 })), description: fc.oneof(fc.string({ maxLength: 10 }), apiValue), parameters: fc.oneof(fc.constant({ type: "object" }), apiValue) }, { requiredKeys: ["name"] }), apiValue) });
const schema: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  node: fc.oneof({ depthSize: "small" },
    fc.record({ type: fc.constantFrom("string", "integer", "number", "boolean", "null", "object", "array", "date") }),
    fc.record({ enum: fc.array(fc.oneof(fc.string({ maxLength: 4 }), fc.integer()), { minLength: 1, maxLength: 3 }) }),
    fc.record({ type: fc.constant("object"), properties: fc.dictionary(fc.string({ maxLength: 5 }), tie("node"), { maxKeys: 3 }), required: fc.array(fc.string({ maxLength: 5 }), { maxLength: 2 }) }, { requiredKeys: ["type"] }),
    fc.record({ type: fc.constant("array"), items: tie("node"), maxItems: fc.integer({ min: -1, max: 3 }) }, { requiredKeys: ["type"] }),
    fc.record({ type: fc.constant("string"), maxLength: fc.integer({ min: -1, max: 6 }), pattern: fc.constant("a+") }, { requiredKeys: ["type"] }),
    fc.record({ anyOf: fc.array(tie("node"), { minLength: 1, maxLength: 3 }) }),
    apiValue,
  ),
})).node;
const responseFormat = fc.oneof(
  { arbitrary: fc.record({ type: fc.constantFrom("text", "json_object", "json_schema", "xml") }), weight: 2 },
  { arbitrary: fc.record({ type: fc.constant("json_schema"), json_schema: fc.record({ name: fc.string({ maxLength: 5 }), schema }, { requiredKeys: [] }) }), weight: 3 },
  { arbitrary: apiValue as fc.Arbitrary<unknown>, weight: 1 },
);
/** Mostly a valid value of a field, sometimes any value. */
const validOr = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ arbitrary: valid, weight: 15 }, { arbitrary: apiValue as fc.Arbitrary<unknown>, weight: 1 });
const commonFields = {
  model: fc.oneof({ arbitrary: fc.constant("tiny"), weight: 12 }, { arbitrary: apiValue, weight: 1 }),
  stream: validOr(fc.boolean()), stream_options: validOr(fc.record({ include_usage: fc.boolean() })),
  max_tokens: validOr(fc.integer({ min: 1, max: 24 })), temperature: validOr(fc.double({ min: 0, max: 2, noNaN: true })),
  top_p: validOr(fc.double({ min: 0, max: 1, noNaN: true })), seed: validOr(fc.integer()),
  stop: validOr(fc.oneof(fc.string({ maxLength: 3 }), fc.array(fc.string({ minLength: 1, maxLength: 3 }), { maxLength: 4 }))),
  frequency_penalty: validOr(fc.double({ min: -2, max: 2, noNaN: true })), presence_penalty: validOr(fc.double({ min: -2, max: 2, noNaN: true })),
  n: validOr(fc.constant(1)), response_format: responseFormat,
};
/** A chat or completions body with the path it goes to: mostly known fields, now and then an unknown one. */
const apiRequest = fc.tuple(
  fc.oneof(
    fc.record({ path: fc.constant("/v1/chat/completions"), body: fc.record({ ...commonFields, messages: validOr(fc.array(message, { minLength: 1, maxLength: 3 })), logprobs: validOr(fc.boolean()), top_logprobs: validOr(fc.integer({ min: 0, max: 21 })),
      chat_template_kwargs: validOr(fc.dictionary(fc.constantFrom("enable_thinking", "messages", "eos_token", "tools", "x"), apiValue, { maxKeys: 3 })),
      reasoning_format: validOr(fc.constantFrom("auto", "none", "deepseek")),
      tools: validOr(fc.array(toolSpec, { maxLength: 3 })), tool_choice: validOr(fc.oneof(fc.constantFrom("auto", "none", "required"), fc.record({ type: fc.constant("function"), function: fc.record({ name: fc.constant("f") }) }))),
      parallel_tool_calls: validOr(fc.boolean()) }, { requiredKeys: ["model", "messages"] }) }),
    fc.record({ path: fc.constant("/v1/completions"), body: fc.record({ ...commonFields, prompt: validOr(fc.oneof(fc.string({ maxLength: 30 }), fc.array(fc.integer({ min: -1, max: 270 }), { minLength: 1, maxLength: 10 }))), logprobs: validOr(fc.integer({ min: 0, max: 6 })) }, { requiredKeys: ["model", "prompt"] }) }),
  ),
  fc.oneof({ arbitrary: fc.constant(null), weight: 12 }, { arbitrary: apiValue as fc.Arbitrary<unknown>, weight: 1 }),
).map(([{ path, body }, extra]) => ({ path, body: JSON.stringify(extra === null ? body : { ...body, frobnicate: extra }) }));

let apiServer: Promise<{ api: import("../../src/serve/openai.ts").OpenAIServer }> | undefined;
/** The tiny chat model behind the handler, with a KV budget small enough that every request is short. */
function fuzzApi(rt: Runtime) {
  apiServer ??= (async () => {
    const { createOpenAIServer } = await import("../../src/serve/openai.ts");
    // ChatML that also teaches Hermes tool calls (tools, assistant tool_calls, tool turns): requests with tools run.
    const template = "{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}{% endfor %}<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
      + "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    const model = await loadModel(rt, { ...syntheticModelFiles(), ...byteLevelTokenizer({ chatTemplate: template }) });
    return { api: createOpenAIServer(model, { modelId: "tiny", maxSequences: 2, maxCacheTokens: 256, maxBodyBytes: 4096 }) };
  })();
  return apiServer;
}

/** A runtime for the properties: a memory budget so that a hostile size cannot take the machine. */
export function fuzzRuntime(): Promise<Runtime> {
  return createRuntime({ maxMemoryBytes: 256 << 20 });
}
