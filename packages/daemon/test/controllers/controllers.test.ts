import { expect } from 'chai';
import {
  atRest,
  hostTransitions,
  observedReports,
  placementRound,
  reconcileVms,
  type AgentVmView,
  type HostInventory,
  type ReconcileInput,
} from '../../src/controllers/index.js';
import { FarmBuilder } from '../fsm/build.js';

const LIVENESS = { suspectAfterMs: 2_000, downAfterMs: 5_000 };

describe('the host monitor (pure)', () => {
  const farm = () => new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2' });

  it('is Suspect after the suspect time without a renewal, Down after the down time, Up again on an answer', () => {
    const b = farm();
    const grants = new Map([
      ['h1', 10_000],
      ['h2', 10_000],
    ]);
    expect(hostTransitions(b.s, grants, 0, 11_999, LIVENESS).transitions).to.deep.equal([]);
    expect(hostTransitions(b.s, grants, 0, 12_000, LIVENESS).transitions).to.deep.equal([
      { hostId: 'h1', state: 'HOST_STATE_SUSPECT', reason: 'no lease renewal for 2.0 s' },
      { hostId: 'h2', state: 'HOST_STATE_SUSPECT', reason: 'no lease renewal for 2.0 s' },
    ]);
    grants.set('h1', 14_000);
    expect(hostTransitions(b.s, grants, 0, 15_000, LIVENESS).transitions).to.deep.equal([
      { hostId: 'h2', state: 'HOST_STATE_DOWN', reason: 'no lease renewal for 5.0 s' },
    ]);
    b.must({ type: 'host.state', id: 'h2', state: 'HOST_STATE_DOWN', reason: 'x' });
    grants.set('h2', 15_500);
    expect(hostTransitions(b.s, grants, 0, 15_600, LIVENESS).transitions).to.deep.equal([
      { hostId: 'h2', state: 'HOST_STATE_UP', reason: 'its lease is renewed again' },
    ]);
  });

  it('says when the next host falls due (Suspect at 2 s, Down at 5 s of silence), so it is judged then and not at the next round', () => {
    const b = farm();
    const grants = new Map([
      ['h1', 10_040],
      ['h2', 10_900],
    ]);
    expect(hostTransitions(b.s, grants, 0, 11_000, LIVENESS).nextMs).to.equal(12_040);
    b.must({ type: 'host.state', id: 'h1', state: 'HOST_STATE_SUSPECT', reason: 'x' });
    expect(hostTransitions(b.s, grants, 0, 12_040, LIVENESS).nextMs).to.equal(12_900);
    expect(hostTransitions(b.s, grants, 0, 13_000, LIVENESS).nextMs).to.equal(15_040);
    b.must({ type: 'host.state', id: 'h1', state: 'HOST_STATE_DOWN', reason: 'x' });
    b.must({ type: 'host.state', id: 'h2', state: 'HOST_STATE_DOWN', reason: 'x' });
    expect(hostTransitions(b.s, grants, 0, 16_000, LIVENESS).nextMs).to.equal(Infinity);
  });

  it('holds back a host whose grant is on its way, but still lets it come Up', () => {
    const b = farm();
    b.must({ type: 'host.state', id: 'h2', state: 'HOST_STATE_SUSPECT', reason: 'x' });
    const grants = new Map([
      ['h1', 10_000],
      ['h2', 15_000],
    ]);
    const awaiting = new Set(['h1', 'h2']);
    expect(hostTransitions(b.s, grants, 0, 15_000, LIVENESS, awaiting).transitions).to.deep.equal([
      { hostId: 'h2', state: 'HOST_STATE_UP', reason: 'its lease is renewed again' },
    ]);
    expect(hostTransitions(b.s, grants, 0, 15_000, LIVENESS).transitions.map((t) => t.state)).to.deep.equal([
      'HOST_STATE_DOWN',
      'HOST_STATE_UP',
    ]);
  });

  it('a new leader counts silence from its election, and never calls a host better without an answer', () => {
    const b = farm();
    b.must({ type: 'host.state', id: 'h2', state: 'HOST_STATE_DOWN', reason: 'x' });
    const none = new Map<string, number>();
    // Elected at 100 s: nothing for h1 before 102 s; h2 stays Down although only 1 s passed.
    expect(hostTransitions(b.s, none, 100_000, 101_000, LIVENESS).transitions).to.deep.equal([]);
    expect(hostTransitions(b.s, none, 100_000, 105_000, LIVENESS).transitions).to.deep.equal([
      {
        hostId: 'h1',
        state: 'HOST_STATE_DOWN',
        reason: "no lease renewal for 5.0 s (counted from this leader's election)",
      },
    ]);
  });

  it("does not count a stall of the leader itself as the hosts' silence, nor call a host better unheard", () => {
    const b = farm();
    b.must({ type: 'host.state', id: 'h2', state: 'HOST_STATE_SUSPECT', reason: 'x' });
    const grants = new Map([
      ['h1', 10_000],
      ['h2', 9_000],
    ]);
    // The leader's process stalled from 10.5 s to 14 s: it sent no grant, so it counts from 14 s.
    expect(hostTransitions(b.s, grants, 14_000, 15_000, LIVENESS).transitions).to.deep.equal([]);
    expect(hostTransitions(b.s, grants, 14_000, 16_000, LIVENESS).transitions).to.deep.equal([
      { hostId: 'h1', state: 'HOST_STATE_SUSPECT', reason: 'no lease renewal for 2.0 s' },
    ]);
    // h2 answered again only after the stall: Up.
    grants.set('h2', 14_200);
    expect(hostTransitions(b.s, grants, 14_000, 14_300, LIVENESS).transitions).to.deep.equal([
      { hostId: 'h2', state: 'HOST_STATE_UP', reason: 'its lease is renewed again' },
    ]);
  });

  it('gives a host that registers after the election the full time from its registration', () => {
    const b = new FarmBuilder();
    b.t = 103_000;
    b.host({ id: 'late' });
    const none = new Map<string, number>();
    expect(hostTransitions(b.s, none, 100_000, 104_500, LIVENESS).transitions).to.deep.equal([]);
    expect(hostTransitions(b.s, none, 100_000, 105_000, LIVENESS).transitions).to.deep.equal([
      { hostId: 'late', state: 'HOST_STATE_SUSPECT', reason: 'no lease renewal for 2.0 s' },
    ]);
  });
});

