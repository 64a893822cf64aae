import type { MemoryStorage } from '../core/memory-storage.js';
import { CompactedError, type Entry, type NodeId } from '../types.js';

/** A broken safety property, with when and where it was seen. */
export interface Violation {
  property:
    | 'election-safety'
    | 'log-matching'
    | 'leader-completeness'
    | 'state-machine-safety'
    | 'apply-order'
    | 'linearizability'
    | 'liveness'
    | 'node-error';
  time: number;
  detail: string;
}

interface Committed {
  index: number;
  term: number;
  key: string;
}

/** An entry a leader declared committed, and the leader's term when it did. */
interface CommittedInTerm {
  index: number;
  term: number;
  commitTerm: number;
}

/** What makes two entries the same entry: term, type and bytes. */
export function entryKey(e: Entry): string {
  return `${e.term}/${e.type}/${Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength).toString('base64')}`;
}

/**
 * Raft's safety properties (§5.2–5.4 of the paper), checked as the simulation runs:
 * - election safety: at most one leader per term;
 * - log matching: two durable logs with an entry of the same index and term hold the same entry
 *   there and agree on the term before it (so, by induction, on the whole prefix);
 * - leader completeness: a leader of term T holds every entry committed in a term below T;
 * - state-machine safety: no two nodes apply different entries at the same index.
 */
export class InvariantChecker {
  readonly violations: Violation[] = [];
  private readonly leaderOfTerm = new Map<number, NodeId>();
  /** index:term → the entry's key and the term of the entry before it, from durable logs. */
  private readonly logs = new Map<string, { key: string; prevTerm: number; node: NodeId }>();
  /** Entries known committed (applied somewhere), by index. */
  private readonly committedAt = new Map<number, Committed>();
  /** Entries leaders declared committed, in index order, with the term that committed them. */
  private readonly leaderCommits: CommittedInTerm[] = [];
  /** How far each (node, term) leader has been checked against `committed`. */
  private readonly leaderChecked = new Map<string, number>();
  private readonly lastApplied = new Map<NodeId, number>();
  now = 0;

  private fail(property: Violation['property'], detail: string): void {
    this.violations.push({ property, time: this.now, detail });
  }

  /** A node says it is the leader of `term`. */
  leader(node: NodeId, term: number): void {
    const other = this.leaderOfTerm.get(term);
    if (other === undefined) this.leaderOfTerm.set(term, node);
    else if (other !== node)
      this.fail('election-safety', `term ${term} has two leaders: ${other} and ${node}`);
  }

  /** Entries became durable on `node`; `log` is its durable log after the write. */
  durableAppend(node: NodeId, entries: readonly Entry[], log: MemoryStorage): void {
    for (const e of entries) {
      if (e.index < log.firstIndex()) continue;
      let prevTerm: number;
      try {
        prevTerm = log.term(e.index - 1);
      } catch (err) {
        if (err instanceof CompactedError) continue;
        throw err;
      }
      const id = `${e.index}:${e.term}`;
      const key = entryKey(e);
      const seen = this.logs.get(id);
      if (seen === undefined) {
        this.logs.set(id, { key, prevTerm, node });
      } else if (seen.key !== key || seen.prevTerm !== prevTerm) {
        const what =
          seen.key !== key
            ? 'different entries'
            : `different previous terms (${seen.prevTerm} vs ${prevTerm})`;
        this.fail('log-matching', `index ${e.index} term ${e.term}: ${seen.node} and ${node} hold ${what}`);
      }
    }
  }

  /** `node` applied entry `e` to its state machine. */
  applied(node: NodeId, e: Entry): void {
    const last = this.lastApplied.get(node);
    if (last !== undefined && e.index !== last + 1) {
      this.fail('apply-order', `${node} applied index ${e.index} after ${last}`);
    }
    this.lastApplied.set(node, e.index);
    const key = entryKey(e);
    const seen = this.committedAt.get(e.index);
    if (seen === undefined) {
      this.committedAt.set(e.index, { index: e.index, term: e.term, key });
    } else if (seen.key !== key) {
      this.fail(
        'state-machine-safety',
        `${node} applied ${describe(e)} at index ${e.index}, another node applied term ${seen.term}`,
      );
    }
  }

  /** `node` restored a snapshot, or restarted from one: its next applied index is `index + 1`. */
  restored(node: NodeId, index: number): void {
    this.lastApplied.set(node, index);
  }

  /** `node` restarted with nothing applied yet; it will apply from after its snapshot. */
  forgetApplied(node: NodeId): void {
    this.lastApplied.delete(node);
  }

  /**
   * The leader `node` of `term` persisted commit index `commit`: the entries up to it are
   * committed in `term` (unless an earlier term committed them already).
   */
  leaderCommitted(node: NodeId, term: number, commit: number, log: MemoryStorage): void {
    const upTo = this.leaderCommits.length > 0 ? this.leaderCommits[this.leaderCommits.length - 1]!.index : 0;
    for (let i = Math.max(upTo + 1, log.firstIndex()); i <= commit; i++) {
      let t: number;
      try {
        t = log.term(i);
      } catch {
        this.fail(
          'leader-completeness',
          `leader ${node} of term ${term} committed index ${i} it does not hold`,
        );
        return;
      }
      this.leaderCommits.push({ index: i, term: t, commitTerm: term });
    }
  }

  /**
   * Checks that the current leader `node` of `term` holds every entry committed in an earlier
   * term (§5.4.1). An entry of an old term committed by a later leader binds only later terms.
   */
  leaderHolds(node: NodeId, term: number, log: MemoryStorage): void {
    const k = `${node}@${term}`;
    let i = this.leaderChecked.get(k) ?? 0;
    for (; i < this.leaderCommits.length; i++) {
      const c = this.leaderCommits[i]!;
      if (c.commitTerm >= term) continue;
      if (c.index < log.firstIndex()) continue; // covered by its snapshot
      let held: number | undefined;
      try {
        held = c.index <= log.lastIndex() ? log.term(c.index) : undefined;
      } catch {
        held = undefined;
      }
      if (held !== c.term) {
        this.fail(
          'leader-completeness',
          `leader ${node} of term ${term} lacks index ${c.index} term ${c.term}, committed in term ${c.commitTerm} (holds ${held ?? 'nothing'})`,
        );
      }
    }
    this.leaderChecked.set(k, i);
  }

  get committedCount(): number {
    return this.committedAt.size;
  }

  /** Every proposal the properties must not lose, for end-of-run checks. */
  committedEntry(index: number): Committed | undefined {
    return this.committedAt.get(index);
  }
}

function describe(e: Entry): string {
  return `entry term ${e.term} type ${e.type} (${e.data.length} bytes)`;
}
