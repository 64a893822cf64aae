import { expect } from 'chai';
import { createClient, hyperfarmProto, promiseClient, status, type pb } from '@hyperfarm/api';
import { collect, useAgentProcesses, waitForState, waitUntil, type AgentProcess } from './process-helpers.js';

// Real agent processes on loopback: switches and an NLB cluster configured on each agent (as the
// daemon will push them), tunnels over gRPC, and traffic from the generator of one of them.

const MIB = 1024 * 1024;

function networkClient(address: string) {
  const raw = createClient(hyperfarmProto().hyperfarm.v1.NetworkService, address);
  return { raw, p: promiseClient(raw) };
}

interface Host {
  id: string;
  agent: AgentProcess;
  net: ReturnType<typeof networkClient>;
}

const members = [
  { vm: 'a', host: 'h1', priority: 1 },
  { vm: 'b', host: 'h2', priority: 2 },
  { vm: 'c', host: 'h3', priority: 3 },
];

function networkConfig(hosts: Host[], periodMs: number): pb.NetworkConfig {
  return {
    revision: 1,
    switches: [{ name: 'ext', type: 'SWITCH_TYPE_EXTERNAL' }],
    peers: hosts.map((h) => ({ hostId: h.id, address: h.agent.address })),
    nlbClusters: [
      {
        id: 'web',
        virtualIp: '10.0.0.100',
        mode: 'NLB_MODE_UNICAST',
        switchName: 'ext',
        portRules: [
          {
            startPort: 80,
            endPort: 80,
            protocol: 'tcp',
            filteringMode: 'NLB_FILTERING_MODE_MULTIPLE_HOST',
            affinity: 'NLB_AFFINITY_NONE',
          },
        ],
        members: members.map((m) => ({ vmId: m.vm, hostPriority: m.priority })),
        heartbeatPeriodMs: periodMs,
        heartbeatThreshold: 5,
      },
    ],
  };
}

async function startFarm(start: (id: string) => Promise<AgentProcess>, periodMs = 100): Promise<Host[]> {
  const agents = await Promise.all(['h1', 'h2', 'h3'].map((id) => start(id)));
  const hosts = agents.map((agent, i) => ({ id: `h${i + 1}`, agent, net: networkClient(agent.address) }));
  const cfg = networkConfig(hosts, periodMs);
  for (const h of hosts) await h.net.p.applyNetworkConfig(cfg);
  for (const m of members) {
    const h = hosts.find((x) => x.id === m.host)!;
    await h.agent.client.p.createVm({
      vmId: m.vm,
      config: {
        name: m.vm,
        processor: { count: 2 },
        memoryBytes: 256 * MIB,
        guestOs: 'windows-server-2008-x64',
        integrationServices: true,
        workload: { bootMs: 50, cpuDemandPercent: 10, requestServiceTimeMs: 5, workingSetBytes: 8 * MIB },
        networkAdapters: [
          {
            kind: 'NIC_KIND_SYNTHETIC',
            staticMac: true,
            macAddress: `00-15-5D-00-10-0${m.priority}`,
            switchName: 'ext',
            ipv4Address: `10.0.0.${10 + m.priority}/24`,
          },
        ],
      },
    });
    await h.agent.client.p.changeVmState({ vmId: m.vm, action: 'VM_ACTION_START' });
  }
  for (const m of members)
    await waitForState(hosts.find((x) => x.id === m.host)!.agent.client, m.vm, 'VM_STATE_RUNNING');
  await waitUntil('the members converge', () => converged(hosts, [1, 2, 3]));
  return hosts;
}

async function memberStates(hosts: Host[]): Promise<pb.NlbMemberState__Output[]> {
  const states = await Promise.all(hosts.map((h) => h.net.p.getNlbState({ clusterId: 'web' })));
  return states.flatMap((s) => s.members);
}

async function converged(hosts: Host[], view: number[]): Promise<boolean> {
  const st = await memberStates(hosts);
  return (
    st.length === view.length &&
    st.every((s) => s.state === 'converged' && s.view.join() === view.join()) &&
    new Set(st.map((s) => JSON.stringify(s.bucketMaps))).size === 1
  );
}

