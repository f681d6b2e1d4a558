// The one table of kernels on the host side: every Wasm export of assembly/index.ts with its
// parameters, whether it returns a value, whether the worker pool runs it, and which weight
// dtype a linear kernel computes on. The typed signatures (KernelExports), the pool's kernel
// list, the linear kernel per dtype and the load-time check of a module's exports (names and
// arities) all derive from it: a new kernel is one entry here and its export in
// assembly/index.ts (a test checks the two agree). Pointers and sizes are byte offsets into the
// memory the host owns; kernels never allocate.

/** accumulate 1: y = (y + x·Wᵀ) + bias, a residual add fused into the store. */
const LINEAR = ["x", "w", "bias", "y", "M", "N", "K", "nBegin", "nEnd", "accumulate"] as const;
const LINEAR_QUANT = [...LINEAR, "scratch"] as const;
const ATTENTION_RANGES = ["kvHeadBegin", "kvHeadEnd", "qBegin", "qEnd", "keyBegin", "keyEnd", "stats", "scratch"] as const;

interface KernelSpec {
  params: readonly string[];
  /** Returns a number (sizes, probes); else void. */
  returns?: true;
  /** The worker pool may run it as a job (it works on a range). */
  pool?: true;
  /** A linear kernel: the weight dtype it computes on. */
  linear?: "f32" | "bf16" | "f16" | "q8_0" | "q4_0";
}

export const KERNELS = {
  /** Where the host may place buffers: above the module's static data. */
  heap_base: { params: [], returns: true },
  /** Bit 0: the build uses relaxed-SIMD FMA. */
  kernel_features: { params: [], returns: true },
  attention_f32: { params: ["q", "k", "v", "out", "seqQ", "seqK", "numHeads", "numKvHeads", "headDim", "scale", "causal", "slidingWindow", ...ATTENTION_RANGES], pool: true },
  /** Attention over KV-cache pages (a page table of `pages`, page size, storage dtype code). */
  attention_paged: { params: ["q", "out", "seqQ", "seqK", "numHeads", "numKvHeads", "headDim", "scale", "causal", "slidingWindow", "pages", "pageSize", "dtype", ...ATTENTION_RANGES], pool: true },
  /** Combines split-KV partial outputs (running max, sum, unnormalised output). */
  attention_combine: { params: ["partials", "stats", "nParts", "rows", "headDim", "out", "rowBegin", "rowEnd"], pool: true },
  attention_scratch_bytes: { params: ["numHeads", "numKvHeads"], returns: true },
  kv_page_bytes: { params: ["numKvHeads", "headDim", "pageSize", "dtype"], returns: true },
  kv_scale_offset: { params: ["numKvHeads", "headDim", "pageSize"], returns: true },
  /** Stores K/V rows [rowBegin, rowEnd) at positions pos0 + row of a block table, in the storage dtype. */
  kv_write: { params: ["k", "v", "rowBegin", "rowEnd", "numKvHeads", "headDim", "pages", "pageSize", "dtype", "pos0"], pool: true },
  linear_f32: { params: LINEAR, pool: true, linear: "f32" },
  /** bfloat16 weights (u16 elements) */
  linear_bf16: { params: LINEAR, pool: true, linear: "bf16" },
  /** IEEE half weights */
  linear_f16: { params: LINEAR, pool: true, linear: "f16" },
  /** Q8_0 / Q4_0 weights (GGUF block layout); scratch: linear_quant_scratch_bytes(M, K) per job */
  linear_q8_0: { params: LINEAR_QUANT, pool: true, linear: "q8_0" },
  linear_q4_0: { params: LINEAR_QUANT, pool: true, linear: "q4_0" },
  linear_quant_scratch_bytes: { params: ["M", "K"], returns: true },
  rmsnorm_f32: { params: ["x", "w", "out", "dim", "eps", "rowBegin", "rowEnd"], pool: true },
  rope_f32: { params: ["x", "rows", "heads", "headDim", "cos", "sin", "tableRow0"], pool: true },
  swiglu_f32: { params: ["gate", "up", "out", "n"], pool: true },
  exp_f32: { params: ["x", "out", "n"] },
  probe_read: { params: ["ptr", "bytes", "reps"], returns: true },
  probe_fma: { params: ["iters"], returns: true },
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

/** The linear kernel of each weight dtype. */
export const LINEAR_KERNELS = Object.fromEntries((Object.keys(KERNELS) as KernelName[]).flatMap((k) => {
  const dtype = (KERNELS[k] as KernelSpec).linear;
  return dtype ? [[dtype, k]] : [];
})) as Record<NonNullable<KernelSpec["linear"]>, JobKernel>;

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
