import { expect } from 'chai';
import {
  admissionRefusal,
  failoverRound,
  fencedHosts,
  planFailover,
  whatIfHostFailure,
} from '../../src/controllers/index.js';
import { decodeSnapshot, encodeSnapshot, type CommandBody } from '../../src/fsm/index.js';
import { FarmBuilder, field } from '../fsm/build.js';
import { vmConfig, type HostSpec, type VmSpec } from '../fsm/fixtures.js';

const OPTS = { policy: 'spread' as const, vcpuRatio: 8 };
const HOUR = 3_600_000;
const GIB_MIB = 1024;

/** A farm of hosts on cluster storage, `vms` placed and reported Running on them. */
function farm(hosts: HostSpec[], vms: [string, VmSpec, string][]): FarmBuilder {
  const b = new FarmBuilder();
  for (const h of hosts) b.host({ clusterStorage: true, ...h });
  for (const [id, spec, on] of vms) b.vm(id, spec, on, { start: true }).report(id, 'RUNNING');
  return b;
}

const down = (b: FarmBuilder, id: string) =>
  b.must({ type: 'host.state', id, state: 'HOST_STATE_DOWN', reason: 'no lease renewal for 5.0 s' });

/** Runs one failover round on the committed state and commits it, as the leader does. */
function failoverNow(b: FarmBuilder, fenced: string[]): Record<string, unknown> {
  const round = failoverRound(b.s, fenced, b.t, OPTS);
  const [r] = b.must({ type: 'vm.failover', ...round } as CommandBody);
  return r as Record<string, unknown>;
}

describe('failover: the planner (pure)', () => {
  it('restarts High, then Medium, then Low within capacity; None stays; what does not fit is stranded with the reason', () => {
    // h2 has 14 GB usable: room for two 6 GB VMs (plus overhead), not three.
    const b = farm(
      [{ id: 'h1', memGiB: 32 }, { id: 'h2' }],
      [
        ['low', { name: 'low', memMiB: 6 * GIB_MIB, priority: 'HA_PRIORITY_LOW' }, 'h1'],
        ['med', { name: 'med', memMiB: 6 * GIB_MIB, priority: 'HA_PRIORITY_UNSPECIFIED' }, 'h1'],
        ['high', { name: 'high', memMiB: 6 * GIB_MIB, priority: 'HA_PRIORITY_HIGH' }, 'h1'],
        ['none', { name: 'none', memMiB: 512, priority: 'HA_PRIORITY_NONE' }, 'h1'],
      ],
    );
    down(b, 'h1');
    const plan = planFailover(b.s, ['h1'], b.t, OPTS);
    expect(plan.restarts.map((r) => `${r.vmId}@${r.hostId}:${r.priority}`)).to.deep.equal([
      'high@h2:HIGH',
      'med@h2:MEDIUM',
    ]);
    expect(plan.stranded.map((x) => x.vmId)).to.deep.equal(['low']);
    expect(plan.stranded[0]!.reason).to.include('h2: 1.9 GB free, 6 GB needed');
    expect(plan.left).to.deep.equal([
      { vmId: 'none', reason: 'its HA priority is None: it stays on its host' },
    ]);
  });

  it('keeps a hard anti-affinity class apart: the second VM of the class has nowhere to go', () => {
    const b = farm(
      [{ id: 'h1' }, { id: 'h2' }, { id: 'h3' }],
      [
        ['db1', { name: 'db1', classes: ['db'], hard: true }, 'h1'],
        ['db2', { name: 'db2', classes: ['db'], hard: true }, 'h2'],
      ],
    );
    b.must({
      type: 'host.update',
      id: 'h3',
      paths: ['maintenance'],
      name: '',
      labels: {},
      maintenance: true,
    });
    down(b, 'h1');
    // h2 holds db2 and h3 is in maintenance: db1 cannot restart anywhere.
    const plan = planFailover(b.s, ['h1'], b.t, OPTS);
    expect(plan.restarts).to.deep.equal([]);
    expect(plan.stranded[0]!.reason).to.include("h2: hard anti-affinity class 'db' is held by VM 'db2'");
    expect(plan.stranded[0]!.reason).to.include('h3: in maintenance');
  });

  it('restarts only on hosts that reach cluster storage, and nothing of a host without it', () => {
    const b = farm([{ id: 'h1' }, { id: 'h3' }], [['v', { name: 'v' }, 'h1']]);
    b.host({ id: 'h2' }); // no cluster storage: emptier, but it cannot open the VM's files
    down(b, 'h1');
    expect(planFailover(b.s, ['h1'], b.t, OPTS).restarts.map((r) => r.hostId)).to.deep.equal(['h3']);
    const c = new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2', clusterStorage: true });
    c.vm('v', { name: 'v' }, 'h1', { start: true });
    down(c, 'h1');
    expect(planFailover(c.s, ['h1'], c.t, OPTS).stranded[0]!.reason).to.equal(
      "its files are on host 'h1', which has no cluster storage",
    );
  });
});

