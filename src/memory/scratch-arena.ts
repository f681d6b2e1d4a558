import { alignUp, type PersistentArena } from "./persistent-arena.ts";

/**
 * The scratch arena: bump allocation for the temporaries of one call (input copies, kernel
 * scratch), all released at once by reset() when the call ends. It keeps one chunk; a call that
 * needs more spills into extra chunks, and the next reset() replaces them by one chunk of the
 * high-water size, so steady-state calls allocate nothing.
 */
export class ScratchArena {
  private chunks: { addr: number; size: number }[] = [];
  private used = 0; // bytes used in the last chunk
  private total = 0; // bytes used this call, all chunks
  private highWater = 0;

  constructor(private readonly arena: PersistentArena, private readonly minChunkBytes = 1 << 20) {}

  /** Bytes reserved for scratch now. */
  get reservedBytes(): number { return this.chunks.reduce((s, c) => s + c.size, 0); }
  /** Bytes handed out since the last reset. */
  get usedBytes(): number { return this.total; }

  alloc(bytes: number): number {
    const size = alignUp(Math.max(bytes, 1));
    let chunk = this.chunks[this.chunks.length - 1];
    if (!chunk || this.used + size > chunk.size) {
      const chunkSize = Math.max(size, this.minChunkBytes);
      chunk = { addr: this.arena.alloc(chunkSize), size: chunkSize };
      this.chunks.push(chunk);
      this.used = 0;
    }
    const addr = chunk.addr + this.used;
    this.used += size;
    this.total += size;
    this.highWater = Math.max(this.highWater, this.total);
    return addr;
  }

  /** Ends the call: every scratch address is invalid after this. */
  reset(): void {
    if (this.chunks.length > 1) {
      for (const c of this.chunks) this.arena.release(c.addr);
      this.chunks = [];
      try {
        const size = Math.max(this.highWater, this.minChunkBytes);
        this.chunks.push({ addr: this.arena.alloc(size), size });
      } catch {
        // Could not consolidate (memory limit): start empty, the next call allocates as it goes.
      }
    }
    this.used = 0;
    this.total = 0;
  }
}
