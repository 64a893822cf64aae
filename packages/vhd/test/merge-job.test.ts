import { expect } from 'chai';
import fc from 'fast-check';
import {
  type MemoryFileSystem,
  MergeJob,
  type MergeJobOptions,
  type MergeJobState,
  VhdCorruptError,
  VhdDisk,
  VhdNoSpaceError,
  VhdOperationError,
  checkVhd,
  createVhd,
  encodeDynamicHeader,
  mergeIntoChildVhd,
} from '../src/index.js';
import { KiB, memfs, pattern, uid } from './helpers.js';

const SIZE = 128 * KiB;
const BLOCK = 16 * KiB;

/**
 * base (dynamic) <- mid <- top, each layer writing its own pattern over part of the disk;
 * optionally one more layer `c2` between mid and top. Returns what the full chain reads.
 */
async function buildChain(
  fs: MemoryFileSystem,
  options: { baseType?: 'fixed' | 'dynamic'; extraLayer?: boolean } = {},
): Promise<Buffer> {
  const model = Buffer.alloc(SIZE);
  const layer = async (path: string, writes: [number, number, number][]) => {
    const d = await VhdDisk.open(path, { provider: fs });
    for (const [offset, length, seed] of writes) {
      const data = pattern(length, seed);
      await d.write(offset, data);
      data.copy(model, offset);
    }
    await d.close();
  };
  const now = (s: number) => () => new Date(Date.UTC(2026, 0, 1, 0, 0, s));
  await (
    await createVhd('/base.vhd', {
      type: options.baseType ?? 'dynamic',
      size: SIZE,
      exactSize: true,
      ...(options.baseType === 'fixed' ? {} : { blockSize: BLOCK }),
      provider: fs,
      now: now(1),
      uniqueId: uid(1),
    })
  ).close();
  await layer('/base.vhd', [
    [0, 40 * KiB, 1],
    [90 * KiB, 9 * KiB, 2],
  ]);
  const diff = async (path: string, parentPath: string, n: number) =>
    (
      await createVhd(path, {
        type: 'differencing',
        parentPath,
        provider: fs,
        now: now(n),
        uniqueId: uid(n),
      })
    ).close();
  await diff('/mid.vhd', '/base.vhd', 2);
  await layer('/mid.vhd', [
    [10 * KiB + 100, 30 * KiB, 3], // unaligned: partial sectors come from the base
    [64 * KiB, 20 * KiB, 4],
  ]);
  let below = '/mid.vhd';
  if (options.extraLayer) {
    await diff('/c2.vhd', '/mid.vhd', 3);
    await layer('/c2.vhd', [[30 * KiB, 5 * KiB, 7]]);
    below = '/c2.vhd';
  }
  await diff('/top.vhd', below, 4);
  await layer('/top.vhd', [
    [20 * KiB, 6 * KiB, 5],
    [70 * KiB + 512, 1024, 6],
  ]);
  return model;
}

async function readAll(fs: MemoryFileSystem, path: string): Promise<Buffer> {
  const d = await VhdDisk.open(path, { provider: fs, readOnly: true });
  try {
    return await d.read(0, d.virtualSize);
  } finally {
    await d.close();
  }
}

