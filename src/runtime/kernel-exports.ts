// The host's typed view of assembly/index.ts, the one list of Wasm exports. Pointers and sizes
// are byte offsets into the memory the host owns; kernels never allocate.

export interface KernelExports {
  heap_base(): number;
  kernel_features(): number;
  attention_f32(
    q: number, k: number, v: number, out: number,
    seqQ: number, seqK: number, numHeads: number, numKvHeads: number, headDim: number,
    scale: number, causal: number, slidingWindow: number,
    kvHeadBegin: number, kvHeadEnd: number, qBegin: number, qEnd: number,
    keyBegin: number, keyEnd: number, stats: number, scratch: number,
  ): void;
  attention_paged(
    q: number, out: number, seqQ: number, seqK: number, numHeads: number, numKvHeads: number, headDim: number,
    scale: number, causal: number, slidingWindow: number, pages: number, pageSize: number, dtype: number,
    kvHeadBegin: number, kvHeadEnd: number, qBegin: number, qEnd: number,
    keyBegin: number, keyEnd: number, stats: number, scratch: number,
  ): void;
  attention_combine(
    partials: number, stats: number, nParts: number, rows: number, headDim: number, out: number, rowBegin: number, rowEnd: number,
  ): void;
  kv_page_bytes(numKvHeads: number, headDim: number, pageSize: number, dtype: number): number;
  kv_scale_offset(numKvHeads: number, headDim: number, pageSize: number): number;
  attention_scratch_bytes(numHeads: number, numKvHeads: number): number;
  linear_f32(
    x: number, w: number, bias: number, y: number,
    M: number, N: number, K: number, nBegin: number, nEnd: number,
  ): void;
  /** linear_f32 with bfloat16 weights (u16 elements) */
  linear_bf16(x: number, w: number, bias: number, y: number, M: number, N: number, K: number, nBegin: number, nEnd: number): void;
  /** linear_f32 with IEEE half weights */
  linear_f16(x: number, w: number, bias: number, y: number, M: number, N: number, K: number, nBegin: number, nEnd: number): void;
  /** The linear layer with Q8_0 / Q4_0 weights (GGUF block layout); scratch: linear_quant_scratch_bytes(M, K) per job */
  linear_q8_0(x: number, w: number, bias: number, y: number, M: number, N: number, K: number, nBegin: number, nEnd: number, scratch: number): void;
  linear_q4_0(x: number, w: number, bias: number, y: number, M: number, N: number, K: number, nBegin: number, nEnd: number, scratch: number): void;
  linear_quant_scratch_bytes(M: number, K: number): number;
  rmsnorm_f32(x: number, w: number, out: number, dim: number, eps: number, rowBegin: number, rowEnd: number): void;
  rope_f32(x: number, rows: number, heads: number, headDim: number, cos: number, sin: number, tableRow0: number): void;
  swiglu_f32(gate: number, up: number, out: number, n: number): void;
  exp_f32(x: number, out: number, n: number): void;
  probe_read(ptr: number, bytes: number, reps: number): number;
  probe_fma(iters: number): number;
}

export const KERNEL_EXPORT_NAMES: readonly (keyof KernelExports)[] = [
  "heap_base", "kernel_features", "attention_f32", "attention_paged", "attention_combine", "attention_scratch_bytes", "kv_page_bytes", "kv_scale_offset", "linear_f32", "linear_bf16", "linear_f16",
  "linear_q8_0", "linear_q4_0", "linear_quant_scratch_bytes",
  "rmsnorm_f32", "rope_f32", "swiglu_f32", "exp_f32", "probe_read", "probe_fma",
];

/** Checks an instance has every export, so a stale or foreign .wasm fails at load, not mid-call. */
export function kernelExportsOf(instance: WebAssembly.Instance): KernelExports {
  const missing = KERNEL_EXPORT_NAMES.filter((n) => typeof instance.exports[n] !== "function");
  if (missing.length > 0) {
    throw new TypeError(`createRuntime: the wasm module lacks the kernel exports ${missing.join(", ")} (not a gqa-wasm build, or an older one)`);
  }
  return instance.exports as unknown as KernelExports;
}
