import { BF16, elementBytes, F16, F16_REBIAS, F16Scaled, fmadd, hmax, hmaxI32, isF16, widenRow } from "../simd";
import { exp1, exp4, softcap4 } from "../math/exp";
import { dotnt_1x1, dotnt_1x4, dotnt_2x4, dotnt_3x3, dotnt_4x1, dotnt_4x2 } from "./dot-nt";
import { pvacc_1x1, pvacc_1x16, pvacc_1x4, pvacc_2x16, pvacc_3x12, pvacc_4x4, pvacc_4x8 } from "./pv-acc";
import { AttentionCall, KV_BF16, KV_F16, KV_INT8 } from "../abi";
import { kv_scale_offset } from "./kv-pages";

// Grouped-query attention, flash style. A *row block* is a few query positions times every query
// head of the KV-head range; the rows of one KV head (its group of G = numHeads / numKvHeads
// heads) share that head's K and V. Keys go in blocks of BLOCK_KEYS: each K and V row is loaded
// once per block and used by all rows of its group (S = Q·Kᵀ, then O += P·V), with an online
// softmax (running max m and sum l per row), so no seqQ x seqK score matrix ever exists.
// Decode is the same code with one query position: its rows are the heads.
//
// Memory order: token-major K/V put one token's KV heads side by side, so one head's rows are
// numKvHeads·headDim·4 bytes apart (4 KiB for 8 x 128): a walk down one head touches a new page
// per key and defeats the hardware prefetcher. So a key block is read in segments of a few keys,
// every head of a segment before the next segment: the reads then go through each token's row
// in address order, which the prefetcher streams while the kernels compute (1.05-1.7x faster
// than touching each block into cache first, which made the kernels wait for it). A page of the
// paged cache is one such segment, each head's rows contiguous in it: there the scores read a
// head's keys as two streams (keys j and j + half, 4-row tiles), three (3-row tiles) or four
// (one-row tiles, MHA), where one stream through the page kept the memory less busy (MHA
// 32/32/128 past 2048 paged 1.17-1.2x; 32/8/128 1.0-1.3x, this VM's noise; scratch/attab2.ts).
// Scores do not depend on the order keys are read in, so paged and contiguous results stay the
// same bits. Decoding from pages, or from contiguous K/V too large to stay in a cache, each
// segment's rows are first loaded on their own (loadRows): a decode step's K/V come from memory,
// where the tiles alone kept too few lines in flight.

export const BLOCK_KEYS: i32 = 128;
/** Keys of contiguous K/V per segment: for the scores, and for P·V (at most: see pvSegmentKeys). */
const SEGMENT_KEYS_QK: i32 = 16;
const SEGMENT_KEYS_PV: i32 = 32;

/**
 * Keys per P·V segment of contiguous K/V whose rows are `ldk` bytes apart. The 4x8 tiles read a
 * segment's V rows 8 floats at a time, every key's first half of a 64-byte line, then its second
 * half (3x12 a line and a half), so the segment's lines must stay in L1 between the two. An L1 of
 * 64 sets of 64-byte lines (x86's 32-48 KB, 8-12 ways) puts rows 4 KB apart in one set, and 32
 * keys of 8 x 128 f32 heads (4 KB rows) took turns evicting each other: at most 8 keys a set.
 * Decode past 512-8192: 32/8/128 1.13-1.17x, 24/8/128 1.10-1.17x, MHA 32/32/128 1.05-1.09x,
 * 16/8/128 (2x16 tiles, whole lines) 1.00-1.02x; prefill 512 tokens 32/8/128 1.22x, 16/8/128
 * 1.23x (scratch/attdec.ts, builds alternating; busy phases of this VM read 0.89-0.94x in one
 * run of the 2- and 3-row cases, not again in two more).
 */
// @ts-ignore: decorator
@inline function pvSegmentKeys(ldk: usize): i32 {
  const step = <i32>(ldk >> 6) & 63; // lines from one key's row to the next, modulo the sets
  const sets = step == 0 ? 1 : 64 >> ctz(step); // the sets a run of keys' rows start in
  return min(SEGMENT_KEYS_PV, 8 * sets);
}
/** Rows per row block, over all KV heads of the range: enough query positions to fill this many. */
const TARGET_ROWS: i32 = 128;

const NEG_INF: f32 = -Infinity;

/** Query positions per row block when `heads` query heads are in the range. */
// @ts-ignore: decorator
@inline function positionsPerBlock(heads: i32): i32 {
  return heads >= TARGET_ROWS ? 1 : TARGET_ROWS / heads;
}

/**
 * Scratch for one call on any KV-head range: the row-block state (see RowBlock) for at most
 * max(TARGET_ROWS, numHeads) rows, then 64 bytes holding the RowBlock descriptor (see descriptorOf),
 * then (64-byte aligned) room for widened K or V rows (see WIDEN_BYTES), then in the relaxed
 * build a row block's query rows scaled for f16 pages (see foldF16Queries).
 */
export function attention_scratch_bytes(numHeads: i32, numKvHeads: i32, headDim: i32): i32 {
  // (+ 64: scratch itself need not be 64-byte aligned.)
  return <i32>widenedRows(0, numHeads) + 64 + widenRoom(headDim) + (ASC_FEATURE_RELAXED_SIMD ? max(TARGET_ROWS, numHeads) * (headDim << 2) : 0);
}

/**
 * A row block with many rows per KV head (prefill and chunks; for f16 also groups of 3, 6 and 7:
 * see widensRows) on 16-bit or int8 pages widens each head's
 * K or V rows of a segment once into f32 scratch, at most this many bytes at a time, and runs the
 * f32 tiles on them: the tiles would otherwise widen every row once per tile (f16: 4 operations
 * per 4 values). The same values reach the same FMAs in the same order, so the results are those of
 * widening in the tiles, bit for bit.
 * Paged prefill attention, 128 queries past 512 keys: f16 1.28-1.34x, int8 1.14-1.15x, bf16
 * 1.08-1.12x (9/3/64, 14/2/64), f16 1.16x at 32/8/128; decode 14/2/64 level
 * (scratch/widenatt.ts, alternating the two builds).
 */
const WIDEN_BYTES: i32 = 16 << 10;

