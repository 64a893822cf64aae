import { expect } from 'chai';
import { runFarm, SMALL, type FarmOptions } from '../src/index.js';

/** A short farm: 3 daemons, 4 hosts, about a dozen VMs, 30 s of workload. */
const SHORT: Omit<FarmOptions, 'seed'> = { ...SMALL, hosts: 4, vms: 12, chaosMs: 30_000, settleMs: 60_000 };

describe('farm simulator (the real daemons and engines on a virtual clock)', function () {
  this.timeout(120_000);

  it('with faults (host and daemon crashes, partitions, loss, pauses, full disks): no safety violation, no acknowledged create lost', async () => {
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const r = await runFarm({ ...SHORT, seed, converge: false });
      expect(
        r.violations,
        `seed ${seed}: replay with npm run sim:farm -- --seed ${seed} --trace`,
      ).to.deep.equal([]);
      expect(r.stats.acknowledged, `seed ${seed}`).to.be.greaterThan(0);
    }
  });

  it('without faults: every VM ends as wanted on its host', async () => {
    for (const seed of [11, 12]) {
      const r = await runFarm({ ...SHORT, seed, faults: false });
      expect(r.violations, `seed ${seed}`).to.deep.equal([]);
      expect(r.stats.vmsRunning, `seed ${seed}`).to.be.greaterThan(0);
    }
  });

  it('replays a seed exactly', async () => {
    const a = await runFarm({
      ...SHORT,
      seed: 7,
      chaosMs: 15_000,
      settleMs: 5_000,
      converge: false,
      trace: true,
    });
    const b = await runFarm({
      ...SHORT,
      seed: 7,
      chaosMs: 15_000,
      settleMs: 5_000,
      converge: false,
      trace: true,
    });
    expect(a.trace.length).to.be.greaterThan(10);
    expect(b.trace).to.deep.equal(a.trace);
    expect(b.stats).to.deep.equal(a.stats);
  });
});