describe('merge into the child', () => {
  it('fills the child from its parent, re-links it to the grandparent and removes the parent', async () => {
    const fs = memfs();
    const model = await buildChain(fs);
    const r = await mergeIntoChildVhd('/top.vhd', { provider: fs });
    expect(r.targetPath).to.equal('/top.vhd');
    expect(r.mergedPath).to.equal('/mid.vhd');
    expect(r.bytesMerged).to.be.greaterThan(0);
    expect(await fs.exists('/mid.vhd')).to.equal(false);
    const top = await VhdDisk.open('/top.vhd', { provider: fs, readOnly: true });
    expect(top.type).to.equal('differencing');
    expect(top.parent!.path).to.equal('/base.vhd');
    expect(top.header!.parentUniqueId.equals(uid(1))).to.equal(true);
    expect(top.header!.parentTimestamp).to.equal(top.parent!.footer.timestamp);
    expect(top.warnings).to.deep.equal([]);
    expect((await top.read(0, SIZE)).equals(model)).to.equal(true);
    await top.close();
    expect((await checkVhd('/top.vhd', { provider: fs })).issues).to.deep.equal([]);
    // The re-linked disk still takes writes and allocates after its new metadata.
    const w = await VhdDisk.open('/top.vhd', { provider: fs });
    await w.write(SIZE - BLOCK, pattern(BLOCK, 9));
    await w.close();
    pattern(BLOCK, 9).copy(model, SIZE - BLOCK);
    expect((await readAll(fs, '/top.vhd')).equals(model)).to.equal(true);
    expect((await checkVhd('/top.vhd', { provider: fs })).issues).to.deep.equal([]);
  });

  for (const baseType of ['dynamic', 'fixed'] as const) {
    it(`a child of a ${baseType} base becomes a dynamic disk holding everything`, async () => {
      const fs = memfs();
      const model = await buildChain(fs, { baseType });
      await mergeIntoChildVhd('/mid.vhd', { provider: fs });
      expect(await fs.exists('/base.vhd')).to.equal(false);
      const mid = await VhdDisk.open('/mid.vhd', { provider: fs, readOnly: true });
      expect(mid.type).to.equal('dynamic');
      expect(mid.parent).to.equal(undefined);
      await mid.close();
      // top (whose parent is mid) still reads the same.
      expect((await readAll(fs, '/top.vhd')).equals(model)).to.equal(true);
      expect((await checkVhd('/mid.vhd', { provider: fs })).issues).to.deep.equal([]);
    });
  }

  it('works when the child and its parent have different block sizes', async () => {
    const fs = memfs();
    const model = await buildChain(fs);
    // A child with 4 KiB blocks over mid's 16 KiB ones: the grids do not line up.
    await (
      await createVhd('/small.vhd', {
        type: 'differencing',
        parentPath: '/top.vhd',
        blockSize: 4 * KiB,
        provider: fs,
      })
    ).close();
    const w = await VhdDisk.open('/small.vhd', { provider: fs });
    await w.write(21 * KiB + 7, pattern(3000, 11));
    await w.close();
    pattern(3000, 11).copy(model, 21 * KiB + 7);
    await mergeIntoChildVhd('/small.vhd', { provider: fs });
    expect(await fs.exists('/top.vhd')).to.equal(false);
    expect((await readAll(fs, '/small.vhd')).equals(model)).to.equal(true);
    expect((await checkVhd('/small.vhd', { provider: fs })).issues).to.deep.equal([]);
  });

  it('a merge that was only partly done resumes from its state file', async () => {
    const fs = memfs();
    const model = await buildChain(fs);
    const first = await MergeJob.open({
      childPath: '/top.vhd',
      into: 'child',
      provider: fs,
      stateFile: '/m.state',
    });
    const total = first.progress().blocksTotal;
    expect(total).to.be.greaterThan(2);
    await first.step();
    await first.step();
    expect(first.progress().blocksDone).to.equal(2);
    await first.close(); // as if the process stopped
    const again = await MergeJob.open({
      childPath: '/top.vhd',
      into: 'child',
      provider: fs,
      stateFile: '/m.state',
    });
    expect(again.progress().blocksDone).to.equal(2);
    await again.run();
    await again.close();
    expect(await fs.exists('/m.state')).to.equal(false);
    expect(await fs.exists('/mid.vhd')).to.equal(false);
    expect((await readAll(fs, '/top.vhd')).equals(model)).to.equal(true);
  });
});

