import { expect } from 'chai';
import { status } from '@hyperfarm/api';
import { nlbClusterMac } from '../src/network/addr.js';
import {
  DEFAULT_PORT_RULE,
  checkMemberNetworks,
  validateNlbCluster,
  type NlbClusterConfig,
  type PortRule,
} from '../src/network/nlb/config.js';
import type { NetworkSim } from '../src/network/sim.js';
import {
  VIP,
  allConverged,
  cidr,
  ip,
  memberStatuses,
  nlbCluster,
  nlbFarm,
  nlbMember,
  openPacket,
  trafficSpec,
  type FarmMember,
} from './network-helpers.js';

const three: FarmMember[] = [
  { vm: 'a', host: 'h1', priority: 1 },
  { vm: 'b', host: 'h2', priority: 2 },
  { vm: 'c', host: 'h3', priority: 3 },
];

function takers(sim: NetworkSim, client: number, port: number, conn: number, dstPort: number): string[] {
  return [...sim.hosts]
    .filter(([id]) => !sim.isDown(id))
    .flatMap(([, h]) => h.nlbStatus('web').map((s) => h.nlbMember('web', s.vmId)!))
    .filter((m) => m.accepts(openPacket(client, port, conn, dstPort)))
    .map((m) => m.vmId);
}

const converge = (sim: NetworkSim, n: number) =>
  expect(
    sim.runUntil(() => allConverged(sim, n), 20_000),
    'converged',
  ).to.equal(true);

const memberOf = (sim: NetworkSim, vm: string) => memberStatuses(sim).find((s) => s.vmId === vm)!;

