import { expect } from 'chai';
import fc from 'fast-check';
import { VhdDisk, createVhd, mergeVhd, type MemoryFileSystem } from '../src/index.js';
import { KiB, memfs, pattern } from './helpers.js';

/**
 * Random workloads on a chain (fixed or dynamic base, up to three differencing
 * children) against the plainest model there is: one Buffer per layer holding what
 * that layer's chain should read.
 */

type Op =
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'snapshot' }
  | { kind: 'reopen' }
  | { kind: 'flush' }
  | { kind: 'merge' };

const SIZE = 96 * KiB;

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      offset: fc.nat(SIZE - 1),
      length: fc.integer({ min: 1, max: 20 * KiB }),
      seed: fc.nat(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('read' as const),
      offset: fc.nat(SIZE - 1),
      length: fc.integer({ min: 1, max: 30 * KiB }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'snapshot' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'merge' as const }) },
);

async function runWorkload(
  fs: MemoryFileSystem,
  base: 'fixed' | 'dynamic',
  blockSize: number,
  ops: Op[],
  writethrough: boolean,
) {
  const cacheMode = writethrough ? ('writethrough' as const) : ('writeback' as const);
  const paths = ['/chain/0.vhd'];
  let top = await createVhd(paths[0]!, {
    type: base,
    size: SIZE,
    exactSize: true,
    provider: fs,
    cacheMode,
    ...(base === 'dynamic' ? { blockSize } : {}),
  });
  // models[i] is what the chain ending at layer i reads.
  const models: Buffer[] = [Buffer.alloc(SIZE)];
  try {
    for (const op of ops) {
      const model = models[models.length - 1]!;
      switch (op.kind) {
        case 'write': {
          const length = Math.min(op.length, SIZE - op.offset);
          const data = pattern(length, op.seed);
          await top.write(op.offset, data);
          data.copy(model, op.offset);
          break;
        }
        case 'read': {
          const length = Math.min(op.length, SIZE - op.offset);
          const got = await top.read(op.offset, length);
          expect(
            got.equals(model.subarray(op.offset, op.offset + length)),
            `read ${op.offset}+${length}`,
          ).to.equal(true);
          break;
        }
        case 'snapshot': {
          if (paths.length >= 4) break;
          await top.close();
          const path = `/chain/${paths.length}.vhd`;
          top = await createVhd(path, {
            type: 'differencing',
            parentPath: paths[paths.length - 1]!,
            provider: fs,
            cacheMode,
          });
          paths.push(path);
          models.push(Buffer.from(model));
          break;
        }
        case 'reopen':
          await top.close();
          top = await VhdDisk.open(paths[paths.length - 1]!, { provider: fs, cacheMode });
          break;
        case 'flush':
          await top.flush();
          break;
        case 'merge': {
          if (paths.length < 2) break;
          await top.close();
          await mergeVhd(paths.pop()!, { provider: fs });
          const merged = models.pop()!;
          models[models.length - 1] = merged;
          top = await VhdDisk.open(paths[paths.length - 1]!, { provider: fs, cacheMode });
          break;
        }
      }
    }
  } finally {
    await top.close();
  }
  // Every layer's chain, reopened from its file, reads its model.
  for (let i = 0; i < paths.length; i++) {
    const d = await VhdDisk.open(paths[i]!, { provider: fs, readOnly: true });
    const all = await d.read(0, SIZE);
    await d.close();
    expect(all.equals(models[i]!), `layer ${i} of ${paths.length}`).to.equal(true);
  }
}

describe('VHD chains against an in-memory model (fast-check)', () => {
  it('random writes, reads, snapshots, reopens and merges agree with the model', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('fixed' as const, 'dynamic' as const),
        fc.constantFrom(4 * KiB, 16 * KiB, 32 * KiB),
        fc.boolean(),
        fc.array(opArb, { minLength: 1, maxLength: 40 }),
        async (base, blockSize, writethrough, ops) => {
          await runWorkload(memfs(), base, blockSize, ops, writethrough);
        },
      ),
      { numRuns: 150, seed: 20261126 },
    );
  });
});