/**
 * Whether a row block of `rows` rows per KV head on T pages (16-bit or int8) widens its rows
 * once (WIDEN_BYTES) and runs the f32 tiles on them, rather than the tiles widening each row as
 * they read it (once per tile of 3 or 4 rows). The relaxed build: above 16 rows (from 17 rows,
 * widening once pays; below, tiles reading bf16 / int8 pages from memory ran 1.08-1.19x at groups
 * of 7 and 8, and two draft tokens of a group of 4, and 1.05x at 24 rows, 0.98x at 32); f16,
 * read as F16Scaled (foldF16Queries), also whenever its rows take 3-row tiles (groups of 3, 6,
 * 7: its 3x3 and 3x12 tiles ran 0.84-0.99x widening first; its 4-row tiles 1.10-1.40x). The
 * simd build (a multiply and an add for each FMA): above 4 rows, f16 above 1 (tiles 0.82-0.95x).
 * (scratch/pagedab.ts, K/V from memory, builds alternating.)
 */
// @ts-ignore: decorator
@inline function widensRows<T>(rows: i32): bool {
  if (sizeof<T>() == 4) return false;
  if (!ASC_FEATURE_RELAXED_SIMD) return isF16<T>() ? rows > 1 : rows > 4;
  return rows > 16 || (isF16<T>() && threeRowTiles(rows) > 0);
}

/** Bytes of the widened rows' room: WIDEN_BYTES, or one row if longer (a multiple of 64). */
// @ts-ignore: decorator
@inline function widenRoom(headDim: i32): i32 { return (max(WIDEN_BYTES, headDim << 2) + 63) & ~63; }

/** Keys of `headDim` widened at a time (at least one). */
// @ts-ignore: decorator
@inline function widenKeys(headDim: i32): i32 { return max(1, WIDEN_BYTES / (headDim << 2)); }

/** The widened rows' place in scratch: after the descriptor, 64-byte aligned. */
// @ts-ignore: decorator
@inline function widenedRows(scratch: usize, numHeads: i32): usize { return (descriptorOf(scratch, numHeads) + 64 + 63) & ~<usize>63; }

/** Per row: BLOCK_KEYS scores, then m, l, q pointer, out pointer, causal limit. */
const ROW_STATE_BYTES: i32 = BLOCK_KEYS * 4 + 5 * 4;

// @ts-ignore: decorator
@inline function rowF32(base: usize, r: i32): usize { return base + (<usize>r << 2); }

/**
 * The state of a row block of `rows` rows in scratch: S [rows][BLOCK_KEYS], then one array each
 * of m, l, q row pointer, out row pointer and causal limit (last visible key); and the keys the
 * block visits: [keyStart, keyStop), of which every row sees those before firstMasked.
 */
@unmanaged export class RowBlock {
  scores: usize;
  m: usize;
  l: usize;
  q: usize;
  o: usize;
  limit: usize;
  keyStart: i32;
  keyStop: i32;
  firstMasked: i32;
}

// @ts-ignore: decorator
@inline function layoutRowBlock(block: RowBlock, state: usize, rows: i32): void {
  const arr = <usize>rows << 2;
  block.scores = state;
  block.m = state + arr * <usize>BLOCK_KEYS;
  block.l = block.m + arr;
  block.q = block.l + arr;
  block.o = block.q + arr;
  block.limit = block.o + arr;
}

/**
 * Max over n scores, n a multiple of 4. pmax (one instruction; max's NaN rules take seven): a
 * NaN score is skipped here, and its e^(s - m) makes the row NaN all the same.
 */
// @ts-ignore: decorator
@inline function rowMax(s: usize, n: i32): f32 {
  let mv = f32x4.splat(NEG_INF);
  for (let o: usize = 0, end = <usize>n << 2; o < end; o += 16) mv = f32x4.pmax(mv, v128.load(s + o));
  return hmax(mv);
}

/** s[j] = e^(s[j] - m) in place, n a multiple of 4; returns the sum. */
// @ts-ignore: decorator
@inline function expShiftSum(s: usize, n: i32, m: f32): f32 {
  const mv = f32x4.splat(m);
  let sv = f32x4.splat(0);
  for (let o: usize = 0, end = <usize>n << 2; o < end; o += 16) {
    const p = exp4(f32x4.sub(v128.load(s + o), mv));
    v128.store(s + o, p);
    sv = f32x4.add(sv, p);
  }
  return f32x4.extract_lane(sv, 0) + f32x4.extract_lane(sv, 1) +
    f32x4.extract_lane(sv, 2) + f32x4.extract_lane(sv, 3);
}

/** o[0..n) *= f */
// @ts-ignore: decorator
@inline function scaleRow(o: usize, n: i32, f: f32): void {
  const body = <usize>(n & ~3) << 2;
  const fv = f32x4.splat(f);
  for (let x: usize = 0; x < body; x += 16) v128.store(o + x, f32x4.mul(v128.load(o + x), fv));
  for (let x = body, end = <usize>n << 2; x < end; x += 4) store<f32>(o + x, load<f32>(o + x) * f);
}

/**
 * How many 3-row tiles end a head's n rows so that the rest are whole 4-row tiles: groups of 3
 * (SmolLM2), 6 and 7 (Qwen2.5) then waste no repeated row. 0 when n is too small for that
 * (1, 2, 5 rows: 4-row tiles with a repeated row, and single rows, as before).
 */
// @ts-ignore: decorator
@inline function threeRowTiles(n: i32): i32 {
  const t = (4 - (n & 3)) & 3;
  return 3 * t <= n ? t : 0;
}

/**
 * Scores S[r][col0 + j] = scale · q_r·k_j for rows [r0, r1) of one KV head and `nk` keys of a
 * block. k points at the first of them; consecutive keys are `ldk` bytes apart (token-major:
 * numKvHeads·headDim·4; a head-major page: headDim·4). A block can be filled by several such
 * segments (the pages of a paged cache). `spreadKeys` (a page): a tile's keys come from two
 * (4-row tiles), three (3-row tiles) or four (one-row tiles) places in the segment, so that many
 * streams run at once. A function, not inlined into attend: V8 allocates registers per function,
 * and in one function of every tile for three KV types it spilled the tiles' accumulators
 * (32/8/128 paged 0.78x when the 3-row tiles were added inline).
 */
