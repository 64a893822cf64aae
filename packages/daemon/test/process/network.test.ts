import type * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { status, TRAILERS, type pb } from '@hyperfarm/api';
import { ProcessFarm, until, type Cluster } from './harness.js';
import { vmOnExt, webCluster } from './network-helpers.js';

// Switches and NLB through the daemons, on real agent processes: the daemon records the
// configuration, pushes it to the agents (again after an agent restarts), and reads the
// members' state and the traffic generator back through ClusterService.

const FAST = ['--heartbeat-ms', '200', '--suspect-after-ms', '600', '--down-after-ms', '1500'];

const refusal = (p: Promise<unknown>) =>
  p.then(
    () => ({ code: status.OK, field: '', message: '' }),
    (e: grpc.ServiceError) => ({
      code: e.code,
      field: String(e.metadata?.get(TRAILERS.field)[0] ?? ''),
      message: e.details,
    }),
  );

const member = (i: number): pb.VmConfig => vmOnExt(`web-${i}`, `00-15-5D-AA-00-0${i}`, `10.0.0.1${i}/24`);

describe('switches and NLB through the daemons, on real agents', function () {
  this.timeout(180_000);
  let farm: ProcessFarm;
  let c: Cluster;

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 3, daemonArgs: FAST });
    for (const a of ['a', 'b', 'c']) await farm.startAgent(a, 1);
    c = farm.client(await farm.follower());
    await until('3 hosts Up', 30_000, async () => {
      const { hosts } = await c.listHosts({ state: 'HOST_STATE_UP' });
      return hosts.length === 3 ? true : undefined;
    });
  });

  after(() => farm?.stop());

  it('refuses bad switches and NLB configuration with the field and the reason', async () => {
    expect(await refusal(c.createSwitch({ name: 'lan', type: 'SWITCH_TYPE_PRIVATE' }))).to.include({
      code: status.INVALID_ARGUMENT,
      field: 'host_id',
    });
    expect(
      await refusal(c.createSwitch({ name: 'x', type: 'SWITCH_TYPE_EXTERNAL', hostId: 'a-1' })),
    ).to.include({
      code: status.INVALID_ARGUMENT,
      field: 'host_id',
    });
    const overlap = await refusal(
      c.createNlbCluster({
        name: 'bad',
        virtualIp: '10.0.0.100',
        mode: 'NLB_MODE_UNICAST',
        switchName: 'nowhere',
        portRules: [
          { startPort: 80, endPort: 90, protocol: 'tcp' },
          { startPort: 85, endPort: 95, protocol: 'both' },
        ],
      }),
    );
    expect(overlap.code).to.equal(status.INVALID_ARGUMENT);
    expect(overlap.field).to.equal('cluster.port_rules[1]');
    expect(overlap.message).to.match(/overlap/);
  });

  it('Private switches of one name on two hosts; a name an External switch has is refused', async () => {
    const hosts = (await c.listHosts({})).hosts.map((h) => h.id).sort();
    await c.createSwitch({ name: 'lan', type: 'SWITCH_TYPE_PRIVATE', hostId: hosts[0]! });
    await c.createSwitch({ name: 'lan', type: 'SWITCH_TYPE_PRIVATE', hostId: hosts[1]! });
    expect(
      (await refusal(c.createSwitch({ name: 'lan', type: 'SWITCH_TYPE_PRIVATE', hostId: hosts[0]! }))).code,
    ).to.equal(status.ALREADY_EXISTS);
    expect((await refusal(c.createSwitch({ name: 'lan', type: 'SWITCH_TYPE_EXTERNAL' }))).code).to.equal(
      status.ALREADY_EXISTS,
    );
    const { switches } = await c.listSwitches({});
    expect(
      switches
        .filter((w) => w.name === 'lan')
        .map((w) => w.hostId)
        .sort(),
    ).to.deep.equal(hosts.slice(0, 2));
    // Pushed: each host has its own, and only its own.
    await until('the private switch on its host', 30_000, async () => {
      const st = await c.getSwitchState({ id: 'lan', hostId: hosts[0]! });
      return st.name === 'lan' ? true : undefined;
    });
    expect((await refusal(c.getSwitchState({ id: 'lan', hostId: hosts[2]! }))).code).to.equal(
      status.NOT_FOUND,
    );
  });

  it('an NLB cluster of three VMs on three hosts converges, takes traffic, and converges again without a killed host', async () => {
    const ext = await c.createSwitch({ name: 'ext', type: 'SWITCH_TYPE_EXTERNAL' });
    expect(ext.macAgingSeconds).to.equal(300);
    const hosts = (await c.listHosts({})).hosts.map((h) => h.id).sort();
    const vms: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const op = await c.createVm({ config: member(i), start: true, hostId: hosts[i - 1]! });
      const done = await c.waitOperation({ id: op.id, timeoutMs: 60_000 });
      expect(done.error, done.message).to.equal(null);
      vms.push(done.vm!.id);
    }
    const web = await c.createNlbCluster(webCluster(100));
    expect(web.clusterMac).to.equal('02-BF-0A-00-00-64');
    for (let i = 0; i < 3; i++)
      await c.addNlbMember({ clusterId: web.id, member: { vmId: vms[i]!, hostPriority: i + 1 } });
    const dup = await refusal(
      c.addNlbMember({ clusterId: web.id, member: { vmId: vms[0]!, hostPriority: 7 } }),
    );
    expect(dup.code).to.equal(status.ALREADY_EXISTS);
    const got = await c.getNlbCluster({ id: 'web' });
    expect(got.members.map((m) => m.hostPriority)).to.deep.equal([1, 2, 3]);

    await until('three members converged', 60_000, async () => {
      const st = await c.getNlbClusterState({ id: web.id });
      return st.converged && st.members.length === 3 ? st : undefined;
    });
    const st = await c.getNlbClusterState({ id: web.id });
    // 60 buckets, equal weights: 20 each.
    const owners = st.bucketMaps[0]!.owners;
    expect(owners).to.have.length(60);
    for (const p of [1, 2, 3]) expect(owners.filter((o) => o === p)).to.have.length(20);
    expect(Number(st.lastConvergence!.finishedAtMs)).to.be.greaterThan(0);

    // A stopped member has left the cluster, and Windows NLB counts only active hosts: the other
    // two converge on a map of their own, and the cluster reads as converged.
    const third = st.members.find((m) => m.hostPriority === 3)!;
    await c.controlNlbMember({ clusterId: web.id, vmId: third.vmId, action: 'NLB_CONTROL_STOP' });
    const two = await until('converged without the stopped member', 60_000, async () => {
      const s = await c.getNlbClusterState({ id: web.id });
      return s.converged && new Set(s.bucketMaps[0]?.owners).size === 2 ? s : undefined;
    });
    expect(two.members.find((m) => m.hostPriority === 3)!.state).to.equal('stopped');
    await c.controlNlbMember({ clusterId: web.id, vmId: third.vmId, action: 'NLB_CONTROL_START' });
    await until('three members converged again', 60_000, async () => {
      const s = await c.getNlbClusterState({ id: web.id });
      return s.converged && new Set(s.bucketMaps[0]?.owners).size === 3 ? true : undefined;
    });

    const run = await c.startTraffic({
      traffic: {
        id: 'run',
        switchName: 'ext',
        virtualIp: '10.0.0.100',
        port: 80,
        ratePerSecond: 100,
        durationMs: 120_000,
        clients: 1000,
        retransmitTimeoutMs: 100,
        seed: 1,
      },
    });
    await until('every member answering', 60_000, async () => {
      const r = await c.getTraffic({ hostId: run.hostId, id: 'run' });
      return r.before!.members.filter((m) => m.vmId && m.requests > 0).length === 3 ? true : undefined;
    });

    // Kill a host that does not run the generator: the others converge without it.
    const victim = ['a', 'b', 'c'].find((a) => !run.hostId.startsWith(a))!;
    await c.markTrafficPhase({ hostId: run.hostId, id: 'run', phase: 'during' });
    await farm.killAgent(victim);
    await until('two members converged', 60_000, async () => {
      const s2 = await c.getNlbClusterState({ id: web.id });
      return s2.converged && s2.members.length === 2 ? true : undefined;
    });
    await c.markTrafficPhase({ hostId: run.hostId, id: 'run', phase: 'after' });
    await until('the survivors share the traffic after the fault', 60_000, async () => {
      const r = await c.getTraffic({ hostId: run.hostId, id: 'run' });
      const answering = r.after!.members.filter((m) => m.vmId && m.requests > 0);
      return r.after!.requests > 100 && answering.length === 2 ? true : undefined;
    });

    // The agent comes back with nothing: the leader pushes its configuration again.
    await farm.restartAgent(victim);
    await until('the restarted agent has the switches again', 60_000, async () => {
      const h = hosts.find((x) => x.startsWith(victim))!;
      const sw = await c.getSwitchState({ id: 'ext', hostId: h });
      return sw.name === 'ext' ? true : undefined;
    });
    await c.stopTraffic({ hostId: run.hostId, id: 'run', remove: true });
  });
});
