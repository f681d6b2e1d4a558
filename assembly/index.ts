// Every Wasm export of gqa-wasm, in one list. The host's table of kernels is
// src/runtime/kernel-exports.ts (signatures, which the pool runs, the linear kernel per dtype);
// tests/runtime.test.ts checks the two agree, names and arities.

/** Where the host may start placing buffers: above the module's static data. */
export function heap_base(): usize { return __heap_base; }

/** Bit 0: this build uses relaxed-SIMD FMA. */
export function kernel_features(): i32 { return ASC_FEATURE_RELAXED_SIMD ? 1 : 0; }

export { attention_f32, attention_paged, attention_combine, attention_scratch_bytes } from "./kernels/attention";
export { kv_page_bytes, kv_scale_offset, kv_write } from "./kernels/kv-pages";
export { linear_f32, linear_bf16, linear_f16 } from "./kernels/linear";
export { linear_q8_0, linear_q4_0, linear_quant_scratch_bytes } from "./kernels/linear-quant";
export { rmsnorm_f32 } from "./kernels/rmsnorm";
export { rope_f32 } from "./kernels/rope";
export { swiglu_f32 } from "./kernels/swiglu";
export { exp_f32 } from "./math/exp";
export { probe_read, probe_fma } from "./kernels/probes";
