import {
  CompactedError,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type LogStorage,
  type Snapshot,
  UnavailableError,
} from '../types.js';
import { entryBytes } from './entries.js';

/** A snapshot older than (or as old as) the one already held. */
export class SnapshotOutOfDateError extends Error {
  constructor(
    readonly index: number,
    readonly current: number,
  ) {
    super(`snapshot at index ${index} is not newer than the current snapshot at index ${current}`);
    this.name = 'SnapshotOutOfDateError';
  }
}

function cloneConf(c: ConfState): ConfState {
  return { voters: [...c.voters], learners: [...c.learners] };
}

/**
 * The log in memory: the snapshot, the entries after it, the hard state and the membership.
 * Tests and the simulator use it alone; the durable edge loads it from disk at start and writes
 * every Ready both to disk and here, so the core reads the log synchronously.
 *
 * `ents[0]` is a placeholder holding the snapshot's index and term, so that the term of the entry
 * just before the first one is always known (the consistency check needs it).
 */
export class MemoryStorage implements LogStorage {
  private hardState: HardState = { term: 0, vote: '', commit: 0 };
  private snap: Snapshot = {
    meta: { index: 0, term: 0, conf: { voters: [], learners: [] } },
    data: new Uint8Array(0),
  };
  private conf: ConfState = { voters: [], learners: [] };
  private ents: Entry[] = [{ index: 0, term: 0, type: EntryType.Noop, data: new Uint8Array(0) }];

  /**
   * A storage for a member of a brand-new cluster: a snapshot at index 1, term 1, holding the
   * initial membership and empty application data. Every founding member starts from the same
   * one; a node that joins later starts from `new MemoryStorage()` and receives the leader's
   * snapshot (which carries the membership) or log.
   */
  static bootstrap(conf: ConfState): MemoryStorage {
    if (conf.voters.length === 0) {
      throw new RangeError('conf.voters: a new cluster needs at least one voter');
    }
    const s = new MemoryStorage();
    s.applySnapshot({ meta: { index: 1, term: 1, conf: cloneConf(conf) }, data: new Uint8Array(0) });
    s.setHardState({ term: 1, vote: '', commit: 1 });
    return s;
  }

  initialState(): { hardState: HardState; conf: ConfState } {
    return { hardState: { ...this.hardState }, conf: cloneConf(this.conf) };
  }

  setHardState(hs: HardState): void {
    this.hardState = { ...hs };
  }

  /**
   * Records the membership as of the applied index, so that a restart with `applied` set starts
   * from the right membership. applySnapshot() and createSnapshot() set it too.
   */
  setConfState(conf: ConfState): void {
    this.conf = cloneConf(conf);
  }

  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    const offset = this.ents[0]!.index;
    if (lo > hi) throw new RangeError(`entries: lo ${lo} is above hi ${hi}`);
    if (lo <= offset) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1);
    if (maxBytes === undefined) return this.ents.slice(lo - offset, hi - offset);
    // Walk forward rather than copy the whole range: a follower far behind asks for a lot.
    let end = lo - offset;
    let size = 0;
    while (end < hi - offset) {
      size += entryBytes(this.ents[end]!);
      if (size > maxBytes && end > lo - offset) break;
      end++;
    }
    return this.ents.slice(lo - offset, end);
  }

  term(index: number): number {
    const offset = this.ents[0]!.index;
    if (index < offset) throw new CompactedError(index);
    const e = this.ents[index - offset];
    if (e === undefined) throw new UnavailableError(index);
    return e.term;
  }

  firstIndex(): number {
    return this.ents[0]!.index + 1;
  }

  lastIndex(): number {
    return this.ents[0]!.index + this.ents.length - 1;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replaces the whole log with a snapshot received from the leader. */
  applySnapshot(snap: Snapshot): void {
    const current = this.snap.meta.index;
    if (snap.meta.index <= current) {
      throw new SnapshotOutOfDateError(snap.meta.index, current);
    }
    this.snap = { meta: { ...snap.meta, conf: cloneConf(snap.meta.conf) }, data: snap.data };
    this.conf = cloneConf(snap.meta.conf);
    this.ents = [
      { index: snap.meta.index, term: snap.meta.term, type: EntryType.Noop, data: new Uint8Array(0) },
    ];
  }

  /**
   * Records the application's state at `index` (which it has applied) as the snapshot to send to
   * lagging followers. It does not drop entries: call compact() for that.
   */
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.snap.meta.index) throw new SnapshotOutOfDateError(index, this.snap.meta.index);
    if (index > this.lastIndex()) {
      throw new RangeError(`index: snapshot index ${index} is beyond the last index ${this.lastIndex()}`);
    }
    this.snap = { meta: { index, term: this.term(index), conf: cloneConf(conf) }, data };
    this.conf = cloneConf(conf);
    return this.snap;
  }

  /** Drops every entry up to and including `index`; the caller must have applied them. */
  compact(index: number): void {
    const offset = this.ents[0]!.index;
    if (index <= offset) throw new CompactedError(index);
    if (index > this.lastIndex()) {
      throw new RangeError(`index: compaction index ${index} is beyond the last index ${this.lastIndex()}`);
    }
    const i = index - offset;
    const head = this.ents[i]!;
    this.ents = [
      { index: head.index, term: head.term, type: EntryType.Noop, data: new Uint8Array(0) },
      ...this.ents.slice(i + 1),
    ];
  }

  /**
   * Appends entries, replacing any at the same indexes and after (a new leader may overwrite an
   * uncommitted tail). Entries already compacted are skipped; a gap is refused.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const lastNew = entries[0]!.index + entries.length - 1;
    if (lastNew < first) return;
    let es = entries;
    if (first > es[0]!.index) es = es.slice(first - es[0]!.index);
    const at = es[0]!.index - this.ents[0]!.index;
    if (at > this.ents.length) {
      throw new RangeError(
        `entries: a gap: appending index ${es[0]!.index} after last index ${this.lastIndex()}`,
      );
    }
    // In place: the log can be long, and every Ready appends to it.
    this.ents.length = at;
    for (const e of es) this.ents.push(e);
  }
}
