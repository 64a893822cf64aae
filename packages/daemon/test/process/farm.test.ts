import type * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { createClient, hyperfarmProto, promiseClient, status, TRAILERS, type pb } from '@hyperfarm/api';
import { ProcessFarm, until, vmSpec, type Cluster } from './harness.js';

const FAST = ['--heartbeat-ms', '200', '--suspect-after-ms', '600', '--down-after-ms', '1500'];

/** The status a failed call ended with, and the field its trailers name. */
const refusal = (p: Promise<unknown>) =>
  p.then(
    () => ({ code: status.OK, field: '', message: '' }),
    (e: grpc.ServiceError) => ({
      code: e.code,
      field: String(e.metadata?.get(TRAILERS.field)[0] ?? ''),
      message: e.details,
    }),
  );

async function done(c: Cluster, op: pb.Operation__Output): Promise<pb.Operation__Output> {
  const finished = await c.waitOperation({ id: op.id, timeoutMs: 30_000 });
  expect(finished.done, `${op.kind} ${op.id}: ${finished.message}`).to.equal(true);
  expect(finished.error, finished.message).to.equal(null);
  return finished;
}

describe('a farm of real processes: 3 daemons, agents with several hosts', function () {
  this.timeout(120_000);
  let farm: ProcessFarm;

  before(async () => {
    farm = await ProcessFarm.start({ daemons: 3, daemonArgs: FAST });
    await farm.startAgent('rack', 3);
    await farm.startAgent('solo', 1);
    await until('4 hosts Up', 20_000, async () => {
      const { hosts } = await farm.client('daemon-1').listHosts({ state: 'HOST_STATE_UP' });
      return hosts.length === 4 ? true : undefined;
    });
  });

  after(() => farm?.stop());

  it('registers every host of every agent, Up, each with a MAC range of its own', async () => {
    const { hosts } = await farm.client('daemon-2').listHosts({});
    expect(hosts.map((h) => h.id)).to.deep.equal(['rack-1', 'rack-2', 'rack-3', 'solo']);
    expect(new Set(hosts.map((h) => h.macPoolStart)).size).to.equal(4);
    // The agent took the farm's range: what it says of itself matches.
    const agent = promiseAgent(hosts[0]!.address);
    expect((await agent.getHostInfo({})).macPoolStart).to.equal(hosts[0]!.macPoolStart);
  });

  it("answers a host's last heartbeat and CPU on a follower too, as the leader sees them", async () => {
    const c = farm.client(await farm.follower());
    // Every host is granted its lease every 200 ms: a view a second or two old at most.
    await until('recent heartbeats on a follower', 10_000, async () => {
      const { hosts } = await c.listHosts({ consistency: 'CONSISTENCY_STALE', pageSize: 2 });
      const recent = (h: pb.Host__Output) => Date.now() - h.lastHeartbeatMs < 3_000;
      return hosts.length === 2 && hosts.every(recent) ? true : undefined;
    });
    // A guest using 80% of its processor: the host's CPU, reported in its grant answers.
    const config = { ...vmSpec('busy'), workload: { bootMs: 200, cpuDemandPercent: 80 } };
    await done(c, await c.createVm({ config, start: true, hostId: 'rack-2' }));
    await until('the busy host using CPU, read on a follower', 10_000, async () => {
      const host = await c.getHost({ id: 'rack-2' });
      return host.usage!.cpuPercent > 0 && Date.now() - host.lastHeartbeatMs < 3_000 ? true : undefined;
    });
    await done(c, await c.changeVmState({ id: 'busy', action: 'VM_ACTION_TURN_OFF' }));
    await done(c, await c.deleteVm({ id: 'busy' }));
  });

  it('creates, starts, stops and deletes a VM through a follower, each step an operation', async () => {
    const c = farm.client(await farm.follower());
    const nic = { kind: 'NIC_KIND_SYNTHETIC' as const };
    const created = await done(
      c,
      await c.createVm({ config: { ...vmSpec('web-1'), networkAdapters: [nic] } }),
    );
    const vm = created.vm!;
    expect(vm.status!.state).to.equal('VM_STATE_OFF');
    // Its MAC comes from its host's range.
    const host = await c.getHost({ id: vm.status!.hostId });
    expect(vm.config!.networkAdapters[0]!.macAddress.slice(0, 14)).to.equal(host.macPoolStart.slice(0, 14));

    const started = await done(c, await c.changeVmState({ id: 'web-1', action: 'VM_ACTION_START' }));
    expect(started.vm!.status!.state).to.equal('VM_STATE_RUNNING');
    expect((await c.listVms({ state: 'VM_STATE_RUNNING' })).vms.map((v) => v.config!.name)).to.include(
      'web-1',
    );

    const stopped = await done(c, await c.changeVmState({ id: 'web-1', action: 'VM_ACTION_STOP' }));
    expect(stopped.vm!.status!.state).to.equal('VM_STATE_OFF');
    expect(stopped.message).to.equal('stop: the VM is Off');

    await done(c, await c.deleteVm({ id: 'web-1' }));
    expect((await refusal(c.getVm({ id: 'web-1' }))).code).to.equal(status.NOT_FOUND);
    // The agent no longer has it either.
    expect((await refusal(promiseAgent(host.address).getVm({ vmId: vm.id }))).code).to.equal(
      status.NOT_FOUND,
    );
  });

  it('creates many VMs with one CreateVms call through a follower: one answer per VM, in order', async () => {
    const c = farm.client(await farm.follower());
    const { results } = await c.createVms({
      vms: [
        { config: vmSpec('many-1'), requestId: 'many-1' },
        { config: vmSpec('many-2'), start: true, hostId: 'rack-1' },
        // The same request id again: one create, answered twice.
        { config: vmSpec('many-1'), requestId: 'many-1' },
        { config: vmSpec('many-2') },
      ],
    });
    expect(results.map((r) => r.result)).to.deep.equal(['operation', 'operation', 'operation', 'error']);
    expect(results[2]!.operation!.id).to.equal(results[0]!.operation!.id);
    // The name taken by the VM before it in the same call: refused alone, as CreateVm would.
    expect(results[3]!.error).to.deep.equal({
      code: status.ALREADY_EXISTS,
      message: "VM 'many-2' already exists",
    });
    const one = await done(c, results[0]!.operation!);
    const two = await done(c, results[1]!.operation!);
    expect(one.vm!.status!.state).to.equal('VM_STATE_OFF');
    expect(two.vm!.status!.state).to.equal('VM_STATE_RUNNING');
    const names = (await c.listVms({})).vms.map((v) => v.config!.name);
    expect(names.filter((n) => n.startsWith('many-')).sort()).to.deep.equal(['many-1', 'many-2']);
  });

  it('answers brief results when asked: the operation to follow, whole from GetOperation', async () => {
    const c = farm.client(await farm.follower());
    const { results } = await c.createVms({
      vms: [{ config: vmSpec('brief-1'), requestId: 'brief-1' }, { config: vmSpec('brief-2') }],
      briefResults: true,
    });
    for (const [i, r] of results.entries()) {
      const op = r.operation!;
      expect(op.id).to.match(/\S/);
      expect(op.targetId).to.match(/\S/);
      // The rest of the operation is left out of the answer, and GetOperation has it.
      expect([op.kind, op.message, op.createdAtMs]).to.deep.equal(['', '', 0]);
      const whole = await c.getOperation({ id: op.id });
      expect([whole.id, whole.targetId, whole.kind]).to.deep.equal([op.id, op.targetId, 'vm.create']);
      expect(whole.progressPercent).to.be.at.least(op.progressPercent);
      expect((await done(c, op)).vm!.config!.name).to.equal(`brief-${i + 1}`);
    }
    // A retry of the same request id, briefly or not, is the same operation.
    const again = await c.createVms({ vms: [{ config: vmSpec('brief-1'), requestId: 'brief-1' }] });
    expect(again.results[0]!.operation!.id).to.equal(results[0]!.operation!.id);
    expect(again.results[0]!.operation!.kind).to.equal('vm.create');
  });

  it('starts again the Running VMs of an agent that was killed and came back', async () => {
    const c = farm.client('daemon-1');
    // Priority None: however slow the restart, the VM is never failed over to another host.
    const config = { ...vmSpec('solo-vm'), haPriority: 'HA_PRIORITY_NONE' as const };
    const op = await done(c, await c.createVm({ config, start: true, hostId: 'solo' }));
    const before = (await c.getClusterStatus({})).revision;
    await farm.killAgent('solo');
    await farm.restartAgent('solo');
    // The agent brings its VMs back Off (Hyper-V leaves the restart to the cluster); the daemon
    // sees it, and starts the VM again on the same host.
    const history: string[] = [];
    await until('the VM Running again after a restart', 30_000, async () => {
      const vm = await c.getVm({ id: op.vm!.id });
      history.push(vm.status!.state);
      return vm.status!.state === 'VM_STATE_RUNNING' && history.some((s) => s !== 'VM_STATE_RUNNING')
        ? vm
        : undefined;
    });
    const events = await collect(
      farm,
      'daemon-1',
      before,
      (e) => e.kind === 'RESOURCE_KIND_VM' && e.id === op.vm!.id,
    );
    const states = events.map((e) => e.vm!.status!.state);
    expect(states).to.include('VM_STATE_OFF');
    expect(states[states.length - 1]).to.equal('VM_STATE_RUNNING');
    expect(events.every((e) => e.vm!.status!.hostId === 'solo')).to.equal(true);
  });

  it('streams every change with strictly increasing revisions, and resumes from any kept revision', async () => {
    const c = farm.client('daemon-3');
    const from = (await c.getClusterStatus({})).revision;
    await done(c, await c.createVm({ config: vmSpec('watched') }));
    const all = await collect(farm, 'daemon-3', from, () => true);
    const revisions = all.map((e) => e.revision);
    expect(revisions).to.deep.equal([...revisions].sort((a, b) => a - b));
    expect(new Set(revisions).size).to.equal(revisions.length);
    expect(all.some((e) => e.kind === 'RESOURCE_KIND_OPERATION' && e.operation!.done)).to.equal(true);
    // From the middle: exactly the rest.
    const mid = revisions[Math.floor(revisions.length / 2)]!;
    expect((await collect(farm, 'daemon-3', mid, () => true)).map((e) => e.revision)).to.deep.equal(
      revisions.filter((r) => r > mid),
    );
  });

  it('answers linearizable reads on a follower: a write acknowledged by one daemon is seen by the next read anywhere', async () => {
    for (let i = 0; i < 5; i++) {
      const writer = farm.client(farm.daemonIds[i % 3]!);
      const reader = farm.client(farm.daemonIds[(i + 1) % 3]!);
      await writer.updateHost({
        host: { id: 'rack-1', labels: { round: String(i) } },
        updateMask: { paths: ['labels'] },
      });
      expect((await reader.getHost({ id: 'rack-1' })).labels).to.deep.equal({ round: String(i) });
    }
    expect(
      (await farm.client('daemon-2').getHost({ id: 'rack-1', consistency: 'CONSISTENCY_STALE' })).id,
    ).to.equal('rack-1');
  });

  it('refuses bad input to every RPC with the field and the reason, and changes nothing', async () => {
    const follower = await farm.follower();
    const c = farm.client(follower);
    const op = await done(c, await c.createVm({ config: vmSpec('target') }));
    const vmId = op.vm!.id;
    const revision = (await c.getClusterStatus({})).revision;
    const bad = vmSpec('bad');
    const cases: [string, () => Promise<unknown>, number, string][] = [
      ['RegisterHost', () => c.registerHost({ address: 'nowhere' }), status.INVALID_ARGUMENT, 'address'],
      [
        'RegisterHost labels',
        () => c.registerHost({ address: '127.0.0.1:1', labels: { '': 'x' } }),
        status.INVALID_ARGUMENT,
        'labels',
      ],
      ['GetHost', () => c.getHost({ id: 'Not A Host' }), status.INVALID_ARGUMENT, 'id'],
      ['ListHosts', () => c.listHosts({ pageSize: 5000 }), status.INVALID_ARGUMENT, 'page_size'],
      ['ListHosts token', () => c.listHosts({ pageToken: 'bm9wZQ' }), status.INVALID_ARGUMENT, 'page_token'],
      [
        'UpdateHost',
        () => c.updateHost({ host: { id: 'rack-1' }, updateMask: { paths: ['capacity'] } }),
        status.INVALID_ARGUMENT,
        'update_mask',
      ],
      ['UpdateHost no host', () => c.updateHost({}), status.INVALID_ARGUMENT, 'host'],
      ['RemoveHost', () => c.removeHost({ id: '' }), status.INVALID_ARGUMENT, 'id'],
      ['CreateVm', () => c.createVm({}), status.INVALID_ARGUMENT, 'config'],
      [
        'CreateVm name',
        () => c.createVm({ config: { ...bad, name: 'no spaces' } }),
        status.INVALID_ARGUMENT,
        'config.name',
      ],
      [
        'CreateVm memory',
        () => c.createVm({ config: { ...bad, memoryBytes: 1 } }),
        status.INVALID_ARGUMENT,
        'config.memory_bytes',
      ],
      [
        'CreateVm guest',
        () => c.createVm({ config: { ...bad, guestOs: 'os-2-warp' } }),
        status.INVALID_ARGUMENT,
        'config.guest_os',
      ],
      [
        'CreateVm classes',
        () => c.createVm({ config: { ...bad, antiAffinityClassNames: ['a', 'a'] } }),
        status.INVALID_ARGUMENT,
        'config.anti_affinity_class_names[1]',
      ],
      ['CreateVm host', () => c.createVm({ config: bad, hostId: 'NO' }), status.INVALID_ARGUMENT, 'host_id'],
      [
        'CreateVm request id',
        () => c.createVm({ config: bad, requestId: 'no spaces' }),
        status.INVALID_ARGUMENT,
        'request_id',
      ],
      ['CreateVms empty', () => c.createVms({}), status.INVALID_ARGUMENT, 'vms'],
      [
        'CreateVms too many',
        () => c.createVms({ vms: Array.from({ length: 1001 }, () => ({ config: bad })) }),
        status.INVALID_ARGUMENT,
        'vms',
      ],
      [
        // The first VM is valid: nothing of it is created either.
        'CreateVms one bad',
        () => c.createVms({ vms: [{ config: bad }, { config: { ...bad, name: 'no spaces' } }] }),
        status.INVALID_ARGUMENT,
        'vms[1].config.name',
      ],
      ['GetVm', () => c.getVm({ id: 'x'.repeat(1_000_000) }), status.INVALID_ARGUMENT, 'id'],
      ['ListVms', () => c.listVms({ pageSize: 1001 }), status.INVALID_ARGUMENT, 'page_size'],
      ['ListVms state', () => c.listVms({ state: 99 as never }), status.INVALID_ARGUMENT, 'state'],
      [
        'UpdateVm',
        () => c.updateVm({ id: vmId, config: bad, updateMask: { paths: ['memory_bytes'] } }),
        status.INVALID_ARGUMENT,
        'update_mask',
      ],
      [
        'UpdateVm value',
        () =>
          c.updateVm({
            id: vmId,
            config: { ...bad, memoryBytes: 3 },
            updateMask: { paths: ['config.memory_bytes'] },
          }),
        status.INVALID_ARGUMENT,
        'config.memory_bytes',
      ],
      ['DeleteVm', () => c.deleteVm({ id: '' }), status.INVALID_ARGUMENT, 'id'],
      ['ChangeVmState', () => c.changeVmState({ id: vmId }), status.INVALID_ARGUMENT, 'action'],
      ['ExplainPlacement', () => c.explainPlacement({}), status.INVALID_ARGUMENT, 'config'],
      ['CreateCheckpoint', () => c.createCheckpoint({ vmId, name: 'a\nb' }), status.INVALID_ARGUMENT, 'name'],
      ['ListCheckpoints', () => c.listCheckpoints({ vmId: '' }), status.INVALID_ARGUMENT, 'vm_id'],
      [
        'RenameCheckpoint',
        () => c.renameCheckpoint({ id: 'cp-1', name: '' }),
        status.INVALID_ARGUMENT,
        'name',
      ],
      ['ApplyCheckpoint', () => c.applyCheckpoint({ id: '' }), status.INVALID_ARGUMENT, 'id'],
      ['DeleteCheckpoint', () => c.deleteCheckpoint({ id: '' }), status.INVALID_ARGUMENT, 'id'],
      ['GetOperation', () => c.getOperation({ id: '' }), status.INVALID_ARGUMENT, 'id'],
      ['ListOperations', () => c.listOperations({ pageSize: 99_999 }), status.INVALID_ARGUMENT, 'page_size'],
      [
        'WaitOperation',
        () => c.waitOperation({ id: op.id, timeoutMs: 999_999 }),
        status.INVALID_ARGUMENT,
        'timeout_ms',
      ],
      ['Watch', () => firstEvent(farm, follower, { kinds: [99 as never] }), status.INVALID_ARGUMENT, 'kinds'],
      ['GetVm missing', () => c.getVm({ id: 'nope' }), status.NOT_FOUND, ''],
      [
        'PauseVm Off',
        () => c.changeVmState({ id: vmId, action: 'VM_ACTION_PAUSE' }),
        status.FAILED_PRECONDITION,
        '',
      ],
      ['CreateVm taken', () => c.createVm({ config: vmSpec('target') }), status.ALREADY_EXISTS, ''],
      ['MigrateVm kind', () => c.migrateVm({ vmId, kind: 7 as never }), status.INVALID_ARGUMENT, 'kind'],
      ['CreateSwitch no type', () => c.createSwitch({ name: 's' }), status.INVALID_ARGUMENT, 'type'],
      [
        'CreateSwitch bad name',
        () => c.createSwitch({ name: 'a/b', type: 'SWITCH_TYPE_EXTERNAL' }),
        status.INVALID_ARGUMENT,
        'name',
      ],
    ];
    for (const [name, call, code, field] of cases) {
      const r = await refusal(call());
      expect([name, r.code, r.field], `${name}: ${r.message}`).to.deep.equal([name, code, field]);
      if (field)
        expect(r.message, name).to.match(new RegExp(`^invalid ${field.replace(/[[\]]/g, '\\$&')}: .+`));
      expect(r.message.length, name).to.be.below(2_100);
    }
    expect(await refusal(c.changeVmState({ id: vmId, action: 'VM_ACTION_PAUSE' }))).to.deep.include({
      message: "cannot pause VM 'target': it is Off",
    });
    expect((await c.getClusterStatus({})).revision).to.equal(revision);
  });
});