describe('NLB drainstop, drain, disable, suspend', () => {
  it('drainstop: no new connections, existing ones finish, then the member stops', () => {
    const { sim } = nlbFarm({ hosts: 3, members: three, guest: () => ({ serviceTimeMs: 50, workers: 64 }) });
    converge(sim, 3);
    const h1 = sim.host('h1');
    h1.startTraffic(
      't',
      'ext',
      0,
      trafficSpec({ ratePerSec: 150, durationMs: 8_000, requestsPerConnection: 20 }),
    );
    sim.run(3_000);
    const open = memberOf(sim, 'c').connections;
    expect(open, 'c holds connections when the drain starts').to.be.greaterThan(10);
    h1.markTrafficPhase('t', 'during');
    sim.host('h3').nlbControl('web', 'c', 'drainstop');
    expect(memberOf(sim, 'c').state).to.equal('draining');
    sim.run(100);
    // The others converged on a map without c at once, while c still serves what it holds.
    for (const s of memberStatuses(sim)) for (const owner of s.maps[0]!) expect(owner).to.not.equal(3);
    expect(memberOf(sim, 'c').connections).to.be.greaterThan(0);
    // 20 requests of 50 ms: its last connection ends within about a second; then it stops.
    expect(sim.runUntil(() => memberOf(sim, 'c').state === 'stopped', 3_000)).to.equal(true);
    sim.run(8_000);
    const r = h1.trafficReport('t');
    for (const ph of [r.phases.before, r.phases.during]) {
      expect(ph.lost + ph.reset, 'nothing lost or reset').to.equal(0);
      expect(ph.completed).to.equal(ph.started);
    }
    expect(r.phases.during.members.map((m) => m.member)).to.deep.equal(['a', 'b']);
    expect(r.phases.before.members.find((m) => m.member === 'c')!.requests).to.be.greaterThan(open * 10);
    expect(
      memberStatuses(sim)
        .filter((s) => s.state === 'converged')
        .map((s) => s.view.join()),
    ).to.deep.equal(['1,2', '1,2']);
  });

  const twoRules: PortRule[] = [
    { startPort: 80, endPort: 80, protocol: 'tcp', filtering: 'multiple', affinity: 'none' },
    { startPort: 443, endPort: 443, protocol: 'tcp', filtering: 'multiple', affinity: 'none' },
  ];

  it('draining one rule moves only that rule’s new connections; its existing ones stay', () => {
    const { sim } = nlbFarm({ hosts: 3, members: three, rules: twoRules });
    converge(sim, 3);
    // A connection on port 80 that c holds.
    let conn = 1;
    let held: { client: number; port: number; conn: number } | undefined;
    for (let i = 0; !held; i++) {
      expect(i, 'a client in one of c’s buckets').to.be.below(1_000);
      const client = ip('100.2.0.1') + i;
      if (takers(sim, client, 5000, conn, 80)[0] === 'c') held = { client, port: 5000, conn };
      conn++;
    }
    sim.host('h3').nlbControl('web', 'c', 'drain', 80);
    converge(sim, 3);
    const maps = memberOf(sim, 'a').maps;
    expect(maps[0]!.filter((p) => p === 3)).to.have.length(0);
    expect(maps[1]!.filter((p) => p === 3)).to.have.length(20);
    // New port-80 connections never go to c; port 443 ones still do.
    const on80 = new Set(
      Array.from({ length: 300 }, (_, i) => takers(sim, ip('100.3.0.1') + i, 6000 + i, conn++, 80)[0]),
    );
    const on443 = new Set(
      Array.from({ length: 300 }, (_, i) => takers(sim, ip('100.3.0.1') + i, 6000 + i, conn++, 443)[0]),
    );
    expect([...on80].sort()).to.deep.equal(['a', 'b']);
    expect([...on443].sort()).to.deep.equal(['a', 'b', 'c']);
    // The connection c held goes on with c.
    const data = openPacket(held.client, held.port, held.conn, 80);
    if (data.protocol === 'conn') data.seg.kind = 'data';
    const c = sim.host('h3').nlbMember('web', 'c')!;
    expect(c.accepts(data)).to.equal(true);
    expect(sim.host('h1').nlbMember('web', 'a')!.accepts(data)).to.equal(false);
    expect(sim.host('h2').nlbMember('web', 'b')!.accepts(data)).to.equal(false);
    // Enabled again, c gets its buckets back.
    sim.host('h3').nlbControl('web', 'c', 'enable', 80);
    converge(sim, 3);
    expect(memberOf(sim, 'a').maps[0]!.filter((p) => p === 3)).to.have.length(20);
  });

  it('disabling a rule drops its traffic on that member at once, existing connections included', () => {
    const { sim } = nlbFarm({ hosts: 3, members: three, rules: twoRules });
    converge(sim, 3);
    const c = sim.host('h3').nlbMember('web', 'c')!;
    let i = 0;
    while (takers(sim, ip('100.4.0.1') + i, 7000, 1_000 + i, 80)[0] !== 'c') expect(i++).to.be.below(1_000);
    sim.host('h3').nlbControl('web', 'c', 'disable', 80);
    const data = openPacket(ip('100.4.0.1') + i, 7000, 1_000 + i, 80);
    if (data.protocol === 'conn') data.seg.kind = 'data';
    expect(c.accepts(data)).to.equal(false);
    converge(sim, 3);
    expect(memberOf(sim, 'a').maps[0]!.filter((p) => p === 3)).to.have.length(0);
  });

  it('suspend leaves the cluster at once; resume rejoins it', () => {
    const { sim } = nlbFarm({ hosts: 3, members: three });
    converge(sim, 3);
    const at = sim.nowMs;
    sim.host('h3').nlbControl('web', 'c', 'suspend');
    converge(sim, 2);
    // c said it was leaving, so the others did not wait for missed heartbeats.
    expect(memberOf(sim, 'a').lastConvergence!.finishedAtMs - at).to.be.below(10);
    expect(memberOf(sim, 'c').state).to.equal('suspended');
    expect(() => sim.host('h3').nlbControl('web', 'c', 'start')).to.throw(/suspended/);
    sim.host('h3').nlbControl('web', 'c', 'resume');
    converge(sim, 3);
  });
});

describe('NLB port rules', () => {
  const rules: PortRule[] = [
    { startPort: 80, endPort: 80, protocol: 'both', filtering: 'multiple', affinity: 'single' },
    { startPort: 1433, endPort: 1433, protocol: 'tcp', filtering: 'single', affinity: 'single' },
    { startPort: 137, endPort: 139, protocol: 'both', filtering: 'disabled', affinity: 'single' },
  ];

  function farm() {
    const f = nlbFarm({ hosts: 3, members: three, rules });
    // Handling priorities for the single-host rule: b first, then c, then a.
    const handling: Record<string, number> = { a: 3, b: 1, c: 2 };
    const withHandling: NlbClusterConfig = {
      ...f.cluster,
      members: f.cluster.members.map((m) => ({
        ...m,
        rules: [{ startPort: 1433, loadWeight: 50, handlingPriority: handling[m.vmId]! }],
      })),
    };
    for (const h of f.sim.hosts.values()) h.setNlbClusters([withHandling]);
    converge(f.sim, 3);
    return f.sim;
  }

  it('a single-host rule goes to the highest handling priority, then fails over to the next', () => {
    const sim = farm();
    for (let i = 0; i < 50; i++)
      expect(takers(sim, ip('100.5.0.1') + i, 4000 + i, i + 1, 1433)).to.deep.equal(['b']);
    sim.kill('h2');
    converge(sim, 2);
    for (let i = 0; i < 50; i++)
      expect(takers(sim, ip('100.5.0.1') + i, 4000 + i, 100 + i, 1433)).to.deep.equal(['c']);
  });

  it('a disabled rule’s ports reach no member; ports no rule covers go to the default host', () => {
    const sim = farm();
    for (const port of [137, 138, 139]) expect(takers(sim, ip('100.6.0.1'), 4000, 1, port)).to.deep.equal([]);
    // The default host is the member with the highest host priority (the lowest number).
    for (let i = 0; i < 20; i++)
      expect(takers(sim, ip('100.6.0.1') + i, 4000, 10 + i, 8080)).to.deep.equal(['a']);
    sim.kill('h1');
    converge(sim, 2);
    expect(takers(sim, ip('100.6.0.1'), 4000, 50, 8080)).to.deep.equal(['b']);
  });
});

