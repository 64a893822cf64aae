import { expect } from 'chai';
import { BUCKETS, bucketOf, quotas, rebalance } from '../src/network/nlb/buckets.js';
import { DEFAULT_PORT_RULE, type PortRule } from '../src/network/nlb/config.js';
import type { Heartbeat } from '../src/network/nlb/heartbeat.js';
import { NlbMember } from '../src/network/nlb/member.js';
import { Scheduler } from '../src/network/scheduler.js';
import type { NetworkSim } from '../src/network/sim.js';
import {
  allConverged,
  ip,
  memberStatuses,
  nlbCluster,
  nlbFarm,
  nlbMember,
  openPacket,
  type FarmMember,
} from './network-helpers.js';

/** Every member object of the farm's cluster, from the hosts that are up. */
function members(sim: NetworkSim): NlbMember[] {
  return [...sim.hosts]
    .filter(([id]) => !sim.isDown(id))
    .flatMap(([, h]) => h.nlbStatus('web').map((s) => h.nlbMember('web', s.vmId)!));
}

/** Offers `n` new connections from random clients to every member; counts who took each. */
function share(sim: NetworkSim, n: number, seed = 1, dstPort = 80): Map<string, number> {
  const ms = members(sim);
  const taken = new Map<string, number>();
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const client = ip('100.0.0.0') + (x >>> 8);
    const port = 1024 + ((x & 0xffff) % 60000);
    const takers = ms.filter((m) => m.accepts(openPacket(client, port, i + 1, dstPort)));
    expect(takers.length, `connection ${i} taken by ${takers.length} members`).to.equal(1);
    taken.set(takers[0]!.vmId, (taken.get(takers[0]!.vmId) ?? 0) + 1);
  }
  return taken;
}

function converge(sim: NetworkSim, expect_: number, maxMs = 20_000): void {
  expect(
    sim.runUntil(() => allConverged(sim, expect_), maxMs),
    'members converge',
  ).to.equal(true);
}

const NONE_RULE: PortRule = { ...DEFAULT_PORT_RULE, affinity: 'none' };

describe('NLB buckets', () => {
  it('60 buckets shared by load weight: each member gets weight / total weight of them', () => {
    expect(BUCKETS).to.equal(60);
    expect([
      ...quotas(
        new Map([
          [1, 50],
          [2, 50],
          [3, 50],
        ]),
      ).values(),
    ]).to.deep.equal([20, 20, 20]);
    expect([
      ...quotas(
        new Map([
          [1, 30],
          [2, 70],
        ]),
      ).values(),
    ]).to.deep.equal([18, 42]);
    expect([
      ...quotas(
        new Map([
          [1, 100],
          [2, 0],
        ]),
      ).values(),
    ]).to.deep.equal([60, 0]);
    expect([
      ...quotas(
        new Map([
          [1, 0],
          [2, 0],
        ]),
      ).values(),
    ]).to.deep.equal([0, 0]);
    const seven = quotas(new Map([1, 2, 3, 4, 5, 6, 7].map((p) => [p, 50])));
    expect([...seven.values()].reduce((a, b) => a + b)).to.equal(60);
    for (const q of seven.values()) expect(q).to.be.oneOf([8, 9]);
  });

  it('a new map keeps every bucket it can: only the lost member’s buckets move', () => {
    const before = rebalance(
      undefined,
      new Map([
        [1, 50],
        [2, 50],
        [3, 50],
      ]),
    );
    const after = rebalance(
      before,
      new Map([
        [1, 50],
        [3, 50],
      ]),
    );
    for (let b = 0; b < BUCKETS; b++)
      if (before[b] !== 2) expect(after[b], `bucket ${b}`).to.equal(before[b]);
    expect(after.filter((p) => p === 1)).to.have.length(30);
    // Applying it again changes nothing, so members starting from either map agree.
    expect(
      rebalance(
        after,
        new Map([
          [1, 50],
          [3, 50],
        ]),
      ),
    ).to.deep.equal(after);
  });

  it('affinity None hashes the port too, Single only the address, Network only the /24', () => {
    const a = ip('192.0.2.10');
    const ports = Array.from({ length: 200 }, (_, i) => 1024 + i);
    expect(new Set(ports.map((p) => bucketOf('single', a, p))).size).to.equal(1);
    expect(new Set(ports.map((p) => bucketOf('none', a, p))).size).to.be.greaterThan(40);
    const hosts = Array.from({ length: 250 }, (_, i) => ip('192.0.2.0') + i + 1);
    expect(new Set(hosts.map((h) => bucketOf('network', h, 80))).size).to.equal(1);
    expect(new Set(hosts.map((h) => bucketOf('single', h, 80))).size).to.be.greaterThan(40);
  });
});

