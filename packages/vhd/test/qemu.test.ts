import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhdDisk, checkVhd, createVhd, mergeIntoChildVhd, resizeVhd } from '../src/index.js';
import { KiB, MiB, pattern } from './helpers.js';

/** Interop with Debian's qemu-utils (qemu-img, qemu-io). CI installs them; elsewhere these skip. */
const qemuPresent = spawnSync('qemu-img', ['--version']).status === 0;

function qemu(tool: string, ...args: string[]): string {
  return execFileSync(tool, args, { encoding: 'utf8' });
}

/** Writes spread over the disk: the start, a block boundary, and the very end. */
function writesFor(size: number): { offset: number; data: Buffer }[] {
  return [
    { offset: 0, data: pattern(64 * KiB, 1) },
    { offset: 2 * MiB - 1000, data: pattern(5000, 2) },
    { offset: size - 4096, data: pattern(4096, 3) },
  ];
}

describe('qemu-img interop', function () {
  let dir: string;

  before(function () {
    if (!qemuPresent) {
      console.log('    qemu-img not found: skipping the interop tests (apt-get install -y qemu-utils)');
      this.skip();
    }
    dir = mkdtempSync(join(tmpdir(), 'vhd-qemu-'));
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const type of ['fixed', 'dynamic'] as const) {
    it(`a ${type} disk made here passes qemu-img info, check and convert byte for byte`, async () => {
      const file = join(dir, `ours-${type}.vhd`);
      const disk = await createVhd(file, { type, size: 10 * MiB });
      const expected = Buffer.alloc(disk.virtualSize);
      for (const w of writesFor(disk.virtualSize)) {
        await disk.write(w.offset, w.data);
        w.data.copy(expected, w.offset);
      }
      await disk.close();

      // Fixed VHDs have nothing at offset 0 to probe, so qemu needs `-f vpc` to see them.
      const info = JSON.parse(qemu('qemu-img', 'info', '--output=json', '-f', 'vpc', file));
      expect(info.format).to.equal('vpc');
      expect(info['virtual-size']).to.equal(expected.length);
      // qemu-img has no check for vpc: it exits 63 saying so. Anything else is a failure.
      const check = spawnSync('qemu-img', ['check', '-f', 'vpc', file], { encoding: 'utf8' });
      expect([0, 63], check.stderr).to.include(check.status);
      if (check.status === 63) expect(check.stderr).to.match(/does not support checks/);

      const raw = join(dir, `ours-${type}.raw`);
      qemu('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', file, raw);
      expect(readFileSync(raw).equals(expected)).to.equal(true);
    });
  }

  for (const subformat of ['dynamic', 'fixed'] as const) {
    it(`a ${subformat} disk made by qemu-img create opens, reads and writes here`, async () => {
      const file = join(dir, `qemu-${subformat}.vhd`);
      qemu('qemu-img', 'create', '-q', '-f', 'vpc', '-o', `subformat=${subformat}`, file, '10M');
      qemu('qemu-io', '-f', 'vpc', '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0xcd 3M 512k', file);
      const disk = await VhdDisk.open(file);
      expect(disk.type).to.equal(subformat);
      const info = JSON.parse(qemu('qemu-img', 'info', '--output=json', '-f', 'vpc', file));
      expect(disk.virtualSize).to.equal(info['virtual-size']);
      const expected = Buffer.alloc(disk.virtualSize);
      expected.fill(0xab, 0, MiB);
      expected.fill(0xcd, 3 * MiB, 3 * MiB + 512 * KiB);
      expect((await disk.read(0, disk.virtualSize)).equals(expected)).to.equal(true);
      // Our writes into qemu's file read back through qemu.
      const more = pattern(3 * MiB, 9);
      await disk.write(5 * MiB + 512, more);
      more.copy(expected, 5 * MiB + 512);
      await disk.close();
      expect((await checkVhd(file)).issues).to.deep.equal([]);
      const raw = join(dir, `qemu-${subformat}.raw`);
      qemu('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', file, raw);
      expect(readFileSync(raw).equals(expected)).to.equal(true);
    });
  }

  it('a child that absorbed its base (merge into the child: header moved to the end) reads right in qemu', async () => {
    const base = join(dir, 'absorbed-base.vhd');
    const child = join(dir, 'absorbed.vhd');
    const b = await createVhd(base, { type: 'dynamic', size: 6 * MiB, blockSize: 512 * KiB });
    const expected = Buffer.alloc(b.virtualSize);
    const first = pattern(2 * MiB, 4);
    await b.write(MiB, first);
    first.copy(expected, MiB);
    await b.close();
    const c = await createVhd(child, { type: 'differencing', parentPath: base });
    const second = pattern(MiB, 5);
    await c.write(2 * MiB + 512, second);
    second.copy(expected, 2 * MiB + 512);
    await c.close();
    await mergeIntoChildVhd(child);
    const info = JSON.parse(qemu('qemu-img', 'info', '--output=json', '-f', 'vpc', child));
    expect(info['virtual-size']).to.equal(expected.length);
    const raw = join(dir, 'absorbed.raw');
    qemu('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', child, raw);
    expect(readFileSync(raw).equals(expected)).to.equal(true);
  });

  it('a dynamic disk grown past its BAT (table moved to the end) still reads right in qemu', async () => {
    const file = join(dir, 'grown.vhd');
    const d = await createVhd(file, { type: 'dynamic', size: 4 * MiB, blockSize: 512 * KiB });
    await d.write(0, Buffer.alloc(MiB, 0x11));
    await d.close();
    const { newSize } = await resizeVhd(file, 300 * MiB);
    const g = await VhdDisk.open(file);
    await g.write(newSize - MiB, Buffer.alloc(MiB, 0x22));
    await g.close();
    expect((await checkVhd(file)).issues).to.deep.equal([]);
    const info = JSON.parse(qemu('qemu-img', 'info', '--output=json', file));
    expect(info['virtual-size']).to.equal(newSize);
    const raw = join(dir, 'grown.raw');
    qemu('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', file, raw);
    const expected = Buffer.alloc(newSize);
    expected.fill(0x11, 0, MiB);
    expected.fill(0x22, newSize - MiB);
    expect(readFileSync(raw).equals(expected)).to.equal(true);
  });

  it("differencing: our chain reads the merged content; qemu-img sees only the child's blocks", async () => {
    const baseFile = join(dir, 'chain-base.vhd');
    const childFile = join(dir, 'chain-child.vhd');
    const base = await createVhd(baseFile, { type: 'dynamic', size: 8 * MiB });
    await base.write(0, Buffer.alloc(MiB, 0xab));
    await base.close();
    const child = await createVhd(childFile, { type: 'differencing', parentPath: baseFile });
    await child.write(512, Buffer.alloc(512, 0xcd));
    await child.close();

    const merged = Buffer.alloc(MiB, 0xab);
    merged.fill(0xcd, 512, 1024);
    const chain = await VhdDisk.open(childFile, { readOnly: true });
    expect((await chain.read(0, MiB)).equals(merged)).to.equal(true);
    await chain.close();

    // qemu 7.2's vpc driver opens a differencing VHD as a plain dynamic one: no parent,
    // no bitmap. What the child never wrote reads as zero there.
    const info = JSON.parse(qemu('qemu-img', 'info', '--output=json', childFile));
    expect(info.format).to.equal('vpc');
    expect(info['backing-filename']).to.equal(undefined);
    const raw = join(dir, 'chain-child.raw');
    qemu('qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', childFile, raw);
    const seen = readFileSync(raw).subarray(0, MiB);
    const childOnly = Buffer.alloc(MiB);
    childOnly.fill(0xcd, 512, 1024);
    expect(seen.equals(childOnly)).to.equal(true);
  });
});
