// The one table of kernels: every Wasm export with the AssemblyScript module that defines it,
// its parameters, whether it returns a value, whether the worker pool runs it, and which weight
// dtype a linear kernel computes on; with the codes and the structs host and kernels share.
// Everything else derives from it: the Wasm export list (assembly/index.ts) and the kernels'
// codes and structs (assembly/abi.ts) are generated from it by scripts/gen-abi.ts (run by
// `npm run asbuild`; a test checks the committed files are current), and on the host the typed
// signatures (KernelExports), the pool's kernel list, the linear kernel per dtype, the KV dtype
// codes and the load-time check of a module's exports (names and arities). A new kernel is one
// entry here and its function in assembly/kernels. Pointers and sizes are byte offsets into the
// memory the host owns; kernels never allocate.

/**
 * flags: CODES.LINEAR_ACCUMULATE: y = (y + x·Wᵀ) + bias, a residual add fused into the store;
 * CODES.LINEAR_X_QUANTIZED (quantized weights, fewer rows than linear_quant_f32_rows): `x` points
 * at x already quantized by quantize_activations (shared by the calls, read only). scratch: the
 * call's own (threads each their own), of the bytes its kernel's `scratchBytes` export says for (M, K).
 */
const LINEAR = ["x", "w", "bias", "y", "M", "N", "K", "nBegin", "nEnd", "flags", "scratch"] as const;
const EMBED = ["table", "K", "ids", "rowBegin", "rowEnd", "out"] as const;
const ATTENTION_RANGES = ["kvHeadBegin", "kvHeadEnd", "qBegin", "qEnd", "keyBegin", "keyEnd", "stats", "scratch"] as const;

/**
 * Codes shared by the host and the kernels: the KV cache's storage types; the linear kernels'
 * flags; the block-quantized weight formats (linear_quant_f32_rows' argument), 0 to
 * WEIGHT_FORMAT_COUNT - 1.
 */
export const CODES = {
  KV_F32: 0, KV_BF16: 1, KV_INT8: 2, KV_F16: 3, LINEAR_ACCUMULATE: 1, LINEAR_X_QUANTIZED: 2,
  WEIGHT_Q8_0: 0, WEIGHT_Q4_0: 1, WEIGHT_Q4_K: 2, WEIGHT_Q6_K: 3, WEIGHT_Q5_0: 4, WEIGHT_IQ4_NL: 5, WEIGHT_Q5_K: 6, WEIGHT_Q2_K: 7, WEIGHT_Q3_K: 8, WEIGHT_Q4_1: 9, WEIGHT_Q5_1: 10, WEIGHT_Q6_K_U8: 11, WEIGHT_Q5_0_U8: 12, WEIGHT_Q5_1_U8: 13, WEIGHT_Q5_K_U8: 14,
  WEIGHT_FORMAT_COUNT: 15,
} as const;

/** The WEIGHT_* code of each block-quantized weight dtype. */
export const WEIGHT_FORMATS = { q8_0: CODES.WEIGHT_Q8_0, q4_0: CODES.WEIGHT_Q4_0, q5_0: CODES.WEIGHT_Q5_0, q4_1: CODES.WEIGHT_Q4_1, q5_1: CODES.WEIGHT_Q5_1, q2_k: CODES.WEIGHT_Q2_K, q3_k: CODES.WEIGHT_Q3_K, q4_k: CODES.WEIGHT_Q4_K, q5_k: CODES.WEIGHT_Q5_K, q6_k: CODES.WEIGHT_Q6_K, q6_k_u8: CODES.WEIGHT_Q6_K_U8, q5_0_u8: CODES.WEIGHT_Q5_0_U8, q5_1_u8: CODES.WEIGHT_Q5_1_U8, q5_k_u8: CODES.WEIGHT_Q5_K_U8, iq4_nl: CODES.WEIGHT_IQ4_NL } as const;

/**
 * Structs the host writes into wasm memory for calls too wide for positional arguments: fields
 * in order, 4 bytes each (wasm32 pointers, i32, f32). `call` arguments point at one.
 */
export const STRUCTS = {
  /**
   * One attention problem: queries q and output out [seqQ, numHeads, headDim]; keys and values
   * either contiguous (k, v token-major [seqK, numKvHeads, headDim] f32) or paged (pages: the
   * u32 block table, pageSize, dtype: a CODES.KV_* storage type); scale; causal (bottom-right
   * aligned) and window (sliding window, 0: none); softcap (scores capped at ±softcap by
   * softcap · tanh(s / softcap), Gemma 2's; 0: none).
   */
  AttentionCall: {
    q: "usize", k: "usize", v: "usize", out: "usize", seqQ: "i32", seqK: "i32", numHeads: "i32", numKvHeads: "i32", headDim: "i32",
    scale: "f32", causal: "i32", window: "i32", pages: "usize", pageSize: "i32", dtype: "i32", softcap: "f32",
  },
} as const satisfies Record<string, Record<string, "usize" | "i32" | "f32">>;