export function scoreKeys<K>(
  b: RowBlock, r0: i32, r1: i32, k: usize, ldk: usize, nk: i32, col0: i32, headDim: i32, scale: f32, spreadKeys: bool,
): void {
  const lds: usize = <usize>BLOCK_KEYS << 2;
  const cOff = <usize>col0 << 2;
  // Two rows (a group of 2): 2x4 tiles, four keys at a time (from four places in a page, as a
  // single row's below), instead of a 4-row tile computing each row twice.
  if (r1 - r0 == 2) {
    const q0 = load<usize>(rowF32(b.q, r0)), q1 = load<usize>(rowF32(b.q, r0 + 1));
    const srow = b.scores + <usize>r0 * lds + cOff;
    let j = 0;
    let kj = k;
    if (spreadKeys) {
      const t = nk >> 2, dk = <usize>t * ldk;
      for (; j < t; j++) {
        dotnt_2x4<K>(q0, q1, kj, kj + dk, kj + 2 * dk, kj + 3 * dk, headDim, srow + (<usize>j << 2), lds, scale, false, <usize>t << 2);
        kj += ldk;
      }
      j = t << 2;
      kj = k + <usize>j * ldk;
    } else {
      for (; j + 4 <= nk; j += 4) {
        dotnt_2x4<K>(q0, q1, kj, kj + ldk, kj + 2 * ldk, kj + 3 * ldk, headDim, srow + (<usize>j << 2), lds, scale, false);
        kj += ldk << 2;
      }
    }
    for (; j < nk; j++) {
      dotnt_4x1<K>(q0, q1, q1, q1, kj, headDim, srow + (<usize>j << 2), lds, scale, false, 2);
      kj += ldk;
    }
    return;
  }
  // S = scale · Q·Kᵀ in 4-row tiles: each K row is loaded once for 4 query rows. A tail of 2 or
  // 3 rows runs the same tile on the last row repeated (stores only its real rows): fewer loads
  // per FMA than a pass per row, and the group sizes of real models (3, 7) end in such tails.
  let r = r0;
  const end4 = r1 - 3 * threeRowTiles(r1 - r0);
  for (; r + 2 <= end4; r += 4) {
    const rows = min(4, end4 - r), last = r + rows - 1;
    const q0 = load<usize>(rowF32(b.q, r)), q1 = load<usize>(rowF32(b.q, r + 1));
    const q2 = load<usize>(rowF32(b.q, min(r + 2, last))), q3 = load<usize>(rowF32(b.q, min(r + 3, last)));
    const srow = b.scores + <usize>r * lds + cOff;
    if (spreadKeys) {
      // Keys j and j + half side by side: two sequential streams through the segment.
      const half = nk >> 1, dk = <usize>half * ldk, ds = <usize>half << 2;
      let kj = k;
      for (let j = 0; j < half; j++) {
        dotnt_4x2<K>(q0, q1, q2, q3, kj, kj + dk, headDim, srow + (<usize>j << 2), lds, scale, false, rows, ds);
        kj += ldk;
      }
      if (nk & 1) dotnt_4x1<K>(q0, q1, q2, q3, k + <usize>(nk - 1) * ldk, headDim, srow + (<usize>(nk - 1) << 2), lds, scale, false, rows);
      continue;
    }
    let j = 0;
    let kj = k;
    for (; j + 2 <= nk; j += 2) {
      dotnt_4x2<K>(q0, q1, q2, q3, kj, kj + ldk, headDim, srow + (<usize>j << 2), lds, scale, false, rows);
      kj += ldk << 1;
    }
    if (j < nk) dotnt_4x1<K>(q0, q1, q2, q3, kj, headDim, srow + (<usize>j << 2), lds, scale, false, rows);
  }
  // 3-row tiles, three keys at a time (from three places in a page, as above); the last 1-2
  // keys in a 4-row tile whose fourth row repeats the third.
  for (; r + 3 <= r1; r += 3) {
    const q0 = load<usize>(rowF32(b.q, r)), q1 = load<usize>(rowF32(b.q, r + 1)), q2 = load<usize>(rowF32(b.q, r + 2));
    const srow = b.scores + <usize>r * lds + cOff;
    const t = spreadKeys ? nk / 3 : 1, dk = <usize>t * ldk, ds = <usize>t << 2;
    let j = 0;
    let kj = k;
    if (spreadKeys) {
      for (; j < t; j++) {
        dotnt_3x3<K>(q0, q1, q2, kj, kj + dk, kj + 2 * dk, headDim, srow + (<usize>j << 2), lds, scale, false, ds);
        kj += ldk;
      }
      j = 3 * t;
      kj = k + <usize>j * ldk;
    } else {
      for (; j + 3 <= nk; j += 3) {
        dotnt_3x3<K>(q0, q1, q2, kj, kj + ldk, kj + 2 * ldk, headDim, srow + (<usize>j << 2), lds, scale, false);
        kj += 3 * ldk;
      }
    }
    for (; j < nk; j++) {
      dotnt_4x1<K>(q0, q1, q2, q2, kj, headDim, srow + (<usize>j << 2), lds, scale, false, 3);
      kj += ldk;
    }
  }
  for (; r < r1; r++) {
    const q0 = load<usize>(rowF32(b.q, r));
    const srow = b.scores + <usize>r * lds + cOff;
    let j = 0;
    let kj = k;
    if (spreadKeys) {
      // Keys j, j + q, j + 2q, j + 3q side by side: four sequential streams through the segment.
      const q = nk >> 2, dk = <usize>q * ldk;
      for (; j < q; j++) {
        dotnt_1x4<K>(q0, kj, kj + dk, kj + 2 * dk, kj + 3 * dk, headDim, srow + (<usize>j << 2), scale, false, <usize>q << 2);
        kj += ldk;
      }
      j = q << 2;
      kj = k + <usize>j * ldk;
    }
    for (; j + 4 <= nk; j += 4) {
      dotnt_1x4<K>(q0, kj, kj + ldk, kj + 2 * ldk, kj + 3 * ldk, headDim, srow + (<usize>j << 2), scale, false);
      kj += ldk << 2;
    }
    for (; j < nk; j++) {
      dotnt_1x1<K>(q0, kj, headDim, srow + (<usize>j << 2), scale, false);
      kj += ldk;
    }
  }
}

/**
 * The online-softmax step for rows [r0, r1) over the block's `nk` scores (keys j0 ..): causal
 * mask, new running max, rescale of l and of the output rows, S becomes P = e^(S - m).
 * `masked`: some key of the block lies beyond some row's causal limit. `window` > 0 also masks
 * keys at or before limit - window (a sliding window of `window` keys, the row's own included).
 * `softcap` > 0 first caps the scores at ±softcap (softcap · tanh(s / softcap): Gemma 2).
 */