describe('parent timestamp', () => {
  async function skewTimestamp(fs: MemoryFileSystem): Promise<void> {
    const d = await VhdDisk.open('/mid.vhd', { provider: fs, readOnly: true });
    const header = { ...d.header!, parentTimestamp: d.header!.parentTimestamp + 3600 };
    const at = Number(d.footer.dataOffset);
    await d.close();
    const bytes = fs.get('/mid.vhd');
    encodeDynamicHeader(header).copy(bytes, at);
    fs.put('/mid.vhd', bytes);
  }

  it('a mismatch warns by default, refuses when asked, and check reports it', async () => {
    const fs = memfs();
    await buildChain(fs);
    await skewTimestamp(fs);
    const d = await VhdDisk.open('/mid.vhd', { provider: fs, readOnly: true });
    expect(d.warnings).to.have.length(1);
    expect(d.warnings[0]).to.match(
      /parent \/base\.vhd has timestamp 2026-01-01T00:00:01\.000Z, the child recorded 2026-01-01T01:00:01\.000Z/,
    );
    await d.close();
    let refused: unknown;
    try {
      await VhdDisk.open('/mid.vhd', { provider: fs, readOnly: true, parentTimestamp: 'refuse' });
    } catch (err) {
      refused = err;
    }
    expect(refused).to.be.instanceOf(VhdCorruptError);
    const quiet = await VhdDisk.open('/mid.vhd', { provider: fs, readOnly: true, parentTimestamp: 'ignore' });
    expect(quiet.warnings).to.deep.equal([]);
    await quiet.close();
    const report = await checkVhd('/mid.vhd', { provider: fs });
    expect(report.ok).to.equal(false);
    expect(report.issues.map((i) => [i.structure, i.fatal])).to.deep.equal([['parent timestamp', false]]);
  });

  it('merge into the child writes the grandparent timestamp, so the re-linked child opens clean', async () => {
    const fs = memfs();
    await buildChain(fs);
    await skewTimestamp(fs); // mid's own record of base is off; top is re-linked to base
    await mergeIntoChildVhd('/top.vhd', { provider: fs });
    const top = await VhdDisk.open('/top.vhd', { provider: fs, readOnly: true, parentTimestamp: 'refuse' });
    expect(top.warnings).to.deep.equal([]);
    await top.close();
  });
});

type Scenario = {
  name: string;
  into: 'child' | 'parent';
  childPath: string;
  extraLayer: boolean;
  gone: string;
};
const SCENARIOS: Scenario[] = [
  {
    name: 'into the child, which is the disk the VM writes',
    into: 'child',
    childPath: '/top.vhd',
    extraLayer: false,
    gone: '/mid.vhd',
  },
  {
    name: 'into the child, inside the chain',
    into: 'child',
    childPath: '/c2.vhd',
    extraLayer: true,
    gone: '/mid.vhd',
  },
  {
    name: 'into the parent, inside the chain',
    into: 'parent',
    childPath: '/c2.vhd',
    extraLayer: true,
    gone: '/c2.vhd',
  },
];

/** Opens the scenario's merge on the running chain whose top disk is `live`. */
function openScenarioJob(
  fs: MemoryFileSystem,
  sc: Scenario,
  live: VhdDisk,
  more: Pick<MergeJobOptions, 'onCheckpoint' | 'resume'> = {},
): Promise<MergeJob> {
  return MergeJob.open({ childPath: sc.childPath, into: sc.into, provider: fs, live, ...more });
}

type LiveOp =
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'step' }
  | { kind: 'stepWithWrite'; offset: number; length: number; seed: number; ticks: number }
  | { kind: 'stepWithRead'; offset: number; length: number; ticks: number }
  | { kind: 'flush' };

const range = { offset: fc.nat(SIZE - 1), length: fc.integer({ min: 1, max: 24 * KiB }) };
const liveOp: fc.Arbitrary<LiveOp> = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), ...range, seed: fc.nat() }),
  fc.record({ kind: fc.constant('read' as const), ...range }),
  fc.constant({ kind: 'step' as const }),
  fc.record({ kind: fc.constant('stepWithWrite' as const), ...range, seed: fc.nat(), ticks: fc.nat(40) }),
  fc.record({ kind: fc.constant('stepWithRead' as const), ...range, ticks: fc.nat(40) }),
  fc.constant({ kind: 'flush' as const }),
);

/** Runs `fn` after `ticks` turns of the microtask queue: lands a guest I/O inside a merge step. */
async function later(ticks: number, fn: () => Promise<void>): Promise<void> {
  for (let i = 0; i < ticks; i++) await Promise.resolve();
  await fn();
}