export type StructName = keyof typeof STRUCTS;
export type StructValues<S extends StructName> = { [F in keyof (typeof STRUCTS)[S]]: number };

/** Bytes of a struct, rounded up to 16. */
export function structBytes(name: StructName): number {
  return (Object.keys(STRUCTS[name]).length * 4 + 15) & ~15;
}

/** The word (4-byte) index of a struct's field, for a store of one field into a struct already written. */
export function structField<S extends StructName>(name: S, field: keyof (typeof STRUCTS)[S] & string): number {
  const i = Object.keys(STRUCTS[name]).indexOf(field);
  if (i < 0) throw new RangeError(`${name} has no field ${field}`);
  return i;
}

/** Each struct's fields in order, and which are f32. */
const FIELDS = Object.fromEntries(Object.entries(STRUCTS).map(([name, fields]) => [name, Object.entries(fields).map(([f, t]) => [f, t === "f32"] as const)])) as unknown as Record<StructName, readonly (readonly [string, boolean])[]>;

/** Writes a struct at `ptr` (through the memory's i32 and f32 views). */
export function writeStruct<S extends StructName>(mem: { i32: Int32Array; f32: Float32Array }, ptr: number, name: S, values: StructValues<S>): void {
  const i32 = mem.i32, f32 = mem.f32, base = ptr >>> 2, fields = FIELDS[name], v = values as Record<string, number>;
  for (let i = 0; i < fields.length; i++) {
    const [field, isF32] = fields[i]!;
    if (isF32) f32[base + i] = v[field]!; else i32[base + i] = v[field]!;
  }
}

type WeightDtype = "f32" | "bf16" | "f16" | keyof typeof WEIGHT_FORMATS;

interface KernelSpec {
  /** The AssemblyScript module under assembly/ that defines it. */
  from: string;
  params: readonly string[];
  /** Returns a number (sizes, probes); else void. */
  returns?: true;
  /** The worker pool may run it as a job (it works on a range). */
  pool?: true;
  /** A linear kernel: the weight dtype it computes on. */
  linear?: WeightDtype;
  /** An embedding lookup: the table dtype it reads. */
  embed?: WeightDtype;
  /** The export that gives the bytes of scratch a call takes, for (M, K). */
  scratchBytes?: "linear_panel_scratch_bytes" | "linear_quant_scratch_bytes";
}

