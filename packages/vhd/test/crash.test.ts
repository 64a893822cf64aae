import { expect } from 'chai';
import {
  type MemoryFileSystem,
  SimulatedCrash,
  VhdDisk,
  checkVhd,
  compactVhd,
  createVhd,
  mergeIntoChildVhd,
  mergeVhd,
  resizeVhd,
} from '../src/index.js';
import { KiB, createDynamic, memfs, pattern } from './helpers.js';

/**
 * Crash at every mutating storage operation of an action, in two ways (the operation
 * does not happen / a write lands half), and look at two survivors of each crash (only
 * what was flushed / everything that reached the store). Each must open, pass `check`
 * once repaired, and read either the old or the new data, sector by sector.
 */
async function crashEverywhere(
  setup: (fs: MemoryFileSystem) => Promise<void>,
  action: (fs: MemoryFileSystem) => Promise<unknown>,
  verify: (fs: MemoryFileSystem, label: string) => Promise<void>,
): Promise<number> {
  const base = memfs();
  await setup(base);
  const dry = base.survivors('everything');
  await action(dry);
  const steps = dry.operationCount;
  expect(steps, 'the action writes something').to.be.greaterThan(0);
  await verify(dry, 'no crash');
  for (let k = 1; k <= steps; k++) {
    for (const mode of ['before', 'torn'] as const) {
      const fs = base.survivors('everything');
      fs.planCrash({ atOperation: k, mode });
      try {
        await action(fs);
        expect.fail(`no crash at operation ${k}`);
      } catch (err) {
        if (!(err instanceof SimulatedCrash)) throw err;
      }
      for (const which of ['durable', 'everything'] as const) {
        await verify(fs.survivors(which), `crash at op ${k}/${steps} (${mode}), ${which} survives`);
      }
    }
  }
  return steps;
}

const SIZE = 256 * KiB;
const BLOCK = 32 * KiB;

/** Every sector of `got` equals the same sector of `before` or of `after`. */
function expectOldOrNew(got: Buffer, before: Buffer, after: Buffer, label: string): void {
  for (let s = 0; s < got.length; s += 512) {
    const g = got.subarray(s, s + 512);
    const ok = g.equals(before.subarray(s, s + 512)) || g.equals(after.subarray(s, s + 512));
    expect(ok, `${label}: sector at ${s} is neither old nor new`).to.equal(true);
  }
}

async function openCheckRead(fs: MemoryFileSystem, path: string, label: string): Promise<Buffer> {
  // Opening read-write repairs a lost end footer; after that check must be clean.
  const d = await VhdDisk.open(path, { provider: fs });
  await d.close();
  const report = await checkVhd(path, { provider: fs });
  expect(report.issues, `${label}: check`).to.deep.equal([]);
  const ro = await VhdDisk.open(path, { provider: fs, readOnly: true });
  const all = await ro.read(0, ro.virtualSize);
  await ro.close();
  return all;
}