describe('failover: fencing first (pure)', () => {
  const CFG = { leaseMs: 5_000, marginMs: 500 };

  it("waits until the host's last lease has surely ended: from its answer, plus the lease, plus the margin", () => {
    const b = farm([{ id: 'h1' }, { id: 'h2' }], [['v', { name: 'web' }, 'h1']]);
    down(b, 'h1');
    const answers = new Map([['h1', 100_000]]);
    expect(fencedHosts(b.s, answers, 0, 105_499, CFG)).to.deep.equal({ fenced: [], nextMs: 105_500 });
    expect(fencedHosts(b.s, answers, 0, 105_500, CFG)).to.deep.equal({ fenced: ['h1'], nextMs: Infinity });
  });

  it('a new leader, without an answer from the host, waits one full lease from its election', () => {
    const b = farm([{ id: 'h1' }, { id: 'h2' }], [['v', { name: 'web' }, 'h1']]);
    down(b, 'h1');
    const none = new Map<string, number>();
    expect(fencedHosts(b.s, none, 200_000, 205_000, CFG).fenced).to.deep.equal([]);
    expect(fencedHosts(b.s, none, 200_000, 205_500, CFG).fenced).to.deep.equal(['h1']);
  });

  it('fences only Down hosts that hold VMs', () => {
    const b = farm([{ id: 'h1' }, { id: 'h2' }, { id: 'h3' }], [['v', { name: 'web' }, 'h1']]);
    down(b, 'h3');
    b.must({ type: 'host.state', id: 'h1', state: 'HOST_STATE_SUSPECT', reason: 'x' });
    expect(fencedHosts(b.s, new Map(), 0, 1e9, CFG).fenced).to.deep.equal([]);
  });
});

