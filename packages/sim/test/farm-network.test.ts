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

  it('a member that has not come back when the calm ends is nlb-not-converged (planted: one stopped 5 s before the end)', async () => {
    const o = { ...SHORT, seed: 1, faults: false };
    const farm = new FarmSimulation(o);
    const stop = () => {
      for (const h of farm.hosts.values()) {
        const n = h.network;
        for (const c of n?.config().nlbClusters ?? [])
          for (const m of n!.net.nlbStatus(c.id))
            if (m.state === 'converged' && n!.net.vmState(m.vmId) === 'running') {
              n!.net.nlbControl(c.id, m.vmId, 'stop');
              return m.vmId;
            }
      }
      return undefined;
    };
    let stopped: string | undefined;
    farm.clock.root.set(() => (stopped = stop()), o.chaosMs + o.settleMs - 5_000);
    const r = await farm.run();
    expect(stopped).to.be.a('string');
    expect(r.violations.map((v) => v.property)).to.deep.equal(['nlb-not-converged']);
    expect(r.violations[0]!.detail).to.include(`not converged: ${stopped}`);
    // Without the plant, the same farm converges.
    expect((await new FarmSimulation(o).run()).violations).to.deep.equal([]);
  });

  it('a seed replays the same run, network included', async () => {
    const a = await new FarmSimulation({ ...SHORT, seed: 3, trace: true }).run();
    const b = await new FarmSimulation({ ...SHORT, seed: 3, trace: true }).run();
    expect(a.trace.some((l) => l.includes('joined the NLB cluster'))).to.equal(true);
    expect(b.trace).to.deep.equal(a.trace);
    expect(b.stats).to.deep.equal(a.stats);
  });
});