export const KERNELS = {
  /** Where the host may place buffers: above the module's static data. */
  heap_base: { from: "module-info", params: [], returns: true },
  /** Bit 0: the build uses relaxed-SIMD FMA. */
  kernel_features: { from: "module-info", params: [], returns: true },
  /** Attention over contiguous K/V; `call`: an AttentionCall. */
  attention_f32: { from: "kernels/attention", params: ["call", ...ATTENTION_RANGES], pool: true },
  /** Attention over KV-cache pages; `call`: an AttentionCall with the block table. */
  attention_paged: { from: "kernels/attention", params: ["call", ...ATTENTION_RANGES], pool: true },
  /** Combines split-KV partial outputs (running max, sum, unnormalised output). */
  attention_combine: { from: "kernels/attention", params: ["partials", "stats", "nParts", "rows", "headDim", "out", "rowBegin", "rowEnd"], pool: true },
  attention_scratch_bytes: { from: "kernels/attention", params: ["numHeads", "numKvHeads", "headDim"], returns: true },
  kv_page_bytes: { from: "kernels/kv-pages", params: ["numKvHeads", "headDim", "pageSize", "dtype"], returns: true },
  kv_scale_offset: { from: "kernels/kv-pages", params: ["numKvHeads", "headDim", "pageSize"], returns: true },
  /** Stores K/V rows [rowBegin, rowEnd) at positions pos0 + row of a block table, in the storage dtype. */
  kv_write: { from: "kernels/kv-pages", params: ["k", "v", "rowBegin", "rowEnd", "numKvHeads", "headDim", "pages", "pageSize", "dtype", "pos0"], pool: true },
  /** scratch (GEMM): x packed in 4-row tiles */
  linear_f32: { from: "kernels/linear", params: LINEAR, pool: true, linear: "f32", scratchBytes: "linear_panel_scratch_bytes" },
  /** bfloat16 weights (u16 elements); GEMM widens them into an f32 panel in scratch (x packed after it) */
  linear_bf16: { from: "kernels/linear", params: LINEAR, pool: true, linear: "bf16", scratchBytes: "linear_panel_scratch_bytes" },
  /** IEEE half weights, likewise */
  linear_f16: { from: "kernels/linear", params: LINEAR, pool: true, linear: "f16", scratchBytes: "linear_panel_scratch_bytes" },
  linear_panel_scratch_bytes: { from: "kernels/linear", params: ["M", "K"], returns: true },
  /** Q8_0 / Q4_0 / Q5_0 / IQ4_NL / Q4_1 / Q5_1 weights (GGUF block layout); scratch: the quantized activations, or from linear_quant_f32_rows rows a dequantized weight panel, or (relaxed build, Q4_0 / Q5_0 / Q4_1 / Q5_1 from 12 rows) after them a packed integer weight panel */
  linear_q8_0: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q8_0", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q4_0: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q4_0", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q5_0: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q5_0", scratchBytes: "linear_quant_scratch_bytes" },
  linear_iq4_nl: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "iq4_nl", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q4_1: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q4_1", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q5_1: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q5_1", scratchBytes: "linear_quant_scratch_bytes" },
  linear_quant_scratch_bytes: { from: "kernels/linear-quant", params: ["M", "K"], returns: true },
  /** The rows of x from which the kernel of a weight format (a WEIGHT_* code) computes in f32 on dequantized weight panels: x is then not quantized */
  linear_quant_f32_rows: { from: "kernels/linear-quant", params: ["format"], returns: true },
  /** Quantizes x's 32-blocks [blockBegin, blockEnd) (row by row) for the block-quantized kernels with LINEAR_X_QUANTIZED */
  quantize_activations: { from: "kernels/linear-quant", params: ["x", "M", "K", "qa", "blockBegin", "blockEnd"], pool: true },
  /** Q2_K / Q3_K / Q4_K / Q5_K / Q6_K weights (GGUF super-blocks of 256: K a multiple of 256); scratch as linear_q8_0's, or (relaxed build, every K-quant from 12 rows) after x quantized a packed integer weight panel */
  linear_q2_k: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q2_k", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q3_k: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q3_k", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q4_k: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q4_k", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q5_k: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q5_k", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q6_k: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q6_k", scratchBytes: "linear_quant_scratch_bytes" },
  /** Q6_K unpacked to a byte a weight (what a GGUF file's Q6_K loads as): as linear_q6_k */
  linear_q6_k_u8: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q6_k_u8", scratchBytes: "linear_quant_scratch_bytes" },
  /** Q5_0 / Q5_1 unpacked to a byte a weight (what a GGUF file's Q5_0 / Q5_1 load as): as linear_q5_0 / linear_q5_1 */
  linear_q5_0_u8: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q5_0_u8", scratchBytes: "linear_quant_scratch_bytes" },
  linear_q5_1_u8: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q5_1_u8", scratchBytes: "linear_quant_scratch_bytes" },
  /** Q5_K unpacked to a byte a weight (what a GGUF file's Q5_K loads as): as linear_q5_k */
  linear_q5_k_u8: { from: "kernels/linear-quant", params: LINEAR, pool: true, linear: "q5_k_u8", scratchBytes: "linear_quant_scratch_bytes" },
  /** Rows [rowBegin, rowEnd) of out [rows, K] f32 = the table's rows ids[row] (i32 token ids), widened or dequantized. */
  embed_rows_f32: { from: "kernels/embedding", params: EMBED, pool: true, embed: "f32" },
  embed_rows_bf16: { from: "kernels/embedding", params: EMBED, pool: true, embed: "bf16" },
  embed_rows_f16: { from: "kernels/embedding", params: EMBED, pool: true, embed: "f16" },
  embed_rows_q8_0: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q8_0" },
  embed_rows_q4_0: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q4_0" },
  embed_rows_q5_0: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q5_0" },
  embed_rows_iq4_nl: { from: "kernels/embedding", params: EMBED, pool: true, embed: "iq4_nl" },
  embed_rows_q4_1: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q4_1" },
  embed_rows_q5_1: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q5_1" },
  embed_rows_q2_k: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q2_k" },
  embed_rows_q3_k: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q3_k" },
  embed_rows_q4_k: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q4_k" },
  embed_rows_q5_k: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q5_k" },
  embed_rows_q6_k: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q6_k" },
  embed_rows_q6_k_u8: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q6_k_u8" },
  embed_rows_q5_0_u8: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q5_0_u8" },
  embed_rows_q5_1_u8: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q5_1_u8" },
  embed_rows_q5_k_u8: { from: "kernels/embedding", params: EMBED, pool: true, embed: "q5_k_u8" },
  rmsnorm_f32: { from: "kernels/rmsnorm", params: ["x", "w", "out", "dim", "eps", "rowBegin", "rowEnd"], pool: true },
  /** out += rmsnorm(x) · w (Gemma's norms of the attention and MLP outputs, before the residual add) */
  rmsnorm_add_f32: { from: "kernels/rmsnorm", params: ["x", "w", "out", "dim", "eps", "rowBegin", "rowEnd"], pool: true },
  /** RoPE on the first rotaryDim elements of each head (all of it but for partial rotary) */
  rope_f32: { from: "kernels/rope", params: ["x", "rows", "heads", "headDim", "rotaryDim", "cos", "sin", "tableRow0"], pool: true },
  swiglu_f32: { from: "kernels/elementwise", params: ["gate", "up", "out", "n"], pool: true },
  /** gelu_tanh(gate) · up (Gemma's MLP) */
  geglu_tanh_f32: { from: "kernels/elementwise", params: ["gate", "up", "out", "n"], pool: true },
  scale_f32: { from: "kernels/elementwise", params: ["x", "out", "n", "s"], pool: true },
  /** y += x · s (Granite's scaled residual adds) */
  add_scaled_f32: { from: "kernels/elementwise", params: ["x", "y", "n", "s"], pool: true },
  /** cap · tanh(x / cap) (Gemma 2's final logits) */
  softcap_f32: { from: "kernels/elementwise", params: ["x", "out", "n", "cap"], pool: true },
  exp_f32: { from: "math/exp", params: ["x", "out", "n"] },
  /** The index of the largest of n floats (the first of equals; NaN never larger): greedy decoding on resident logits */
  argmax_f32: { from: "kernels/argmax", params: ["x", "n"], returns: true },
  probe_read: { from: "kernels/probes", params: ["ptr", "bytes", "reps"], returns: true },
  probe_fma: { from: "kernels/probes", params: ["iters"], returns: true },
  /** The integer panels' 7-bit dot and 16-bit add, 12 chains (384 · iters operations; relaxed build) */
  probe_dot_i7: { from: "kernels/probes", params: ["iters"], returns: true },
} as const satisfies Record<string, KernelSpec>;

