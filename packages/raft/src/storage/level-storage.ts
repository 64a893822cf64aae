import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ClassicLevel } from 'classic-level';
import type { ConfState, Entry, HardState, Snapshot } from '../types.js';
import {
  CONF_KEY,
  CorruptLogError,
  decodeEntry,
  decodeJson,
  EMPTY_CONF,
  EMPTY_HARD_STATE,
  encodeEntry,
  encodeJson,
  ENTRY_KEY_END,
  ENTRY_KEY_MIN,
  entryKey,
  HARD_STATE_KEY,
  indexOfEntryKey,
  SNAPSHOT_KEY,
  type StoredSnapshotMeta,
} from './codec.js';
import {
  type FileOps,
  readSnapshotFile,
  removeOtherSnapshots,
  snapshotFileName,
  writeFileDurably,
} from './snapshot-files.js';

/** Everything a node had made durable before it stopped, as found on open. */
export interface DurableState {
  hardState: HardState;
  conf: ConfState;
  snapshot: Snapshot | undefined;
  /** The stored log, contiguous; it may begin before the snapshot index (a retained tail). */
  entries: Entry[];
}

/** What one Ready asks to make durable; written as one synced batch. */
export interface PersistRequest {
  hardState?: HardState | undefined;
  /** Replace any stored entry at the same index and after. */
  entries: Entry[];
  /** A snapshot received from the leader: it replaces the whole log before `entries`. */
  snapshot?: Snapshot | undefined;
  /** The membership, when it changed. */
  conf?: ConfState | undefined;
  /**
   * Whether to fsync (default true). A Ready that only moves the commit index may skip it: a
   * commit index lost in a crash is learned again from the leader, as etcd's MustSync reasons.
   */
  sync?: boolean;
}

export interface LevelStorageOptions {
  /** Called after every synced batch (not the unsynced ones) with its duration in seconds and entry count. */
  onFsync?: (seconds: number, entries: number) => void;
  /** Observes snapshot file writes (tests check the fsync-rename-fsync order). */
  fileOps?: FileOps;
  /**
   * Runs just before each batch is handed to LevelDB. Tests throw from it to simulate a crash
   * before the sync (the batch is never written), or stall it to model a slow disk.
   */
  beforeWrite?: (request: PersistRequest) => void | Promise<void>;
}

/**
 * The Raft log, hard state, membership and snapshot of one node, on LevelDB under
 * `<dir>/log` with snapshot files under `<dir>/snap`. Every write is one batch with
 * `sync: true`, so it is on disk when the promise resolves: callers send the messages that
 * depend on it only after that.
 */