export function softmaxBlock(b: RowBlock, r0: i32, r1: i32, nk: i32, j0: i32, headDim: i32, masked: bool, window: i32, softcap: f32): void {
  const lds: usize = <usize>BLOCK_KEYS << 2;
  let r: i32;
  // The softmax runs on whole vectors: scores past nk up to a multiple of 4 are -inf, so each
  // key's lane (j mod 4) and the summation order do not depend on where the block ends.
  const nk4 = (nk + 3) & ~3;
  for (r = r0; r < r1; r++) {
    const srow = b.scores + <usize>r * lds;
    if (softcap > 0) for (let o: usize = 0, end = <usize>nk4 << 2; o < end; o += 16) v128.store(srow + o, softcap4(v128.load(srow + o), softcap));
    // Causal mask: keys past the row's limit get -inf, which exp turns into exactly 0.
    const limit = load<i32>(rowF32(b.limit, r));
    const first = masked ? max(0, limit - j0 + 1) : nk;
    for (let j = first; j < nk4; j++) store<f32>(srow + (<usize>j << 2), NEG_INF);
    // Sliding window: so are keys older than the row's last `window` positions.
    if (window > 0) {
      const older = min(nk, limit - window + 1 - j0);
      for (let j = 0; j < older; j++) store<f32>(srow + (<usize>j << 2), NEG_INF);
    }
    // Online softmax: new running max, rescale what was accumulated, P = e^(S - m).
    const mOld = load<f32>(rowF32(b.m, r));
    const mNew = max(mOld, rowMax(srow, nk4));
    if (mNew == NEG_INF) { // every key so far is masked for this row
      memory.fill(srow, 0, <usize>nk4 << 2);
      continue;
    }
    const sum = expShiftSum(srow, nk4, mNew);
    let l = load<f32>(rowF32(b.l, r));
    if (mOld != NEG_INF && mOld != mNew) {
      const alpha = exp1(mOld - mNew);
      l *= alpha;
      scaleRow(load<usize>(rowF32(b.o, r)), headDim, alpha);
    }
    store<f32>(rowF32(b.l, r), l + sum);
    store<f32>(rowF32(b.m, r), mNew);
  }
}

/**
 * O += P[:, col0 .. col0 + nk) · V for rows [r0, r1) of one KV head, over `nk` V rows `ldv`
 * bytes apart starting at v (one segment of the block, as in scoreKeys). A function, as scoreKeys.
 */
export function accumulateKeys<V>(b: RowBlock, r0: i32, r1: i32, v: usize, ldv: usize, nk: i32, col0: i32, headDim: i32): void {
  const lds: usize = <usize>BLOCK_KEYS << 2;
  const cOff = <usize>col0 << 2;
  const d8 = headDim & ~7;
  const d4 = headDim & ~3;
  // Two rows (a group of 2): 2x16 tiles, not a 4-row tile computing each row twice.
  if (r1 - r0 == 2) {
    const p0 = b.scores + <usize>r0 * lds + cOff, p1 = p0 + lds;
    const o0 = load<usize>(rowF32(b.o, r0)), o1 = load<usize>(rowF32(b.o, r0 + 1));
    let d = 0;
    for (; d + 16 <= headDim; d += 16) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      pvacc_2x16<V>(p0, p1, v + xv, ldv, nk, o0 + x, o1 + x);
    }
    for (; d < d4; d += 4) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      pvacc_4x4<V>(p0, p1, p1, p1, v + xv, ldv, nk, o0 + x, o1 + x, o1 + x, o1 + x);
    }
    for (; d < headDim; d++) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      pvacc_1x1<V>(p0, v + xv, ldv, nk, o0 + x);
      pvacc_1x1<V>(p1, v + xv, ldv, nk, o1 + x);
    }
    return;
  }
  let r = r0;
  // 4-row tiles, head_dim in 8-float chunks: each V row is loaded once for 4 query rows. A tail
  // of 2 or 3 rows repeats its last row, whose copies compute and store the same values (unless
  // 3-row tiles end the head's rows: see threeRowTiles).
  const end4 = r1 - 3 * threeRowTiles(r1 - r0);
  for (; r + 2 <= end4; r += 4) {
    const last = min(r + 3, end4 - 1);
    const p0 = b.scores + <usize>r * lds + cOff, p1 = p0 + lds;
    const p2 = b.scores + <usize>min(r + 2, last) * lds + cOff, p3 = b.scores + <usize>last * lds + cOff;
    const o0 = load<usize>(rowF32(b.o, r)), o1 = load<usize>(rowF32(b.o, r + 1));
    const o2 = load<usize>(rowF32(b.o, min(r + 2, last))), o3 = load<usize>(rowF32(b.o, last));
    let d = 0;
    for (; d < d8; d += 8) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      pvacc_4x8<V>(p0, p1, p2, p3, v + xv, ldv, nk, o0 + x, o1 + x, o2 + x, o3 + x);
    }
    if (d < d4) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      pvacc_4x4<V>(p0, p1, p2, p3, v + xv, ldv, nk, o0 + x, o1 + x, o2 + x, o3 + x);
      d += 4;
    }
    for (; d < headDim; d++) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      // One row at a time (load, add, store): a repeated row must not run twice.
      pvacc_1x1<V>(p0, v + xv, ldv, nk, o0 + x);
      pvacc_1x1<V>(p1, v + xv, ldv, nk, o1 + x);
      if (last >= r + 2) pvacc_1x1<V>(p2, v + xv, ldv, nk, o2 + x);
      if (last >= r + 3) pvacc_1x1<V>(p3, v + xv, ldv, nk, o3 + x);
    }
  }
  // 3-row tiles, head_dim in 12-float chunks, then 4-float ones on the 4-row tile with the third
  // row repeated (its copy computes and stores the same values), then single floats.
  for (; r + 3 <= r1; r += 3) {
    const p0 = b.scores + <usize>r * lds + cOff, p1 = p0 + lds, p2 = p1 + lds;
    const o0 = load<usize>(rowF32(b.o, r)), o1 = load<usize>(rowF32(b.o, r + 1)), o2 = load<usize>(rowF32(b.o, r + 2));
    let d = 0;
    for (; d + 12 <= headDim; d += 12) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      pvacc_3x12<V>(p0, p1, p2, v + xv, ldv, nk, o0 + x, o1 + x, o2 + x);
    }
    for (; d < d4; d += 4) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      pvacc_4x4<V>(p0, p1, p2, p2, v + xv, ldv, nk, o0 + x, o1 + x, o2 + x, o2 + x);
    }
    for (; d < headDim; d++) {
      const x = <usize>d << 2, xv = <usize>d * elementBytes<V>();
      pvacc_1x1<V>(p0, v + xv, ldv, nk, o0 + x);
      pvacc_1x1<V>(p1, v + xv, ldv, nk, o1 + x);
      pvacc_1x1<V>(p2, v + xv, ldv, nk, o2 + x);
    }
  }
  const d16 = headDim & ~15;
  for (; r < r1; r++) {
    const p0 = b.scores + <usize>r * lds + cOff;
    const o0 = load<usize>(rowF32(b.o, r));
    let d = 0;
    for (; d < d16; d += 16) pvacc_1x16<V>(p0, v + <usize>d * elementBytes<V>(), ldv, nk, o0 + (<usize>d << 2));
    for (; d < d4; d += 4) pvacc_1x4<V>(p0, v + <usize>d * elementBytes<V>(), ldv, nk, o0 + (<usize>d << 2));
    for (; d < headDim; d++) pvacc_1x1<V>(p0, v + <usize>d * elementBytes<V>(), ldv, nk, o0 + (<usize>d << 2));
  }
}

