import { UseAfterFreeError } from "../errors.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../formats/half.ts";
import { dequantizeRows, isQuantDtype, quantizeRows, quantRowBytes, type QuantDtype } from "../formats/quant.ts";
import { describe } from "../ops/validate.ts";
import type { LinearMemory } from "./linear-memory.ts";
import type { PersistentArena } from "./persistent-arena.ts";

/**
 * How a buffer's elements are stored: f32, 16-bit (weights stay 16-bit; kernels widen), or
 * block-quantized (Q8_0, Q4_0, Q5_0, Q4_1, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: GGUF's block layouts; Q6_K_U8, Q5_K_U8, Q5_0_U8, Q5_1_U8: Q6_K, Q5_K, Q5_0, Q5_1 a byte a weight; rows of `rowLength` weights).
 */
export type BufferDtype = "f32" | "bf16" | "f16" | QuantDtype;
export const BUFFER_DTYPES: readonly BufferDtype[] = ["f32", "bf16", "f16", "q8_0", "q4_0", "q5_0", "q4_1", "q5_1", "iq4_nl", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q6_k_u8", "q5_0_u8", "q5_1_u8", "q5_k_u8"];
const ELEMENT_BYTES: Record<"f32" | "bf16" | "f16", number> = { f32: 4, bf16: 2, f16: 2 };

/** Bytes of `length` elements stored as `dtype` (quantized: whole rows of `rowLength`). */
export function bufferBytes(dtype: BufferDtype, length: number, rowLength?: number): number {
  if (isQuantDtype(dtype)) return (length / rowLength!) * quantRowBytes(dtype, rowLength!);
  return length * ELEMENT_BYTES[dtype];
}

/**
 * A tensor resident in wasm memory (persistent arena), for zero-copy calls: weights, a K/V
 * history, or q/out that the caller fills and reads in place. `array` is a fresh view each time
 * (memory growth detaches old ones); hold on to the buffer, not the view. 16-bit buffers (for
 * weights) are read and written through set() and toFloat32Array(), which convert.
 */
export class WasmBuffer {
  private freed = false;

  constructor(
    private readonly mem: LinearMemory,
    private readonly arena: PersistentArena,
    /** Byte offset in linear memory (64-byte aligned, except for subarray views). */
    readonly ptr: number,
    /** Number of elements. */
    readonly length: number,
    /** Set on views made by subarray(): they share the parent's memory and lifetime. */
    private readonly parent?: WasmBuffer,
    readonly dtype: BufferDtype = "f32",
    /** Quantized buffers: the weights per row (blocks never span rows). */
    readonly rowLength?: number,
  ) {}

  get byteLength(): number { return bufferBytes(this.dtype, this.length, this.rowLength); }
  get isFreed(): boolean { return this.parent ? this.parent.isFreed : this.freed; }

  /** A view of elements [begin, end) with no copy (e.g. a prefix of a K/V history; quantized: whole rows). */
  subarray(begin: number, end = this.length): WasmBuffer {
    this.check("subarray");
    if (!Number.isInteger(begin) || !Number.isInteger(end) || begin < 0 || end > this.length || begin >= end) {
      throw new RangeError(`WasmBuffer.subarray: [${begin}, ${end}) is not a non-empty range of [0, ${this.length})`);
    }
    if (this.rowLength !== undefined && (begin % this.rowLength !== 0 || end % this.rowLength !== 0)) {
      throw new RangeError(`WasmBuffer.subarray: a ${this.dtype} buffer is viewed in whole rows of ${this.rowLength}, not [${begin}, ${end})`);
    }
    return new WasmBuffer(this.mem, this.arena, this.ptr + bufferBytes(this.dtype, begin, this.rowLength), end - begin, this.parent ?? this, this.dtype, this.rowLength);
  }

  /** A view of the elements (f32 buffers), valid until the memory next grows. */
  get array(): Float32Array {
    this.check("array");
    if (this.dtype !== "f32") throw new TypeError(`WasmBuffer.array: this buffer holds ${this.dtype}; use toFloat32Array() or set()`);
    return this.mem.f32.subarray(this.ptr >>> 2, (this.ptr >>> 2) + this.length);
  }

  /** Copies `data` in at element `offset` (rounded to nearest even for 16-bit buffers; quantized: whole rows). */
  set(data: ArrayLike<number>, offset = 0): this {
    this.check("set");
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > this.length) {
      throw new RangeError(`WasmBuffer.set: ${data.length} elements at offset ${offset} do not fit in ${this.length}`);
    }
    if (this.dtype === "f32") { this.array.set(data, offset); return this; }
    if (isQuantDtype(this.dtype)) {
      const K = this.rowLength!;
      if (offset % K !== 0 || data.length % K !== 0) throw new RangeError(`WasmBuffer.set: a ${this.dtype} buffer is written in whole rows of ${K}`);
      const at = this.ptr + bufferBytes(this.dtype, offset, K);
      quantizeRows(this.dtype, data, K, new Uint8Array(this.mem.memory.buffer, at, bufferBytes(this.dtype, data.length, K)));
      return this;
    }
    const narrow = this.dtype === "bf16" ? f32ToBf16 : f32ToF16;
    const halves = new Uint16Array(this.mem.memory.buffer, this.ptr + offset * 2, data.length);
    if (this.dtype === "f16") {
      // The kernels widen f16 for finite values only (4 operations instead of 10).
      for (let i = 0; i < data.length; i++) {
        const h = f32ToF16(data[i]!);
        if ((h & 0x7c00) === 0x7c00) throw new RangeError(`WasmBuffer.set: ${data[i]} (element ${i}) is not a finite f16 (|x| <= 65504); f16 weights must be finite`);
        halves[i] = h;
      }
      return this;
    }
    for (let i = 0; i < data.length; i++) halves[i] = narrow(data[i]!);
    return this;
  }

  /** A float32 copy of the elements that survives free() and memory growth. */
  toFloat32Array(): Float32Array {
    if (this.dtype === "f32") return this.array.slice();
    this.check("toFloat32Array");
    if (isQuantDtype(this.dtype)) return dequantizeRows(this.dtype, new Uint8Array(this.mem.memory.buffer, this.ptr, this.byteLength), this.rowLength!);
    const widen = this.dtype === "bf16" ? bf16ToF32 : f16ToF32;
    return Float32Array.from(new Uint16Array(this.mem.memory.buffer, this.ptr, this.length), widen);
  }

  free(): void {
    this.check("free");
    if (this.parent) throw new TypeError("WasmBuffer.free: this is a subarray view; free the buffer it views");
    this.freed = true;
    this.arena.release(this.ptr);
  }

  /** Whether the buffer lives in `memory` (a runtime's), so that its pointer means something there. */
  belongsTo(memory: LinearMemory): boolean { return this.mem === memory; }

  /** Throws unless the buffer is live; `what` names the caller in the message. */
  check(what: string): void {
    if (this.isFreed) throw new UseAfterFreeError(`${what}: this WasmBuffer was freed`);
  }
}

/**
 * `value` as a live WasmBuffer of `memory` (of this runtime: a buffer of another runtime's memory
 * would have its pointer used in the wrong memory), holding `dtype` when one is asked for.
 */
export function residentBuffer(op: string, name: string, value: unknown, memory: LinearMemory, dtype?: BufferDtype): WasmBuffer {
  if (!(value instanceof WasmBuffer)) throw new TypeError(`${op}: ${name} must be a WasmBuffer (rt.alloc / rt.upload), got ${describe(value)}`);
  value.check(`${op}: ${name}`);
  if (!value.belongsTo(memory)) throw new TypeError(`${op}: ${name} is a WasmBuffer of another runtime; use buffers this runtime allocated`);
  if (dtype && value.dtype !== dtype) throw new TypeError(`${op}: ${name} must hold ${dtype}, not ${value.dtype}`);
  return value;
}
