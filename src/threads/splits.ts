// How a call is cut into per-thread ranges. Every kernel computes any range of KV heads / query
// positions / output columns with bit-identical results, so the cut changes speed, not answers.

/** [kvHeadBegin, kvHeadEnd, qBegin, qEnd] for each thread that gets work. */
export type AttentionRange = [number, number, number, number];

export function attentionSplits(seqQ: number, seqK: number, numKvHeads: number, causal: boolean, threads: number): AttentionRange[] {
  if (threads <= 1) return [[0, numKvHeads, 0, seqQ]];
  // Few query rows (decode): KV heads apart. Each thread reads only its heads' K/V.
  if (seqQ < 4 * threads && numKvHeads > 1) {
    const t = Math.min(threads, numKvHeads);
    return Array.from({ length: t }, (_, i) => [Math.floor((i * numKvHeads) / t), Math.floor(((i + 1) * numKvHeads) / t), 0, seqQ]);
  }
  // Many query rows (prefill): contiguous query ranges of equal work (causal rows see more keys
  // the later they are).
  const offset = seqK - seqQ;
  const work = (i: number) => (causal ? Math.max(0, Math.min(seqK, i + offset + 1)) : seqK) + 1;
  let total = 0;
  for (let i = 0; i < seqQ; i++) total += work(i);
  const ranges: AttentionRange[] = [];
  let begin = 0, acc = 0;
  for (let i = 0; i < seqQ && ranges.length < threads - 1; i++) {
    acc += work(i);
    if (acc >= (total * (ranges.length + 1)) / threads) { ranges.push([0, numKvHeads, begin, i + 1]); begin = i + 1; }
  }
  if (begin < seqQ) ranges.push([0, numKvHeads, begin, seqQ]);
  return ranges;
}

/** Output-column ranges [nBegin, nEnd) for the linear layer, multiples of 4 wide. */
export function columnSplits(outFeatures: number, threads: number): [number, number][] {
  const quads = Math.ceil(outFeatures / 4);
  const t = Math.max(1, Math.min(threads, quads));
  return Array.from({ length: t }, (_, i) => [Math.min(outFeatures, 4 * Math.floor((i * quads) / t)), Math.min(outFeatures, 4 * Math.floor(((i + 1) * quads) / t))]);
}
