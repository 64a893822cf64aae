import { MemoryStorage } from '../core/memory-storage.js';
import type { ConfState, Entry, HardState, Snapshot } from '../types.js';

/** One write to a node's disk. */
export type DiskOp =
  | { kind: 'hardState'; hardState: HardState }
  | { kind: 'append'; entries: readonly Entry[] }
  | { kind: 'snapshot'; snapshot: Snapshot }
  | { kind: 'conf'; conf: ConfState }
  | { kind: 'createSnapshot'; index: number; conf: ConfState; data: Uint8Array }
  | { kind: 'compact'; index: number };

/**
 * A node's disk: a write lands at once in `current` (what the node reads back, like the OS page
 * cache) and in `durable` only when synced. A crash throws away everything not yet synced, so a
 * harness that sends before it syncs loses what it promised.
 */
export class SimDisk {
  private synced: MemoryStorage;
  private live: MemoryStorage;
  private unsynced: DiskOp[] = [];
  /** Called with every batch as it becomes durable: the simulator checks log matching there. */
  onSync?: (ops: readonly DiskOp[], durable: MemoryStorage) => void;

  /** A founding member's disk (bootstrapped with `conf`), or a joining node's empty disk. */
  constructor(conf?: ConfState) {
    this.synced = conf ? MemoryStorage.bootstrap(conf) : new MemoryStorage();
    this.live = conf ? MemoryStorage.bootstrap(conf) : new MemoryStorage();
  }

  /** What the node reads, including unsynced writes. */
  get current(): MemoryStorage {
    return this.live;
  }

  /** What survives a crash. */
  get durable(): MemoryStorage {
    return this.synced;
  }

  get hasUnsynced(): boolean {
    return this.unsynced.length > 0;
  }

  write(ops: readonly DiskOp[], sync: boolean): void {
    for (const op of ops) applyOp(this.live, op);
    this.unsynced.push(...ops);
    if (sync) this.sync();
  }

  sync(): void {
    if (this.unsynced.length === 0) return;
    const ops = this.unsynced;
    this.unsynced = [];
    for (const op of ops) applyOp(this.synced, op);
    this.onSync?.(ops, this.synced);
  }

  /** The power fails: unsynced writes are gone, and the page cache is rebuilt from the platter. */
  crash(): void {
    this.unsynced = [];
    this.live = cloneStorage(this.synced);
  }
}

function applyOp(s: MemoryStorage, op: DiskOp): void {
  switch (op.kind) {
    case 'hardState':
      return s.setHardState(op.hardState);
    case 'append':
      return s.append(op.entries);
    case 'snapshot':
      return s.applySnapshot(op.snapshot);
    case 'conf':
      return s.setConfState(op.conf);
    case 'createSnapshot':
      s.createSnapshot(op.index, op.conf, op.data);
      return;
    case 'compact':
      return s.compact(op.index);
  }
}

/**
 * A copy through the public interface. Entries between the first index and a snapshot taken
 * without compaction are kept, so the copy reads exactly like the original.
 */
export function cloneStorage(s: MemoryStorage): MemoryStorage {
  const c = new MemoryStorage();
  const first = s.firstIndex();
  const snap = s.snapshot();
  const { hardState, conf } = s.initialState();
  // Rebuild the log base at first-1 (its term is known), then restore the newer snapshot record.
  const baseIndex = first - 1;
  if (baseIndex > 0 || snap.meta.index > 0) {
    c.applySnapshot({
      meta: { index: baseIndex, term: s.term(baseIndex), conf: snap.meta.conf },
      data: snap.data,
    });
  }
  c.append(s.entries(first, s.lastIndex() + 1));
  if (snap.meta.index > baseIndex) c.createSnapshot(snap.meta.index, snap.meta.conf, snap.data);
  c.setConfState(conf);
  c.setHardState(hardState);
  return c;
}
