// Touching memory ahead of use: one load per 64-byte line, in address order, so the hardware
// prefetcher streams a region into cache at full bandwidth before a kernel reads it in an order
// the prefetcher does not follow (one head's rows 4 KiB apart, four weight rows at once).

/** Bytes touched ahead of use at a time: well inside L2 (512 KiB here, 256 KiB+ common). */
export const TOUCH_BYTES: i32 = 128 << 10;

/** The loads' sum goes here so they are kept: a wasm global, private to each thread's instance. */
let touchSink: u32 = 0;

/** Touches `rows` segments of `bytes` bytes, `stride` apart. */
export function touchLines(p: usize, stride: usize, rows: i32, bytes: usize): void {
  let acc: u32 = 0;
  for (let r = 0; r < rows; r++) {
    for (let o: usize = 0; o < bytes; o += 64) acc += load<u32>(p + o);
    p += stride;
  }
  touchSink += acc;
}
