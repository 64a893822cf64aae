import { expect } from 'chai';
import { summarize } from '../src/network/traffic.js';
import { allConverged, memberStatuses, nlbFarm, trafficSpec, type FarmMember } from './network-helpers.js';

const three: FarmMember[] = [
  { vm: 'a', host: 'h1', priority: 1 },
  { vm: 'b', host: 'h2', priority: 2 },
  { vm: 'c', host: 'h3', priority: 3 },
];

describe('traffic generator', () => {
  it('nearest-rank percentiles', () => {
    const v = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(summarize(v)).to.deep.equal({ p50: 50, p90: 90, p99: 99, max: 100 });
    expect(summarize([])).to.deep.equal({ p50: 0, p90: 0, p99: 0, max: 0 });
  });

  it('Poisson clients through the switches: every connection answered, shares by weight, latency from the service time', () => {
    const { sim } = nlbFarm({ hosts: 3, members: three, guest: () => ({ serviceTimeMs: 5, workers: 2 }) });
    expect(sim.runUntil(() => allConverged(sim, 3), 10_000)).to.equal(true);
    sim.host('h1').startTraffic('t1', 'ext', 0, trafficSpec({ ratePerSec: 300, durationMs: 20_000 }));
    sim.run(21_000);
    const r = sim.host('h1').trafficReport('t1');
    const before = r.phases.before;
    expect(r.inFlight).to.equal(0);
    // About 300/s for 20 s.
    expect(before.started).to.be.within(5_400, 6_600);
    expect(before.completed).to.equal(before.started);
    expect(before.lost + before.reset).to.equal(0);
    expect(before.members.map((m) => m.member)).to.deep.equal(['a', 'b', 'c']);
    for (const m of before.members) expect(m.share).to.be.closeTo(1 / 3, 0.05);
    // A request takes the service time plus what the open handshake and the switches add (tiny).
    expect(before.latencyMs.p50).to.be.within(5, 6);
  });

  it('a guest that gets less CPU answers slower', () => {
    const { sim } = nlbFarm({
      hosts: 2,
      members: three.slice(0, 2),
      guest: (_h, vm) => ({ serviceTimeMs: vm === 'b' ? 40 : 5, workers: 4 }),
    });
    expect(sim.runUntil(() => allConverged(sim, 2), 10_000)).to.equal(true);
    sim.host('h1').startTraffic('t', 'ext', 0, trafficSpec({ ratePerSec: 50, durationMs: 10_000 }));
    sim.run(12_000);
    const [a, b] = sim.host('h1').trafficReport('t').phases.before.members;
    expect(a!.latencyMs.p50).to.be.within(5, 6);
    expect(b!.latencyMs.p50).to.be.within(40, 41);
  });

  it('counts connections lost on a member whose host fails, before, during and after the fault', () => {
    const { sim } = nlbFarm({
      hosts: 3,
      members: three,
      periodMs: 250,
      threshold: 5,
      guest: () => ({ serviceTimeMs: 50, workers: 64 }),
    });
    expect(sim.runUntil(() => allConverged(sim, 3), 10_000)).to.equal(true);
    const h1 = sim.host('h1');
    // Connections of 10 requests of 50 ms: about a hundred are open at any time.
    h1.startTraffic(
      't',
      'ext',
      0,
      trafficSpec({
        ratePerSec: 200,
        durationMs: 9_000,
        requestsPerConnection: 10,
        rtoMs: 200,
        maxRetries: 3,
      }),
    );
    sim.run(3_000);
    h1.markTrafficPhase('t', 'during');
    sim.kill('h3');
    expect(sim.runUntil(() => allConverged(sim, 2), 5_000)).to.equal(true);
    h1.markTrafficPhase('t', 'after');
    sim.run(10_000);
    const r = h1.trafficReport('t');
    // Only the connections open on c when its host died fail: once a and b own c's buckets, the
    // retransmitted requests reach one of them, which knows no such connection and resets it.
    const before = new Map(r.phases.before.members.map((m) => [m.member, m]));
    const failed = (m: string) => before.get(m)!.lostConnections + before.get(m)!.resetConnections;
    expect(before.get('c')!.resetConnections).to.be.within(15, 60);
    expect(failed('a') + failed('b')).to.equal(0);
    expect(r.phases.before.lost + r.phases.before.reset).to.equal(failed('c'));
    // New connections in c's buckets during the outage retry (200, 400, 800, 1600 ms) for longer
    // than the 1.25 s it takes to drop c, so a or b takes them: none lost.
    expect(r.phases.during.lost + r.phases.during.reset).to.equal(0);
    expect(r.phases.during.completed).to.be.greaterThan(0);
    expect(r.phases.during.latencyMs.max).to.be.greaterThan(1_000);
    expect(r.phases.after.lost + r.phases.after.reset).to.equal(0);
    expect(r.phases.after.members.map((m) => m.member)).to.deep.equal(['a', 'b']);
    for (const m of r.phases.after.members) expect(m.share).to.be.closeTo(0.5, 0.08);
    expect(memberStatuses(sim).map((s) => s.view.join())).to.deep.equal(['1,2', '1,2']);
  });
});