describe('NLB modes on a learning switch', () => {
  function run(mode: 'unicast' | 'multicast' | 'igmp') {
    const { sim } = nlbFarm({ hosts: 2, members: three.slice(0, 2), mode });
    // A bystander VM on h2, same switch and VLAN, in no cluster.
    sim
      .host('h2')
      .attachVm('x', [{ index: 0, mac: '00-15-5D-00-09-99', switchName: 'ext', vlan: 0 }], 'running');
    converge(sim, 2);
    const h1 = sim.host('h1');
    h1.startTraffic('t', 'ext', 0, trafficSpec({ ratePerSec: 100, durationMs: 5_000 }));
    sim.run(6_000);
    const report = h1.trafficReport('t').phases.before;
    expect(report.completed).to.equal(report.started);
    expect(report.members.map((m) => m.member)).to.deep.equal(['a', 'b']);
    const tables = [...sim.hosts.values()].flatMap((h) => h.switchStatus('ext').macTable.map((e) => e.mac));
    const bystander = sim
      .host('h2')
      .switchStatus('ext')
      .ports.find((p) => p.id === 'x#0')!.counters;
    return { sim, report, tables, bystander };
  }

  it('unicast: members share the cluster MAC and mask their source MAC, so frames to it are flooded', () => {
    const { tables, bystander, report } = run('unicast');
    expect(tables).to.not.include(nlbClusterMac('unicast', VIP));
    expect(tables).to.include('02-01-0A-00-00-64').and.include('02-02-0A-00-00-64');
    // Every client frame for the cluster reached the bystander too.
    expect(bystander.flooded).to.be.greaterThan(report.started * 3);
  });

  it('multicast: members keep their own MACs and the cluster MAC 03-BF is flooded', () => {
    const { tables, bystander, report } = run('multicast');
    expect(tables).to.include('00-15-5D-00-01-01').and.include('00-15-5D-00-01-02');
    expect(tables.some((m) => m.startsWith('02-'))).to.equal(false);
    expect(bystander.flooded).to.be.greaterThan(report.started * 3);
  });

  it('IGMP multicast: the switches send cluster traffic only where members joined', () => {
    const { bystander, report } = run('igmp');
    expect(report.completed).to.be.greaterThan(300);
    // The bystander sees broadcasts (heartbeats, ARP) but no client traffic for the cluster.
    expect(bystander.flooded).to.be.below(report.started);
  });
});

/** Stop-and-copy: b is paused on h2 for 40 ms, then runs on h3 with its network state. */
function moveB(sim: NetworkSim): void {
  sim.host('h2').setVmState('b', 'paused');
  sim.run(40);
  const state = sim.host('h2').detachVm('b');
  sim
    .host('h3')
    .attachVm(
      'b',
      [{ index: 0, mac: '00-15-5D-00-01-02', switchName: 'ext', vlan: 0, ip: cidr('10.0.0.12/24') }],
      'running',
      state,
    );
}

