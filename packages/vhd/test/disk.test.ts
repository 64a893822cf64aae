import { expect } from 'chai';
import {
  VhdArgumentError,
  VhdDisk,
  VhdOperationError,
  createVhd,
  type MemoryFileSystem,
} from '../src/index.js';
import { KiB, MiB, fixedClock, memfs, pattern, uid } from './helpers.js';

async function make(
  fs: MemoryFileSystem,
  path: string,
  type: 'fixed' | 'dynamic',
  size = 1 * MiB,
  blockSize?: number,
) {
  return createVhd(path, {
    type,
    size,
    exactSize: true,
    provider: fs,
    now: fixedClock,
    uniqueId: uid(1),
    ...(type === 'dynamic' ? { blockSize: blockSize ?? 64 * KiB } : {}),
  });
}

describe('VhdDisk', () => {
  for (const type of ['fixed', 'dynamic'] as const) {
    it(`${type}: reads zeros when new, then what was written, across blocks and unaligned`, async () => {
      const fs = memfs();
      const d = await make(fs, '/d.vhd', type);
      expect(d.type).to.equal(type);
      expect((await d.read(0, 4096)).every((x) => x === 0)).to.equal(true);
      const data = pattern(200 * KiB + 77, 1);
      await d.write(60 * KiB + 3, data); // spans blocks 0..4 of 64 KiB, unaligned both ends
      expect((await d.read(60 * KiB + 3, data.length)).equals(data)).to.equal(true);
      expect((await d.read(60 * KiB, 3)).every((x) => x === 0)).to.equal(true);
      expect((await d.read(60 * KiB + 3 + data.length, 100)).every((x) => x === 0)).to.equal(true);
      await d.close();
      const again = await VhdDisk.open('/d.vhd', { provider: fs });
      expect((await again.read(60 * KiB + 3, data.length)).equals(data)).to.equal(true);
      const info = await again.info();
      expect(info.virtualSize).to.equal(again.virtualSize);
      expect(info.uniqueId).to.equal('00000000-0000-0000-0000-000000000001');
      expect(info.createdAt).to.equal('2026-01-02T03:04:05.000Z');
      if (type === 'dynamic') expect(info.allocatedBlocks).to.equal(5);
      await again.close();
    });
  }

  it('rounds sizes up to the CHS geometry unless asked for the exact size', async () => {
    const fs = memfs();
    const rounded = await createVhd('/r.vhd', { type: 'dynamic', size: 10 * MiB, provider: fs });
    expect(rounded.virtualSize).to.equal(10514432);
    const exact = await createVhd('/e.vhd', {
      type: 'dynamic',
      size: 10 * MiB,
      exactSize: true,
      provider: fs,
    });
    expect(exact.virtualSize).to.equal(10 * MiB);
    await rounded.close();
    await exact.close();
  });

  it('refuses reads and writes past the end, naming the field', async () => {
    const fs = memfs();
    const d = await make(fs, '/d.vhd', 'dynamic');
    const size = d.virtualSize;
    try {
      await d.read(size - 10, 11);
      expect.fail('read past the end');
    } catch (err) {
      expect(err).to.be.instanceOf(VhdArgumentError);
      expect((err as Error).message).to.match(/^offset: .* runs past the end/);
    }
    await d.close();
  });

  it('a read-only disk refuses writes', async () => {
    const fs = memfs();
    await (await make(fs, '/d.vhd', 'dynamic')).close();
    const d = await VhdDisk.open('/d.vhd', { provider: fs, readOnly: true });
    try {
      await d.write(0, Buffer.alloc(512));
      expect.fail('write to read-only');
    } catch (err) {
      expect(err).to.be.instanceOf(VhdOperationError);
    }
    await d.close();
  });

  it('create refuses bad arguments and existing files', async () => {
    const fs = memfs();
    await (await make(fs, '/d.vhd', 'dynamic')).close();
    const cases: [Parameters<typeof createVhd>[1], RegExp][] = [
      [{ type: 'dynamic', size: 0 }, /^size: must be a positive integer/],
      [{ type: 'dynamic', size: MiB, blockSize: 3000 }, /^blockSize: must be a power of two/],
      [{ type: 'fixed' }, /^size: is required/],
      [{ type: 'differencing' }, /^parent: a differencing disk needs a parent/],
      [{ type: 'dynamic', size: MiB, parentPath: '/d.vhd' }, /^parent: only differencing/],
      [{ type: 'bogus' as 'fixed', size: MiB }, /^type: must be fixed, dynamic or differencing/],
      [
        { type: 'differencing', parentPath: '/d.vhd', size: 5 },
        /^size: a differencing disk has its parent's size/,
      ],
    ];
    for (const [opts, re] of cases) {
      try {
        await createVhd('/new.vhd', { ...opts, provider: fs });
        expect.fail(`accepted ${JSON.stringify(opts)}`);
      } catch (err) {
        expect((err as Error).message).to.match(re);
      }
    }
    try {
      await make(fs, '/d.vhd', 'fixed');
      expect.fail('overwrote');
    } catch (err) {
      expect((err as Error).message).to.match(/already exists/);
    }
  });

  it('differencing: reads fall through, writes allocate only the written sectors', async () => {
    const fs = memfs();
    const base = await make(fs, '/base.vhd', 'dynamic');
    const baseData = pattern(128 * KiB, 2);
    await base.write(0, baseData);
    await base.close();
    const child = await createVhd('/child.vhd', {
      type: 'differencing',
      parentPath: '/base.vhd',
      provider: fs,
    });
    expect(child.virtualSize).to.equal(1 * MiB);
    await child.write(1000, Buffer.from('hello')); // one partial sector: read-modify-write through the parent
    const expected = Buffer.from(baseData);
    Buffer.from('hello').copy(expected, 1000);
    expect((await child.read(0, 128 * KiB)).equals(expected)).to.equal(true);
    const bitmap = await child.blockBitmap(0);
    // Bytes 1000..1004 lie in sector 1 (512..1023): only that sector is in the child.
    expect(bitmap[0]).to.equal(0b0100_0000);
    expect(bitmap.subarray(1).every((x) => x === 0)).to.equal(true);
    const info = await child.info();
    expect(info.parentChain).to.deep.equal(['/base.vhd']);
    await child.close();
  });

  it('opening a child whose parent changed identity is refused', async () => {
    const fs = memfs();
    await (await make(fs, '/base.vhd', 'dynamic')).close();
    await (
      await createVhd('/child.vhd', { type: 'differencing', parentPath: '/base.vhd', provider: fs })
    ).close();
    await fs.remove('/base.vhd');
    await (
      await createVhd('/base.vhd', {
        type: 'dynamic',
        size: MiB,
        blockSize: 64 * KiB,
        provider: fs,
        uniqueId: uid(99),
      })
    ).close();
    try {
      await VhdDisk.open('/child.vhd', { provider: fs });
      expect.fail('opened with the wrong parent');
    } catch (err) {
      expect((err as Error).message).to.match(
        /parent \/base.vhd has unique id .*0063, the child expects .*0001/,
      );
    }
    await fs.remove('/base.vhd');
    try {
      await VhdDisk.open('/child.vhd', { provider: fs });
      expect.fail('opened without a parent');
    } catch (err) {
      expect((err as Error).message).to.match(/parent of \/child.vhd not found \(locators W2ru, W2ku, MacX/);
    }
  });

  it('a moved chain still opens through the relative locator', async () => {
    const fs = memfs();
    await (await make(fs, '/a/base.vhd', 'dynamic')).close();
    const c = await createVhd('/a/sub/child.vhd', {
      type: 'differencing',
      parentPath: '/a/base.vhd',
      provider: fs,
    });
    await c.write(0, Buffer.alloc(512, 7));
    await c.close();
    await fs.rename('/a/base.vhd', '/b/base.vhd');
    await fs.rename('/a/sub/child.vhd', '/b/sub/child.vhd');
    const moved = await VhdDisk.open('/b/sub/child.vhd', { provider: fs });
    expect(moved.parent?.path).to.equal('/b/base.vhd');
    expect((await moved.read(0, 1))[0]).to.equal(7);
    await moved.close();
  });

  it('a child moved away from its parent falls back to the absolute locators', async () => {
    const fs = memfs();
    await (await make(fs, '/vms/base.vhd', 'dynamic')).close();
    await (
      await createVhd('/vms/child.vhd', { type: 'differencing', parentPath: '/vms/base.vhd', provider: fs })
    ).close();
    await fs.rename('/vms/child.vhd', '/elsewhere/deep/child.vhd');
    const moved = await VhdDisk.open('/elsewhere/deep/child.vhd', { provider: fs, readOnly: true });
    expect(moved.parent?.path).to.equal('/vms/base.vhd');
    await moved.close();
  });

  it('concurrent writes and flushes to one disk all land', async () => {
    const fs = memfs();
    await (await make(fs, '/base.vhd', 'dynamic')).close();
    const d = await createVhd('/c.vhd', {
      type: 'differencing',
      parentPath: '/base.vhd',
      blockSize: 4 * KiB,
      provider: fs,
    });
    const model = Buffer.alloc(d.virtualSize);
    const writes = [];
    for (let i = 0; i < 200; i++) {
      const offset = ((i * 7919) % 250) * 4 * KiB + (i % 3) * 100;
      const data = pattern(3000, i);
      data.copy(model, offset);
      writes.push(d.write(offset, data));
      if (i % 50 === 0) writes.push(d.flush());
    }
    // Overlapping writes apply in call order, so the model (applied in order) holds.
    await Promise.all(writes);
    await d.close();
    const again = await VhdDisk.open('/c.vhd', { provider: fs, readOnly: true });
    expect((await again.read(0, again.virtualSize)).equals(model)).to.equal(true);
    await again.close();
  });
});
