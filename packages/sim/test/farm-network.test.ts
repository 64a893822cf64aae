import { expect } from 'chai';
import { FarmSimulation, SMALL, type FarmOptions } from '../src/index.js';

// `sim:farm --network`: the random workload and faults on a farm whose hosts run the agents'
// network, with an NLB cluster of the first VMs and clients at its address.

const SHORT: Omit<FarmOptions, 'seed'> = {
  ...SMALL,
  hosts: 4,
  vms: 12,
  chaosMs: 30_000,
  settleMs: 60_000,
  network: true,
};

describe('farm simulator with host networks (sim:farm --network)', function () {
  this.timeout(300_000);

  it('with faults: no violation (the NLB invariants included), and the cluster has members', async () => {
    for (const seed of [1, 2]) {
      const farm = new FarmSimulation({ ...SHORT, seed });
      const r = await farm.run();
      expect(
        r.violations,
        `seed ${seed}: replay with npm run sim:farm -- --network --seed ${seed} --trace`,
      ).to.deep.equal([]);
      const clusters = [...farm.drillHandle().mostApplied()!.machine.state.nlbClusters.values()];
      expect(clusters.map((c) => c.name)).to.deep.equal(['web']);
      expect(clusters[0]!.members.length, `seed ${seed}`).to.be.at.least(2);
    }
  });

  it('a seed replays the same run, network included', async () => {
    const a = await new FarmSimulation({ ...SHORT, seed: 3, trace: true }).run();
    const b = await new FarmSimulation({ ...SHORT, seed: 3, trace: true }).run();
    expect(a.trace.some((l) => l.includes('joined the NLB cluster'))).to.equal(true);
    expect(b.trace).to.deep.equal(a.trace);
    expect(b.stats).to.deep.equal(a.stats);
  });
});