describe('NLB member live migration', () => {
  for (const mode of ['unicast', 'multicast'] as const) {
    it(`${mode}: a member moves to another host while serving, and no connection is lost`, () => {
      const { sim } = nlbFarm({
        hosts: 3,
        members: three.slice(0, 2),
        mode,
        guest: () => ({ serviceTimeMs: 20, workers: 64 }),
      });
      converge(sim, 2);
      const h1 = sim.host('h1');
      h1.startTraffic(
        't',
        'ext',
        0,
        trafficSpec({ ratePerSec: 150, durationMs: 8_000, requestsPerConnection: 10 }),
      );
      sim.run(3_000);
      expect(memberOf(sim, 'b').connections).to.be.greaterThan(5);
      h1.markTrafficPhase('t', 'during');
      moveB(sim);
      for (const h of sim.hosts.values())
        h.setNlbClusters([nlbCluster({ ...sim.host('h1').nlbMember('web', 'a')!.config })]);
      sim.host('h3').announce('b');
      sim.run(1_000);
      h1.markTrafficPhase('t', 'after');
      sim.run(8_000);
      const r = h1.trafficReport('t');
      for (const ph of ['before', 'during', 'after'] as const) {
        expect(r.phases[ph].lost + r.phases[ph].reset, ph).to.equal(0);
        expect(r.phases[ph].completed, ph).to.equal(r.phases[ph].started);
      }
      expect(r.phases.after.members.map((m) => m.member)).to.deep.equal(['a', 'b']);
      // It never left the cluster: no convergence since the first.
      expect(memberOf(sim, 'a').lastConvergence!.finishedAtMs).to.be.below(3_000);
      expect(
        sim
          .host('h3')
          .nlbStatus('web')
          .map((s) => s.vmId),
      ).to.deep.equal(['b']);
    });
  }
});

describe('NLB member arriving on its new host', () => {
  // A moved member does not start new connections in its buckets until every member it counts
  // alive has confirmed the map: were that confirmation the others' next periodic heartbeat, its
  // buckets would add up to a heartbeat period to the migration's downtime, and a client whose
  // retransmissions end within that (100 ms doubling 5 times: the last at 3.1 s) is lost. The
  // others answer its request for confirmation at once instead.
  for (const offsetMs of [0, 150, 300, 450, 600, 750, 900]) {
    it(`takes new connections in its buckets within a few ms of arriving (${offsetMs} ms into a heartbeat period)`, () => {
      const { sim } = nlbFarm({ hosts: 3, members: three });
      converge(sim, 3);
      sim.run(2_000 + offsetMs);
      expect(memberOf(sim, 'b').unconfirmedBuckets).to.equal(0);
      moveB(sim);
      const b = sim.host('h3').nlbMember('web', 'b')!;
      // Right after the restore b holds back (the others may have moved on without it).
      expect(b.status().unconfirmedBuckets).to.equal(20);
      sim.run(20);
      expect(b.status().unconfirmedBuckets).to.equal(0);
      // A new connection in one of its buckets is b's, and only b's.
      let port = 1024;
      while (takers(sim, ip('172.16.0.9'), port, 1, 80).join() !== 'b' && port < 2_000) port++;
      expect(takers(sim, ip('172.16.0.9'), port, 1, 80)).to.deep.equal(['b']);
      // Nobody reconverged: the cluster never saw b leave.
      expect(memberOf(sim, 'a').lastConvergence!.finishedAtMs).to.be.below(2_000);
    });
  }
});

describe('NLB member paused past the loss threshold', () => {
  it('comes back without resetting the connections the others took over meanwhile', () => {
    const { sim } = nlbFarm({
      hosts: 3,
      members: three,
      periodMs: 250,
      guest: () => ({ serviceTimeMs: 20, workers: 64 }),
    });
    converge(sim, 3);
    const h1 = sim.host('h1');
    h1.startTraffic(
      't',
      'ext',
      0,
      trafficSpec({ ratePerSec: 150, durationMs: 8_000, requestsPerConnection: 20 }),
    );
    sim.run(2_000);
    // b stops for 2 s: a and c drop it after 1.25 s and take its buckets.
    sim.host('h2').setVmState('b', 'paused');
    h1.markTrafficPhase('t', 'during');
    sim.run(2_000);
    expect(memberOf(sim, 'a').view).to.deep.equal([1, 3]);
    sim.host('h2').setVmState('b', 'running');
    h1.markTrafficPhase('t', 'after');
    converge(sim, 3);
    sim.run(9_000);
    const r = h1.trafficReport('t');
    // What b held when it stopped is gone (as Windows NLB loses a member's connections when it
    // is dropped); nothing a or c held is touched by b's return.
    for (const ph of [r.phases.before, r.phases.during, r.phases.after])
      for (const m of ph.members)
        if (m.member !== 'b') expect(m.lostConnections + m.resetConnections, `${m.member}`).to.equal(0);
    expect(r.phases.during.completed).to.equal(r.phases.during.started);
    expect(r.phases.after.completed).to.equal(r.phases.after.started);
  });
});

