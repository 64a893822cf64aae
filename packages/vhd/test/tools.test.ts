import { expect } from 'chai';
import { VhdDisk, checkVhd, compactVhd, createVhd, mergeVhd, resizeVhd } from '../src/index.js';
import { KiB, createDynamic, memfs, pattern } from './helpers.js';

const SIZE = 256 * KiB;
const BLOCK = 32 * KiB;

describe('merge, compact, resize', () => {
  it("merge writes the child's sectors into the parent and removes the child", async () => {
    const fs = memfs();
    const p = await createDynamic(fs, '/p.vhd', SIZE, BLOCK);
    const base = pattern(SIZE, 1);
    await p.write(0, base);
    await p.close();
    const c = await createVhd('/c.vhd', { type: 'differencing', parentPath: '/p.vhd', provider: fs });
    await c.write(BLOCK - 700, Buffer.alloc(1500, 0xee)); // unaligned, across two blocks
    await c.close();
    const expected = Buffer.from(base);
    expected.fill(0xee, BLOCK - 700, BLOCK + 800);
    const progress: number[] = [];
    const r = await mergeVhd('/c.vhd', { provider: fs, onProgress: (done) => progress.push(done) });
    expect(r).to.deep.equal({
      targetPath: '/p.vhd',
      mergedPath: '/c.vhd',
      parentPath: '/p.vhd',
      blocksMerged: 2,
      bytesMerged: 2048,
    });
    expect(progress).to.deep.equal([1024, 2048]); // the child's sectors, block by block
    expect(await fs.exists('/c.vhd')).to.equal(false);
    const merged = await VhdDisk.open('/p.vhd', { provider: fs, readOnly: true });
    expect((await merged.read(0, SIZE)).equals(expected)).to.equal(true);
    await merged.close();
  });

  it('merge refuses a disk without a parent', async () => {
    const fs = memfs();
    await (await createVhd('/p.vhd', { type: 'dynamic', size: SIZE, provider: fs })).close();
    try {
      await mergeVhd('/p.vhd', { provider: fs });
      expect.fail('merged');
    } catch (err) {
      expect((err as Error).message).to.match(/is a dynamic disk: only differencing disks merge/);
    }
  });

  it('compact drops all-zero blocks and keeps data', async () => {
    const fs = memfs();
    const d = await createDynamic(fs, '/d.vhd', SIZE, BLOCK);
    const data = pattern(BLOCK, 2);
    await d.write(0, Buffer.alloc(2 * BLOCK)); // two zero blocks
    await d.write(5 * BLOCK, data);
    await d.write(7 * BLOCK + 512, Buffer.alloc(512)); // a zero sector in an otherwise unwritten block
    await d.close();
    const r = await compactVhd('/d.vhd', { provider: fs });
    expect(r.blocksBefore).to.equal(4);
    expect(r.blocksAfter).to.equal(1);
    expect(r.fileSizeAfter).to.be.lessThan(r.fileSizeBefore);
    expect(fs.get('/d.vhd').length).to.equal(r.fileSizeAfter);
    const after = await VhdDisk.open('/d.vhd', { provider: fs });
    const expected = Buffer.alloc(SIZE);
    data.copy(expected, 5 * BLOCK);
    expect((await after.read(0, SIZE)).equals(expected)).to.equal(true);
    expect((await after.info()).allocatedBlocks).to.equal(1);
    // Still writable after the rewrite: a new block goes after the kept one.
    await after.write(0, Buffer.alloc(512, 9));
    await after.close();
    expect((await checkVhd('/d.vhd', { provider: fs })).issues).to.deep.equal([]);
  });

  it("compact keeps a differencing child's zero sectors (they hide the parent)", async () => {
    const fs = memfs();
    const p = await createVhd('/p.vhd', { type: 'fixed', size: SIZE, exactSize: true, provider: fs });
    await p.write(0, Buffer.alloc(SIZE, 5));
    await p.close();
    const c = await createVhd('/c.vhd', {
      type: 'differencing',
      parentPath: '/p.vhd',
      blockSize: BLOCK,
      provider: fs,
    });
    await c.write(0, Buffer.alloc(1024));
    await c.close();
    const r = await compactVhd('/c.vhd', { provider: fs });
    expect(r.blocksAfter).to.equal(1);
    const after = await VhdDisk.open('/c.vhd', { provider: fs, readOnly: true });
    const got = await after.read(0, 2048);
    expect(got.subarray(0, 1024).every((x) => x === 0) && got.subarray(1024).every((x) => x === 5)).to.equal(
      true,
    );
    await after.close();
  });

  it('resize grows fixed and dynamic disks, in place and past the BAT', async () => {
    const fs = memfs();
    for (const type of ['fixed', 'dynamic'] as const) {
      const path = `/${type}.vhd`;
      const d = await createVhd(path, {
        type,
        size: SIZE,
        exactSize: true,
        provider: fs,
        ...(type === 'dynamic' ? { blockSize: BLOCK } : {}),
      });
      const data = pattern(SIZE, 3);
      await d.write(0, data);
      await d.close();
      // Dynamic: 256 KiB + 512 still fits the BAT's sector of 128 entries: in place.
      for (const size of [SIZE + 512, SIZE * 200]) {
        expect(await resizeVhd(path, size, { provider: fs, exactSize: true })).to.have.property(
          'newSize',
          size,
        );
        const r = await VhdDisk.open(path, { provider: fs });
        expect(r.virtualSize).to.equal(size);
        expect((await r.read(0, SIZE)).equals(data)).to.equal(true);
        expect(
          (await r.read(size - 512, 512)).every((x) => x === 0),
          'the new tail reads zero',
        ).to.equal(true);
        await r.write(size - 512, Buffer.alloc(512, 1));
        await r.close();
        expect((await checkVhd(path, { provider: fs })).issues).to.deep.equal([]);
      }
    }
  });

  it('resize shrinks a dynamic disk only over unallocated space, never a fixed one', async () => {
    const fs = memfs();
    const d = await createDynamic(fs, '/d.vhd', SIZE, BLOCK);
    await d.write(3 * BLOCK + 1024, Buffer.alloc(512, 1));
    await d.close();
    try {
      await resizeVhd('/d.vhd', 3 * BLOCK + 1024, { provider: fs, exactSize: true });
      expect.fail('shrank over data');
    } catch (err) {
      expect((err as Error).message).to.match(/block 3 holds data past the new end/);
    }
    await resizeVhd('/d.vhd', 3 * BLOCK + 1536, { provider: fs, exactSize: true });
    const r = await VhdDisk.open('/d.vhd', { provider: fs, readOnly: true });
    expect(r.virtualSize).to.equal(3 * BLOCK + 1536);
    expect((await r.read(3 * BLOCK + 1024, 512)).every((x) => x === 1)).to.equal(true);
    await r.close();
    await (await createVhd('/f.vhd', { type: 'fixed', size: SIZE, provider: fs })).close();
    try {
      await resizeVhd('/f.vhd', SIZE / 2, { provider: fs });
      expect.fail('shrank a fixed disk');
    } catch (err) {
      expect((err as Error).message).to.match(/cannot shrink/);
    }
  });
});
