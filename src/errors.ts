/** Wasm linear memory could not grow to hold an allocation (or would pass maxMemoryBytes). */
export class WasmOutOfMemoryError extends RangeError {
  override name = "WasmOutOfMemoryError";
  constructor(
    message: string,
    /** Bytes that were asked for. */
    readonly requestedBytes: number,
    /** Bytes of linear memory when the request failed. */
    readonly memoryBytes: number,
    /** The most the memory may hold (maxMemoryBytes, or the engine's limit). */
    readonly limitBytes: number,
  ) {
    super(message);
  }
}

/** The JavaScript engine lacks a WebAssembly feature the kernels need (SIMD). */
export class WasmFeatureError extends Error {
  override name = "WasmFeatureError";
}

/** A buffer was used after free(). */
export class UseAfterFreeError extends Error {
  override name = "UseAfterFreeError";
}

/** A KV cache has no page left for an append (its budget, or memory). Nothing was written. */
export class KVCacheFullError extends WasmOutOfMemoryError {
  override name = "KVCacheFullError";
}

/** A KV snapshot is truncated, corrupted, of another version, or of another cache shape. */
export class KVSnapshotError extends Error {
  override name = "KVSnapshotError";
}

/** A safetensors file is malformed: the message names the file, the tensor and the field. */
export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}