describe('NLB configuration checks', () => {
  const good = (): NlbClusterConfig => nlbCluster({ members: [nlbMember('a', 1), nlbMember('b', 2)] });

  function refused(c: NlbClusterConfig, field: string, reason: RegExp): void {
    try {
      validateNlbCluster(c);
    } catch (err) {
      const e = err as { code: number; field: string; message: string };
      expect(e.code).to.equal(status.INVALID_ARGUMENT);
      expect(e.field).to.equal(field);
      expect(e.message).to.match(reason);
      return;
    }
    expect.fail(`accepted: ${field}`);
  }

  it('accepts a good cluster', () => {
    validateNlbCluster(good());
  });

  it('refuses duplicate host priorities', () => {
    refused(
      nlbCluster({ members: [nlbMember('a', 1), nlbMember('b', 2), nlbMember('c', 2)] }),
      'cluster.members[2].host_priority',
      /priority 2 is already held by member 'b'/,
    );
    refused(nlbCluster({ members: [nlbMember('a', 33)] }), 'cluster.members[0].host_priority', /1 to 32/);
  });

  it('refuses more than 32 members', () => {
    const members = Array.from({ length: 33 }, (_, i) => nlbMember(`m${i}`, (i % 32) + 1));
    refused(nlbCluster({ members }), 'cluster.members', /at most 32 members/);
  });

  it('refuses overlapping port rules, naming both', () => {
    const rules: PortRule[] = [
      { ...DEFAULT_PORT_RULE, startPort: 80, endPort: 90, protocol: 'tcp' },
      { ...DEFAULT_PORT_RULE, startPort: 85, endPort: 85, protocol: 'both' },
    ];
    refused(
      { ...good(), rules },
      'cluster.port_rules[1]',
      /85-85 \(both\) overlap port_rules\[0\] \(80-90 tcp\)/,
    );
    // The same ports for the other protocol do not overlap.
    validateNlbCluster({ ...good(), rules: [rules[0]!, { ...rules[1]!, protocol: 'udp' }] });
    refused(
      { ...good(), rules: [{ ...DEFAULT_PORT_RULE, startPort: 90, endPort: 80 }] },
      'cluster.port_rules[0].end_port',
      /90/,
    );
  });

  it('refuses a multicast or broadcast virtual IP, weights over 100 and shared handling priorities', () => {
    refused({ ...good(), vip: ip('239.1.1.1') }, 'cluster.virtual_ip', /unicast address/);
    refused({ ...good(), vip: ip('255.255.255.255') }, 'cluster.virtual_ip', /cannot be a cluster IP/);
    refused(
      nlbCluster({ members: [nlbMember('a', 1, { loadWeight: 101 })] }),
      'cluster.members[0].load_weight',
      /0 to 100/,
    );
    const single: PortRule = { ...DEFAULT_PORT_RULE, filtering: 'single' };
    refused(
      nlbCluster({
        rules: [single],
        members: [
          nlbMember('a', 1, { rules: [{ startPort: 0, loadWeight: 50, handlingPriority: 4 }] }),
          nlbMember('b', 2, { rules: [{ startPort: 0, loadWeight: 50, handlingPriority: 4 }] }),
        ],
      }),
      'cluster.port_rules[0]',
      /'a' and 'b' both have handling priority 4/,
    );
    refused({ ...good(), heartbeatThreshold: 0 }, 'cluster.heartbeat_threshold', /1 to 100/);
  });

  it('refuses a member with no address in the virtual IP’s network on the cluster’s switch', () => {
    const c = good();
    const adapters: Record<string, { switchName: string; ip?: ReturnType<typeof cidr> }[]> = {
      a: [{ switchName: 'ext', ip: cidr('10.0.0.11/24') }],
      b: [{ switchName: 'ext', ip: cidr('10.9.0.12/24') }],
    };
    const check = () => checkMemberNetworks(c, (vm) => adapters[vm]);
    expect(check).to.throw(
      /VM 'b' has no address in the network of the virtual IP 10.0.0.100 on switch 'ext' \(its adapters there: 10.9.0.0\/24\)/,
    );
    adapters.b = [{ switchName: 'int', ip: cidr('10.0.0.12/24') }];
    expect(check).to.throw(/VM 'b' has no adapter on switch 'ext'/);
    adapters.b = [{ switchName: 'ext', ip: cidr('10.0.0.12/24') }];
    check();
    try {
      adapters.b = [];
      check();
    } catch (err) {
      expect((err as { field: string }).field).to.equal('cluster.members[1].vm_id');
    }
  });
});
