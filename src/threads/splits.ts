// How a call is cut into per-thread ranges. Every kernel computes any range of KV heads / query
// positions / output columns with bit-identical results, so the cut changes speed, not answers.

/** [kvHeadBegin, kvHeadEnd, qBegin, qEnd, keyBegin, keyEnd] for each thread that gets work. */
export type AttentionRange = [number, number, number, number, number, number];

/** Keys per split-KV part at least: below this a part's fixed costs outweigh the parallelism. */
const MIN_KEYS_PER_PART = 256;

/**
 * The ranges of a call. `splitKv`: the ranges are key ranges whose partial results must be
 * combined (attention_combine); otherwise they write disjoint parts of the output. Head and
 * query splits are bit-identical to one thread; split-KV differs only by reassociation.
 */
export function attentionSplits(seqQ: number, seqK: number, numKvHeads: number, causal: boolean, threads: number): { readonly ranges: readonly AttentionRange[]; readonly splitKv: boolean } {
  // A kept decode program asks for every layer at every step: the last answer again for the same
  // question, else the new one written over it (valid until the next call; callers use it at once).
  const q = last.question;
  if (q[0] === seqQ && q[1] === seqK && q[2] === numKvHeads && q[3] === (causal ? 1 : 0) && q[4] === threads) return last.split;
  q[0] = seqQ; q[1] = seqK; q[2] = numKvHeads; q[3] = causal ? 1 : 0; q[4] = threads;
  last.count = 0;
  if (threads <= 1) { put(0, numKvHeads, 0, seqQ, 0, seqK); last.split.splitKv = false; }
  else last.split.splitKv = seqQ < 4 * threads ? splitDecode(seqQ, seqK, numKvHeads, threads) : splitPrefill(seqQ, seqK, numKvHeads, causal, threads);
  // The same range arrays, rewritten; a new list only when their number changes.
  if (last.split.ranges.length !== last.count) last.split.ranges = last.made.slice(0, last.count);
  return last.split;
}

/** The last answer, reused: `count` range arrays of `made` filled again. */
const last = { question: [-1, -1, -1, -1, -1], split: { ranges: [] as AttentionRange[], splitKv: false }, made: [] as AttentionRange[], count: 0 };

/** Adds a range to the answer being made. */
function put(a: number, b: number, c: number, d: number, e: number, f: number): void {
  const r = last.made[last.count] ?? (last.made[last.count] = [0, 0, 0, 0, 0, 0]);
  r[0] = a; r[1] = b; r[2] = c; r[3] = d; r[4] = e; r[5] = f;
  last.count++;
}

/**
 * Puts the ranges of a call of few query rows (decode) on several threads; returns whether they
 * are split-KV parts: KV heads apart when they divide evenly among the threads (or the keys are
 * too few to split), each thread reading only its heads' K/V ...
 */
function splitDecode(seqQ: number, seqK: number, numKvHeads: number, threads: number): boolean {
  const parts = Math.min(threads, Math.floor(seqK / MIN_KEYS_PER_PART));
  if (numKvHeads >= threads && (numKvHeads % threads === 0 || parts < threads)) {
    for (let i = 0; i < threads; i++) put(Math.floor((i * numKvHeads) / threads), Math.floor(((i + 1) * numKvHeads) / threads), 0, seqQ, 0, seqK);
    return false;
  }
  // ... else the keys apart (Flash-Decoding), so that one long sequence uses every core evenly
  // (SmolLM2's 3 KV heads on 2 threads would be 1 : 2).
  if (parts <= 1) { put(0, numKvHeads, 0, seqQ, 0, seqK); return false; }
  for (let i = 0; i < parts; i++) put(0, numKvHeads, 0, seqQ, Math.floor((i * seqK) / parts), Math.floor(((i + 1) * seqK) / parts));
  return true;
}

/**
 * Puts the ranges of a call of many query rows (prefill) on several threads: contiguous query
 * ranges of equal work (causal rows see more keys the later they are).
 */
function splitPrefill(seqQ: number, seqK: number, numKvHeads: number, causal: boolean, threads: number): boolean {
  const offset = seqK - seqQ;
  const work = (i: number) => (causal ? Math.max(0, Math.min(seqK, i + offset + 1)) : seqK) + 1;
  let total = 0;
  for (let i = 0; i < seqQ; i++) total += work(i);
  let begin = 0, acc = 0;
  for (let i = 0; i < seqQ && last.count < threads - 1; i++) {
    acc += work(i);
    if (acc >= (total * (last.count + 1)) / threads) { put(0, numKvHeads, begin, i + 1, 0, seqK); begin = i + 1; }
  }
  if (begin < seqQ) put(0, numKvHeads, begin, seqQ, 0, seqK);
  return false;
}

/** Output-column ranges [nBegin, nEnd) for the linear layer, multiples of 4 wide. */
export function columnSplits(outFeatures: number, threads: number): [number, number][] {
  const quads = Math.ceil(outFeatures / 4);
  const t = Math.max(1, Math.min(threads, quads));
  return Array.from({ length: t }, (_, i) => [Math.min(outFeatures, 4 * Math.floor((i * quads) / t)), Math.min(outFeatures, 4 * Math.floor(((i + 1) * quads) / t))]);
}

/**
 * How the threads share a linear layer's output columns (see Claim): the columns a thread claims
 * at a time, and the pieces the last chunk per thread's worth is cut into. `gemv`: the kernel
 * streams the weights once per row of x (fewer than 4 rows; quantized weights below their f32
 * rows, which the relaxed build's integer panels fall under at any row count: each chunk packs
 * its own columns): one chunk per thread (multiples of 16, the kernel's 4-row tiles), no smaller pieces: a
 * decode GEMV streams its weights from memory, and each call starts its four streams anew
 * (~0.7 us each on the AMD EPYC VM: a 576x576 bf16 GEMV on cold weights cut into 11 calls took
 * 1.23x one call's time, 2 calls 1.03x; scratch/claimcost.ts), so a SmolLM2 decode step at 2
 * threads ran 1.07-1.08x faster (bf16, Q8_0; f32 level, its weights stream from DRAM) than in
 * about four chunks per thread with quarter-chunk tails (scratch/ab2.ts, alternating). A thread
 * slowed for long can still lose its chunk to one that finishes first. GEMM: 64 columns (the
 * kernels' column block, so a chunk widens or reuses whole weight panels), the tail in 16s.
 */
export function columnChunks(gemv: boolean, outFeatures: number, threads: number): { chunk: number; tail: number } {
  if (!gemv) return { chunk: 64, tail: 16 };
  const chunk = Math.max(16, 16 * Math.ceil(outFeatures / (threads * 16)));
  return { chunk, tail: chunk };
}