export type KernelName = keyof typeof KERNELS;

/** The typed signatures: one number per parameter; a number back where the kernel returns one. */
export type KernelExports = {
  [K in KernelName]: (...args: Numbers<(typeof KERNELS)[K]["params"]>) => (typeof KERNELS)[K] extends { returns: true } ? number : void;
};
/** A number for each name of a parameter list. */
type Numbers<P extends readonly string[]> = { -readonly [I in keyof P]: number };

/** Kernels the worker pool runs (index = the id a job slot carries; 0 is none). */
export const JOB_KERNELS = ["", ...(Object.keys(KERNELS) as KernelName[]).filter((k) => (KERNELS[k] as KernelSpec).pool)] as const;
export type JobKernel = { [K in KernelName]: (typeof KERNELS)[K] extends { pool: true } ? K : never }[KernelName];

/** The kernel of each weight dtype in a family whose specs name their dtype in `field`. */
function kernelsByDtype(field: "linear" | "embed"): Record<WeightDtype, JobKernel> {
  return Object.fromEntries((Object.keys(KERNELS) as KernelName[]).flatMap((k) => {
    const dtype = (KERNELS[k] as KernelSpec)[field];
    return dtype ? [[dtype, k]] : [];
  })) as Record<WeightDtype, JobKernel>;
}

/** The linear kernel of each weight dtype. */
export const LINEAR_KERNELS = kernelsByDtype("linear");
/** The embedding lookup of each table dtype. */
export const EMBED_KERNELS = kernelsByDtype("embed");

/** Checks an instance has every export with its arity, so a stale or foreign .wasm fails at load, not mid-call. */
export function kernelExportsOf(instance: WebAssembly.Instance): KernelExports {
  const wrong = (Object.keys(KERNELS) as KernelName[]).filter((n) => {
    const f = instance.exports[n];
    return typeof f !== "function" || f.length !== KERNELS[n].params.length;
  });
  if (wrong.length > 0) {
    throw new TypeError(`createRuntime: the wasm module lacks the kernel exports ${wrong.join(", ")} or takes other arguments (not a gqa-wasm build, or an older one)`);
  }
  return instance.exports as unknown as KernelExports;
}