describe('failover: the vm.failover command', () => {
  it('moves the VM under a new generation, to be created (adopted) and started by the reconciler', () => {
    const b = farm([{ id: 'h1' }, { id: 'h2' }], [['v', { name: 'web' }, 'h1']]);
    expect(b.s.vms.get('v')!.generation).to.equal(1);
    down(b, 'h1');
    expect(b.s.vms.get('v')!.observed.state).to.equal('VM_STATE_UNKNOWN');
    const r = failoverNow(b, ['h1']);
    expect(r['restarted']).to.deep.equal(['v']);
    const vm = b.s.vms.get('v')!;
    expect([vm.hostId, vm.generation, vm.desired, vm.observed.present]).to.deep.equal([
      'h2',
      2,
      'VM_STATE_RUNNING',
      false,
    ]);
    expect(vm.observed.message).to.equal("failed over from host 'h1' (Down); restarting on host 'h2'");
  });

  it('refuses a restart of a VM whose host is not Down (it came back during the fencing wait)', () => {
    const b = farm([{ id: 'h1' }, { id: 'h2' }], [['v', { name: 'web' }, 'h1']]);
    const [r] = b.must({
      type: 'vm.failover',
      restarts: [{ vmId: 'v', hostId: 'h2', note: '' }],
      held: [],
      stranded: [],
    });
    expect(field(r, 'restarted')).to.deep.equal([]);
    expect(b.s.vms.get('v')!.hostId).to.equal('h1');
  });

  it('checks the target again: a plan that no longer fits is refused for that VM', () => {
    const b = farm(
      [{ id: 'h1' }, { id: 'h2', memGiB: 8 }],
      [['big', { name: 'big', memMiB: 5 * GIB_MIB }, 'h1']],
    );
    b.vm('filler', { name: 'filler', memMiB: 4 * GIB_MIB }, 'h2');
    down(b, 'h1');
    const [r] = b.must({
      type: 'vm.failover',
      restarts: [{ vmId: 'big', hostId: 'h2', note: '' }],
      held: [],
      stranded: [],
    });
    expect(field(r, 'rejected')).to.deep.equal([{ vmId: 'big', reason: 'h2: 2 GB free, 5 GB needed' }]);
  });

  it('ends the operation that waited on the failed host; a create goes on on the new host', () => {
    const b = farm([{ id: 'h1' }, { id: 'h2' }], [['v', { name: 'web' }, 'h1']]);
    b.vm('w', { name: 'new' }, 'h1', { start: true });
    b.must({
      type: 'vm.update',
      vmId: 'v',
      opId: 'upd',
      config: vmConfig({ name: 'web', memMiB: 2048 }),
      paths: ['memory_bytes'],
    });
    down(b, 'h1');
    failoverNow(b, ['h1']);
    expect(b.s.operations.get('upd')).to.deep.include({ done: true });
    expect(b.s.operations.get('upd')!.error).to.deep.equal({
      code: 'ABORTED',
      message: "host 'h1' went Down; VM 'web' is restarted on host 'h2'",
    });
    expect(b.s.vms.get('v')!.busyOpId).to.equal('');
    expect(b.s.vms.get('w')).to.deep.include({ hostId: 'h2', busyOpId: 'op-w' });
  });

  it('holds the threshold: by default N-1 failovers of a VM in 6 hours, then the VM stays Off with the reason', () => {
    // Three hosts: at most two failovers of one VM in six hours.
    const b = farm([{ id: 'h1' }, { id: 'h2' }, { id: 'h3' }], [['v', { name: 'web' }, 'h1']]);
    const fail = (from: string) => {
      down(b, from);
      b.t += 1_000;
      failoverNow(b, [from]);
      const vm = b.s.vms.get('v')!;
      b.must({ type: 'host.register', host: { ...hostOf(b, from) } } as CommandBody);
      if (vm.hostId !== from) b.report('v', 'RUNNING');
      return b.s.vms.get('v')!;
    };
    const first = fail('h1');
    expect(first.hostId).to.not.equal('h1');
    b.t += HOUR;
    const second = fail(first.hostId);
    expect(second.hostId).to.not.equal(first.hostId);
    b.t += HOUR;
    down(b, second.hostId);
    const r = failoverNow(b, [second.hostId]);
    expect(r['held']).to.deep.equal(['v']);
    const held = b.s.vms.get('v')!;
    expect([held.hostId, held.desired, held.observed.state]).to.deep.equal([
      second.hostId,
      'VM_STATE_OFF',
      'VM_STATE_OFF',
    ]);
    expect(held.observed.message).to.equal(
      `host '${second.hostId}' is Down and the failover threshold is reached: 2 failovers in the last 6 h, at most 2; the VM is left Off`,
    );
  });

  it('counts only the failovers within the period, and takes the threshold from the settings', () => {
    const b = farm([{ id: 'h1' }, { id: 'h2' }], [['v', { name: 'web' }, 'h1']]);
    down(b, 'h1');
    failoverNow(b, ['h1']);
    b.report('v', 'RUNNING');
    // Two hosts: one failover in six hours. Six hours and a second later, another is allowed.
    b.must({ type: 'host.register', host: hostOf(b, 'h1') } as CommandBody);
    b.t += 6 * HOUR + 1_000;
    down(b, 'h2');
    expect(failoverNow(b, ['h2'])['restarted']).to.deep.equal(['v']);
    b.report('v', 'RUNNING');
    b.must({
      type: 'settings.update',
      paths: ['failoverMaxPerPeriod', 'failoverPeriodMs'],
      settings: {
        hostFailuresToTolerate: 0,
        admissionWarnOnly: false,
        failoverMaxPerPeriod: 3,
        failoverPeriodMs: HOUR,
        maxMigrationsPerHost: 0,
      },
    });
    b.must({ type: 'host.register', host: hostOf(b, 'h2') } as CommandBody);
    b.t += 1_000;
    down(b, 'h1');
    expect(failoverNow(b, ['h1'])['restarted']).to.deep.equal(['v']);
  });

  it('reports a stranded VM once per reason, and keeps its state Unknown', () => {
    const b = farm(
      [{ id: 'h1' }, { id: 'h2', memGiB: 4 }],
      [['v', { name: 'web', memMiB: 4 * GIB_MIB }, 'h1']],
    );
    down(b, 'h1');
    failoverNow(b, ['h1']);
    const vm = b.s.vms.get('v')!;
    expect(vm.observed.state).to.equal('VM_STATE_UNKNOWN');
    expect(vm.observed.message).to.equal(
      "waiting to restart on another host: no host can take VM 'web': h2: 2 GB free, 4 GB needed",
    );
    expect(failoverRound(b.s, ['h1'], b.t, OPTS).stranded).to.deep.equal([]);
  });

  it('survives a snapshot: the settings and the failover history', () => {
    const b = farm([{ id: 'h1' }, { id: 'h2' }], [['v', { name: 'web' }, 'h1']]);
    down(b, 'h1');
    failoverNow(b, ['h1']);
    const restored = decodeSnapshot(encodeSnapshot(b.s));
    expect([...restored.failovers]).to.deep.equal([['v', [b.t]]]);
    expect(restored.ha).to.deep.equal(b.s.ha);
  });
});