describe('crash safety (a crash at every step)', function () {
  // Each test replays its operation once per write, pure CPU: a full test suite on a loaded
  // machine (load average 26) took the merge's past the default 20 s.
  this.timeout(120_000);
  const oldData = pattern(SIZE, 1);
  oldData.fill(0, BLOCK * 2); // blocks 2.. are unallocated before the action
  const newBytes = pattern(BLOCK + 4 * KiB, 2);
  const writeAt = BLOCK * 2 - 2 * KiB; // spans the allocated block 1 and the new block 2
  const after = Buffer.from(oldData);
  newBytes.copy(after, writeAt);

  for (const cacheMode of ['writeback', 'writethrough'] as const) {
    it(`dynamic (${cacheMode}): allocating a block leaves old or new data`, async () => {
      const steps = await crashEverywhere(
        async (fs) => {
          const d = await createDynamic(fs, '/d.vhd', SIZE, BLOCK);
          await d.write(0, oldData.subarray(0, BLOCK * 2));
          await d.close();
        },
        async (fs) => {
          const d = await VhdDisk.open('/d.vhd', { provider: fs, cacheMode });
          await d.write(writeAt, newBytes);
          await d.close();
        },
        async (fs, label) => expectOldOrNew(await openCheckRead(fs, '/d.vhd', label), oldData, after, label),
      );
      expect(steps).to.be.at.least(cacheMode === 'writeback' ? 8 : 10);
    });
  }

  it("differencing: allocating in the child leaves the parent's data or the new", async () => {
    await crashEverywhere(
      async (fs) => {
        const d = await createVhd('/base.vhd', { type: 'fixed', size: SIZE, exactSize: true, provider: fs });
        await d.write(0, oldData);
        await d.close();
        await (
          await createVhd('/child.vhd', {
            type: 'differencing',
            parentPath: '/base.vhd',
            blockSize: BLOCK,
            provider: fs,
          })
        ).close();
      },
      async (fs) => {
        const d = await VhdDisk.open('/child.vhd', { provider: fs });
        await d.write(writeAt + 100, newBytes.subarray(100, 3000)); // unaligned: edge sectors come from the parent
        await d.close();
      },
      async (fs, label) => {
        const expected = Buffer.from(oldData);
        newBytes.copy(expected, writeAt + 100, 100, 3000);
        expectOldOrNew(await openCheckRead(fs, '/child.vhd', label), oldData, expected, label);
      },
    );
  });

  it('compact: the disk reads the same whatever the crash', async () => {
    const content = Buffer.alloc(SIZE);
    pattern(BLOCK, 3).copy(content, BLOCK * 3);
    await crashEverywhere(
      async (fs) => {
        const d = await createDynamic(fs, '/d.vhd', SIZE, BLOCK);
        await d.write(0, Buffer.alloc(BLOCK)); // an all-zero block compact drops
        await d.write(BLOCK * 3, content.subarray(BLOCK * 3, BLOCK * 4));
        await d.close();
      },
      (fs) => compactVhd('/d.vhd', { provider: fs }),
      async (fs, label) => {
        expect((await openCheckRead(fs, '/d.vhd', label)).equals(content), label).to.equal(true);
      },
    );
  });

  it('merge: the chain, or the parent once the child is gone, reads the merged content', async () => {
    const parentData = pattern(SIZE, 4);
    const childData = pattern(40 * KiB, 5);
    const merged = Buffer.from(parentData);
    childData.copy(merged, 20 * KiB);
    await crashEverywhere(
      async (fs) => {
        const d = await createDynamic(fs, '/p.vhd', SIZE, BLOCK);
        await d.write(0, parentData.subarray(0, BLOCK)); // block 0 only: the merge allocates more
        await d.close();
        const c = await createVhd('/c.vhd', { type: 'differencing', parentPath: '/p.vhd', provider: fs });
        await c.write(20 * KiB, childData);
        await c.close();
      },
      (fs) => mergeVhd('/c.vhd', { provider: fs }),
      async (fs, label) => {
        const expectChain = Buffer.from(parentData);
        expectChain.fill(0, BLOCK);
        childData.copy(expectChain, 20 * KiB);
        const path = (await fs.exists('/c.vhd')) ? '/c.vhd' : '/p.vhd';
        const got = await openCheckRead(fs, path, label);
        expect(got.equals(expectChain), `${label} via ${path}`).to.equal(true);
      },
    );
  });

  for (const withGrandparent of [true, false]) {
    it(`merge into the child${withGrandparent ? '' : ' of the base'}: every crash leaves a chain that reads the same, and the merge resumes`, async () => {
      const source = pattern(SIZE, 8);
      const content = Buffer.alloc(SIZE); // what the chain reads: built as the layers are written
      const put = (from: number, to: number) => source.copy(content, from, from, to);
      const steps = await crashEverywhere(
        async (fs) => {
          const d = await createDynamic(fs, '/base.vhd', SIZE, BLOCK);
          await d.write(0, source.subarray(0, 2 * BLOCK));
          put(0, 2 * BLOCK);
          await d.close();
          const layers = withGrandparent ? ['/mid.vhd', '/top.vhd'] : ['/top.vhd'];
          let parentPath = '/base.vhd';
          for (const [i, path] of layers.entries()) {
            const c = await createVhd(path, { type: 'differencing', parentPath, provider: fs });
            // Each layer overrides a stretch, unaligned, so sectors come from all of them.
            const from = BLOCK + 1000 + i * 2 * BLOCK;
            await c.write(from, source.subarray(from, from + BLOCK + 3000));
            put(from, from + BLOCK + 3000);
            await c.close();
            parentPath = path;
          }
          // And a block of its own, which the merge leaves alone.
          const t = await VhdDisk.open('/top.vhd', { provider: fs });
          await t.write(5 * BLOCK, source.subarray(5 * BLOCK, 6 * BLOCK));
          put(5 * BLOCK, 6 * BLOCK);
          await t.close();
          const all = Buffer.alloc(SIZE);
          const check = await VhdDisk.open('/top.vhd', { provider: fs, readOnly: true });
          (await check.read(0, SIZE)).copy(all);
          await check.close();
          expect(all.equals(content), 'setup').to.equal(true);
        },
        (fs) => mergeIntoChildVhd('/top.vhd', { provider: fs, stateFile: '/merge.state' }),
        async (fs, label) => {
          const merged = withGrandparent ? '/mid.vhd' : '/base.vhd';
          expect((await openCheckRead(fs, '/top.vhd', label)).equals(content), label).to.equal(true);
          // Unfinished (the merged file or the state is still there): running it again
          // finishes it, whatever step the crash interrupted.
          if ((await fs.exists(merged)) || (await fs.exists('/merge.state'))) {
            await mergeIntoChildVhd('/top.vhd', { provider: fs, stateFile: '/merge.state' });
          }
          expect(await fs.exists(merged), `${label}: ${merged} removed`).to.equal(false);
          expect(await fs.exists('/merge.state'), `${label}: state removed`).to.equal(false);
          expect((await openCheckRead(fs, '/top.vhd', `${label}, resumed`)).equals(content), label).to.equal(
            true,
          );
          const top = await VhdDisk.open('/top.vhd', { provider: fs, readOnly: true });
          expect(top.type).to.equal(withGrandparent ? 'differencing' : 'dynamic');
          await top.close();
        },
      );
      expect(steps).to.be.at.least(20);
    });
  }

  /**
   * Crashes resizing a dynamic disk that holds `data` at `at` to `newSize`; `verify` gets what
   * each survivor reads once opened and checked.
   */
  const crashResizing = (
    data: Buffer,
    at: number,
    newSize: number,
    verify: (got: Buffer, label: string) => void,
  ) =>
    crashEverywhere(
      async (fs) => {
        const d = await createDynamic(fs, '/d.vhd', SIZE, BLOCK);
        await d.write(at, data);
        await d.close();
      },
      (fs) => resizeVhd('/d.vhd', newSize, { provider: fs, exactSize: true }),
      async (fs, label) => verify(await openCheckRead(fs, '/d.vhd', label), label),
    );

  it('resize past the BAT: old size or new, same data', async () => {
    const data = pattern(BLOCK, 6);
    await crashResizing(data, BLOCK, SIZE * 20, (got, label) => {
      expect([SIZE, SIZE * 20]).to.include(got.length);
      expect(got.subarray(BLOCK, BLOCK * 2).equals(data), label).to.equal(true);
      expect(
        got.subarray(0, BLOCK).every((x) => x === 0) && got.subarray(BLOCK * 2).every((x) => x === 0),
      ).to.equal(true);
    });
  });

  it('resize in place: old size or new, same data', async () => {
    const data = pattern(BLOCK, 7);
    await crashResizing(data, 0, SIZE * 2, (got, label) => {
      expect([SIZE, SIZE * 2]).to.include(got.length);
      expect(got.subarray(0, BLOCK).equals(data), label).to.equal(true);
    });
  });

  it('create: there is no disk at the path, or a whole one', async () => {
    await crashEverywhere(
      async () => {},
      async (fs) => (await createVhd('/n.vhd', { type: 'dynamic', size: SIZE, provider: fs })).close(),
      async (fs, label) => {
        if (!(await fs.exists('/n.vhd'))) return;
        const got = await openCheckRead(fs, '/n.vhd', label);
        expect(got.every((x) => x === 0)).to.equal(true);
      },
    );
  });
});
