import type { LinearMemory } from "./linear-memory.ts";

/** Every block the arenas hand out starts on a 64-byte boundary (a cache line). */
export const ALIGN = 64;

export function alignUp(n: number, align = ALIGN): number {
  return Math.ceil(n / align) * align;
}

interface FreeBlock { addr: number; size: number }

/**
 * The persistent arena: long-lived blocks (weights, resident tensors, scratch chunks, KV page
 * slabs) anywhere above the module's static data. First fit over an address-sorted free list,
 * neighbours coalesced on free; when nothing fits, linear memory grows (a failed growth throws
 * WasmOutOfMemoryError and changes nothing). The bookkeeping lives in JS, not in wasm memory.
 */
export class PersistentArena {
  private readonly free: FreeBlock[] = [];
  private readonly live = new Map<number, number>();
  private end: number;
  private liveBytesTotal = 0;

  constructor(private readonly mem: LinearMemory, base: number) {
    this.end = alignUp(base);
    const tail = Math.floor(mem.byteLength / ALIGN) * ALIGN;
    if (tail > this.end) { this.free.push({ addr: this.end, size: tail - this.end }); this.end = tail; }
  }

  /** Bytes held by live blocks. */
  get liveBytes(): number { return this.liveBytesTotal; }
  /** Free bytes below the current end of the managed region. */
  get freeBytes(): number { return this.free.reduce((s, b) => s + b.size, 0); }
  get blockCount(): number { return this.live.size; }

  /** Size of the live block at addr, or undefined. */
  sizeOf(addr: number): number | undefined { return this.live.get(addr); }

  alloc(bytes: number): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`alloc: bytes must be a non-negative integer, got ${bytes}`);
    const size = alignUp(Math.max(bytes, 1));
    let i = this.free.findIndex((b) => b.size >= size);
    if (i < 0) i = this.growFor(size);
    const block = this.free[i]!;
    const addr = block.addr;
    if (block.size === size) this.free.splice(i, 1);
    else { block.addr += size; block.size -= size; }
    this.live.set(addr, size);
    this.liveBytesTotal += size;
    return addr;
  }

  release(addr: number): void {
    const size = this.live.get(addr);
    if (size === undefined) throw new RangeError(`free: ${addr} is not a live block of this arena (double free?)`);
    this.live.delete(addr);
    this.liveBytesTotal -= size;
    // Insert sorted by address, then merge with the neighbours it touches.
    let lo = 0, hi = this.free.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (this.free[mid]!.addr < addr) lo = mid + 1; else hi = mid; }
    this.free.splice(lo, 0, { addr, size });
    const next = this.free[lo + 1];
    if (next && addr + size === next.addr) { this.free[lo]!.size += next.size; this.free.splice(lo + 1, 1); }
    const prev = this.free[lo - 1];
    if (prev && prev.addr + prev.size === addr) { prev.size += this.free[lo]!.size; this.free.splice(lo, 1); }
  }

  /** Grows memory so that a free block of `size` exists at the end; returns its index. */
  private growFor(size: number): number {
    const last = this.free[this.free.length - 1];
    const tailFree = last && last.addr + last.size === this.end ? last.size : 0;
    const newEnd = this.end + (size - tailFree);
    this.mem.ensure(newEnd, size);
    const grownEnd = Math.floor(this.mem.byteLength / ALIGN) * ALIGN;
    if (tailFree > 0) last!.size += grownEnd - this.end;
    else this.free.push({ addr: this.end, size: grownEnd - this.end });
    this.end = grownEnd;
    return this.free.length - 1;
  }
}