describe('NLB shares', () => {
  const layouts: { name: string; hosts: number; members: FarmMember[] }[] = [
    {
      name: '2 members on 2 hosts, equal load',
      hosts: 2,
      members: [
        { vm: 'a', host: 'h1', priority: 1 },
        { vm: 'b', host: 'h2', priority: 2 },
      ],
    },
    {
      name: '3 members on 3 hosts, weights 50/30/20',
      hosts: 3,
      members: [
        { vm: 'a', host: 'h1', priority: 1, weight: 50 },
        { vm: 'b', host: 'h2', priority: 2, weight: 30 },
        { vm: 'c', host: 'h3', priority: 3, weight: 20 },
      ],
    },
    {
      name: '8 members on 4 hosts, weights 10 to 80',
      hosts: 4,
      members: Array.from({ length: 8 }, (_, i) => ({
        vm: `m${i + 1}`,
        host: `h${(i % 4) + 1}`,
        priority: 8 - i,
        weight: 10 * (i + 1),
      })),
    },
  ];

  for (const layout of layouts) {
    it(`${layout.name}: within 2% of the weights over 100,000 connections`, () => {
      const { sim } = nlbFarm({ hosts: layout.hosts, members: layout.members, rules: [NONE_RULE] });
      converge(sim, layout.members.length);
      const taken = share(sim, 100_000);
      const total = layout.members.reduce((a, m) => a + (m.weight ?? 50), 0);
      for (const m of layout.members) {
        const expected = (m.weight ?? 50) / total;
        const got = (taken.get(m.vm) ?? 0) / 100_000;
        expect(Math.abs(got - expected), `${m.vm}: ${got} vs ${expected}`).to.be.below(0.02);
      }
    });
  }
});

describe('NLB affinity', () => {
  const three: FarmMember[] = [
    { vm: 'a', host: 'h1', priority: 1 },
    { vm: 'b', host: 'h2', priority: 2 },
    { vm: 'c', host: 'h3', priority: 3 },
  ];

  function takerOf(sim: NetworkSim, client: number, port: number, conn: number): string {
    const t = members(sim).filter((m) => m.accepts(openPacket(client, port, conn)));
    expect(t).to.have.length(1);
    return t[0]!.vmId;
  }

  it('Single affinity keeps every connection of a client on one member', () => {
    const { sim } = nlbFarm({
      hosts: 3,
      members: three,
      rules: [{ ...DEFAULT_PORT_RULE, affinity: 'single' }],
    });
    converge(sim, 3);
    let conn = 1;
    const seen = new Set<string>();
    for (let c = 0; c < 50; c++) {
      const client = ip('198.51.100.1') + c * 7;
      const owners = new Set(Array.from({ length: 40 }, (_, i) => takerOf(sim, client, 2000 + i, conn++)));
      expect(owners.size, `client ${c}`).to.equal(1);
      seen.add([...owners][0]!);
    }
    expect(seen.size, 'clients still spread over the members').to.equal(3);
  });

  it('Network affinity keeps a whole /24 on one member', () => {
    const { sim } = nlbFarm({
      hosts: 3,
      members: three,
      rules: [{ ...DEFAULT_PORT_RULE, affinity: 'network' }],
    });
    converge(sim, 3);
    let conn = 1;
    const seen = new Set<string>();
    for (let n = 0; n < 30; n++) {
      const net = ip('203.0.0.0') + n * 256;
      const owners = new Set(
        Array.from({ length: 30 }, (_, i) => takerOf(sim, net + 1 + i * 8, 3000 + i, conn++)),
      );
      expect(owners.size, `network ${n}`).to.equal(1);
      seen.add([...owners][0]!);
    }
    expect(seen.size).to.equal(3);
  });

  it('affinity None spreads one client’s connections over the members', () => {
    const { sim } = nlbFarm({ hosts: 3, members: three, rules: [NONE_RULE] });
    converge(sim, 3);
    const owners = new Set(
      Array.from({ length: 60 }, (_, i) => takerOf(sim, ip('198.51.100.1'), 2000 + i, i + 1)),
    );
    expect(owners.size).to.equal(3);
  });
});

