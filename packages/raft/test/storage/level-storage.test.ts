import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { entryKey, CorruptLogError } from '../../src/storage/codec.js';
import { LevelStorage, type PersistRequest } from '../../src/storage/level-storage.js';
import type { FileStep } from '../../src/storage/snapshot-files.js';
import { type Entry, EntryType, type Snapshot } from '../../src/types.js';

const entry = (index: number, term: number, text = `cmd-${index}`): Entry => ({
  index,
  term,
  type: EntryType.Normal,
  data: new TextEncoder().encode(text),
});

const texts = (entries: Entry[]): string[] => entries.map((e) => new TextDecoder().decode(e.data));

async function rawDb(dir: string): Promise<ClassicLevel<Buffer, Buffer>> {
  const db = new ClassicLevel<Buffer, Buffer>(join(dir, 'log'), {
    keyEncoding: 'buffer',
    valueEncoding: 'buffer',
  });
  await db.open();
  return db;
}

/** Opens the log folder with a raw LevelDB handle, lets `edit` damage it, and closes it again. */
async function tamperLog(
  dir: string,
  edit: (db: ClassicLevel<Buffer, Buffer>) => Promise<void>,
): Promise<void> {
  const db = await rawDb(dir);
  await edit(db);
  await db.close();
}

/** The error LevelStorage.open throws on `dir`, or undefined if it opened. */
async function openError(dir: string): Promise<unknown> {
  let caught: unknown;
  await LevelStorage.open(dir).catch((err: unknown) => (caught = err));
  return caught;
}

/** Writes `request` through a fresh LevelStorage on `dir` and closes it. */
async function persistAndClose(dir: string, request: PersistRequest): Promise<void> {
  const s = await LevelStorage.open(dir);
  await s.persist(request);
  await s.close();
}