describe('what-if and admission control (pure)', () => {
  it('WhatIfHostFailure answers as a failover would, and changes nothing', () => {
    const b = farm(
      [{ id: 'h1' }, { id: 'h2' }, { id: 'h3' }],
      [
        ['a', { name: 'a', priority: 'HA_PRIORITY_LOW' }, 'h1'],
        ['b', { name: 'b', priority: 'HA_PRIORITY_HIGH' }, 'h1'],
        ['c', { name: 'c', priority: 'HA_PRIORITY_NONE' }, 'h2'],
      ],
    );
    const before = encodeSnapshot(b.s);
    const plan = whatIfHostFailure(b.s, ['h1', 'h2'], b.t, OPTS);
    expect(plan.restarts.map((r) => `${r.vmId}@${r.hostId}`)).to.deep.equal(['b@h3', 'a@h3']);
    expect(plan.left.map((l) => l.vmId)).to.deep.equal(['c']);
    expect(encodeSnapshot(b.s)).to.deep.equal(before);
    expect(b.s.hosts.get('h1')!.state).to.equal('HOST_STATE_UP');
  });

  it('refuses an HA VM whose start would leave an HA VM nowhere to restart after the tolerated failures', () => {
    // Two hosts of 14 GB usable each; 1 failure to tolerate: the HA VMs of either host must fit
    // on the other.
    const b = farm(
      [{ id: 'h1' }, { id: 'h2' }],
      [
        ['a', { name: 'a', memMiB: 6 * GIB_MIB }, 'h1'],
        ['b', { name: 'b', memMiB: 6 * GIB_MIB }, 'h2'],
      ],
    );
    const ask = (name: string, memMiB: number, priority: VmSpec['priority'] = 'HA_PRIORITY_MEDIUM') => ({
      vmId: `new-${name}`,
      config: vmConfig({ name, memMiB, priority }),
      hostId: '',
    });
    expect(admissionRefusal(b.s, ask('c', 6 * GIB_MIB), b.t, OPTS)).to.equal(undefined); // off by default
    b.must({
      type: 'settings.update',
      paths: ['hostFailuresToTolerate'],
      settings: {
        hostFailuresToTolerate: 1,
        admissionWarnOnly: false,
        failoverMaxPerPeriod: 0,
        failoverPeriodMs: 0,
        maxMigrationsPerHost: 0,
      },
    });
    expect(admissionRefusal(b.s, ask('small', 512), b.t, OPTS)).to.equal(undefined);
    const refusal = admissionRefusal(b.s, ask('c', 6 * GIB_MIB), b.t, OPTS);
    expect(refusal).to.match(
      /^admission control: the farm must tolerate 1 host failure; with VM 'c' running on host 'h\d', if host 'h\d' failed, \d HA VMs? could not restart/,
    );
    // Priority None is never restarted, so it reserves nothing.
    expect(admissionRefusal(b.s, ask('n', 6 * GIB_MIB, 'HA_PRIORITY_NONE'), b.t, OPTS)).to.equal(undefined);
    // Starting an existing VM is weighed on its own host.
    b.vm('off', { name: 'off', memMiB: 6 * GIB_MIB }, 'h1');
    const vm = b.s.vms.get('off')!;
    expect(admissionRefusal(b.s, { vmId: 'off', config: vm.config, hostId: 'h1' }, b.t, OPTS)).to.include(
      "with VM 'off' running on host 'h1', if host 'h1' failed",
    );
  });
});

function hostOf(b: FarmBuilder, id: string) {
  const h = b.s.hosts.get(id)!;
  return {
    id: h.id,
    name: h.name,
    address: h.address,
    labels: h.labels,
    capacity: h.capacity,
    limits: h.limits,
    guestOs: h.guestOsIds.map((g) => b.s.guests.get(g)!),
    clusterStorage: h.clusterStorage,
  };
}