describe('NLB convergence', () => {
  const three: FarmMember[] = [
    { vm: 'a', host: 'h1', priority: 1 },
    { vm: 'b', host: 'h2', priority: 2 },
    { vm: 'c', host: 'h3', priority: 3 },
  ];

  /** Kills h3 once converged; returns how long until the survivors converged without it. */
  function lossTime(periodMs: number, threshold: number): number {
    const { sim } = nlbFarm({ hosts: 3, members: three, periodMs, threshold });
    converge(sim, 3);
    sim.run(periodMs * 3.3); // somewhere between two heartbeats
    const killedAt = sim.nowMs;
    sim.kill('h3');
    expect(sim.runUntil(() => allConverged(sim, 2), 30_000)).to.equal(true);
    const st = memberStatuses(sim);
    for (const s of st) {
      expect(s.view).to.deep.equal([1, 2]);
      for (const m of s.maps) expect(m!.filter((p) => p === 3)).to.have.length(0);
      expect(m0(s.maps).filter((p) => p === 1)).to.have.length(30);
    }
    return Math.max(...st.map((s) => s.lastConvergence!.finishedAtMs)) - killedAt;
  }
  const m0 = (maps: (number[] | null)[]): number[] => maps[0]!;

  it('at the Windows defaults, a lost host is noticed after 5 missed heartbeats of 1 s', () => {
    const ms = lossTime(1_000, 5);
    // Its last heartbeat came up to one period before it died; the survivors drop it 5 periods
    // after that heartbeat, and converge at once.
    expect(ms).to.be.within(4_000, 5_100);
  });

  it('with a 250 ms heartbeat and a threshold of 5 it converges in under 1.5 s', () => {
    expect(lossTime(250, 5)).to.be.within(1_000, 1_500);
  });

  it('the threshold is configurable: 3 missed heartbeats of 1 s', () => {
    expect(lossTime(1_000, 3)).to.be.within(2_000, 3_100);
  });

  it('during convergence the survivors keep the old map: only the lost member’s buckets go unserved', () => {
    const { sim } = nlbFarm({ hosts: 3, members: three, rules: [NONE_RULE] });
    converge(sim, 3);
    const before = memberStatuses(sim)[0]!.maps[0]!;
    sim.kill('h3');
    sim.run(2_000);
    const ms = members(sim);
    let unserved = 0;
    for (let i = 0; i < 3_000; i++) {
      const p = openPacket(ip('100.0.0.1') + i, 1024 + i, 10_000 + i);
      const takers = ms.filter((m) => m.accepts(p));
      expect(takers.length).to.be.at.most(1);
      if (takers.length === 0) {
        unserved++;
        expect(before[bucketOf('none', p.src, p.srcPort)]).to.equal(3);
      }
    }
    expect(unserved).to.be.greaterThan(0);
  });

  it('a joining member triggers convergence and gets its share; existing connections stay put', () => {
    const { sim, cluster } = nlbFarm({ hosts: 3, members: three.slice(0, 2), rules: [NONE_RULE] });
    converge(sim, 2);
    // 2,000 open connections on a and b.
    const conns = Array.from({ length: 2_000 }, (_, i) =>
      openPacket(ip('100.1.0.0') + i * 3, 2000 + i, i + 1),
    );
    const holder = new Map<number, string>();
    for (const p of conns) {
      const t = members(sim).filter((m) => m.accepts(p));
      holder.set(p.protocol === 'conn' ? p.seg.conn : 0, t[0]!.vmId);
    }
    // c joins on h3.
    const withC = {
      ...cluster,
      members: [...cluster.members, { vmId: 'c', priority: 3, loadWeight: 50, rules: [] }],
    };
    sim
      .host('h3')
      .attachVm('c', [{ index: 0, mac: '00-15-5D-00-01-03', switchName: 'ext', vlan: 0 }], 'running');
    for (const h of sim.hosts.values()) h.setNlbClusters([withC]);
    const joinAt = sim.nowMs;
    converge(sim, 3);
    const st = memberStatuses(sim);
    expect(st.map((s) => s.maps[0]!.filter((p) => p === 3).length)).to.deep.equal([20, 20, 20]);
    const took = Math.max(...st.map((s) => s.lastConvergence!.finishedAtMs)) - joinAt;
    // The newcomer listens a period and a half before it may converge.
    expect(took).to.be.within(1_500, 2_600);
    // Data on every old connection still goes to the member that accepted it, and only to it.
    for (const p of conns) {
      if (p.protocol !== 'conn') continue;
      const data = { ...p, seg: { ...p.seg, kind: 'data' as const, seq: 1 } };
      const t = members(sim).filter((m) => m.accepts(data));
      expect(
        t.map((m) => m.vmId),
        `connection ${p.seg.conn}`,
      ).to.deep.equal([holder.get(p.seg.conn)]);
    }
  });
});

describe('NLB loss timer', () => {
  it('drops a silent peer when last heard + threshold lands on a time a subtraction rounds below', () => {
    // 798.2 + 1250 - 798.2 is 1249.9999999999998 in floating point: a timer armed at the sum
    // must still find the peer lost when it fires, or it re-arms at the same instant forever.
    const heardAt = 798.2;
    const lostAfter = 250 * 5;
    expect(heardAt + lostAfter - heardAt).to.be.below(lostAfter);
    const sched = new Scheduler(heardAt);
    const cluster = nlbCluster({
      heartbeatPeriodMs: 250,
      members: [nlbMember('a', 1), nlbMember('b', 2)],
    });
    const members: NlbMember[] = [];
    const wire = (from: number) => (hb: Heartbeat) => {
      for (const [i, m] of members.entries()) if (i !== from) m.onHeartbeat(hb);
    };
    members.push(new NlbMember(cluster, 'a', sched, { send: wire(0) }));
    members.push(new NlbMember(cluster, 'b', sched, { send: wire(1) }));
    for (const m of members) m.start();
    const [a, b] = members as [NlbMember, NlbMember];
    expect(a.status().view).to.deep.equal([1, 2]);
    b.powerOff(); // silent from now on: a last heard it at 798.2
    let fired = 0;
    sched.runUntil(heardAt + lostAfter + 100, () => {
      if (++fired > 1_000) throw new Error(`timers still firing at ${sched.nowMs} ms`);
    });
    expect(a.status().view).to.deep.equal([1]);
  });
});