/**
 * Grouped-query attention over token-major tensors, the problem given by the AttentionCall at
 * `call` (abi.ts): q/out [seqQ, numHeads, headDim], k/v [seqK, numKvHeads, headDim]. Query head h reads KV head h / (numHeads / numKvHeads).
 * Computes KV heads [kvHeadBegin, kvHeadEnd) for query positions [qBegin, qEnd): disjoint ranges
 * can run on different threads, each with its own scratch (attention_scratch_bytes). Only keys
 * [keyBegin, keyEnd) are visited; with stats != 0 the result is a split-KV partial (see endRows
 * and attention_combine), which is how one long sequence is shared by threads.
 * causal != 0: query i sees key j iff j <= i + (seqK - seqQ) (bottom-right aligned); window > 0
 * (causal only) also hides keys j <= i + (seqK - seqQ) - window (Mistral's sliding window); a query
 * that sees no key gets zeros. out must not overlap q, k or v.
 */
export function attention_f32(
  call: usize, kvHeadBegin: i32, kvHeadEnd: i32, qBegin: i32, qEnd: i32, keyBegin: i32, keyEnd: i32, stats: usize, scratch: usize,
): void {
  attend<f32>(changetype<AttentionCall>(call), false, kvHeadBegin, kvHeadEnd, qBegin, qEnd, keyBegin, keyEnd, stats, scratch);
}

/** The RowBlock descriptor: 16 bytes after the row state in scratch. */
// @ts-ignore: decorator
@inline function descriptorOf(scratch: usize, numHeads: i32): usize {
  return scratch + <usize>max(TARGET_ROWS, numHeads) * <usize>ROW_STATE_BYTES;
}

/**
 * Lays out the row block of query positions [i0, i0 + rowsPerHead / group) for the nHeads KV
 * heads of the range in scratch, starts every row, and sets the keys the block visits within
 * [keyBegin, keyEnd) under the causal rule and sliding window. The descriptor lives in this
 * call's scratch, not in static memory, so that threads sharing one memory never share it.
 */
function startRowBlock(
  scratch: usize, numHeads: i32, nHeads: i32, rowsPerHead: i32, q: usize, out: usize, qPosStride: usize,
  i0: i32, kvHeadBegin: i32, group: i32, headDim: i32,
  seqQ: i32, seqK: i32, causal: i32, window: i32, keyBegin: i32, keyEnd: i32,
): RowBlock {
  const b = changetype<RowBlock>(descriptorOf(scratch, numHeads) + 16);
  layoutRowBlock(b, scratch, rowsPerHead * nHeads);
  const causalOffset = seqK - seqQ;
  const nPos = rowsPerHead / group;
  // Keys every row may see end at firstMasked; keys no row may see start at keyStop.
  b.firstMasked = causal ? i0 + causalOffset + 1 : seqK;
  b.keyStop = causal ? min(keyEnd, i0 + nPos + causalOffset) : keyEnd;
  // With a sliding window, keys older than the first row's window are seen by no row: blocks
  // start at the last block boundary (from keyBegin) before them, so that every row sees the same
  // blocks whichever row block it is in (queries split between threads: the same sums, bit for bit).
  b.keyStart = window > 0 ? keyBegin + max(0, i0 + causalOffset - window + 1 - keyBegin) / BLOCK_KEYS * BLOCK_KEYS : keyBegin;
  for (let h = 0; h < nHeads; h++) {
    beginRows(b, h * rowsPerHead, rowsPerHead, q, out, qPosStride, i0, (kvHeadBegin + h) * group, group, headDim, causalOffset);
  }
  return b;
}

/** Rows [r0, r0 + rows) of one KV head: pointers, causal limits, m = -inf, l = 0, outputs zeroed. */
function beginRows(
  b: RowBlock, r0: i32, rows: i32, q: usize, out: usize, qPosStride: usize, firstPos: i32,
  firstHead: i32, group: i32, headDim: i32, causalOffset: i32,
): void {
  const rowBytes = <usize>headDim << 2;
  for (let i = 0; i < rows; i++) {
    const r = r0 + i;
    const pos = firstPos + i / group;
    const offset = <usize>pos * qPosStride + <usize>(firstHead + i % group) * rowBytes;
    store<f32>(rowF32(b.m, r), NEG_INF);
    store<f32>(rowF32(b.l, r), 0);
    store<usize>(rowF32(b.q, r), q + offset);
    store<usize>(rowF32(b.o, r), out + offset);
    store<i32>(rowF32(b.limit, r), pos + causalOffset);
    memory.fill(out + offset, 0, rowBytes);
  }
}

/**
 * Ends rows [r0, r1): out_r /= l_r (a row that saw no key stays 0). With `stats` (a split-KV
 * partial), out_r stays unnormalised and (m_r, l_r) go to stats[(pos·numHeads + head)·2].
 */
function endRows(b: RowBlock, r0: i32, r1: i32, headDim: i32, out: usize, stats: usize): void {
  for (let r = r0; r < r1; r++) {
    const l = load<f32>(rowF32(b.l, r));
    const o = load<usize>(rowF32(b.o, r));
    if (stats != 0) {
      const s = stats + (((o - out) / (<usize>headDim << 2)) << 3);
      store<f32>(s, load<f32>(rowF32(b.m, r)));
      store<f32>(s, l, 4);
    } else {
      scaleRow(o, headDim, l > 0 ? <f32>1 / l : 0);
    }
  }
}

