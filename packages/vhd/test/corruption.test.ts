import { expect } from 'chai';
import { VhdCorruptError, VhdDisk, checkVhd, createVhd, type MemoryFileSystem } from '../src/index.js';
import { KiB, createDynamic, memfs, pattern } from './helpers.js';

const SIZE = 256 * KiB;
const BLOCK = 32 * KiB;

async function dynamicDisk(fs: MemoryFileSystem): Promise<Buffer> {
  const d = await createDynamic(fs, '/d.vhd', SIZE, BLOCK);
  await d.write(0, pattern(3 * BLOCK, 1));
  await d.close();
  return fs.get('/d.vhd');
}

function corrupt(fs: MemoryFileSystem, image: Buffer, offset: number, value?: number): void {
  const b = Buffer.from(image);
  b[offset] = value ?? b[offset]! ^ 0x55;
  fs.put('/d.vhd', b);
}

async function expectRefused(
  fs: MemoryFileSystem,
  structure: string,
  offset: number,
  reason: RegExp,
): Promise<void> {
  try {
    await VhdDisk.open('/d.vhd', { provider: fs, readOnly: true });
    expect.fail('a corrupt disk opened');
  } catch (err) {
    expect(err).to.be.instanceOf(VhdCorruptError);
    const e = err as VhdCorruptError;
    expect(e.structure).to.equal(structure);
    expect(e.offset).to.equal(offset);
    expect(e.message).to.match(reason);
  }
  const report = await checkVhd('/d.vhd', { provider: fs });
  expect(report.ok).to.equal(false);
  expect(report.issues.some((i) => i.structure === structure && i.offset === offset && i.fatal)).to.equal(
    true,
  );
}

describe('corruption detection', () => {
  it('a bad end footer falls back to the copy at offset 0, and check says so', async () => {
    const fs = memfs();
    const image = await dynamicDisk(fs);
    const end = image.length - 512;
    corrupt(fs, image, end + 30);
    const d = await VhdDisk.open('/d.vhd', { provider: fs, readOnly: true });
    expect((await d.info()).footerSource).to.equal('copy');
    expect((await d.read(0, 3 * BLOCK)).equals(pattern(3 * BLOCK, 1))).to.equal(true);
    await d.close();
    const report = await checkVhd('/d.vhd', { provider: fs });
    expect(report.ok).to.equal(false);
    expect(report.issues[0]).to.deep.include({ structure: 'footer', offset: end, fatal: false });
    expect(report.issues[0]!.message).to.match(/checksum mismatch.*using the footer copy at offset 0/);
  });

  it('both footers bad: refused, naming the footer and its offset', async () => {
    const fs = memfs();
    const image = await dynamicDisk(fs);
    const b = Buffer.from(image);
    b[b.length - 512 + 30]! ^= 1;
    b[30]! ^= 1;
    fs.put('/d.vhd', b);
    await expectRefused(
      fs,
      'footer',
      image.length - 512,
      /checksum mismatch: stored 0x[0-9a-f]{8}, computed/,
    );
  });

  it('a fixed disk with a bad footer is refused (it has no copy)', async () => {
    const fs = memfs();
    const d = await createVhd('/d.vhd', { type: 'fixed', size: SIZE, exactSize: true, provider: fs });
    await d.close();
    corrupt(fs, fs.get('/d.vhd'), SIZE + 3);
    await expectRefused(fs, 'footer', SIZE, /cookie is/);
  });

  it('a bad dynamic header checksum is refused', async () => {
    const fs = memfs();
    corrupt(fs, await dynamicDisk(fs), 512 + 28);
    await expectRefused(fs, 'dynamic header', 512, /checksum mismatch/);
  });

  it('BAT entries pointing past the end or overlapping are refused', async () => {
    const fs = memfs();
    const image = await dynamicDisk(fs);
    const b = Buffer.from(image);
    b.writeUInt32BE(0x00ffffff, 1536 + 4); // entry 1 far past the end
    fs.put('/d.vhd', b);
    await expectRefused(fs, 'BAT', 1536 + 4, /entry 1 points at offset .* past the end/);
    const c = Buffer.from(image);
    c.writeUInt32BE(c.readUInt32BE(1536), 1536 + 8); // entry 2 = entry 0
    fs.put('/d.vhd', c);
    await expectRefused(fs, 'BAT', 1536 + 8, /overlaps entry 0|overlaps entry 2/);
    const m = Buffer.from(image);
    m.writeUInt32BE(2, 1536 + 4); // entry 1 onto the header
    fs.put('/d.vhd', m);
    await expectRefused(fs, 'BAT', 1536 + 4, /overlaps the dynamic header/);
  });

  it('a footer copy that differs from the end footer is reported', async () => {
    const fs = memfs();
    const image = await dynamicDisk(fs);
    const b = Buffer.from(image);
    // Rewrite the copy with another timestamp but a valid checksum.
    const copy = Buffer.from(b.subarray(0, 512));
    copy.writeUInt32BE(copy.readUInt32BE(24) + 1, 24);
    copy.writeUInt32BE(copy.readUInt32BE(64) - 1, 64);
    copy.copy(b, 0);
    fs.put('/d.vhd', b);
    const report = await checkVhd('/d.vhd', { provider: fs });
    expect(report.issues.map((i) => i.message)).to.deep.equal([
      `differs from the footer at offset ${image.length - 512}`,
    ]);
  });

  it('bitmap bits past the virtual size are reported', async () => {
    const fs = memfs();
    const d = await createDynamic(fs, '/d.vhd', 40 * KiB, BLOCK);
    await d.write(36 * KiB, Buffer.alloc(512, 1)); // block 1 covers 32..64 KiB, only 8 KiB of it is disk
    await d.close();
    const b = fs.get('/d.vhd');
    const blockAt = b.readUInt32BE(1536 + 4) * 512;
    b[blockAt + 2] = 0xff; // sectors 16..23 of block 1: past the 40 KiB end
    fs.put('/d.vhd', b);
    const report = await checkVhd('/d.vhd', { provider: fs });
    expect(report.issues.map((i) => i.message)).to.deep.equal([
      'block 1 marks sector 16 present, past the virtual size',
    ]);
  });

  it('a truncated file is refused', async () => {
    const fs = memfs();
    const image = await dynamicDisk(fs);
    fs.put('/d.vhd', image.subarray(0, 1000));
    const d = VhdDisk.open('/d.vhd', { provider: fs });
    try {
      await d;
      expect.fail('opened');
    } catch (err) {
      expect(err).to.be.instanceOf(VhdCorruptError);
    }
  });
});
