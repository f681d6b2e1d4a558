import { hmax } from "../simd";
import { exp1, exp4 } from "../math/exp";
import { dotnt_1x1, dotnt_1x4, dotnt_4x1, dotnt_4x2 } from "./dot-nt";
import { pvacc_1x1, pvacc_1x16, pvacc_1x4, pvacc_4x4, pvacc_4x8 } from "./pv-acc";

// Grouped-query attention, flash style. The unit of work is a *row block*: query rows that
// share one KV head (the G = numHeads / numKvHeads heads of a group, for one or more query
// positions). For each block of BLOCK_KEYS keys, every K and V row is loaded once and used by
// all rows of the block (scores S = Q·Kᵀ, then O += P·V) before the next block, with an online
// softmax (running max m and sum l per row), so no seqQ x seqK score matrix ever exists.
// Decode is the same code with one query position: its rows are the G heads of the group.

export const BLOCK_KEYS: i32 = 64;
/** Rows per row block: enough query positions to fill this many rows (at least one position). */
const TARGET_ROWS: i32 = 64;

const NEG_INF: f32 = -Infinity;

/** Query positions per row block for a group of `group` heads. */
// @ts-ignore: decorator
@inline function positionsPerBlock(group: i32): i32 {
  return group >= TARGET_ROWS ? 1 : TARGET_ROWS / group;
}

/**
 * Scratch for one row block: S [rows][BLOCK_KEYS], then per row m, l, q pointer, out pointer and
 * causal limit. `rows` is at most positionsPerBlock(group) · group.
 */
export function attention_scratch_bytes(numHeads: i32, numKvHeads: i32): i32 {
  const group = numHeads / numKvHeads;
  const rows = positionsPerBlock(group) * group;
  return rows * (BLOCK_KEYS * 4 + 5 * 4);
}

// Per-row state of the row block being computed, laid out in the scratch region.
// @ts-ignore: decorator
@inline function rowF32(base: usize, r: i32): usize { return base + (<usize>r << 2); }

/** Row-wise max over n scores. */
// @ts-ignore: decorator
@inline function rowMax(s: usize, n: i32): f32 {
  const body = <usize>(n & ~3) << 2;
  let mv = f32x4.splat(NEG_INF);
  for (let o: usize = 0; o < body; o += 16) mv = f32x4.max(mv, v128.load(s + o));
  let m = hmax(mv);
  for (let o = body, end = <usize>n << 2; o < end; o += 4) m = max(m, load<f32>(s + o));
  return m;
}

