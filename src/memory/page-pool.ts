import { WasmOutOfMemoryError } from "../errors.ts";
import { alignUp, type PersistentArena } from "./persistent-arena.ts";

/**
 * Fixed-size pages for the KV cache, carved from slabs of the persistent arena. Pages are
 * 64-byte aligned; a freed page goes back on a free list and is reused first. The pool can be
 * capped (maxPages) so that a cache fails with a clear error instead of taking all memory.
 */
export class PagePool {
  readonly pageBytes: number;
  private readonly freePages: number[] = [];
  private readonly slabs: { addr: number; pages: number }[] = [];
  private totalPages = 0;

  constructor(
    private readonly arena: PersistentArena,
    pageBytes: number,
    private readonly maxPages = Infinity,
    private readonly pagesPerSlab = 64,
  ) {
    if (!Number.isSafeInteger(pageBytes) || pageBytes <= 0) throw new RangeError(`PagePool: pageBytes must be a positive integer, got ${pageBytes}`);
    this.pageBytes = alignUp(pageBytes);
  }

  get pagesTotal(): number { return this.totalPages; }
  get pagesFree(): number { return this.freePages.length; }
  get pagesUsed(): number { return this.totalPages - this.freePages.length; }

  /** Takes one page; throws WasmOutOfMemoryError (pool unchanged) when none can be had. */
  allocPage(): number {
    if (this.freePages.length === 0) this.addSlab(1);
    return this.freePages.pop()!;
  }

  /** Takes n pages all-or-nothing. */
  allocPages(n: number): number[] {
    if (this.freePages.length < n) this.addSlab(n - this.freePages.length, n);
    return this.freePages.splice(this.freePages.length - n, n).reverse();
  }

  freePage(addr: number): void { this.freePages.push(addr); }

  /** Returns slabs none of whose pages is in use to the arena (memory for other allocations); the pages they held. */
  releaseFreeSlabs(): number {
    const free = new Set(this.freePages);
    let released = 0;
    for (let i = this.slabs.length - 1; i >= 0; i--) {
      const { addr, pages } = this.slabs[i]!;
      let all = true;
      for (let p = 0; p < pages && all; p++) all = free.has(addr + p * this.pageBytes);
      if (!all) continue;
      for (let p = 0; p < pages; p++) free.delete(addr + p * this.pageBytes);
      this.arena.release(addr);
      this.slabs.splice(i, 1);
      this.totalPages -= pages;
      released += pages;
    }
    if (released > 0) {
      // Keep the remaining free pages in the order allocPage takes them.
      const kept = this.freePages.filter((p) => free.has(p));
      this.freePages.length = 0;
      this.freePages.push(...kept);
    }
    return released;
  }

  /** Returns every page and slab to the arena. */
  dispose(): void {
    for (const s of this.slabs) this.arena.release(s.addr);
    this.slabs.length = 0;
    this.freePages.length = 0;
    this.totalPages = 0;
  }

  /** Adds at least `atLeast` pages, for a request of `asked` pages (for the message). */
  private addSlab(atLeast: number, asked = atLeast): void {
    const room = this.maxPages - this.totalPages;
    if (room < atLeast) {
      throw new WasmOutOfMemoryError(`KV page pool is full: ${asked} page(s) asked, ${this.freePages.length} free, ${this.totalPages} of at most ${this.maxPages} allocated`,
        atLeast * this.pageBytes, this.totalPages * this.pageBytes, this.maxPages * this.pageBytes);
    }
    let n = Math.min(Math.max(atLeast, this.pagesPerSlab), room);
    let slab: number;
    try {
      slab = this.arena.alloc(n * this.pageBytes);
    } catch (e) {
      // Near the memory limit a whole slab may not fit where the pages asked for do.
      if (!(e instanceof WasmOutOfMemoryError) || n === atLeast) throw e;
      n = atLeast;
      slab = this.arena.alloc(n * this.pageBytes);
    }
    this.slabs.push({ addr: slab, pages: n });
    // Push in reverse so pages come out in address order.
    for (let i = n - 1; i >= 0; i--) this.freePages.push(slab + i * this.pageBytes);
    this.totalPages += n;
  }
}