describe('the placement controller (pure)', () => {
  it('plans the VMs waiting for a host, oldest first, pinned ones on their host, up to the batch size', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2' });
    b.vm('a', { name: 'a' })
      .vm('b', { name: 'b' }, undefined, { pinned: 'h2' })
      .vm('c', { name: 'c' })
      .vm('d', { name: 'd' }, 'h1');
    const plan = placementRound(b.s, { policy: 'spread', vcpuRatio: 8 }, 2);
    expect(plan.placements.map((p) => `${p.vmId}@${p.hostId}`)).to.deep.equal(['a@h2', 'b@h2']);
    expect(
      placementRound(b.s, { policy: 'spread', vcpuRatio: 8 }, 10).placements.map((p) => p.vmId),
    ).to.deep.equal(['a', 'b', 'c']);
  });
});

describe('the VM reconciler (pure)', () => {
  const input = (over: Partial<ReconcileInput> = {}): ReconcileInput => ({
    synced: new Set(['h1']),
    inFlight: new Set(),
    backoffUntilMs: new Map(),
    nowMs: 0,
    ...over,
  });

  it('creates a placed VM on its host, then starts it as part of its create', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).vm('v', { name: 'web' }, 'h1', { start: true });
    const [create] = reconcileVms(b.s, input());
    // A VM meant to run: its host is asked to start it with the create.
    expect(create).to.deep.include({
      kind: 'create',
      hostId: 'h1',
      vmId: 'v',
      generation: 1,
      opId: 'op-v',
      start: true,
    });
    const off = new FarmBuilder().host({ id: 'h1' }).vm('w', { name: 'db' }, 'h1', { start: false });
    expect(reconcileVms(off.s, input())[0]).to.deep.include({ kind: 'create', vmId: 'w', start: false });
    b.report('v', 'OFF');
    expect(reconcileVms(b.s, input())).to.deep.equal([
      {
        hostId: 'h1',
        vmId: 'v',
        generation: 1,
        kind: 'change-state',
        action: 'VM_ACTION_START',
        opId: 'op-v',
      },
    ]);
  });

  it('starts a VM that should run and came back Off (its agent restarted), and leaves transitions alone', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).vm('v', { name: 'web' }, 'h1', { start: true });
    b.report('v', 'RUNNING');
    expect(reconcileVms(b.s, input())).to.deep.equal([]);
    b.report('v', 'OFF');
    expect(reconcileVms(b.s, input())).to.deep.equal([
      { hostId: 'h1', vmId: 'v', generation: 1, kind: 'change-state', action: 'VM_ACTION_START', opId: '' },
    ]);
    b.report('v', 'STARTING');
    expect(reconcileVms(b.s, input())).to.deep.equal([]);
    b.report('v', 'SAVED');
    expect(reconcileVms(b.s, input())[0]).to.deep.include({ action: 'VM_ACTION_START' });
    b.report('v', 'PAUSED');
    expect(reconcileVms(b.s, input())[0]).to.deep.include({ action: 'VM_ACTION_RESUME' });
  });

  it('asks nothing of a host it cannot vouch for, nor twice at once, nor during a backoff', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2' }).vm('v', { name: 'web' }, 'h1');
    expect(reconcileVms(b.s, input({ synced: new Set(['h2']) }))).to.deep.equal([]);
    expect(reconcileVms(b.s, input({ inFlight: new Set(['v']) }))).to.deep.equal([]);
    expect(reconcileVms(b.s, input({ backoffUntilMs: new Map([['v', 10]]), nowMs: 9 }))).to.deep.equal([]);
    expect(reconcileVms(b.s, input({ backoffUntilMs: new Map([['v', 10]]), nowMs: 10 }))).to.have.length(1);
    b.must({ type: 'host.state', id: 'h1', state: 'HOST_STATE_SUSPECT', reason: 'x' });
    expect(reconcileVms(b.s, input())).to.deep.equal([]);
  });

  it("carries out a VM's operation: the state change asked for, once", () => {
    const b = new FarmBuilder().host({ id: 'h1' }).vm('v', { name: 'web' }, 'h1', { start: true });
    b.report('v', 'RUNNING');
    b.must({ type: 'vm.change_state', vmId: 'v', opId: 'stop', action: 'VM_ACTION_STOP' });
    expect(reconcileVms(b.s, input())).to.deep.equal([
      {
        hostId: 'h1',
        vmId: 'v',
        generation: 1,
        kind: 'change-state',
        action: 'VM_ACTION_STOP',
        opId: 'stop',
      },
    ]);
    b.must({ type: 'op.result', opId: 'stop', ok: true });
    expect(reconcileVms(b.s, input())).to.deep.equal([]);
  });

  it('asks again for a start its host lost: the host restarted while the VM was Starting and reports it Off', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).vm('v', { name: 'web' }, 'h1');
    b.report('v', 'OFF');
    b.must({ type: 'vm.change_state', vmId: 'v', opId: 'start', action: 'VM_ACTION_START' });
    const start = {
      hostId: 'h1',
      vmId: 'v',
      generation: 1,
      kind: 'change-state',
      action: 'VM_ACTION_START',
      opId: 'start',
    };
    expect(reconcileVms(b.s, input())).to.deep.equal([start]);
    // The host accepted it: nothing more to ask while it starts, nor on a report from before.
    b.must({ type: 'op.result', opId: 'start', ok: true });
    expect(reconcileVms(b.s, input())).to.deep.equal([]);
    b.report('v', 'STARTING');
    expect(reconcileVms(b.s, input())).to.deep.equal([]);
    // The host crashed and came back: Hyper-V leaves the VM Off, and the start is asked again.
    b.report('v', 'OFF');
    expect(reconcileVms(b.s, input())).to.deep.equal([start]);
    b.report('v', 'RUNNING');
    expect(b.s.operations.get('start')?.done).to.equal(true);
    expect(reconcileVms(b.s, input())).to.deep.equal([]);
  });
});

