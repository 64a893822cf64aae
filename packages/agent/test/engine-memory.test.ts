import { expect } from 'chai';
import { fillPages, GuestMemory, pageContent } from '../src/engine/memory.js';
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

  /** The content as specified: xorshift32 (13, 17, 5) from the mixed seed, in unsigned arithmetic. */
  function specified(vmSeed: number, page: number, version: number): Buffer {
    const out = Buffer.alloc(4096);
    if (version === 0) return out;
    let x = ((vmSeed ^ Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b)) >>> 0) as number;
    x = Math.imul(x ^ (x >>> 16), 0x7feb352d) >>> 0;
    if (x === 0) x = 0x1234567;
    for (let i = 0; i < 1024; i++) {
      x = (x ^ (x << 13)) >>> 0;
      x = (x ^ (x >>> 17)) >>> 0;
      x = (x ^ (x << 5)) >>> 0;
      out.writeUInt32LE(x, i * 4);
    }
    return out;
  }

  it('page content is the specified xorshift stream; a batch of pages is filled the same way', () => {
    const cases: [number, number, number][] = [
      [1, 5, 1],
      [0xdeadbeef, 0, 0xffffffff],
      [7, 2 ** 32 - 1, 3],
      [0, 123456, 77],
    ];
    for (const [seed, page, version] of cases)
      expect(
        pageContent(seed, page, version).equals(specified(seed, page, version)),
        `${seed} ${page}`,
      ).to.equal(true);
    // 11 pages: two groups of four (one holding a zero page) and three left over.
    const pages = [9, 3, 100000, 17, 5, 6, 7, 8, 400, 401, 2 ** 20];
    const versions = [1, 2, 3, 4, 5, 0, 7, 8, 1, 0xffffffff, 2];
    const out = Buffer.alloc(pages.length * 4096 + 8);
    fillPages(42, pages, versions, pages.length, out, 8);
    pages.forEach((p, k) =>
      expect(
        out.subarray(8 + k * 4096, 8 + (k + 1) * 4096).equals(specified(42, p, versions[k]!)),
        `page ${p}`,
      ).to.equal(true),
    );
    expect(() => fillPages(42, [1], [1], 1, out, 2)).to.throw(RangeError, /4-byte aligned/);
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