/**
 * Combines split-KV partials (Flash-Decoding): part s of nParts holds unnormalised rows
 * partials + s·rows·headDim·4 and their (m, l) at stats + s·rows·8. For each row:
 * M = max m_s, out = Σ e^(m_s - M)·O_s / Σ e^(m_s - M)·l_s, exactly the softmax over all keys.
 * Rows [rowBegin, rowEnd) of `rows`; a row no part saw a key for is 0.
 */
export function attention_combine(
  partials: usize, stats: usize, nParts: i32, rows: i32, headDim: i32, out: usize, rowBegin: i32, rowEnd: i32,
): void {
  const rowBytes = <usize>headDim << 2;
  const partStride = <usize>rows * rowBytes;
  const statStride = <usize>rows << 3;
  for (let r = rowBegin; r < rowEnd; r++) {
    const st = stats + (<usize>r << 3);
    let m: f32 = NEG_INF;
    for (let p = 0; p < nParts; p++) m = max(m, load<f32>(st + <usize>p * statStride));
    const o = out + <usize>r * rowBytes;
    memory.fill(o, 0, rowBytes);
    if (m == NEG_INF) continue;
    let l: f32 = 0;
    for (let p = 0; p < nParts; p++) {
      const mp = load<f32>(st + <usize>p * statStride);
      if (mp == NEG_INF) continue;
      const w = exp1(mp - m);
      l += w * load<f32>(st + <usize>p * statStride, 4);
      const src = partials + <usize>p * partStride + <usize>r * rowBytes;
      const wv = f32x4.splat(w);
      let d = 0;
      for (; d + 4 <= headDim; d += 4) {
        const x = <usize>d << 2;
        v128.store(o + x, fmadd(v128.load(src + x), wv, v128.load(o + x)));
      }
      for (; d < headDim; d++) {
        const x = <usize>d << 2;
        store<f32>(o + x, load<f32>(o + x) + load<f32>(src + x) * w);
      }
    }
    scaleRow(o, headDim, <f32>1 / l);
  }
}

/** S[r][col0 + j] *= scales[j] for rows [r0, r1): per-key int8 scales, on scores or on P. */
function scaleColumns(b: RowBlock, r0: i32, r1: i32, col0: i32, n: i32, scales: usize): void {
  const lds: usize = <usize>BLOCK_KEYS << 2;
  const body = <usize>(n & ~3) << 2, end = <usize>n << 2;
  for (let r = r0; r < r1; r++) {
    const srow = b.scores + <usize>r * lds + (<usize>col0 << 2);
    for (let o: usize = 0; o < body; o += 16) v128.store(srow + o, f32x4.mul(v128.load(srow + o), v128.load(scales + o)));
    for (let o = body; o < end; o += 4) store<f32>(srow + o, load<f32>(srow + o) * load<f32>(scales + o));
  }
}

/**
 * Grouped-query attention against a paged KV cache (one layer of one sequence). q/out are
 * token-major [seqQ, numHeads, headDim] as in attention_f32; the seqK cached keys live in pages
 * of `pageSize` tokens whose addresses are the u32 array at `pages` (the block table), laid out
 * as kv_page_bytes says, in storage type `dtype` (KV_F32, KV_F16, KV_BF16, KV_INT8). One head's rows
 * are contiguous within a page and are read in place (no gather), widened in registers, in
 * address order (see the top of this file). With
 * f32 pages the key blocks and results are those of attention_f32, bit for bit. Ranges and the
 * causal rule as attention_f32.
 */
export function attention_paged(
  call: usize, kvHeadBegin: i32, kvHeadEnd: i32, qBegin: i32, qEnd: i32, keyBegin: i32, keyEnd: i32, stats: usize, scratch: usize,
): void {
  const c = changetype<AttentionCall>(call);
  if (c.dtype == KV_F16) attend<F16>(c, true, kvHeadBegin, kvHeadEnd, qBegin, qEnd, keyBegin, keyEnd, stats, scratch);
  else if (c.dtype == KV_BF16) attend<BF16>(c, true, kvHeadBegin, kvHeadEnd, qBegin, qEnd, keyBegin, keyEnd, stats, scratch);
  else if (c.dtype == KV_INT8) attend<i8>(c, true, kvHeadBegin, kvHeadEnd, qBegin, qEnd, keyBegin, keyEnd, stats, scratch);
  else attend<f32>(c, true, kvHeadBegin, kvHeadEnd, qBegin, qEnd, keyBegin, keyEnd, stats, scratch);
}

/**
 * The one attention driver, over either K/V source: contiguous token-major rows (key j of head
 * h at k + (j·numKvHeads + h)·headDim·4) or pages of a block table (key j of head h at
 * page(j) + h·pageSize·rowBytes + (j mod pageSize)·rowBytes, V after the page's K; int8 rows
 * with one scale each). A key block is read as segments of consecutive keys (SEGMENT_KEYS_* of
 * contiguous K/V, one per page it spans otherwise), all heads of a segment before the next.
 */