/** s[j] = e^(s[j] - m) in place; returns the sum. */
// @ts-ignore: decorator
@inline function expShiftSum(s: usize, n: i32, m: f32): f32 {
  const body = <usize>(n & ~3) << 2;
  const mv = f32x4.splat(m);
  let sv = f32x4.splat(0);
  for (let o: usize = 0; o < body; o += 16) {
    const p = exp4(f32x4.sub(v128.load(s + o), mv));
    v128.store(s + o, p);
    sv = f32x4.add(sv, p);
  }
  let sum = f32x4.extract_lane(sv, 0) + f32x4.extract_lane(sv, 1) +
    f32x4.extract_lane(sv, 2) + f32x4.extract_lane(sv, 3);
  for (let o = body, end = <usize>n << 2; o < end; o += 4) {
    const p = exp1(load<f32>(s + o) - m);
    store<f32>(s + o, p);
    sum += p;
  }
  return sum;
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
 * Attend `rows` query rows to one block of `nk` keys starting at key index j0.
 * k and v point at the block's first row of this KV head; consecutive keys are `ldkv` bytes
 * apart (token-major: numKvHeads·headDim·4; a head-major page: headDim·4).
 * `masked`: some key of the block lies beyond some row's causal limit.
 */
export function attendKeyBlock(
  rows: i32, state: usize, k: usize, v: usize, ldkv: usize, nk: i32, j0: i32,
  headDim: i32, scale: f32, masked: bool,
): void {
  const ldsBytes: usize = <usize>BLOCK_KEYS << 2;
  const scores = state;
  const mBase = scores + <usize>rows * ldsBytes;
  const lBase = mBase + (<usize>rows << 2);
  const qBase = lBase + (<usize>rows << 2);
  const oBase = qBase + (<usize>rows << 2);
  const limBase = oBase + (<usize>rows << 2);
  const ldk = ldkv;

  // 1. S = scale · Q·Kᵀ for the block, in 4-row tiles (each K row serves 4 query rows).
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const q0 = load<usize>(rowF32(qBase, r)), q1 = load<usize>(rowF32(qBase, r + 1));
    const q2 = load<usize>(rowF32(qBase, r + 2)), q3 = load<usize>(rowF32(qBase, r + 3));
    const srow = scores + <usize>r * ldsBytes;
    let j = 0;
    let kj = k;
    for (; j + 2 <= nk; j += 2) {
      dotnt_4x2(q0, q1, q2, q3, kj, kj + ldk, headDim, srow + (<usize>j << 2), ldsBytes, scale, false);
      kj += ldk << 1;
    }
    if (j < nk) dotnt_4x1(q0, q1, q2, q3, kj, headDim, srow + (<usize>j << 2), ldsBytes, scale, false);
  }
  for (; r < rows; r++) {
    const q0 = load<usize>(rowF32(qBase, r));
    const srow = scores + <usize>r * ldsBytes;
    let j = 0;
    let kj = k;
    for (; j + 4 <= nk; j += 4) {
      dotnt_1x4(q0, kj, kj + ldk, kj + 2 * ldk, kj + 3 * ldk, headDim, srow + (<usize>j << 2), scale, false);
      kj += ldk << 2;
    }
    for (; j < nk; j++) {
      dotnt_1x1(q0, kj, headDim, srow + (<usize>j << 2), scale, false);
      kj += ldk;
    }
  }

  // 2. Causal mask: keys past a row's limit get -inf (exp gives exactly 0).
  if (masked) {
    for (r = 0; r < rows; r++) {
      const srow = scores + <usize>r * ldsBytes;
      const first = max(0, load<i32>(rowF32(limBase, r)) - j0 + 1);
      for (let j = first; j < nk; j++) store<f32>(srow + (<usize>j << 2), NEG_INF);
    }
  }

  // 3. Online softmax: new running max, rescale what was accumulated, P = e^(S - m).
  for (r = 0; r < rows; r++) {
    const srow = scores + <usize>r * ldsBytes;
    const mOld = load<f32>(rowF32(mBase, r));
    const mNew = max(mOld, rowMax(srow, nk));
    if (mNew == NEG_INF) { // every key so far is masked for this row
      memory.fill(srow, 0, <usize>nk << 2);
      continue;
    }
    const sum = expShiftSum(srow, nk, mNew);
    if (mOld != NEG_INF && mOld != mNew) {
      const alpha = exp1(mOld - mNew);
      store<f32>(rowF32(lBase, r), load<f32>(rowF32(lBase, r)) * alpha + sum);
      scaleRow(load<usize>(rowF32(oBase, r)), headDim, alpha);
    } else {
      store<f32>(rowF32(lBase, r), load<f32>(rowF32(lBase, r)) + sum);
    }
    store<f32>(rowF32(mBase, r), mNew);
  }

  // 4. O += P·V, in 4-row tiles (each V row serves 4 query rows), head_dim in 8-float chunks.
  const d8 = headDim & ~7;
  const d4 = headDim & ~3;
  for (r = 0; r + 4 <= rows; r += 4) {
    const p0 = scores + <usize>r * ldsBytes, p1 = p0 + ldsBytes, p2 = p1 + ldsBytes, p3 = p2 + ldsBytes;
    const o0 = load<usize>(rowF32(oBase, r)), o1 = load<usize>(rowF32(oBase, r + 1));
    const o2 = load<usize>(rowF32(oBase, r + 2)), o3 = load<usize>(rowF32(oBase, r + 3));
    let d = 0;
    for (; d < d8; d += 8) {
      const x = <usize>d << 2;
      pvacc_4x8(p0, p1, p2, p3, v + x, ldkv, nk, o0 + x, o1 + x, o2 + x, o3 + x);
    }
    if (d < d4) {
      const x = <usize>d << 2;
      pvacc_4x4(p0, p1, p2, p3, v + x, ldkv, nk, o0 + x, o1 + x, o2 + x, o3 + x);
      d += 4;
    }
    for (; d < headDim; d++) {
      const x = <usize>d << 2;
      pvacc_1x1(p0, v + x, ldkv, nk, o0 + x);
      pvacc_1x1(p1, v + x, ldkv, nk, o1 + x);
      pvacc_1x1(p2, v + x, ldkv, nk, o2 + x);
      pvacc_1x1(p3, v + x, ldkv, nk, o3 + x);
    }
  }
  const d16 = headDim & ~15;
  for (; r < rows; r++) {
    const p0 = scores + <usize>r * ldsBytes;
    const o0 = load<usize>(rowF32(oBase, r));
    let d = 0;
    for (; d < d16; d += 16) pvacc_1x16(p0, v + (<usize>d << 2), ldkv, nk, o0 + (<usize>d << 2));
    for (; d < d4; d += 4) pvacc_1x4(p0, v + (<usize>d << 2), ldkv, nk, o0 + (<usize>d << 2));
    for (; d < headDim; d++) pvacc_1x1(p0, v + (<usize>d << 2), ldkv, nk, o0 + (<usize>d << 2));
  }
}