/** A VM as its agent describes it, in the given state and generation. */
const view = (state: AgentVmView['state'], generation = 1): AgentVmView => ({
  state,
  heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
  message: '',
  memoryAssignedBytes: 0,
  generation,
  macs: [],
  revision: 1,
});

describe('the observed-state controller (pure)', () => {
  const inv = (synced: boolean, vms: [string, AgentVmView][]): Map<string, HostInventory> =>
    new Map([['h1', { synced, vms: new Map(vms) }]]);

  it('reports only what differs from the log, only from a host whose inventory is current', () => {
    const b = new FarmBuilder()
      .host({ id: 'h1' })
      .vm('v', { name: 'web' }, 'h1')
      .vm('w', { name: 'db' }, 'h1');
    b.report('w', 'OFF');
    expect(observedReports(b.s, inv(false, [['v', view('VM_STATE_OFF')]]))).to.deep.equal([]);
    const reports = observedReports(b.s, inv(true, [['v', view('VM_STATE_OFF')]]));
    expect(reports.map((r) => [r.vmId, r.present, r.state])).to.deep.equal([
      ['v', true, 'VM_STATE_OFF'],
      ['w', false, 'VM_STATE_OFF'],
    ]);
    b.must({ type: 'vm.observed', reports });
    expect(observedReports(b.s, inv(true, [['v', view('VM_STATE_OFF')]]))).to.deep.equal([]);
  });

  it('says nothing of a VM whose handover is committed until its migration ends (the target still holds the import)', () => {
    const b = new FarmBuilder()
      .host({ id: 'h1' })
      .host({ id: 'h2' })
      .vm('v', { name: 'web' }, 'h1', { start: true });
    b.report('v', 'RUNNING');
    b.must(
      {
        type: 'migration.request',
        migrationId: 'm1',
        opId: 'o-m1',
        vmId: 'v',
        targetHostId: 'h2',
        kind: 'MIGRATION_KIND_LIVE',
        deadlineMs: 2_000,
      },
      { type: 'migration.start', migrationId: 'm1', limit: 2 },
      {
        type: 'migration.decide',
        migrationId: 'm1',
        decision: 'commit',
        reason: '',
        prepared: { bytesTransferred: 1, rounds: 1, sha256: 'ab' },
      },
    );
    const target = new Map([['h2', { synced: true, vms: new Map([['v', view('VM_STATE_OFF', 2)]]) }]]);
    expect(b.s.vms.get('v')!.hostId).to.equal('h2');
    expect(observedReports(b.s, target), 'committed, the target not told yet').to.deep.equal([]);
    b.must({ type: 'migration.finish', migrationId: 'm1', downtimeMs: 5 });
    expect(observedReports(b.s, target).map((r) => [r.vmId, r.hostId, r.state])).to.deep.equal([
      ['v', 'h2', 'VM_STATE_OFF'],
    ]);
  });

  it("ignores a copy with another generation: it is not the farm's VM", () => {
    const b = new FarmBuilder().host({ id: 'h1' }).vm('v', { name: 'web' }, 'h1');
    expect(observedReports(b.s, inv(true, [['v', view('VM_STATE_RUNNING', 7)]]))).to.deep.equal([]);
  });
});