// @ts-ignore: decorator
@inline function attend<T>(
  c: AttentionCall, paged: bool, kvHeadBegin: i32, kvHeadEnd: i32, qBegin: i32, qEnd: i32, keyBegin: i32, keyEnd: i32, stats: usize, scratch: usize,
): void {
  const numHeads = c.numHeads, numKvHeads = c.numKvHeads, headDim = c.headDim, seqQ = c.seqQ, seqK = c.seqK;
  const scale = c.scale, causal = c.causal, window = c.window, q = c.q, out = c.out;
  const quantised = sizeof<T>() == 1; // int8 rows, one f32 scale each
  const group = numHeads / numKvHeads;
  const nHeads = kvHeadEnd - kvHeadBegin;
  const qPosStride = <usize>numHeads * (<usize>headDim << 2);
  const kvRowBytes = <usize>headDim * sizeof<T>();
  // Within a segment keys are `ldk` bytes apart and heads `headStride`; a segment holds at most
  // `segmentKeys` keys from a multiple of it.
  const pageSize = paged ? c.pageSize : seqK;
  const ldk = paged ? kvRowBytes : <usize>numKvHeads * kvRowBytes;
  const headStride = paged ? <usize>pageSize * kvRowBytes : kvRowBytes;
  const vOffset = paged ? <usize>numKvHeads * headStride : c.v - c.k;
  const scaleOffset = paged ? <usize>kv_scale_offset(numKvHeads, headDim, pageSize) : 0;
  const vScaleOffset = scaleOffset + (<usize>(numKvHeads * pageSize) << 2);
  // Segments: a page, or a few keys of contiguous K/V (more for P·V, whose output tile is loaded
  // and stored once per segment).
  const segmentK = paged ? pageSize : SEGMENT_KEYS_QK, segmentV = paged ? pageSize : pvSegmentKeys(ldk);
  const perBlock = positionsPerBlock(nHeads * group);
  const contiguousFromMemory = !paged && <u64>seqK * <u64>ldk * 2 >= CONTIGUOUS_LOAD_AHEAD_BYTES;
  const widened = widenedRows(scratch, numHeads), widenLimit = widenKeys(headDim), ldw = <usize>headDim << 2;
  for (let i0 = qBegin; i0 < qEnd; i0 += perBlock) {
    const nPos = min(perBlock, qEnd - i0);
    const rowsPerHead = nPos * group;
    const loadAhead = nPos <= LOAD_AHEAD_POSITIONS && (paged || contiguousFromMemory);
    // (A page holds a head's rows contiguous, so a segment's rows of a head widen as one run.)
    const widen = paged && widensRows<T>(rowsPerHead);
    const maxLen = widen ? widenLimit : BLOCK_KEYS;
    // A page's V rows follow its K rows: small ones are loaded with them, one longer run through
    // memory, still in L2 by P·V (see V_WITH_K_BYTES).
    const vWithK = paged && <usize>(2 * nHeads * min(pageSize, maxLen)) * kvRowBytes <= V_WITH_K_BYTES;
    const b = startRowBlock(scratch, numHeads, nHeads, rowsPerHead, q, out, qPosStride, i0, kvHeadBegin, group, headDim,
      seqQ, seqK, causal, window, keyBegin, keyEnd);
    const fold = ASC_FEATURE_RELAXED_SIMD && isF16<T>() && foldF16Queries(b, nHeads * rowsPerHead, headDim, widened + <usize>widenRoom(headDim));
    for (let j0 = b.keyStart; j0 < b.keyStop; j0 += BLOCK_KEYS) {
      const nk = min(BLOCK_KEYS, b.keyStop - j0);
      const masked = j0 + nk > b.firstMasked;
      for (let j = j0; j < j0 + nk;) {
        const len = min(min(segmentK - j % segmentK, j0 + nk - j), maxLen);
        if (loadAhead) {
          loadSegment(c, paged, j, len, kvHeadBegin, nHeads, ldk, headStride, kvRowBytes, 0);
          if (vWithK) loadSegment(c, paged, j, len, kvHeadBegin, nHeads, ldk, headStride, kvRowBytes, vOffset);
        }
        for (let h = 0; h < nHeads; h++) {
          const r0 = h * rowsPerHead, r1 = r0 + rowsPerHead, kh = kvHeadBegin + h;
          const rows = keyAddress(c, paged, j, kh, ldk, headStride);
          if (widen) {
            widenSegment<T>(fold, rows, len * headDim, widened);
            scoreKeys<f32>(b, r0, r1, widened, ldw, len, j - j0, headDim, scale, paged);
          } else if (fold) scoreKeys<F16Scaled>(b, r0, r1, rows, ldk, len, j - j0, headDim, scale, paged);
          else scoreKeys<T>(b, r0, r1, rows, ldk, len, j - j0, headDim, scale, paged);
          if (quantised) scaleColumns(b, r0, r1, j - j0, len, rowScales(c, j, kh, pageSize, scaleOffset));
        }
        j += len;
      }
      softmaxBlock(b, 0, nHeads * rowsPerHead, nk, j0, headDim, masked, window, c.softcap);
      if (fold) scaleScores(b, nHeads * rowsPerHead, nk, F16_REBIAS);
      for (let j = j0; j < j0 + nk;) {
        const len = min(min(segmentV - j % segmentV, j0 + nk - j), maxLen);
        if (loadAhead && !vWithK) loadSegment(c, paged, j, len, kvHeadBegin, nHeads, ldk, headStride, kvRowBytes, vOffset);
        for (let h = 0; h < nHeads; h++) {
          const r0 = h * rowsPerHead, r1 = r0 + rowsPerHead, kh = kvHeadBegin + h;
          if (quantised) scaleColumns(b, r0, r1, j - j0, len, rowScales(c, j, kh, pageSize, vScaleOffset));
          const rows = keyAddress(c, paged, j, kh, ldk, headStride) + vOffset;
          if (widen) {
            widenSegment<T>(fold, rows, len * headDim, widened);
            accumulateKeys<f32>(b, r0, r1, widened, ldw, len, j - j0, headDim);
          } else if (fold) accumulateKeys<F16Scaled>(b, r0, r1, rows, ldk, len, j - j0, headDim);
          else accumulateKeys<T>(b, r0, r1, rows, ldk, len, j - j0, headDim);
        }
        j += len;
      }
    }
    endRows(b, 0, rowsPerHead * nHeads, headDim, out, stats);
  }
}

/** n elements of a T row at src widened to f32 at dst: as F16Scaled where the row block is folded (foldF16Queries). */
// @ts-ignore: decorator
@inline function widenSegment<T>(fold: bool, src: usize, n: i32, dst: usize): void {
  if (fold) widenRow<F16Scaled>(src, n, dst);
  else widenRow<T>(src, n, dst);
}

/**
 * f16 pages in the relaxed build: K and V are read as F16Scaled, the f16 value times 2^-112, by
 * the tiles (decode: one operation and one register constant fewer per row than F16, whose two
 * spilled the tiles' accumulators) or by the widening (one multiply fewer per 4 values: decode of
 * groups of 3 1.04x, prefill level), and the 2^112 goes into the other operand of every product:
 * the block's `rows` query rows are copied times 2^112 to `to` (b.q then points at the copies)
 * and P is multiplied by 2^112 before P·V (scaleScores). Scaling by powers of two is exact, so
 * each product, and every score and output, is F16's, bit for bit. Not when a query element's
 * magnitude reaches 2^15 or is NaN (its copy could overflow): returns false and changes nothing.
 */
