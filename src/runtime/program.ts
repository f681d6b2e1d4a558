import { BARRIER, encodeList, listWords, MAX_CALLS_PER_THREAD, MAX_CLAIMS, type Call, type Claim, type Job } from "../threads/pool.ts";

/** A hand-off of a program, encoded for the pool: each thread's list, and whether only the caller has calls (no workers woken). */
export interface EncodedRound { lists: Float64Array[]; callerOnly: boolean }

/**
 * The kernel calls of a whole step (a layer, a decode step) for every thread, in phases: within
 * a phase each thread runs its own calls in order; every call of a phase is done before any call
 * of the next begins (a barrier). rt.runProgram runs it as one hand-off to the worker pool (a few,
 * when the lists are longer than a hand-off holds), or on one thread in order. Each thread has
 * its own kernel scratch per purpose, reused by its calls in turn, so a long program takes no
 * more scratch than one call of each kind. Jobs may share a range (a Claim) that their threads
 * take chunk by chunk as they run, so that threads reach each barrier together.
 *
 * A program is encoded for the pool once; run again (a decode step of the same shape), it needs
 * only the arguments that change (variable, set) rewritten, so a step's JavaScript is a few stores.
 * Its memory (alloc: kernel scratch, call structs, block tables) lives as long as it does: the
 * runtime's scratch for a program run once (rt.runProgram), its own for one kept (rt.keepProgram).
 */
export class Program {
  /** lists[t]: thread t's calls and barriers. */
  readonly lists: Call[][];
  private phaseHasCalls = false;
  private readonly scratch = new Map<number, { ptr: number; bytes: number }>();
  /** The counter of each claim the program's jobs hold. */
  readonly claims = new Map<Claim, number>();
  private readonly variables: { job: Job; arg: number }[] = [];
  private encoding?: { rounds: EncodedRound[]; words: Float64Array; variableWords: Int32Array };

  /** @internal: made by rt.runProgram and rt.keepProgram. */
  constructor(readonly threads: number, private readonly allocate: (bytes: number) => number, private readonly release: () => void = () => undefined) {
    this.lists = Array.from({ length: threads }, () => []);
  }

  /** Wasm memory for the program's life (16-byte aligned). */
  alloc(bytes: number): number {
    return this.allocate(bytes);
  }

  /** Frees the memory of a kept program (nothing for one run once: the runtime's scratch is reset after it). */
  dispose(): void {
    this.release();
  }

  /**
   * Adds a call to thread t's part of the current phase. A job with a claim gets the claim's
   * counter; past MAX_CLAIMS in one program it gets instead part t of the claim's range, cut
   * statically (same outputs, no balancing).
   */
  add(thread: number, job: Job): void {
    if (this.encoding) throw new Error("Program: calls are added before its first run");
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
    const ptr = this.alloc(bytes);
    this.scratch.set(key, { ptr, bytes });
    return ptr;
  }

  /**
   * Marks argument `arg` of a job of this program as one that changes between runs (a kept
   * program: a decode step's positions and lengths); returns its handle for set().
   */
  variable(job: Job, arg: number): number {
    if (this.encoding) throw new Error("Program: variables are marked before its first run");
    if (!Number.isInteger(arg) || arg < 0 || arg >= job.args.length) throw new RangeError(`Program: ${job.kernel} has no argument ${arg}`);
    this.variables.push({ job, arg });
    return this.variables.length - 1;
  }

  /** Sets a variable argument (variable()) for the next run: one store into the encoded program. */
  set(variable: number, value: number): void {
    const e = this.encoding ?? this.encode();
    e.words[e.variableWords[variable]!] = value;
  }

  /** The program as the pool runs it: its rounds encoded, once (later runs copy them into the slots). */
  encoded(): EncodedRound[] {
    return (this.encoding ?? this.encode()).rounds;
  }

  private encode(): NonNullable<Program["encoding"]> {
    // Every thread's list of every round in one buffer, so that a variable is one index into it;
    // the jobs' places kept only for the variables (a program run once has none).
    const callRounds = this.rounds();
    const words = new Float64Array(callRounds.reduce((n, round) => round.reduce((m, calls) => m + listWords(calls.length), n), 0));
    const at = this.variables.length > 0 ? new Map<Job, number[]>() : undefined;
    const place = at && ((job: Job, word: number) => {
      const places = at.get(job);
      if (places) places.push(word); else at.set(job, [word]);
    });
    let offset = 0;
    const rounds = callRounds.map((round) => ({
      lists: round.map((calls) => {
        const list = encodeList(calls, this.claims, words, offset, place);
        offset += list.length;
        return list;
      }),
      // Only thread 0 has kernel calls (the others hold barriers at most): no workers woken.
      callerOnly: round.every((list, t) => t === 0 || list.every((c) => c === BARRIER)),
    }));
    const variableWords = Int32Array.from(this.variables, ({ job, arg }) => {
      const places = at!.get(job);
      if (!places || places.length !== 1) throw new Error(`Program: a variable's ${job.kernel} call must be in the program once (found ${places?.length ?? 0})`);
      return places[0]! + arg;
    });
    return (this.encoding = { rounds, words, variableWords });
  }

  /**
   * The lists cut into hand-offs of at most MAX_CALLS_PER_THREAD calls per thread, at barriers
   * (a hand-off's end joins all threads, so the barrier there is dropped). A phase longer than
   * that alone is cut between its calls, which are independent.
   */
  private rounds(): Call[][][] {
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