/** Set up a row block's state: pointers, causal limits, m = -inf, l = 0, output rows zeroed. */
function beginRowBlock(
  state: usize, rows: i32, q: usize, out: usize, qPosStride: usize, firstPos: i32, firstHead: i32,
  group: i32, headDim: i32, causalOffset: i32,
): void {
  const mBase = state + <usize>rows * (<usize>BLOCK_KEYS << 2);
  const lBase = mBase + (<usize>rows << 2);
  const qBase = lBase + (<usize>rows << 2);
  const oBase = qBase + (<usize>rows << 2);
  const limBase = oBase + (<usize>rows << 2);
  const rowBytes = <usize>headDim << 2;
  for (let r = 0; r < rows; r++) {
    const pos = firstPos + r / group;
    const head = firstHead + r % group;
    const offset = <usize>pos * qPosStride + <usize>head * rowBytes;
    store<f32>(rowF32(mBase, r), NEG_INF);
    store<f32>(rowF32(lBase, r), 0);
    store<usize>(rowF32(qBase, r), q + offset);
    store<usize>(rowF32(oBase, r), out + offset);
    store<i32>(rowF32(limBase, r), pos + causalOffset);
    memory.fill(out + offset, 0, rowBytes);
  }
}

/** out_r /= l_r (rows that saw no key stay 0). */
function endRowBlock(state: usize, rows: i32, headDim: i32): void {
  const lBase = state + <usize>rows * (<usize>BLOCK_KEYS << 2) + (<usize>rows << 2);
  const oBase = lBase + (<usize>rows << 3);
  for (let r = 0; r < rows; r++) {
    const l = load<f32>(rowF32(lBase, r));
    scaleRow(load<usize>(rowF32(oBase, r)), headDim, l > 0 ? <f32>1 / l : 0);
  }
}

/**
 * Grouped-query attention over token-major tensors: q/out [seqQ, numHeads, headDim],
 * k/v [seqK, numKvHeads, headDim]. Query head h reads KV head h / (numHeads / numKvHeads).
 * Computes KV heads [kvHeadBegin, kvHeadEnd) for query positions [qBegin, qEnd): disjoint ranges
 * can run on different threads, each with its own scratch (attention_scratch_bytes).
 * causal != 0: query i sees key j iff j <= i + (seqK - seqQ) (bottom-right aligned).
 * out must not overlap q, k or v.
 */
export function attention_f32(
  q: usize, k: usize, v: usize, out: usize,
  seqQ: i32, seqK: i32, numHeads: i32, numKvHeads: i32, headDim: i32, scale: f32, causal: i32,
  kvHeadBegin: i32, kvHeadEnd: i32, qBegin: i32, qEnd: i32, scratch: usize,
): void {
  const group = numHeads / numKvHeads;
  const rowBytes = <usize>headDim << 2;
  const qPosStride = <usize>numHeads * rowBytes;
  const ldkv = <usize>numKvHeads * rowBytes;
  const causalOffset = seqK - seqQ;
  const perBlock = positionsPerBlock(group);
  for (let kh = kvHeadBegin; kh < kvHeadEnd; kh++) {
    const kHead = k + <usize>kh * rowBytes;
    const vHead = v + <usize>kh * rowBytes;
    for (let i0 = qBegin; i0 < qEnd; i0 += perBlock) {
      const nPos = min(perBlock, qEnd - i0);
      const rows = nPos * group;
      beginRowBlock(scratch, rows, q, out, qPosStride, i0, kh * group, group, headDim, causalOffset);
      // Keys every row may see, and keys no row may see (causal).
      const firstMasked = causal ? i0 + causalOffset + 1 : seqK;
      const keyEnd = causal ? min(seqK, i0 + nPos + causalOffset) : seqK;
      for (let j0 = 0; j0 < keyEnd; j0 += BLOCK_KEYS) {
        const nk = min(BLOCK_KEYS, keyEnd - j0);
        const offset = <usize>j0 * ldkv;
        attendKeyBlock(rows, scratch, kHead + offset, vHead + offset, ldkv, nk, j0, headDim, scale,
          j0 + nk > firstMasked);
      }
      endRowBlock(scratch, rows, headDim);
    }
  }
}
