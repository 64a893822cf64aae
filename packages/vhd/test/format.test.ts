import { expect } from 'chai';
import {
  DiskType,
  FOOTER_SIZE,
  decodeDynamicHeader,
  decodeFooter,
  encodeDynamicHeader,
  encodeFooter,
  formatSize,
  geometryForSectors,
  geometrySectors,
  newDynamicHeader,
  newFooter,
  parseSize,
  roundSizeToGeometry,
} from '../src/index.js';
import { vhdChecksum } from '../src/checksum.js';
import { getBit, runLength, setBits, bitmapSizeFor } from '../src/bitmap.js';
import { buildParentLocators, locatorToPath } from '../src/parent-locator.js';
import { MiB, uid } from './helpers.js';

describe('format structures', () => {
  it("checksum is the one's complement of the byte sum, skipping the checksum field", () => {
    const b = Buffer.from([1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 5]);
    expect(vhdChecksum(b, 4)).to.equal(~15 >>> 0);
  });

  it('footer round-trips and its checksum covers every byte', () => {
    const f = newFooter({
      diskType: DiskType.Dynamic,
      size: 10 * MiB,
      geometry: geometryForSectors((10 * MiB) / 512),
      timestamp: 12345,
      uniqueId: uid(7),
      creatorApplication: 'hyfm',
    });
    const bytes = encodeFooter(f);
    expect(bytes.length).to.equal(FOOTER_SIZE);
    expect(bytes.toString('latin1', 0, 8)).to.equal('conectix');
    const back = decodeFooter(bytes);
    expect(back.ok).to.equal(true);
    if (back.ok) {
      expect(back.footer.currentSize).to.equal(10 * MiB);
      expect(back.footer.dataOffset).to.equal(512n);
      expect(back.footer.uniqueId.equals(uid(7))).to.equal(true);
      expect(back.footer.features).to.equal(2);
      expect(back.footer.formatVersion).to.equal(0x10000);
    }
    bytes[100] = bytes[100]! ^ 1;
    const bad = decodeFooter(bytes);
    expect(bad.ok).to.equal(false);
    if (!bad.ok) expect(bad.reason).to.match(/checksum mismatch/);
  });

  it('dynamic header round-trips with a UTF-16BE parent name and locators', () => {
    const h = newDynamicHeader({ tableOffset: 1536, maxTableEntries: 5, blockSize: 2 * MiB });
    h.parentName = '/var/lib/vms/bäse.vhd';
    h.parentUniqueId = uid(3);
    h.parentLocators = [{ platformCode: 0x57327275, dataSpace: 1, dataLength: 20, dataOffset: 2048 }];
    const bytes = encodeDynamicHeader(h);
    expect(bytes.toString('latin1', 0, 8)).to.equal('cxsparse');
    expect(bytes.subarray(64, 66).equals(Buffer.from([0, 0x2f]))).to.equal(true); // '/' in UTF-16BE
    const back = decodeDynamicHeader(bytes);
    expect(back.ok).to.equal(true);
    if (back.ok) {
      expect(back.header.parentName).to.equal(h.parentName);
      expect(back.header.parentLocators).to.deep.equal(h.parentLocators);
      expect(back.header.blockSize).to.equal(2 * MiB);
    }
    bytes[40] = bytes[40]! ^ 0x10;
    expect(decodeDynamicHeader(bytes).ok).to.equal(false);
  });

  it('computes CHS geometry as the spec does', () => {
    // 127 GiB and beyond hits the maximum geometry.
    expect(geometryForSectors(65535 * 16 * 255 + 10)).to.deep.equal({
      cylinders: 65535,
      heads: 16,
      sectorsPerTrack: 255,
    });
    // qemu-img create -f vpc 10M makes 302/4/17, the same as ours.
    expect(roundSizeToGeometry(10 * MiB).geometry).to.deep.equal({
      cylinders: 302,
      heads: 4,
      sectorsPerTrack: 17,
    });
    expect(roundSizeToGeometry(10 * MiB).size).to.equal(10514432);
  });

  it('rounded sizes always equal their geometry', () => {
    for (const mb of [1, 3, 10, 100, 511, 1024, 4096, 60000]) {
      const r = roundSizeToGeometry(mb * MiB);
      expect(r.size).to.be.at.least(mb * MiB);
      expect(geometrySectors(r.geometry) * 512).to.equal(r.size);
    }
  });

  it('bitmaps put sector 0 in the top bit of byte 0', () => {
    const bm = Buffer.alloc(bitmapSizeFor(2 * MiB));
    expect(bm.length).to.equal(512);
    expect(bitmapSizeFor(64 * 1024)).to.equal(512);
    expect(setBits(bm, 0, 1)).to.equal(true);
    expect(bm[0]).to.equal(0x80);
    expect(setBits(bm, 0, 1)).to.equal(false);
    setBits(bm, 9, 20);
    expect(getBit(bm, 8)).to.equal(false);
    expect(getBit(bm, 9)).to.equal(true);
    expect(runLength(bm, 9, 100)).to.equal(20);
    expect(runLength(bm, 29, 4000)).to.equal(4000);
  });

  it('parent locators resolve back to the parent, relative first', () => {
    const locs = buildParentLocators('/vms/a/child.vhd', '/vms/base/parent disk.vhd');
    const paths = locs.map((l) => locatorToPath(l.platformCode, l.data, '/vms/a/child.vhd'));
    expect(paths).to.deep.equal([
      '/vms/base/parent disk.vhd',
      '/vms/base/parent disk.vhd',
      '/vms/base/parent disk.vhd',
    ]);
    expect(locs[0]!.data.toString('utf16le')).to.equal('..\\base\\parent disk.vhd');
    expect(locs[2]!.data.toString('utf8')).to.equal('file:///vms/base/parent%20disk.vhd');
    // A moved folder still resolves through the relative locator.
    expect(locatorToPath(locs[0]!.platformCode, locs[0]!.data, '/moved/a/child.vhd')).to.equal(
      '/moved/base/parent disk.vhd',
    );
    expect(locatorToPath(0x57326b75, Buffer.from('C:\\vms\\p.vhd', 'utf16le'), '/x/c.vhd')).to.equal(
      undefined,
    );
  });

  it('parses sizes and names the field on bad input', () => {
    expect(parseSize('10G')).to.equal(10 * 1024 ** 3);
    expect(parseSize('512M')).to.equal(512 * MiB);
    expect(parseSize('4096')).to.equal(4096);
    expect(parseSize('1.5K')).to.equal(1536);
    expect(() => parseSize('ten', '--size')).to.throw(/--size: "ten" is not a size/);
    expect(() => parseSize('0')).to.throw(/must be positive/);
    expect(formatSize(10 * MiB)).to.equal('10 MiB');
  });
});
