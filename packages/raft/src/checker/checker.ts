import { Bitset } from './bitset.js';
import type { Operation } from './history.js';
import type { Model } from './model.js';

/**
 * A Porcupine-style linearizability checker (Wing & Gong's search with Lowe's memoization):
 * the history is split into independent partitions (one per key), and each partition is
 * searched depth-first for an order of its operations that respects real time and the model.
 * A (linearized set, model state) pair already explored is never explored again. The search
 * gives up with `unknown` after a step budget or a wall-clock timeout instead of running forever.
 */

export type Verdict = 'ok' | 'illegal' | 'unknown';

export interface CheckOptions {
  /** Search steps allowed over the whole history before giving up with `unknown`. */
  maxSteps?: number;
  /** Wall-clock milliseconds allowed before giving up with `unknown`. */
  timeoutMs?: number;
  /** The clock for `timeoutMs`, injectable for tests. */
  now?: () => number;
}

export interface PartitionResult {
  partition: string;
  operations: number;
  verdict: Verdict;
  steps: number;
  /** For an illegal partition: the longest order found that the model accepts, described. */
  longestLinearization?: string[];
  /** For an illegal partition: every operation, described with its call and return times. */
  operationsDescribed?: string[];
}

export interface CheckResult {
  verdict: Verdict;
  steps: number;
  partitions: PartitionResult[];
}

const DEFAULT_MAX_STEPS = 5_000_000;
const NIL = -1;

export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  options: CheckOptions = {},
): CheckResult {
  const maxSteps = options.maxSteps ?? DEFAULT_MAX_STEPS;
  if (!(maxSteps > 0)) throw new Error(`maxSteps: must be positive, got ${maxSteps}`);
  const now = options.now ?? (() => performance.now());
  const deadline = options.timeoutMs === undefined ? Infinity : now() + options.timeoutMs;
  for (const [i, op] of history.entries()) {
    if (!(op.return >= op.call))
      throw new Error(`history[${i}].return: ${op.return} is before call ${op.call}`);
  }

  const partitions = new Map<string, Operation<I, O>[]>();
  for (const op of history) {
    const key = model.partition ? model.partition(op.input) : '';
    let ops = partitions.get(key);
    if (!ops) partitions.set(key, (ops = []));
    ops.push(op);
  }

  const results: PartitionResult[] = [];
  let steps = 0;
  let verdict: Verdict = 'ok';
  for (const [key, ops] of [...partitions.entries()].sort((a, b) => a[1].length - b[1].length)) {
    const budget = { steps: maxSteps - steps, deadline, now };
    const r = checkPartition(model, key, ops, budget);
    steps += r.steps;
    results.push(r);
    if (r.verdict === 'illegal') return { verdict: 'illegal', steps, partitions: results };
    if (r.verdict === 'unknown') verdict = 'unknown';
  }
  return { verdict, steps, partitions: results };
}

interface Budget {
  steps: number;
  deadline: number;
  now: () => number;
}

/** How often the wall clock is read, in steps: reading it every step would dominate the search. */
const CLOCK_EVERY = 4096;

function checkPartition<S, I, O>(
  model: Model<S, I, O>,
  key: string,
  ops: Operation<I, O>[],
  budget: Budget,
): PartitionResult {
  const n = ops.length;
  // Nodes 0..n-1 are calls, n..2n-1 returns; a doubly-linked list in time order, with a head.
  const events: { node: number; time: number; isCall: boolean }[] = [];
  for (let i = 0; i < n; i++) {
    events.push({ node: i, time: ops[i]!.call, isCall: true });
    events.push({ node: n + i, time: ops[i]!.return, isCall: false });
  }
  // At equal times calls come first: operations that touch at an instant count as concurrent.
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.node - b.node : a.isCall ? -1 : 1));
  const HEAD = 2 * n;
  const next = new Int32Array(2 * n + 1).fill(NIL);
  const prev = new Int32Array(2 * n + 1).fill(NIL);
  let last = HEAD;
  for (const e of events) {
    next[last] = e.node;
    prev[e.node] = last;
    last = e.node;
  }

  const lift = (call: number): void => {
    next[prev[call]!] = next[call]!;
    if (next[call] !== NIL) prev[next[call]!] = prev[call]!;
    const ret = call + n;
    next[prev[ret]!] = next[ret]!;
    if (next[ret] !== NIL) prev[next[ret]!] = prev[ret]!;
  };
  const unlift = (call: number): void => {
    const ret = call + n;
    next[prev[ret]!] = ret;
    if (next[ret] !== NIL) prev[next[ret]!] = ret;
    next[prev[call]!] = call;
    if (next[call] !== NIL) prev[next[call]!] = call;
  };

  const linearized = new Bitset(n);
  const seen = new Set<string>();
  const stack: { call: number; state: S }[] = [];
  let longest: number[] = [];
  let state = model.init();
  let entry = next[HEAD]!;
  let steps = 0;
  const result = (verdict: Verdict): PartitionResult => {
    const r: PartitionResult = { partition: key, operations: n, verdict, steps };
    if (verdict === 'illegal') {
      const describe = (i: number): string => {
        const op = ops[i]!;
        const text = model.describe ? model.describe(op.input, op.output) : JSON.stringify(op.input);
        return `client ${op.client} [${op.call}, ${op.return}] ${text}`;
      };
      r.longestLinearization = longest.map(describe);
      r.operationsDescribed = ops.map((_, i) => describe(i));
    }
    return r;
  };

  while (next[HEAD] !== NIL) {
    steps++;
    if (steps > budget.steps) return result('unknown');
    if (steps % CLOCK_EVERY === 0 && budget.now() > budget.deadline) return result('unknown');
    if (entry < n) {
      const op = ops[entry]!;
      const after = model.step(state, op.input, op.output);
      let advanced = false;
      if (after !== undefined) {
        linearized.set(entry);
        const memo = linearized.key() + '|' + model.stateKey(after);
        if (!seen.has(memo)) {
          seen.add(memo);
          stack.push({ call: entry, state });
          state = after;
          lift(entry);
          entry = next[HEAD]!;
          advanced = true;
        } else {
          linearized.clear(entry);
        }
      }
      if (!advanced) entry = next[entry]!;
    } else {
      // A return reached before its call was linearized: undo the most recent choice. The
      // deepest order found is copied only here, when the search turns back from it.
      if (stack.length > longest.length) longest = stack.map((s) => s.call);
      const top = stack.pop();
      if (!top) return result('illegal');
      state = top.state;
      linearized.clear(top.call);
      unlift(top.call);
      entry = next[top.call]!;
    }
  }
  return result('ok');
}