describe('online merge (MergeJob on a running chain)', () => {
  for (const sc of SCENARIOS) {
    it(`${sc.name}: guest reads and writes agree with a model throughout (fast-check)`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(liveOp, { maxLength: 30 }), async (ops) => {
          const fs = memfs();
          const model = await buildChain(fs, { extraLayer: sc.extraLayer });
          const top = await VhdDisk.open('/top.vhd', { provider: fs });
          const job = await openScenarioJob(fs, sc, top);
          const clip = (o: { offset: number; length: number }) => Math.min(o.length, SIZE - o.offset);
          const write = async (o: { offset: number; length: number; seed: number }) => {
            const data = pattern(clip(o), o.seed);
            data.copy(model, o.offset); // the model changes when the write is issued...
            await top.write(o.offset, data); // ...no read runs concurrently with it here
          };
          const read = async (o: { offset: number; length: number }) => {
            const expected = Buffer.from(model.subarray(o.offset, o.offset + clip(o)));
            const got = await top.read(o.offset, clip(o));
            expect(got.equals(expected), `read ${o.offset}+${clip(o)}`).to.equal(true);
          };
          try {
            for (const op of ops) {
              if (op.kind === 'write') await write(op);
              else if (op.kind === 'read') await read(op);
              else if (op.kind === 'flush') await top.flush();
              else if (op.kind === 'step') await job.step();
              else if (op.kind === 'stepWithWrite')
                await Promise.all([job.step(), later(op.ticks, () => write(op))]);
              else await Promise.all([job.step(), later(op.ticks, () => read(op))]);
            }
            await job.run();
            expect(job.done).to.equal(true);
            await read({ offset: 0, length: SIZE });
          } finally {
            await job.close();
            await top.close();
          }
          expect(await fs.exists(sc.gone)).to.equal(false);
          expect((await readAll(fs, '/top.vhd')).equals(model)).to.equal(true);
          for (const path of ['/top.vhd', sc.into === 'child' ? sc.childPath : '/mid.vhd']) {
            expect((await checkVhd(path, { provider: fs })).issues, path).to.deep.equal([]);
          }
        }),
        { numRuns: 25, seed: 5052026 },
      );
    });
  }

  it('a guest write that lands while a block is being absorbed is never overwritten with parent data', async () => {
    const fs = memfs();
    const model = await buildChain(fs);
    // The parent's storage calls `hook` on each read: that is inside the merge step, after
    // the step looked at the child's bitmap and before it writes the parent's bytes.
    let hook: (() => Promise<void>) | undefined;
    const provider = Object.create(fs) as MemoryFileSystem;
    provider.open = async (path, mode) => {
      const storage = await fs.open(path, mode);
      if (fs.resolve(path) !== '/mid.vhd') return storage;
      const read = storage.read.bind(storage);
      storage.read = async (offset, length) => {
        const h = hook;
        hook = undefined;
        if (h) await h();
        return read(offset, length);
      };
      return storage;
    };
    const top = await VhdDisk.open('/top.vhd', { provider });
    const job = await MergeJob.open({ childPath: '/top.vhd', into: 'child', provider, live: top });
    try {
      const guest = pattern(4 * KiB, 77);
      let pending: Promise<void> | undefined;
      hook = async () => {
        // mid holds 10K+100.. 40K+100 and top does not hold 12K..16K: the first block's work.
        pending = top.write(12 * KiB, guest);
        for (let i = 0; i < 200; i++) await Promise.resolve(); // let it run as far as it can
      };
      await job.step();
      expect(pending, 'the hook ran inside the step').to.not.equal(undefined);
      await pending;
      guest.copy(model, 12 * KiB);
      await job.run();
      expect((await top.read(0, SIZE)).equals(model)).to.equal(true);
    } finally {
      await job.close();
      await top.close();
    }
  });

  for (const sc of SCENARIOS) {
    for (const stopAfter of ['copy', 'relink'] as const) {
      it(`${sc.name}: stopped after ${stopAfter === 'copy' ? 'a block' : 'the re-link'}, the state the engine kept resumes it after a restart`, async () => {
        const fs = memfs();
        const model = await buildChain(fs, { extraLayer: sc.extraLayer });
        const states: MergeJobState[] = [];
        let top = await VhdDisk.open('/top.vhd', { provider: fs });
        let job = await openScenarioJob(fs, sc, top, { onCheckpoint: (st) => void states.push(st) });
        // Stop (as a dying process would) once the job has reached the chosen point.
        const reached = () =>
          stopAfter === 'copy' ? job.progress().blocksDone >= 1 : job.progress().phase === 'cleanup';
        while (!reached()) await job.step();
        await job.close();
        await top.close();
        expect(await fs.exists(sc.gone), 'not removed yet').to.equal(true);
        // The restarted engine opens the chain as the files now say, and resumes.
        top = await VhdDisk.open('/top.vhd', { provider: fs });
        try {
          expect((await top.read(0, SIZE)).equals(model), 'before resuming').to.equal(true);
          job = await openScenarioJob(fs, sc, top, {
            resume: JSON.parse(JSON.stringify(states[states.length - 1])) as MergeJobState,
          });
          if (stopAfter === 'copy') expect(job.progress().blocksDone).to.equal(1);
          else expect(job.progress().phase).to.equal('cleanup');
          await job.run();
          await job.close();
          expect((await top.read(0, SIZE)).equals(model), 'resumed').to.equal(true);
        } finally {
          await top.close();
        }
        expect(await fs.exists(sc.gone), 'removed').to.equal(false);
        expect((await readAll(fs, '/top.vhd')).equals(model)).to.equal(true);
      });
    }
  }

  it('refuses to merge the disk the VM writes into its parent', async () => {
    const fs = memfs();
    await buildChain(fs);
    const top = await VhdDisk.open('/top.vhd', { provider: fs });
    try {
      let err: unknown;
      try {
        await MergeJob.open({ childPath: '/top.vhd', into: 'parent', provider: fs, live: top });
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(VhdOperationError);
      expect((err as Error).message).to.match(/the disk the VM writes to/);
    } finally {
      await top.close();
    }
  });

  for (const into of ['child', 'parent'] as const) {
    it(`into the ${into}: a full file system stops a step with VhdNoSpaceError; it goes on once space returns`, async () => {
      const fs = memfs();
      const model = await buildChain(fs, { extraLayer: true });
      const top = await VhdDisk.open('/top.vhd', { provider: fs });
      const job = await MergeJob.open({ childPath: '/c2.vhd', into, provider: fs, live: top });
      const progress: number[] = [];
      try {
        await job.step();
        fs.setCapacity(fs.usedBytes); // not one more byte
        let err: unknown;
        for (let i = 0; i < 50 && !err; i++) {
          try {
            await job.step();
          } catch (e) {
            err = e;
          }
        }
        expect(err).to.be.instanceOf(VhdNoSpaceError);
        const stuckAt = job.progress().blocksDone;
        // Guest I/O goes on and sees the same disk; a retry while full fails the same way.
        expect((await top.read(0, SIZE)).equals(model)).to.equal(true);
        let again: unknown;
        try {
          await job.step();
        } catch (e) {
          again = e;
        }
        expect(again).to.be.instanceOf(VhdNoSpaceError);
        expect(job.progress().blocksDone).to.equal(stuckAt);
        fs.setCapacity(undefined);
        await job.run((p) => progress.push(p.blocksDone));
        expect(job.done).to.equal(true);
        expect((await top.read(0, SIZE)).equals(model)).to.equal(true);
      } finally {
        await job.close();
        await top.close();
      }
      expect(progress[progress.length - 1]).to.equal(job.progress().blocksTotal);
      expect((await readAll(fs, '/top.vhd')).equals(model)).to.equal(true);
      for (const path of ['/top.vhd', into === 'child' ? '/c2.vhd' : '/mid.vhd']) {
        expect((await checkVhd(path, { provider: fs })).issues, path).to.deep.equal([]);
      }
    });
  }

  it('pauses between steps and resumes, reporting blocks and bytes', async () => {
    const fs = memfs();
    await buildChain(fs);
    const top = await VhdDisk.open('/top.vhd', { provider: fs });
    const job = await MergeJob.open({ childPath: '/top.vhd', into: 'child', provider: fs, live: top });
    try {
      const seen: { blocksDone: number; bytesDone: number }[] = [];
      const first = await job.run((p) => {
        seen.push({ blocksDone: p.blocksDone, bytesDone: p.bytesDone });
        if (p.blocksDone === 2) job.pause();
      });
      expect(first.paused).to.equal(true);
      expect(first.blocksDone).to.equal(2);
      expect(first.phase).to.equal('copy');
      const done = await job.run();
      expect(done.phase).to.equal('done');
      expect(done.blocksDone).to.equal(done.blocksTotal);
      expect(done.bytesDone).to.equal(done.bytesTotal);
      // mid holds 10K+100..40K+100 and 64K..84K: whole sectors of that, block by block.
      expect(done.bytesTotal).to.equal(30 * KiB + 512 + 20 * KiB);
      expect(seen.map((s) => s.blocksDone)).to.deep.equal([0, 1, 2]);
    } finally {
      await job.close();
      await top.close();
    }
  });
});
