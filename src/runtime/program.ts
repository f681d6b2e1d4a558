import { BARRIER, MAX_CALLS_PER_THREAD, MAX_CLAIMS, type Call, type Claim, type Job } from "../threads/pool.ts";

/**
 * The kernel calls of a whole step (a layer, a decode step) for every thread, in phases: within
 * a phase each thread runs its own calls in order; every call of a phase is done before any call
 * of the next begins (a barrier). rt.runProgram runs it as one hand-off to the worker pool (a few,
 * when the lists are longer than a hand-off holds), or on one thread in order. Each thread has
 * its own kernel scratch per purpose, reused by its calls in turn, so a long program takes no
 * more scratch than one call of each kind. Jobs may share a range (a Claim) that their threads
 * take chunk by chunk as they run, so that threads reach each barrier together.
 */
export class Program {
  /** lists[t]: thread t's calls and barriers. */
  readonly lists: Call[][];
  private phaseHasCalls = false;
  private readonly scratch = new Map<number, { ptr: number; bytes: number }>();
  /** The counter of each claim the program's jobs hold. */
  readonly claims = new Map<Claim, number>();

  /** @internal: made by rt.runProgram. */
  constructor(readonly threads: number, private readonly allocScratch: (bytes: number) => number) {
    this.lists = Array.from({ length: threads }, () => []);
  }

  /**
   * Adds a call to thread t's part of the current phase. A job with a claim gets the claim's
   * counter; past MAX_CLAIMS in one program it gets instead part t of the claim's range, cut
   * statically (same outputs, no balancing).
   */
  add(thread: number, job: Job): void {
    const claim = job.claim;
    if (claim && !this.claims.has(claim)) {
      if (this.claims.size < MAX_CLAIMS) this.claims.set(claim, this.claims.size);
      else job = staticPart(job, claim, thread);
    }
    this.lists[thread % this.threads]!.push(job);
    this.phaseHasCalls = true;
  }

  /** Adds calls that are one per thread (job i on thread i), e.g. the column ranges of a linear layer. */
  addPerThread(jobs: readonly Job[]): void {
    jobs.forEach((j, t) => this.add(t, j));
  }

  /** Ends the current phase (nothing when it is empty). */
  barrier(): void {
    if (!this.phaseHasCalls) return;
    for (const l of this.lists) l.push(BARRIER);
    this.phaseHasCalls = false;
  }

  /**
   * Thread t's scratch for `purpose` of at least `bytes` (valid until the program's call ends).
   * Calls of one thread run one after another, so they share it.
   */
  threadScratch(thread: number, purpose: "linear" | "attention", bytes: number): number {
    const key = (thread % this.threads) * 2 + (purpose === "linear" ? 0 : 1);
    const have = this.scratch.get(key);
    if (have && have.bytes >= bytes) return have.ptr;
    const ptr = this.allocScratch(bytes);
    this.scratch.set(key, { ptr, bytes });
    return ptr;
  }

  /**
   * The lists cut into hand-offs of at most MAX_CALLS_PER_THREAD calls per thread, at barriers
   * (a hand-off's end joins all threads, so the barrier there is dropped). A phase longer than
   * that alone is cut between its calls, which are independent.
   */
  rounds(): Call[][][] {
    if (this.lists.every((l) => l.length <= MAX_CALLS_PER_THREAD)) return [this.lists];
    const phases: Job[][][] = []; // [phase][thread][call]
    const at = this.lists.map(() => 0);
    for (;;) {
      const phase = this.lists.map((l, t) => {
        const calls: Job[] = [];
        for (; at[t]! < l.length && l[at[t]!] !== BARRIER; at[t]!++) calls.push(l[at[t]!] as Job);
        return calls;
      });
      if (phase.some((c) => c.length > 0)) phases.push(phase);
      if (at.every((i, t) => i >= this.lists[t]!.length)) break;
      at.forEach((_, t) => { at[t]!++; }); // past the barrier
    }
    const rounds: Call[][][] = [];
    let round: Call[][] | undefined;
    for (const phase of phases) {
      const longest = Math.max(...phase.map((c) => c.length));
      if (longest > MAX_CALLS_PER_THREAD) {
        for (let i = 0; i < longest; i += MAX_CALLS_PER_THREAD) rounds.push(phase.map((c) => c.slice(i, i + MAX_CALLS_PER_THREAD)));
        round = undefined;
        continue;
      }
      if (round && round.every((l, t) => l.length + 1 + phase[t]!.length <= MAX_CALLS_PER_THREAD)) {
        round.forEach((l, t) => l.push(BARRIER, ...phase[t]!));
      } else {
        round = phase.map((c) => [...c]);
        rounds.push(round);
      }
    }
    return rounds;
  }
}

/** Part t of parts of a claimed job's range, in whole chunks. */
function staticPart(job: Job, claim: Claim, t: number): Job {
  const chunks = Math.ceil((claim.to - claim.from) / claim.chunk), parts = claim.parts;
  const at = (i: number) => Math.min(claim.to, claim.from + claim.chunk * Math.floor((i * chunks) / parts));
  const args = job.args.slice();
  args[claim.arg] = at(t); args[claim.arg + 1] = at(t + 1);
  return { kernel: job.kernel, args };
}