function promiseAgent(address: string) {
  return promiseClient(createClient(hyperfarmProto().hyperfarm.v1.AgentService, address));
}

/** Events after `from`, through one daemon's Watch, until it has caught up with its revision. */
async function collect(
  farm: ProcessFarm,
  daemon: string,
  from: number,
  keep: (e: pb.Event__Output) => boolean,
): Promise<pb.Event__Output[]> {
  const to = (await farm.client(daemon).getClusterStatus({})).revision;
  const events: pb.Event__Output[] = [];
  if (to <= from) return events;
  const stream = farm.watch(daemon, { fromRevision: from });
  await new Promise<void>((resolve, reject) => {
    stream.on('data', (e: pb.Event__Output) => {
      if (keep(e)) events.push(e);
      if (e.revision < to) return;
      stream.cancel();
      resolve();
    });
    stream.on('error', (err: grpc.ServiceError) => (err.code === status.CANCELLED ? resolve() : reject(err)));
  });
  return events;
}

/** The first event of a Watch, or its error. */
function firstEvent(farm: ProcessFarm, daemon: string, req: pb.WatchRequest): Promise<unknown> {
  const stream = farm.watch(daemon, req);
  return new Promise((resolve, reject) => {
    stream.on('data', (e) => {
      stream.cancel();
      resolve(e);
    });
    stream.on('error', reject);
  });
}