describe('a VM at rest (pure)', () => {
  const inv = (v: AgentVmView | undefined, synced = true): Map<string, HostInventory> =>
    new Map([['h1', { synced, vms: new Map(v ? [['v', v]] : []) }]]);
  /** v runs on h1 as wanted, reported so. */
  const running = () => {
    const b = new FarmBuilder().host({ id: 'h1' }).vm('v', { name: 'web' }, 'h1', { start: true });
    b.report('v', 'RUNNING');
    return b;
  };

  it('is one both controllers pass by: nothing to report, nothing to do', () => {
    const b = running();
    const inventory = inv(view('VM_STATE_RUNNING'));
    expect(atRest(b.s, inventory, 'v')).to.equal(true);
    expect(observedReports(b.s, inventory)).to.deep.equal([]);
    expect(
      reconcileVms(b.s, {
        synced: new Set(['h1']),
        inFlight: new Set(),
        backoffUntilMs: new Map(),
        nowMs: 0,
      }),
    ).to.deep.equal([]);
  });

  it('is not one with something to report or to do, or that no current inventory vouches for', () => {
    const b = running();
    expect(atRest(b.s, inv(view('VM_STATE_OFF')), 'v'), 'the agent says otherwise').to.equal(false);
    expect(atRest(b.s, inv(view('VM_STATE_RUNNING', 2)), 'v'), 'another generation').to.equal(false);
    expect(atRest(b.s, inv(undefined), 'v'), 'missing on its host').to.equal(false);
    expect(atRest(b.s, inv(view('VM_STATE_RUNNING'), false), 'v'), 'inventory not current').to.equal(false);
    expect(atRest(b.s, new Map(), 'v'), 'no watcher').to.equal(false);
    expect(atRest(b.s, inv(view('VM_STATE_RUNNING')), 'nope'), 'no such VM').to.equal(false);
    // Wanted Off while it runs: a drift to correct.
    b.must({ type: 'vm.change_state', vmId: 'v', opId: 'stop', action: 'VM_ACTION_TURN_OFF' } as never);
    expect(atRest(b.s, inv(view('VM_STATE_RUNNING')), 'v'), 'an operation under way').to.equal(false);
  });

  it('is not one on a host that is not Up', () => {
    const b = running();
    b.must({ type: 'host.state', id: 'h1', state: 'HOST_STATE_SUSPECT', reason: 'test' });
    expect(atRest(b.s, inv(view('VM_STATE_RUNNING')), 'v')).to.equal(false);
  });
});
