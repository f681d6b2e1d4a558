// What the host asks of a module before placing buffers and choosing code paths.

/** Where the host may start placing buffers: above the module's static data. */
export function heap_base(): usize { return __heap_base; }

/** Bit 0: this build uses relaxed-SIMD FMA. */
export function kernel_features(): i32 { return ASC_FEATURE_RELAXED_SIMD ? 1 : 0; }
