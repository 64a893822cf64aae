import { expect } from 'chai';
import { Convergence } from '../src/engine/converge.js';
import { NO_SNAPSHOTS } from '../src/engine/vms.js';
import { makeEngine, mib, vmConfig } from './helpers.js';

const MB = 1_000_000;
const PAGE = 4096;

describe('live migration convergence (QEMU rules, pure)', () => {
  const opts = { downtimeLimitMs: 30, maxRounds: 30, autoConverge: true, thresholdPages: 0 };

  it('stops and copies once what is dirty fits the downtime limit at the bandwidth measured', () => {
    const c = new Convergence(opts);
    // 400 MB in 1 s: 400 000 bytes/ms, so 30 ms moves 12 MB.
    expect(c.afterRound(0, { bytes: 400 * MB, ms: 1_000, dirtyPages: 4_000 }).stop).to.equal(false);
    expect(c.bandwidth).to.equal(400_000);
    const done = c.afterRound(1, { bytes: 16 * MB, ms: 40, dirtyPages: 2_900 });
    expect(done).to.deep.include({ stop: true });
    expect(done.why).to.match(/2900 dirty pages fit the 30 ms downtime limit/);
  });

  it('throttles after two rounds that dirty more than half of what they sent: 20%, then 10% more, at most 99%', () => {
    const c = new Convergence({ ...opts, maxRounds: 100 });
    c.afterRound(0, { bytes: 100 * MB, ms: 1_000, dirtyPages: 40_000 });
    // Each round sends 40 000 pages and as many are dirty again: it never converges.
    const round = (r: number) => c.afterRound(r, { bytes: 40_000 * PAGE, ms: 1_600, dirtyPages: 40_000 });
    round(1);
    expect(c.throttle).to.equal(0);
    round(2);
    expect(c.throttle).to.equal(20);
    round(3);
    round(4);
    expect(c.throttle).to.equal(30);
    for (let r = 5; r < 40; r++) round(r);
    expect(c.throttle).to.equal(99);
  });

  it('a round that dirties less than half of what it sent is not high; without auto-converge nothing is throttled', () => {
    const c = new Convergence({ ...opts, maxRounds: 100 });
    c.afterRound(0, { bytes: 100 * MB, ms: 1_000, dirtyPages: 40_000 });
    for (let r = 1; r < 10; r++) c.afterRound(r, { bytes: 40_000 * PAGE, ms: 4_000, dirtyPages: 19_000 });
    expect(c.throttle).to.equal(0);
    const off = new Convergence({ ...opts, autoConverge: false, maxRounds: 100 });
    for (let r = 0; r < 10; r++) off.afterRound(r, { bytes: PAGE, ms: 1_000, dirtyPages: 40_000 });
    expect(off.throttle).to.equal(0);
  });

  it('stops at the round limit, or under a fixed page threshold when one is given', () => {
    const c = new Convergence({ ...opts, maxRounds: 3 });
    expect(c.afterRound(0, { bytes: PAGE, ms: 1_000, dirtyPages: 1e6 }).stop).to.equal(false);
    expect(c.afterRound(1, { bytes: PAGE, ms: 1_000, dirtyPages: 1e6 }).stop).to.equal(false);
    expect(c.afterRound(2, { bytes: PAGE, ms: 1_000, dirtyPages: 1e6 })).to.deep.equal({
      stop: true,
      why: 'round limit 3',
    });
    const t = new Convergence({ ...opts, thresholdPages: 256 });
    expect(t.afterRound(0, { bytes: 400 * MB, ms: 1, dirtyPages: 300 }).stop).to.equal(false);
    expect(t.afterRound(1, { bytes: PAGE, ms: 1, dirtyPages: 255 }).stop).to.equal(true);
  });

  it('a throttled guest dirties its pages that much slower, and at full speed again once the migration ends', () => {
    const e = makeEngine();
    const workload = {
      bootMs: 100,
      workingSetBytes: mib(64),
      dirtyPagesPerSecond: 1000,
      cpuDemandPercent: 10,
    };
    e.vms.create('v', vmConfig('v', { workload }));
    e.power.change('v', 'VM_ACTION_START');
    e.tick(100);
    const memory = e.vms.memoryOf('v')!;
    const out = e.migration.out('v', 0, 'MIGRATION_KIND_LIVE', NO_SNAPSHOTS, 'm-1', false);
    memory.takeDirty();
    const dirtied = () => {
      e.tick(1_000);
      return memory.takeDirty().length;
    };
    // 1000 random writes a second over 16 384 pages: a few land twice.
    expect(dirtied()).to.be.within(950, 1000);
    out.throttle(50);
    expect(dirtied()).to.be.within(475, 500);
    out.throttle(99);
    expect(dirtied()).to.be.within(5, 10);
    out.abandon('the target went away');
    expect(dirtied()).to.be.within(950, 1000);
  });
});