function foldF16Queries(b: RowBlock, rows: i32, headDim: i32, to: usize): bool {
  // The largest |q| as bits (hmaxI32: NaN above inf).
  const body = <usize>(headDim & ~3), rowBytes = <usize>headDim << 2;
  let mx = i32x4.splat(0), ms: i32 = 0;
  for (let r = 0; r < rows; r++) {
    const q = load<usize>(rowF32(b.q, r));
    for (let o: usize = 0; o < body << 2; o += 16) mx = i32x4.max_s(mx, f32x4.abs(v128.load(q + o)));
    for (let o = body << 2; o < rowBytes; o += 4) ms = max(ms, reinterpret<i32>(abs(load<f32>(q + o))));
  }
  if (max(ms, hmaxI32(mx)) >= reinterpret<i32>(<f32>32768)) return false;
  const f = f32x4.splat(F16_REBIAS);
  for (let r = 0; r < rows; r++) {
    const q = load<usize>(rowF32(b.q, r)), copy = to + <usize>r * rowBytes;
    for (let o: usize = 0; o < body << 2; o += 16) v128.store(copy + o, f32x4.mul(v128.load(q + o), f));
    for (let o = body << 2; o < rowBytes; o += 4) store<f32>(copy + o, load<f32>(q + o) * F16_REBIAS);
    store<usize>(rowF32(b.q, r), copy);
  }
  return true;
}

/** P (the softmax's block of `nk` columns, rows [0, rows)) times f. */
function scaleScores(b: RowBlock, rows: i32, nk: i32, f: f32): void {
  const lds: usize = <usize>BLOCK_KEYS << 2, end = <usize>((nk + 3) & ~3) << 2, fv = f32x4.splat(f);
  for (let r = 0; r < rows; r++) {
    const p = b.scores + <usize>r * lds;
    for (let o: usize = 0; o < end; o += 16) v128.store(p + o, f32x4.mul(v128.load(p + o), fv));
  }
}

/**
 * Decode from pages loads a page's V rows with its K rows when both, over the call's KV heads,
 * take at most this many bytes (K and V of a 64-token page: SmolLM2's 3 x 64 heads 96 KB in f32,
 * Qwen2.5-0.5B's 2 x 64 64 KB, 8 x 64 256 KB): decode past 2048-8192 keys 1.05-1.10x, a SmolLM2
 * decode step past 2048 1.04-1.05x (f32, f16, bf16). 8 or 32 heads of 128 (512 KB, 2 MB) ran
 * 0.85-0.98x so, their K pushed out of L2 before P·V (scratch/pagedab.ts, scratch/longab.ts).
 */
const V_WITH_K_BYTES: usize = 256 << 10;

/** Row blocks of at most this many query positions (decode, a few draft tokens) load their pages' rows ahead (see loadRows). */
const LOAD_AHEAD_POSITIONS: i32 = 4;
/**
 * Contiguous K/V of at least this many bytes (K and V together) are loaded ahead as pages are:
 * no cache keeps them between a decode step's layers, and even a call repeated on them found
 * them in memory (8 MiB: 1.3-1.8x faster loaded ahead, scratch/attahead.ts). Smaller ones
 * (SmolLM2's 3 MB at 2048 keys) are often the caller's tensors still in L2 / L3, where loading
 * first cost 5-17%.
 */
const CONTIGUOUS_LOAD_AHEAD_BYTES: u64 = 6 << 20;
/** Keeps loadRows' loads: their values are never used. A global is per instance, so per thread. */
let loadedBits: i32 = 0;

/**
 * Loads (loadRows) the K or V rows (`offset`: 0 or vOffset) of keys [j, j + len) of the range's
 * nHeads KV heads: per head from a page; from contiguous rows the range's part of each, one run
 * when the range is every head (whole rows are contiguous).
 */
function loadSegment(
  c: AttentionCall, paged: bool, j: i32, len: i32, kvHeadBegin: i32, nHeads: i32, ldk: usize, headStride: usize, kvRowBytes: usize, offset: usize,
): void {
  if (paged) {
    for (let h = 0; h < nHeads; h++) loadRows(keyAddress(c, true, j, kvHeadBegin + h, ldk, headStride) + offset, <usize>len * ldk);
  } else if (nHeads == c.numKvHeads) {
    loadRows(keyAddress(c, false, j, 0, ldk, headStride) + offset, <usize>len * ldk);
  } else {
    for (let i = 0; i < len; i++) loadRows(keyAddress(c, false, j + i, kvHeadBegin, ldk, headStride) + offset, <usize>nHeads * kvRowBytes);
  }
}

/**
 * Loads one byte of every 64-byte line of [p, p + bytes): a page's K or V rows of one head,
 * brought into the caches by loads that wait on nothing, just before the tiles read them. A
 * decode step finds its KV pages in memory, not in cache (every layer's weights streamed through
 * since the layer's last step), and the tiles alone read them at the pace of the few lines their
 * loads keep in flight: compute and memory time added up (SmolLM2 f32 KV past 2048, 30 layers:
 * ~8.6 GB/s). Loaded first, a segment streams at nearly the read probe's rate and the tiles then
 * find it in L1/L2: the same attention 1.5-1.7x faster (1.2-1.35x bf16 KV, 1.05-1.1x int8;
 * scratch/attlong.ts), SmolLM2 bf16 decode steps 1.03x at context 160, 1.09x at 512, 1.23x at
 * 2048. Not for prefill's row blocks (their tiles reuse each row for many positions, so the
 * hardware keeps up) nor small contiguous K/V (see CONTIGUOUS_LOAD_AHEAD_BYTES).
 */
function loadRows(p: usize, bytes: usize): void {
  if (bytes == 0) return;
  const last = p + bytes - 1;
  let a = 0, b = 0, c = 0, d = 0;
  let n = bytes;
  for (; n >= 256; n -= 256, p += 256) { a |= load<u8>(p); b |= load<u8>(p, 64); c |= load<u8>(p, 128); d |= load<u8>(p, 192); }
  for (; n >= 64; n -= 64, p += 64) a |= load<u8>(p);
  loadedBits |= a | b | c | d | load<u8>(last); // the last line, when bytes is not a multiple of 64
}

/** Where key j of KV head kh starts (its V row is vOffset further). */
// @ts-ignore: decorator
@inline function keyAddress(c: AttentionCall, paged: bool, j: i32, kh: i32, ldk: usize, headStride: usize): usize {
  if (!paged) return c.k + <usize>j * ldk + <usize>kh * headStride;
  const page = <usize>load<u32>(c.pages + (<usize>(j / c.pageSize) << 2));
  return page + <usize>kh * headStride + <usize>(j % c.pageSize) * ldk;
}

/** The int8 scales of keys j.. of KV head kh in its page (K scales at scaleOffset, V's after them). */
// @ts-ignore: decorator
@inline function rowScales(c: AttentionCall, j: i32, kh: i32, pageSize: i32, offset: usize): usize {
  const page = <usize>load<u32>(c.pages + (<usize>(j / pageSize) << 2));
  return page + offset + (<usize>(kh * pageSize + j % pageSize) << 2);
}
