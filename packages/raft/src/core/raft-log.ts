import { CompactedError, type Entry, type LogStorage, type Snapshot, UnavailableError } from '../types.js';
import { limitSize } from './entries.js';
import { Unstable } from './unstable.js';

/**
 * The log as the leader and followers reason about it: stable entries (in storage) followed by
 * unstable ones (waiting for the next Ready), plus the commit and apply cursors.
 * Invariant: applied <= committed <= lastIndex().
 */
export class RaftLog {
  readonly unstable: Unstable;
  committed: number;
  applied: number;

  constructor(readonly storage: LogStorage) {
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    this.committed = first - 1;
    this.applied = first - 1;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  /** The term at `index`; throws CompactedError below the snapshot, UnavailableError past the end. */
  term(index: number): number {
    const dummy = this.firstIndex() - 1;
    if (index < dummy) throw new CompactedError(index);
    if (index > this.lastIndex()) throw new UnavailableError(index);
    const t = this.unstable.maybeTerm(index);
    if (t !== undefined) return t;
    return this.storage.term(index);
  }

  /** The term at `index`, or undefined when it is compacted or not there. */
  termOrUndefined(index: number): number | undefined {
    // Checked without throwing: this is on the hot path (conflict search, commit, matchTerm).
    if (index < this.firstIndex() - 1 || index > this.lastIndex()) return undefined;
    const t = this.unstable.maybeTerm(index);
    if (t !== undefined) return t;
    try {
      return this.storage.term(index);
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError) return undefined;
      throw err;
    }
  }

  lastTerm(): number {
    return this.term(this.lastIndex());
  }

  matchTerm(index: number, term: number): boolean {
    return this.termOrUndefined(index) === term;
  }

  /**
   * The follower's side of AppendEntries: if our entry at `index` has `logTerm`, append `ents`
   * (dropping a conflicting tail) and advance the commit index. Returns the index of the last new
   * entry, or undefined when the consistency check fails.
   */
  maybeAppend(index: number, logTerm: number, committed: number, ents: readonly Entry[]): number | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    const conflict = this.findConflict(ents);
    if (conflict !== 0) {
      if (conflict <= this.committed) {
        throw new Error(`entry ${conflict} conflicts with a committed entry (committed ${this.committed})`);
      }
      this.append(ents.slice(conflict - (index + 1)));
    }
    this.commitTo(Math.min(committed, lastNew));
    return lastNew;
  }

  append(ents: readonly Entry[]): number {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0]!.index - 1;
    if (after < this.committed) {
      throw new Error(
        `appending after index ${after} would overwrite committed entries (committed ${this.committed})`,
      );
    }
    this.unstable.truncateAndAppend(ents);
    return this.lastIndex();
  }

  /** The index of the first entry whose term differs from ours (or that we lack); 0 if none. */
  findConflict(ents: readonly Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * The largest index <= `index` whose term is <= `term`, with that term. Both sides of fast
   * backtracking use it to skip a whole term of mismatching entries in one round trip.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    for (let i = index; ; i--) {
      const t = this.termOrUndefined(i);
      if (t === undefined) return { index: i, term: 0 };
      if (t <= term) return { index: i, term: t };
    }
  }

  /** Entries from `lo` to the end, at most `maxBytes` (but at least one). */
  entries(lo: number, maxBytes?: number): Entry[] {
    if (lo > this.lastIndex()) return [];
    return this.slice(lo, this.lastIndex() + 1, maxBytes);
  }

  /** Entries [lo, hi) across storage and unstable. Throws CompactedError below firstIndex(). */
  slice(lo: number, hi: number, maxBytes?: number): Entry[] {
    if (lo > hi) throw new RangeError(`slice: lo ${lo} is above hi ${hi}`);
    if (lo < this.firstIndex()) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1);
    if (lo === hi) return [];
    const off = this.unstable.offset;
    let ents: Entry[] = [];
    if (lo < off) {
      const upper = Math.min(hi, off);
      const stored = this.storage.entries(lo, upper, maxBytes);
      // Storage stopped early because of the size limit: that is the whole answer.
      if (stored.length < upper - lo) return stored;
      ents = stored;
    }
    if (hi > off) {
      ents = ents.concat(this.unstable.slice(Math.max(lo, off), hi));
    }
    return limitSize(ents, maxBytes);
  }

  /** Committed entries not yet handed to the application. */
  nextCommittedEntries(maxBytes?: number): Entry[] {
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (lo > this.committed) return [];
    return this.slice(lo, this.committed + 1, maxBytes);
  }

  hasNextCommittedEntries(): boolean {
    return Math.max(this.applied + 1, this.firstIndex()) <= this.committed;
  }

  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    if (index > this.lastIndex()) {
      throw new Error(
        `commit index ${index} is beyond the last index ${this.lastIndex()}: the log is corrupt or truncated`,
      );
    }
    this.committed = index;
  }

  appliedTo(index: number): void {
    if (index === 0) return;
    if (index > this.committed || index < this.applied) {
      throw new RangeError(
        `applied index ${index} is outside [applied ${this.applied}, committed ${this.committed}]`,
      );
    }
    this.applied = index;
  }

  /**
   * The last index on stable storage as far as the core knows (advance() moves entries there):
   * on a leader, whose log only grows, its entries up to here are on disk. (On a follower with a
   * snapshot or a truncation pending, storage may still hold what they replace.)
   */
  stableLastIndex(): number {
    return this.unstable.offset - 1;
  }

  stableTo(index: number, term: number): void {
    this.unstable.stableTo(index, term);
  }

  stableSnapTo(index: number): void {
    this.unstable.stableSnapTo(index);
  }

  /** §5.4.1: a log with (lastIndex, lastTerm) is at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ours = this.lastTerm();
    return lastTerm > ours || (lastTerm === ours && lastIndex >= this.lastIndex());
  }

  /** Commits `index` only if it holds an entry of `term` (the leader's): the Figure 8 rule. */
  maybeCommit(index: number, term: number): boolean {
    if (index > this.committed && this.termOrUndefined(index) === term) {
      this.commitTo(index);
      return true;
    }
    return false;
  }

  restore(snap: Snapshot): void {
    this.committed = snap.meta.index;
    this.unstable.restore(snap);
  }

  unstableEntries(): Entry[] {
    return this.unstable.entries;
  }
}