const traffic = (durationMs: number): pb.StartTrafficRequest => ({
  id: 'run',
  switchName: 'ext',
  virtualIp: '10.0.0.100',
  port: 80,
  ratePerSecond: 150,
  durationMs,
  clients: 2_000,
  clientNetworks: 100,
  requestsPerConnection: 5,
  retransmitTimeoutMs: 100,
  maxRetries: 5,
  seed: 3,
});

/** Lets the 'after' phase gather `n` answered connections, then stops the run and waits for its end. */
async function finishRun(h: Host, n: number): Promise<pb.TrafficReport__Output> {
  const report = () => h.net.p.getTraffic({ id: 'run' });
  await waitUntil('connections after the fault', async () => (await report()).after!.completed > n, 20_000);
  await h.net.p.stopTraffic({ id: 'run' });
  await waitUntil('the run ends', async () => (await report()).inFlight === 0, 20_000);
  return report();
}

describe('NLB across real agent processes', function () {
  this.timeout(60_000);
  const { start } = useAgentProcesses('net');
  let hosts: Host[] = [];
  afterEach(() => {
    for (const h of hosts) h.net.raw.close();
    hosts = [];
  });

  it('balances traffic over tunnels, and converges without a host whose process is killed', async () => {
    // Heartbeats every 500 ms, lost after 5: real timers on a busy machine stall for tenths of a
    // second, and the virtual-clock tests pin the exact figures down.
    hosts = await startFarm(start, 500);
    const [h1, h2] = hosts as [Host, Host, Host];
    await h1.net.p.startTraffic(traffic(60_000));
    await waitUntil(
      'traffic flows',
      async () => (await h1.net.p.getTraffic({ id: 'run' })).before!.completed > 150,
    );
    await h1.net.p.markTrafficPhase({ id: 'run', phase: 'during' });
    const killedAt = Date.now();
    hosts[2]!.agent.child.kill('SIGKILL');
    await waitUntil('the survivors converge', () => converged([h1, h2], [1, 2]), 10_000);
    const tookMs = Date.now() - killedAt;
    await h1.net.p.markTrafficPhase({ id: 'run', phase: 'after' });
    const r = await finishRun(h1, 150);
    const before = new Map(r.before!.members.map((m) => [m.vmId, m]));
    expect([...before.keys()].sort()).to.deep.equal(['a', 'b', 'c']);
    // Before the fault each member answered about a third (c a little less: the requests of its
    // connections still open when it died were never answered); after it, a and b half each.
    for (const m of before.values()) expect(m.share).to.be.closeTo(1 / 3, 0.15);
    for (const m of r.after!.members) expect(m.share).to.be.closeTo(1 / 2, 0.12);
    // Only connections c held fail; nothing else is lost or reset.
    const failed = (p: pb.TrafficPhase__Output, vm: string) =>
      p.members
        .filter((m) => m.vmId !== vm)
        .reduce((n, m) => n + Number(m.lostConnections) + Number(m.resetConnections), 0);
    expect(failed(r.before!, 'c')).to.equal(0);
    expect(failed(r.during!, 'c')).to.equal(0);
    expect(Number(r.after!.lost) + Number(r.after!.reset)).to.equal(0);
    expect(r.after!.members.map((m) => m.vmId).sort()).to.deep.equal(['a', 'b']);
    // 5 missed heartbeats of 500 ms, then convergence at once.
    expect(tookMs).to.be.within(2_000, 5_000);
    const st = await memberStates([h1, h2]);
    for (const s of st) expect(s.lastConvergence!.members).to.deep.equal([1, 2]);

    // The switch on h1: the members' masked MACs were learned, the cluster MAC never was, and
    // frames to it were flooded.
    const sw = await h1.net.p.getSwitchState({ name: 'ext' });
    const macs = sw.macTable.map((e) => e.macAddress);
    expect(macs).to.include('02-01-0A-00-00-64').and.include('02-02-0A-00-00-64');
    expect(macs).to.not.include('02-BF-0A-00-00-64');
    expect(Number(sw.counters!.framesFlooded)).to.be.greaterThan(Number(r.before!.started));
    expect(sw.ports.map((p) => p.id)).to.include.members(['a#0', 'peer:h2', 'peer:h3', 'ext:run']);
  });

  it('a member live-migrates to another host under traffic and no connection is lost', async () => {
    // Windows' default heartbeats (1 s, lost after 5): the migration's downtime, a second or two
    // on a heavily loaded machine, stays well inside them.
    hosts = await startFarm(start, 1_000);
    const [h1, h2, h3] = hosts as [Host, Host, Host];
    await h1.net.p.startTraffic(traffic(60_000));
    await waitUntil(
      'traffic flows',
      async () => (await h1.net.p.getTraffic({ id: 'run' })).before!.completed > 100,
    );
    await h1.net.p.markTrafficPhase({ id: 'run', phase: 'during' });
    const progress = await collect(
      h2.agent.client.raw.migrateOut({
        vmId: 'b',
        targetAddress: h3.agent.address,
        kind: 'MIGRATION_KIND_LIVE',
      }),
    );
    expect(progress[progress.length - 1]!.phase).to.equal('MIGRATION_PHASE_COMPLETED');
    await h1.net.p.markTrafficPhase({ id: 'run', phase: 'after' });
    const r = await finishRun(h1, 150);
    for (const ph of [r.before!, r.during!, r.after!]) {
      expect(Number(ph.lost) + Number(ph.reset)).to.equal(0);
      expect(ph.completed).to.equal(ph.started);
    }
    expect(r.after!.members.map((m) => m.vmId).sort()).to.deep.equal(['a', 'b', 'c']);
    // b now runs on h3 and stayed in the cluster throughout.
    const onH3 = await h3.net.p.getNlbState({ clusterId: 'web' });
    expect(onH3.members.map((m) => m.vmId)).to.deep.equal(['b', 'c']);
    expect((await h2.net.p.getNlbState({ clusterId: 'web' })).members).to.deep.equal([]);
    // Its gratuitous ARP taught h1's switch the new way to its MAC... which unicast masks: the
    // masked source MAC 02-02-... now sits behind the tunnel to h3.
    const sw = await h1.net.p.getSwitchState({ name: 'ext' });
    expect(sw.macTable.find((e) => e.macAddress === '02-02-0A-00-00-64')!.port).to.equal('peer:h3');
  });

  it('refuses bad configuration with the field and the reason, and keeps serving', async () => {
    const agent = await start('h1');
    const net = networkClient(agent.address);
    hosts = [{ id: 'h1', agent, net }];
    const cfg = networkConfig(hosts, 1_000);
    cfg.nlbClusters![0]!.members = [
      { vmId: 'a', hostPriority: 1 },
      { vmId: 'b', hostPriority: 1 },
    ];
    const err = await net.p
      .applyNetworkConfig(cfg)
      .catch((e: { code: number; details: string; metadata: { get(k: string): unknown[] } }) => e);
    expect((err as { code: number }).code).to.equal(status.INVALID_ARGUMENT);
    expect((err as { details: string }).details).to.match(/priority 1 is already held by member 'a'/);
    expect(
      (err as { metadata: { get(k: string): unknown[] } }).metadata.get('hyperfarm-field'),
    ).to.deep.equal(['nlb_clusters[0].members[1].host_priority']);
    cfg.nlbClusters![0]!.members = [];
    cfg.nlbClusters![0]!.portRules = [
      { startPort: 80, endPort: 90, protocol: 'tcp' },
      { startPort: 85, endPort: 95, protocol: 'tcp' },
    ];
    const overlap = await net.p.applyNetworkConfig(cfg).catch((e: { details: string }) => e);
    expect((overlap as { details: string }).details).to.match(
      /nlb_clusters\[0\]\.port_rules\[1\]: ports 85-95/,
    );
    // Nothing was applied, and the agent still answers.
    expect((await net.p.getNetworkConfig({})).revision).to.equal(0);
    const tunnel = createClient(hyperfarmProto().hyperfarm.v1.TunnelService, agent.address);
    const denied = await collect(tunnel.pull({ hostId: 'stranger' })).catch((e: { code: number }) => e.code);
    expect(denied).to.equal(status.PERMISSION_DENIED);
    tunnel.close();
  });
});
