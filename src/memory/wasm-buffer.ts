import { UseAfterFreeError } from "../errors.ts";
import type { LinearMemory } from "./linear-memory.ts";
import type { PersistentArena } from "./persistent-arena.ts";

/**
 * A float32 tensor resident in wasm memory (persistent arena), for zero-copy calls: weights, a
 * K/V history, or q/out that the caller fills and reads in place. `array` is a fresh view each
 * time (memory growth detaches old ones); hold on to the buffer, not the view.
 */
export class WasmBuffer {
  private freed = false;

  constructor(
    private readonly mem: LinearMemory,
    private readonly arena: PersistentArena,
    /** Byte offset in linear memory (64-byte aligned, except for subarray views). */
    readonly ptr: number,
    /** Number of float32 elements. */
    readonly length: number,
    /** Set on views made by subarray(): they share the parent's memory and lifetime. */
    private readonly parent?: WasmBuffer,
  ) {}

  get byteLength(): number { return this.length * 4; }
  get isFreed(): boolean { return this.parent ? this.parent.isFreed : this.freed; }

  /** A view of elements [begin, end) with no copy (e.g. a prefix of a K/V history). */
  subarray(begin: number, end = this.length): WasmBuffer {
    this.check("subarray");
    if (!Number.isInteger(begin) || !Number.isInteger(end) || begin < 0 || end > this.length || begin >= end) {
      throw new RangeError(`WasmBuffer.subarray: [${begin}, ${end}) is not a non-empty range of [0, ${this.length})`);
    }
    return new WasmBuffer(this.mem, this.arena, this.ptr + begin * 4, end - begin, this.parent ?? this);
  }

  /** A view of the elements, valid until the memory next grows. */
  get array(): Float32Array {
    this.check("array");
    return this.mem.f32.subarray(this.ptr >>> 2, (this.ptr >>> 2) + this.length);
  }

  /** Copies `data` in at element `offset`. */
  set(data: ArrayLike<number>, offset = 0): this {
    this.check("set");
    if (offset < 0 || offset + data.length > this.length) {
      throw new RangeError(`WasmBuffer.set: ${data.length} elements at offset ${offset} do not fit in ${this.length}`);
    }
    this.array.set(data, offset);
    return this;
  }

  /** A copy of the elements that survives free() and memory growth. */
  toFloat32Array(): Float32Array { return this.array.slice(); }

  free(): void {
    this.check("free");
    if (this.parent) throw new TypeError("WasmBuffer.free: this is a subarray view; free the buffer it views");
    this.freed = true;
    this.arena.release(this.ptr);
  }

  /** Throws unless the buffer is live; `what` names the caller in the message. */
  check(what: string): void {
    if (this.isFreed) throw new UseAfterFreeError(`${what}: this WasmBuffer was freed`);
  }
}
