import { expect } from 'chai';
import { fillPages, GuestMemory, holdsPage, holdsPageV1, pageContent } from '../src/engine/memory.js';
import { decodeDeviceState } from '../src/engine/partition.js';
import { makeEngine, mib, vmConfig } from './helpers.js';

describe('guest memory', () => {
  it('page content is a function of (VM, page, version); version 0 is zero', () => {
    const a = pageContent(1, 5, 1);
    expect(pageContent(1, 5, 1).equals(a)).to.equal(true);
    expect(pageContent(1, 5, 2).equals(a)).to.equal(false);
    expect(pageContent(2, 5, 1).equals(a)).to.equal(false);
    expect(pageContent(1, 6, 1).equals(a)).to.equal(false);
    expect(pageContent(1, 5, 0).every((b) => b === 0)).to.equal(true);
  });

  /** The mixed seed of (VM, page, version), as specified. */
  function mixed(vmSeed: number, page: number, version: number): number {
    let x = ((vmSeed ^ Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b)) >>> 0) as number;
    x = Math.imul(x ^ (x >>> 16), 0x7feb352d) >>> 0;
    return x === 0 ? 0x1234567 : x;
  }

  /** `words` words of the xorshift32 (13, 17, 5) stream from `x`, in unsigned arithmetic, little-endian. */
  function xorshift(x: number, words: number): Buffer {
    const out = Buffer.alloc(words * 4);
    for (let i = 0; i < words; i++) {
      x = (x ^ (x << 13)) >>> 0;
      x = (x ^ (x >>> 17)) >>> 0;
      x = (x ^ (x << 5)) >>> 0;
      out.writeUInt32LE(x, i * 4);
    }
    return out;
  }

  /**
   * The content as specified (version 2): u32 page and u32 version, big-endian, then 4088 bytes
   * of the VM's pool (its xorshift stream from mixed(seed, -1, 0)) from word
   * mixed(seed, page, version) mod 2^18.
   */
  function specified(vmSeed: number, page: number, version: number): Buffer {
    const out = Buffer.alloc(4096);
    if (version === 0) return out;
    out.writeUInt32BE(page, 0);
    out.writeUInt32BE(version, 4);
    const from = (mixed(vmSeed, page, version) % 2 ** 18) * 4;
    xorshift(mixed(vmSeed, -1, 0), 2 ** 18 + 1022).copy(out, 8, from, from + 4088);
    return out;
  }

  it('page content is as specified; a batch of pages is filled the same way and checked in place', () => {
    const cases: [number, number, number][] = [
      [1, 5, 1],
      [0xdeadbeef, 0, 0xffffffff],
      [7, 2 ** 32 - 1, 3],
      [0, 123456, 77],
    ];
    for (const [seed, page, version] of cases) {
      const content = pageContent(seed, page, version);
      expect(content.equals(specified(seed, page, version)), `${seed} ${page}`).to.equal(true);
      expect(holdsPage(seed, page, version, content)).to.equal(true);
      // Any byte changed, in the stamp or the body, and the page is refused.
      for (const at of [0, 7, 8, 4095]) {
        const bad = Buffer.from(content);
        bad[at]! ^= 0x40;
        expect(holdsPage(seed, page, version, bad), `byte ${at}`).to.equal(false);
      }
      expect(holdsPage(seed, page, version + 1, content)).to.equal(false);
    }
    // 11 pages, a zero page among them, at an odd offset.
    const pages = [9, 3, 100000, 17, 5, 6, 7, 8, 400, 401, 2 ** 20];
    const versions = [1, 2, 3, 4, 5, 0, 7, 8, 1, 0xffffffff, 2];
    const out = Buffer.alloc(pages.length * 4096 + 3);
    fillPages(42, pages, versions, pages.length, out, 3);
    pages.forEach((p, k) => {
      const at = 3 + k * 4096;
      expect(out.subarray(at, at + 4096).equals(specified(42, p, versions[k]!)), `page ${p}`).to.equal(true);
      expect(holdsPage(42, p, versions[k]!, out, at)).to.equal(true);
    });
    expect(holdsPage(42, 6, 0, Buffer.alloc(4096, 1))).to.equal(false);
  });

  it('version 1 contents (saved-state files before version 2) are a whole xorshift stream per page', () => {
    const v1 = xorshift(mixed(42, 5, 3), 1024);
    expect(holdsPageV1(42, 5, 3, v1)).to.equal(true);
    expect(holdsPageV1(42, 5, 4, v1)).to.equal(false);
    expect(holdsPageV1(42, 5, 0, Buffer.alloc(4096))).to.equal(true);
  });

  it('tracks dirty pages sparsely and the hash follows every write', () => {
    const m = new GuestMemory('vm-1', 1 << 20);
    const dev = Buffer.from('d');
    const empty = m.stateHash(dev);
    m.write(7);
    m.write(1_000_000);
    m.write(7);
    expect(m.residentPages).to.equal(2);
    expect(m.versionOf(7)).to.equal(2);
    const h = m.stateHash(dev);
    expect(h).to.not.equal(empty);
    expect(m.takeDirty()).to.deep.equal([7, 1_000_000]);
    expect(m.takeDirty()).to.deep.equal([]);
    const copy = new GuestMemory('vm-1', 1 << 20);
    copy.install(7, 2);
    copy.install(1_000_000, 1);
    expect(copy.stateHash(dev)).to.equal(h);
    expect(copy.stateHash(Buffer.from('e'))).to.not.equal(h);
  });

  it('a running workload dirties pages at its rate, deterministically for a seed', () => {
    const run = (seed: number) => {
      const e = makeEngine({ seed });
      e.vms.create(
        'v',
        vmConfig('v', {
          workload: {
            bootMs: 100,
            workingSetBytes: mib(64),
            dirtyPagesPerSecond: 1000,
            cpuDemandPercent: 10,
          },
        }),
      );
      e.power.change('v', 'VM_ACTION_START');
      e.tick(100);
      const m = e.vms.memoryOf('v')!;
      m.takeDirty();
      e.tick(500);
      return { dirty: m.takeDirty().length, hash: e.vms.stateHash('v').sha256 };
    };
    const a = run(1);
    expect(a.dirty).to.be.within(450, 500);
    expect(run(1)).to.deep.equal(a);
    expect(run(2).hash).to.not.equal(a.hash);
  });

  it('save then restore (engine side) keeps the state hash', () => {
    const e = makeEngine();
    e.vms.create(
      'v',
      vmConfig('v', { workload: { bootMs: 100, workingSetBytes: mib(16), dirtyPagesPerSecond: 5000 } }),
    );
    e.power.change('v', 'VM_ACTION_START');
    e.tick(1_000);
    const before = e.vms.stateHash('v').sha256;
    e.power.change('v', 'VM_ACTION_SAVE');
    const save = e.takeEffects().find((x) => x.kind === 'save')!;
    if (save.kind !== 'save') throw new Error('no save');
    // What the saver writes: every resident page with its version, and the device state.
    const pages = save.memory.residentPageNumbers().map((p) => [p, save.memory.versionOf(p)] as const);
    save.saved(save.memory.stateHash(save.deviceState));
    expect(e.vms.get('v').status!.state).to.equal('VM_STATE_SAVED');
    expect(e.vms.stateHash('v').sha256).to.equal(before);
    e.tick(5_000);
    e.power.change('v', 'VM_ACTION_START');
    const restore = e.takeEffects().find((x) => x.kind === 'restore')!;
    if (restore.kind !== 'restore') throw new Error('no restore');
    const m = new GuestMemory('v', restore.totalPages);
    for (const [p, v] of pages) m.install(p, v);
    restore.restored(m, decodeDeviceState(save.deviceState));
    expect(e.vms.get('v').status!.state).to.equal('VM_STATE_RUNNING');
    expect(e.vms.stateHash('v').sha256).to.equal(before);
  });
});