describe('LevelStorage', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'raft-storage-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('starts empty in a new folder', async () => {
    const s = await LevelStorage.open(dir);
    assert.deepEqual(s.initial.hardState, { term: 0, vote: '', commit: 0 });
    assert.deepEqual(s.initial.entries, []);
    assert.equal(s.initial.snapshot, undefined);
    await s.close();
  });

  it('reloads entries, hard state and membership written by persist', async () => {
    const s = await LevelStorage.open(dir);
    await s.persist({
      hardState: { term: 2, vote: 'n1', commit: 2 },
      entries: [entry(1, 1), entry(2, 2), entry(3, 2)],
      conf: { voters: ['n1', 'n2', 'n3'], learners: [] },
    });
    await s.close();
    const r = await LevelStorage.open(dir);
    assert.deepEqual(r.initial.hardState, { term: 2, vote: 'n1', commit: 2 });
    assert.deepEqual(r.initial.conf.voters, ['n1', 'n2', 'n3']);
    assert.deepEqual(
      r.initial.entries.map((e) => [e.index, e.term]),
      [
        [1, 1],
        [2, 2],
        [3, 2],
      ],
    );
    assert.deepEqual(texts(r.initial.entries), ['cmd-1', 'cmd-2', 'cmd-3']);
    await r.close();
  });

  it('an entry replaces the stored one at its index and deletes everything after it', async () => {
    const s = await LevelStorage.open(dir);
    await s.persist({ entries: [entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)] });
    await s.persist({ entries: [entry(3, 2, 'new-3')] });
    assert.equal(s.lastIndex(), 3);
    await s.close();
    const r = await LevelStorage.open(dir);
    assert.deepEqual(texts(r.initial.entries), ['cmd-1', 'cmd-2', 'new-3']);
    assert.equal(r.initial.entries[2]!.term, 2);
    await r.close();
  });

  it('refuses an append that would leave a gap', async () => {
    const s = await LevelStorage.open(dir);
    await s.persist({ entries: [entry(1, 1)] });
    let caught: unknown;
    await s.persist({ entries: [entry(3, 1)] }).catch((err: unknown) => (caught = err));
    assert.match(String(caught), /index 3.*\[1, 1\]/);
    await s.close();
  });

  it('refuses to open on a corrupted entry, naming its index', async () => {
    await persistAndClose(dir, { entries: [entry(1, 1), entry(2, 1), entry(3, 1)] });
    await tamperLog(dir, async (db) => {
      const value = (await db.get(entryKey(2)))!;
      value[value.length - 1] = value[value.length - 1]! ^ 0xff; // flip bits in the command
      await db.put(entryKey(2), value);
    });
    const caught = await openError(dir);
    assert.ok(caught instanceof CorruptLogError);
    assert.equal((caught as CorruptLogError).index, 2);
    assert.match(String(caught), /entry 2 .*CRC mismatch/);
  });

  it('catches an entry copied under another index', async () => {
    await persistAndClose(dir, { entries: [entry(1, 1), entry(2, 1)] });
    await tamperLog(dir, async (db) => {
      await db.put(entryKey(2), (await db.get(entryKey(1)))!);
    });
    const caught = await openError(dir);
    assert.equal((caught as CorruptLogError).index, 2);
  });

  it('refuses to open on a gap in the log, naming the missing index', async () => {
    await persistAndClose(dir, { entries: [entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)] });
    await tamperLog(dir, async (db) => {
      await db.del(entryKey(3));
    });
    const caught = await openError(dir);
    assert.ok(caught instanceof CorruptLogError);
    assert.equal((caught as CorruptLogError).index, 3);
    assert.match(String(caught), /entry 3 .*missing.*from index 2 to 4/);
  });

  it('refuses a hard state that commits past the end of the log', async () => {
    await persistAndClose(dir, {
      entries: [entry(1, 1), entry(2, 1)],
      hardState: { term: 1, vote: '', commit: 2 },
    });
    await tamperLog(dir, async (db) => {
      await db.del(entryKey(2));
    });
    const caught = await openError(dir);
    assert.match(String(caught), /index 2 is committed but the log ends at 1/);
  });

  it('a crash before the sync loses only the write that was not synced', async () => {
    let crash = false;
    const s = await LevelStorage.open(dir, {
      beforeWrite: () => {
        if (crash) throw new Error('simulated crash before fsync');
      },
    });
    await s.persist({ entries: [entry(1, 1), entry(2, 1)], hardState: { term: 1, vote: 'n1', commit: 1 } });
    crash = true;
    let caught: unknown;
    await s
      .persist({ entries: [entry(3, 1)], hardState: { term: 2, vote: 'n2', commit: 2 } })
      .catch((err: unknown) => (caught = err));
    assert.match(String(caught), /simulated crash/);
    await s.close();
    const r = await LevelStorage.open(dir);
    assert.deepEqual(
      r.initial.entries.map((e) => e.index),
      [1, 2],
    );
    assert.deepEqual(r.initial.hardState, { term: 1, vote: 'n1', commit: 1 });
    await r.close();
  });

  it('reports the duration and entry count of every synced batch', async () => {
    const seen: Array<[number, number]> = [];
    const s = await LevelStorage.open(dir, { onFsync: (sec, n) => seen.push([sec, n]) });
    await s.persist({ entries: [entry(1, 1), entry(2, 1), entry(3, 1)] });
    await s.persist({ entries: [], hardState: { term: 1, vote: '', commit: 3 } });
    await s.close();
    assert.deepEqual(
      seen.map(([, n]) => n),
      [3, 0],
    );
    assert.equal(
      seen.every(([sec]) => sec >= 0),
      true,
    );
  });

  describe('snapshots', () => {
    const snap = (index: number, term: number, text: string): Snapshot => ({
      meta: { index, term, conf: { voters: ['n1', 'n2', 'n3'], learners: [] } },
      data: new TextEncoder().encode(text),
    });

    /** Writes entries 1..`last` at term 1, saves `snapshot` (compacting through `compactThrough`), and closes. */
    async function snapshotAndClose(
      last: number,
      snapshot: Snapshot,
      compactThrough?: number,
    ): Promise<void> {
      const s = await LevelStorage.open(dir);
      await s.persist({ entries: Array.from({ length: last }, (_, i) => entry(i + 1, 1)) });
      await s.saveSnapshot(snapshot, compactThrough);
      await s.close();
    }

    it('writes the file with fsync, rename, then fsync of the folder, and compacts the log', async () => {
      const steps: FileStep[] = [];
      const s = await LevelStorage.open(dir, { fileOps: { onStep: (step) => steps.push(step) } });
      await s.persist({ entries: [1, 2, 3, 4, 5].map((i) => entry(i, 1)) });
      await s.saveSnapshot(snap(3, 1, 'state@3'));
      assert.deepEqual(steps, ['write-temp', 'fsync-file', 'rename', 'fsync-dir']);
      assert.equal(s.firstIndex(), 4);
      await s.close();
      const r = await LevelStorage.open(dir);
      assert.equal(r.initial.snapshot!.meta.index, 3);
      assert.equal(new TextDecoder().decode(r.initial.snapshot!.data), 'state@3');
      assert.deepEqual(
        r.initial.entries.map((e) => e.index),
        [4, 5],
      );
      await r.close();
      assert.deepEqual(
        readdirSync(join(dir, 'snap')).filter((f) => f.endsWith('.tmp')),
        [],
      );
    });

    it('keeps only the newest snapshot file', async () => {
      const s = await LevelStorage.open(dir);
      await s.persist({ entries: [1, 2, 3, 4, 5].map((i) => entry(i, 1)) });
      await s.saveSnapshot(snap(2, 1, 'a'));
      await s.saveSnapshot(snap(4, 1, 'b'));
      await s.close();
      assert.equal(readdirSync(join(dir, 'snap')).length, 1);
    });

    it('a snapshot from the leader replaces the whole log', async () => {
      const s = await LevelStorage.open(dir);
      await s.persist({ entries: [1, 2, 3].map((i) => entry(i, 1)) });
      await s.persist({
        entries: [entry(11, 3)],
        snapshot: snap(10, 3, 'leader-state'),
        hardState: { term: 3, vote: '', commit: 10 },
      });
      await s.close();
      const r = await LevelStorage.open(dir);
      assert.deepEqual([r.initial.snapshot!.meta.index, r.initial.snapshot!.meta.term], [10, 3]);
      assert.deepEqual(r.initial.conf.voters, ['n1', 'n2', 'n3']);
      assert.deepEqual(
        r.initial.entries.map((e) => e.index),
        [11],
      );
      await r.close();
    });

    it('can keep a tail of entries before the snapshot for slow followers', async () => {
      await snapshotAndClose(5, snap(4, 1, 'state@4'), 2);
      const r = await LevelStorage.open(dir);
      assert.equal(r.initial.snapshot!.meta.index, 4);
      assert.deepEqual(
        r.initial.entries.map((e) => e.index),
        [3, 4, 5],
      );
      assert.equal(r.firstIndex(), 3);
      await r.close();
    });

    it('refuses a log that starts past the entry after the snapshot', async () => {
      await snapshotAndClose(5, snap(2, 1, 'state@2'));
      await tamperLog(dir, async (db) => {
        await db.del(entryKey(3));
      });
      const caught = await openError(dir);
      assert.equal((caught as CorruptLogError).index, 3);
      assert.match(String(caught), /snapshot ends at index 2 and the log starts at 4/);
    });

    it('refuses to open when the snapshot file is corrupt', async () => {
      await snapshotAndClose(2, snap(2, 1, 'state'));
      const [file] = readdirSync(join(dir, 'snap'));
      writeFileSync(join(dir, 'snap', file!), 'garbage');
      const caught = await openError(dir);
      assert.match(String(caught), /snapshot file .* is corrupt/);
    });
  });
});