export class LevelStorage {
  /** Index of the first stored entry, and of the last (first - 1 when empty). */
  private first = 1;
  private last = 0;
  private snapshotFile: string | undefined;
  /** Writes run one after another, so batches computed from first/last never interleave. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly db: ClassicLevel<Buffer, Buffer>,
    private readonly snapDir: string,
    private readonly opts: LevelStorageOptions,
    /** The state found on open. */
    readonly initial: DurableState,
  ) {}

  static async open(dir: string, opts: LevelStorageOptions = {}): Promise<LevelStorage> {
    const snapDir = join(dir, 'snap');
    mkdirSync(snapDir, { recursive: true });
    const db = new ClassicLevel<Buffer, Buffer>(join(dir, 'log'), {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
    });
    await db.open();
    try {
      const { state, snapshotFile } = await load(db, snapDir);
      const storage = new LevelStorage(db, snapDir, opts, state);
      storage.snapshotFile = snapshotFile;
      storage.first = state.entries[0]?.index ?? (state.snapshot?.meta.index ?? 0) + 1;
      storage.last = storage.first - 1 + state.entries.length;
      return storage;
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  firstIndex(): number {
    return this.first;
  }

  lastIndex(): number {
    return this.last;
  }

  /** Makes one Ready durable: entries (truncating any conflicting suffix), hard state, snapshot. */
  persist(request: PersistRequest): Promise<void> {
    return this.serialize(async () => {
      // The snapshot file goes first: the metadata written below must never name a missing file.
      const stored = request.snapshot ? await this.writeSnapshotFile(request.snapshot) : undefined;
      let first = this.first;
      let last = this.last;
      const entries = request.entries;
      const from = entries[0]?.index;
      const afterSnapshot = request.snapshot ? request.snapshot.meta.index + 1 : undefined;
      if (
        from !== undefined &&
        (afterSnapshot !== undefined ? from !== afterSnapshot : from < first || from > last + 1)
      ) {
        throw new Error(
          `cannot append entries from index ${from}: the stored log holds [${first}, ${last}]` +
            (afterSnapshot !== undefined ? ` and the snapshot ends at ${afterSnapshot - 1}` : ''),
        );
      }
      const batch = this.db.batch();
      if (request.snapshot && stored) {
        batch.put(SNAPSHOT_KEY, encodeJson(stored));
        for (let i = first; i <= last; i++) batch.del(entryKey(i));
        first = request.snapshot.meta.index + 1;
        last = request.snapshot.meta.index;
        if (!request.conf) batch.put(CONF_KEY, encodeJson(request.snapshot.meta.conf));
      }
      if (entries.length > 0) {
        for (const entry of entries) batch.put(entryKey(entry.index), encodeEntry(entry));
        const newLast = entries[entries.length - 1]!.index;
        for (let i = newLast + 1; i <= last; i++) batch.del(entryKey(i));
        last = newLast;
      }
      if (request.hardState) batch.put(HARD_STATE_KEY, encodeJson(request.hardState));
      if (request.conf) batch.put(CONF_KEY, encodeJson(request.conf));
      await this.write(batch, request, entries.length, stored?.file);
      this.first = first;
      this.last = last;
    });
  }

  /**
   * Saves a snapshot the application took at `snapshot.meta.index` and compacts the log through
   * `compactThrough` (default: the snapshot index; lower keeps a tail for slow followers). The
   * file is durable before the metadata points at it.
   */
  saveSnapshot(snapshot: Snapshot, compactThrough = snapshot.meta.index): Promise<void> {
    return this.serialize(async () => {
      const index = snapshot.meta.index;
      if (index < this.first - 1 || index > this.last) {
        throw new Error(
          `cannot save a snapshot at index ${index}: the stored log holds [${this.first}, ${this.last}]`,
        );
      }
      if (compactThrough > index) {
        throw new Error(`cannot compact through ${compactThrough}: beyond the snapshot index ${index}`);
      }
      const stored = await this.writeSnapshotFile(snapshot);
      const batch = this.db.batch();
      batch.put(SNAPSHOT_KEY, encodeJson(stored));
      for (let i = this.first; i <= compactThrough; i++) batch.del(entryKey(i));
      await this.write(batch, { entries: [] }, 0, stored.file);
      this.first = Math.max(this.first, compactThrough + 1);
    });
  }

  async close(): Promise<void> {
    await this.queue.catch(() => undefined);
    await this.db.close();
  }

  private async writeSnapshotFile(snapshot: Snapshot): Promise<StoredSnapshotMeta> {
    const file = snapshotFileName(snapshot.meta.term, snapshot.meta.index);
    const crc = await writeFileDurably(this.snapDir, file, snapshot.data, this.opts.fileOps);
    return { ...snapshot.meta, file, crc, bytes: snapshot.data.byteLength };
  }

  private async write(
    batch: ReturnType<ClassicLevel<Buffer, Buffer>['batch']>,
    request: PersistRequest,
    entries: number,
    newSnapshotFile?: string,
  ): Promise<void> {
    try {
      await this.opts.beforeWrite?.(request);
    } catch (err) {
      await batch.close();
      throw err;
    }
    const sync = request.sync ?? true;
    const started = performance.now();
    await batch.write({ sync });
    if (sync) this.opts.onFsync?.((performance.now() - started) / 1000, entries);
    // Older snapshot files go only once the metadata no longer names them.
    if (newSnapshotFile) {
      this.snapshotFile = newSnapshotFile;
      removeOtherSnapshots(this.snapDir, newSnapshotFile);
    }
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

async function load(
  db: ClassicLevel<Buffer, Buffer>,
  snapDir: string,
): Promise<{ state: DurableState; snapshotFile: string | undefined }> {
  const hsValue = await db.get(HARD_STATE_KEY);
  const hardState = hsValue ? decodeJson<HardState>('hard state', hsValue) : { ...EMPTY_HARD_STATE };
  const snapValue = await db.get(SNAPSHOT_KEY);
  let snapshot: Snapshot | undefined;
  let snapshotFile: string | undefined;
  if (snapValue) {
    const meta = decodeJson<StoredSnapshotMeta>('snapshot metadata', snapValue);
    const data = readSnapshotFile(snapDir, meta.file, meta.crc);
    snapshot = { meta: { index: meta.index, term: meta.term, conf: meta.conf }, data };
    snapshotFile = meta.file;
  }
  const confValue = await db.get(CONF_KEY);
  const conf = confValue
    ? decodeJson<ConfState>('membership', confValue)
    : (snapshot?.meta.conf ?? { ...EMPTY_CONF });

  const entries: Entry[] = [];
  const snapshotIndex = snapshot?.meta.index ?? 0;
  let expected: number | undefined;
  for await (const [key, value] of db.iterator({ gte: ENTRY_KEY_MIN, lt: ENTRY_KEY_END })) {
    const index = indexOfEntryKey(key);
    if (expected === undefined) {
      // The log may keep a tail before the snapshot, but must reach the entry just after it.
      if (index > snapshotIndex + 1) {
        throw new CorruptLogError(
          snapshotIndex + 1,
          `it is missing: the snapshot ends at index ${snapshotIndex} and the log starts at ${index}`,
        );
      }
      expected = index;
    }
    if (index !== expected) {
      throw new CorruptLogError(
        expected,
        `it is missing: the log jumps from index ${expected - 1} to ${index}`,
      );
    }
    entries.push(decodeEntry(index, value));
    expected++;
  }
  expected ??= snapshotIndex + 1;
  const lastIndex = Math.max(expected - 1, snapshotIndex);
  if (hardState.commit > lastIndex) {
    throw new CorruptLogError(
      lastIndex + 1,
      `the hard state says index ${hardState.commit} is committed but the log ends at ${lastIndex}`,
    );
  }
  return { state: { hardState, conf, snapshot, entries }, snapshotFile };
}
