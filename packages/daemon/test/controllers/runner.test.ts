import { expect } from 'chai';
import { createLogger, type pb } from '@hyperfarm/api';
import { afterCreate, failoverRound } from '../../src/controllers/index.js';
import type { AgentPort, HostRef } from '../../src/edge/agent-port.js';
import { ControllerRunner } from '../../src/edge/controller-runner.js';
import { Proposer } from '../../src/edge/proposer.js';
import { realTimers, type Timers } from '../../src/edge/timers.js';
import { FarmStateMachine, type CommandBody } from '../../src/fsm/index.js';
import { decodeSnapshot, encodeSnapshot } from '../../src/fsm/snapshot.js';
import { FarmBuilder } from '../fsm/build.js';
import { hostPayload } from '../fsm/fixtures.js';
import { agents, type Call } from './fake-agents.js';

const logger = createLogger({ program: 'test', id: 'runner', level: 'silent' });
const SCHEDULER = { policy: 'spread' as const, vcpuRatio: 8 };
/** Failover Clustering 2008's timings, as the daemon's default profile. */
const RUNNER = {
  daemonId: 'd1',
  liveness: { intervalMs: 1_000, suspectAfterMs: 2_000, downAfterMs: 5_000 },
  leaseMs: 4_500,
  leaseMarginMs: 500,
  scheduler: SCHEDULER,
  placementBatch: 1_000,
  maxCalls: 256,
  maxMigrationsPerHost: 2,
};

/**
 * The leader's log, in memory: every entry applies at once, except those holding a vm.observed
 * command, which never commit (a log that has stalled for reports). What the runner does without
 * any report committed shows what waits for one.
 */
function logHoldingReports(machine: FarmStateMachine, holdReports: boolean) {
  let index = machine.appliedIndex;
  const held: string[] = [];
  return {
    held,
    raft: {
      propose(data: Uint8Array): Promise<{ index: number; result: Uint8Array }> {
        const text = new TextDecoder().decode(data);
        if (holdReports && text.includes('"type":"vm.observed"')) {
          held.push(text);
          return new Promise(() => undefined);
        }
        index++;
        return Promise.resolve({ index, result: machine.apply(data, index) });
      },
    },
  };
}

/** Two hosts on cluster storage; `n` HA VMs ran on h1, which went Down and was failed over to h2. */
function failedOver(n: number): FarmStateMachine {
  const machine = new FarmStateMachine();
  const b = new FarmBuilder(machine.state);
  b.host({ id: 'h1', clusterStorage: true, memGiB: 64 }).host({ id: 'h2', clusterStorage: true, memGiB: 64 });
  for (let i = 0; i < n; i++)
    b.vm(`vm-${i}`, { name: `vm-${i}`, memMiB: 256 }, 'h1', { start: true }).report(`vm-${i}`, 'RUNNING');
  b.must({ type: 'host.state', id: 'h1', state: 'HOST_STATE_DOWN', reason: 'test' });
  b.must({ type: 'vm.failover', ...failoverRound(b.s, ['h1'], b.t, SCHEDULER) } as CommandBody);
  return machine;
}

function runner(
  machine: FarmStateMachine,
  port: AgentPort,
  holdReports = true,
  timers: Timers = realTimers,
  maxCalls = RUNNER.maxCalls,
) {
  const log = logHoldingReports(machine, holdReports);
  const proposer = new Proposer(log.raft, machine, logger, { timers });
  const r = new ControllerRunner(machine, proposer, port, timers, logger, { ...RUNNER, maxCalls });
  r.start(1);
  return { runner: r, held: log.held };
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('the controller runner: a failed-over VM', () => {
  it('is started right after its create, under the same generation, without waiting for the create to be reported in the log', async () => {
    const machine = failedOver(20);
    const gens = new Map([...machine.state.vms.values()].map((v) => [v.id, v.generation]));
    expect([...gens.values()].every((g) => g === 2)).to.equal(true);
    const calls: Call[] = [];
    const { runner: r, held } = runner(machine, agents(calls));
    try {
      await until('20 starts', () => calls.filter((c) => c.kind === 'state').length === 20);
      // No report reached the log: the starts did not wait for one.
      expect(machine.state.vms.get('vm-0')!.observed.present).to.equal(false);
      for (const id of gens.keys()) {
        const mine = calls.filter((c) => c.vmId === id);
        expect(mine.map((c) => `${c.kind}@${c.host}:${c.generation}:${c.action ?? ''}`)).to.deep.equal([
          'create@h2:2:start',
          'state@h2:2:VM_ACTION_START',
        ]);
      }
      // What the starts answered is what goes to the log (Starting), in few entries.
      await until('the reports proposed', () => held.join('').split('VM_STATE_STARTING').length - 1 >= 20);
    } finally {
      r.stop();
    }
  });

  it('is started by its new host with the create, when the host can: one call per VM, none after it', async () => {
    const machine = failedOver(20);
    const calls: Call[] = [];
    const { runner: r, held } = runner(machine, agents(calls, 0, true));
    try {
      await until('the reports proposed', () => held.join('').split('VM_STATE_STARTING').length - 1 >= 20);
      expect(calls.map((c) => `${c.kind}@${c.host}:${c.generation}:${c.action ?? ''}`)).to.deep.equal(
        [...machine.state.vms.keys()].map(() => 'create@h2:2:start'),
      );
    } finally {
      r.stop();
    }
  });

  it("is reported once while its report's commit is under way: the observed-state controller does not propose the same report again", async () => {
    const machine = failedOver(20);
    const calls: Call[] = [];
    const { runner: r, held } = runner(machine, agents(calls));
    try {
      await until('the reports proposed', () => held.join('').split('VM_STATE_STARTING').length - 1 >= 20);
      // Several ticks (one every 20 ms) with the reports still uncommitted: the inventory is
      // ahead of the log for each VM, but what it says is already on its way.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const reported = held.flatMap((text) =>
        (JSON.parse(text) as { cmds: { type: string; reports?: { vmId: string }[] }[] }).cmds.flatMap((c) =>
          c.type === 'vm.observed' ? c.reports! : [],
        ),
      );
      expect(reported.map((rep) => rep.vmId).sort()).to.deep.equal([...machine.state.vms.keys()].sort());
    } finally {
      r.stop();
    }
  });

  it('more of them than calls allowed in flight: each is created and started once, never more calls at once than the limit', async () => {
    const machine = failedOver(30);
    const calls: Call[] = [];
    let inFlight = 0;
    let most = 0;
    const base = agents(calls);
    // Answers come a turn later, so calls overlap as they do over the wire.
    const slow =
      <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
      async (...a: A): Promise<R> => {
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setImmediate(r));
        inFlight--;
        return f(...a);
      };
    const port = { ...base, createVm: slow(base.createVm), changeVmState: slow(base.changeVmState) };
    const { runner: r } = runner(machine, port, false, realTimers, 4);
    try {
      await until('30 VMs reported Starting', () =>
        [...machine.state.vms.values()].every((v) => v.observed.state === 'VM_STATE_STARTING'),
      );
      for (const id of machine.state.vms.keys())
        expect(calls.filter((c) => c.vmId === id).map((c) => c.kind)).to.deep.equal(['create', 'state']);
      expect(most).to.be.at.most(4);
    } finally {
      r.stop();
    }
  });

  it('whose start fails right after the create: the create is reported Off, and the reconciler starts it again', async () => {
    const machine = failedOver(1);
    const calls: Call[] = [];
    const { runner: r } = runner(machine, agents(calls, 1), false);
    try {
      await until(
        'the VM reported Starting',
        () => machine.state.vms.get('vm-0')!.observed.state === 'VM_STATE_STARTING',
      );
      // The create asked for the start; this host (an older agent) did not start it.
      expect(calls.map((c) => `${c.kind}:${c.generation}:${c.action ?? ''}`)).to.deep.equal([
        'create:2:start',
        'state:2:VM_ACTION_START',
        'state:2:VM_ACTION_START',
      ]);
    } finally {
      r.stop();
    }
  });
});

/**
 * The leader's timers on a clock the test moves: each callback due runs in order, then the
 * promises it settled (agent answers, commits) before the next.
 */
class ManualTimers implements Timers {
  private queue: { atMs: number; seq: number; fn: () => void; cancelled: boolean }[] = [];
  private seq = 0;
  /** Timers set so far. */
  sets = 0;
  constructor(private t: number) {}
  now(): number {
    return this.t;
  }
  set(fn: () => void, ms: number): unknown {
    this.sets++;
    const h = { atMs: this.t + ms, seq: this.seq++, fn, cancelled: false };
    this.queue.push(h);
    return h;
  }
  clear(handle: unknown): void {
    if (handle) (handle as { cancelled: boolean }).cancelled = true;
  }
  async advanceTo(t: number): Promise<void> {
    for (;;) {
      this.queue = this.queue.filter((h) => !h.cancelled);
      this.queue.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
      const next = this.queue[0];
      if (!next || next.atMs > t) break;
      this.queue.shift();
      this.t = Math.max(this.t, next.atMs);
      next.fn();
      // Several turns: a settled promise may queue an immediate of its own (the proposer's flush).
      for (let i = 0; i < 4; i++) await new Promise((r) => setImmediate(r));
    }
    this.t = t;
  }
}

describe('the controller runner: the sweep', () => {
  /**
   * Ten hosts (h2 to h11: the fake agents refuse h1's grants), with `vmsPerHost` VMs each placed
   * on them and not yet created there.
   */
  function farm(vmsPerHost: number): FarmStateMachine {
    const machine = new FarmStateMachine();
    const b = new FarmBuilder(machine.state);
    for (let h = 2; h <= 11; h++) b.host({ id: `h${h}`, memGiB: 64 });
    for (let h = 2; h <= 11; h++)
      for (let i = 0; i < vmsPerHost; i++)
        b.vm(`vm-${h}-${i}`, { name: `vm-${h}-${i}`, memMiB: 256 }, `h${h}`);
    return machine;
  }

  it('goes through a large farm a slice of hosts per run, and still finds every VM', async () => {
    const machine = farm(0);
    const timers = new ManualTimers(1_000);
    const port = agents([]);
    const creates: number[] = [];
    const createVm = port.createVm.bind(port);
    port.createVm = (...args) => (creates.push(timers.now()), createVm(...args));
    const log = logHoldingReports(machine, true);
    const proposer = new Proposer(log.raft, machine, logger, { timers });
    const r = new ControllerRunner(machine, proposer, port, timers, logger, {
      ...RUNNER,
      sweepMs: 5_000,
      sweepSlice: 10,
    });
    r.start(1);
    try {
      // The hosts' watchers in sync, nothing to do; the first sweep ran at 1 s.
      await timers.advanceTo(2_000);
      expect(creates).to.deep.equal([]);
      // The state replaced whole (as a snapshot installed does, without any event): only the
      // sweep at 6 s finds its 50 VMs, 5 a host, 2 hosts (10 VMs) per run, a run every 20 ms.
      machine.state = farm(5).state;
      await timers.advanceTo(5_999);
      expect(creates).to.deep.equal([]);
      await timers.advanceTo(7_000);
      const runs = new Map<number, number>();
      for (const t of creates) runs.set(t, (runs.get(t) ?? 0) + 1);
      expect([...runs]).to.deep.equal([
        [6_000, 10],
        [6_020, 10],
        [6_040, 10],
        [6_060, 10],
        [6_080, 10],
      ]);
    } finally {
      r.stop();
    }
  });
});

describe('the controller runner: the sweep and VMs at rest', () => {
  /** h2 runs three VMs as wanted, and its agent describes them just as the log holds them. */
  function resting(): { machine: FarmStateMachine; port: AgentPort; calls: Call[] } {
    const machine = new FarmStateMachine();
    const b = new FarmBuilder(machine.state);
    b.host({ id: 'h2', memGiB: 64 });
    for (let i = 0; i < 3; i++)
      b.vm(`vm-${i}`, { name: `vm-${i}`, memMiB: 256 }, 'h2', { start: true }).report(`vm-${i}`, 'RUNNING');
    const calls: Call[] = [];
    const port = agents(calls);
    port.listVms = (host: HostRef) =>
      Promise.resolve(
        [...(machine.state.vmsByHost.get(host.id) ?? [])].map((id) => {
          const vm = machine.state.vms.get(id)!;
          const o = vm.observed;
          return {
            id,
            revision: 1,
            config: { networkAdapters: [] },
            status: { ...o, generation: vm.generation },
          } as unknown as pb.Vm__Output;
        }),
      );
    return { machine, port, calls };
  }

  /** The state as a snapshot of it with `vmId` wanted Off: replaced whole, no event says so. */
  function wantedOff(machine: FarmStateMachine, vmId: string): Uint8Array {
    const copy = decodeSnapshot(encodeSnapshot(machine.state));
    const vm = copy.vms.get(vmId)!;
    copy.vms.set(vmId, { ...vm, desired: 'VM_STATE_OFF' });
    return encodeSnapshot(copy);
  }

  const turnOffs = (calls: Call[]) =>
    calls.filter((c) => c.action === 'VM_ACTION_TURN_OFF').map((c) => c.vmId);

  it('passes VMs at rest by, and looks at every VM again after a snapshot replaced the state', async () => {
    const { machine, port, calls } = resting();
    const timers = new ManualTimers(1_000);
    const log = logHoldingReports(machine, true);
    const proposer = new Proposer(log.raft, machine, logger, { timers });
    const r = new ControllerRunner(machine, proposer, port, timers, logger, { ...RUNNER, sweepMs: 5_000 });
    r.start(1);
    try {
      // In sync and at rest after the first sweep: nothing to do.
      await timers.advanceTo(2_000);
      expect(calls).to.deep.equal([]);
      // Changed in place, with no event (nothing in the farm does that): the sweep at 6 s passes
      // the VM by, as it found it at rest and nothing was said of it since.
      const vm0 = machine.state.vms.get('vm-0')!;
      machine.state.vms.set('vm-0', { ...vm0, desired: 'VM_STATE_OFF' });
      await timers.advanceTo(7_000);
      expect(calls).to.deep.equal([]);
      machine.restore(wantedOff(machine, 'vm-1'));
      await timers.advanceTo(10_999);
      expect(turnOffs(calls)).to.deep.equal([]);
      // The sweep at 11 s looks at every VM of the restored state.
      await timers.advanceTo(11_100);
      expect(turnOffs(calls)).to.deep.equal(['vm-0', 'vm-1']);
    } finally {
      r.stop();
    }
  });

  it('a new leader looks at every VM, whatever the last one found at rest', async () => {
    const { machine, port, calls } = resting();
    const timers = new ManualTimers(1_000);
    const log = logHoldingReports(machine, true);
    const proposer = new Proposer(log.raft, machine, logger, { timers });
    const r = new ControllerRunner(machine, proposer, port, timers, logger, { ...RUNNER, sweepMs: 60_000 });
    r.start(1);
    try {
      await timers.advanceTo(3_000);
      expect(calls).to.deep.equal([]);
      r.stop();
      // Changed while no one led, without an event this runner could have heard.
      machine.state = decodeSnapshot(wantedOff(machine, 'vm-2'));
      r.start(2);
      await timers.advanceTo(3_100);
      expect(turnOffs(calls)).to.deep.equal(['vm-2']);
    } finally {
      r.stop();
    }
  });
});

describe('the controller runner: following the agents', () => {
  it('a new leader of 250 hosts follows 100 agents a run, a run every 20 ms, until it follows all', async () => {
    const machine = new FarmStateMachine();
    const b = new FarmBuilder(machine.state);
    for (let h = 2; h <= 251; h++) b.host({ id: `h${h}`, memGiB: 64 });
    const timers = new ManualTimers(1_000);
    const port = agents([]);
    const followed: number[] = [];
    const watchEvents = port.watchEvents.bind(port);
    port.watchEvents = (...args) => (followed.push(timers.now()), watchEvents(...args));
    const log = logHoldingReports(machine, true);
    const proposer = new Proposer(log.raft, machine, logger, { timers });
    const r = new ControllerRunner(machine, proposer, port, timers, logger, RUNNER);
    r.start(1);
    try {
      await timers.advanceTo(1_100);
      const runs = new Map<number, number>();
      for (const t of followed) runs.set(t, (runs.get(t) ?? 0) + 1);
      expect([...runs]).to.deep.equal([
        [1_000, 100],
        [1_020, 100],
        [1_040, 50],
      ]);
    } finally {
      r.stop();
    }
  });
});

describe('the controller runner: the lease of a host that joins while a leader leads', () => {
  /** The leader took over at 1 s; `late` registers at 61 s, a minute into its term. */
  const LATE_AT = 61_000;
  const LEASE = RUNNER.leaseMs;

  function farm(port: AgentPort) {
    const machine = new FarmStateMachine();
    const b = new FarmBuilder(machine.state);
    b.t = 1_000;
    b.host({ id: 'h2', clusterStorage: true, memGiB: 64 });
    const timers = new ManualTimers(1_000);
    const grants: { host: string; atMs: number; durationMs: number }[] = [];
    const grantLease = port.grantLease.bind(port);
    port.grantLease = (host, req) => {
      grants.push({ host: host.id, atMs: timers.now(), durationMs: req.durationMs });
      return grantLease(host, req);
    };
    const { runner: r } = runner(machine, port, false, timers);
    return { machine, b, timers, grants, r };
  }

  it('its first grant is a full lease, not 1 ms (it would refuse VM starts for a heartbeat round)', async () => {
    const { b, timers, grants, r } = farm(agents([]));
    try {
      await timers.advanceTo(LATE_AT);
      b.t = LATE_AT;
      b.host({ id: 'h3', clusterStorage: true, memGiB: 64 });
      await timers.advanceTo(LATE_AT + 3_000);
      const late = grants.filter((g) => g.host === 'h3');
      expect(late.length).to.be.greaterThan(1);
      // The first is a whole lease; the next ones count from its answers, as every host's do.
      const steady = (atMs: number) => grants.find((g) => g.host === 'h2' && g.atMs === atMs)!.durationMs;
      expect(late.map((g) => g.durationMs)).to.deep.equal([
        LEASE,
        ...late.slice(1).map((g) => steady(g.atMs)),
      ]);
      expect(steady(late[1]!.atMs)).to.equal(LEASE - 1_000);
    } finally {
      r.stop();
    }
  });

  it("asks for brief answers, and takes each host's CPU from them", async () => {
    const port = agents([]);
    const briefs: (boolean | undefined)[] = [];
    port.grantLease = (_host, req) => {
      briefs.push(req.brief);
      // A brief answer: the host's id and usage, nothing else.
      return Promise.resolve({
        expiresAtMs: 0,
        host: { id: 'h2', usage: { cpuPercent: 37 } },
        more: [],
        siblingHostIds: [],
      } as unknown as pb.GrantLeaseResponse__Output);
    };
    const { timers, r } = farm(port);
    try {
      await timers.advanceTo(3_500);
      expect(briefs.length).to.be.greaterThan(1);
      expect(briefs.every((b) => b === true)).to.equal(true);
      expect(r.live('h2')?.cpuPercent).to.equal(37);
    } finally {
      r.stop();
    }
  });

  it('is granted as it registers (through the log), not at the next round up to a heartbeat later', async () => {
    const { machine, timers, grants, r } = farm(agents([]));
    try {
      const at = LATE_AT + 400;
      await timers.advanceTo(at);
      const cmd = {
        rid: 'register-h3',
        t: at,
        type: 'host.register',
        ...hostPayload({ id: 'h3', memGiB: 64 }),
      };
      machine.apply(
        new TextEncoder().encode(JSON.stringify({ v: 1, cmds: [cmd] })),
        machine.appliedIndex + 1,
      );
      await timers.advanceTo(LATE_AT + 1_500);
      const late = grants.filter((g) => g.host === 'h3');
      // The round at 62 s grants it again, counting from the first grant's answer.
      expect(late.map((g) => [g.atMs, g.durationMs])).to.deep.equal([
        [at, LEASE],
        [LATE_AT + 1_000, LEASE - 600],
      ]);
    } finally {
      r.stop();
    }
  });

  it('whose first answer is lost: its VMs restart elsewhere only a lease and the margin after that first grant', async () => {
    // h1's grants are never answered (agents() refuses them): it goes Down with its VM.
    const calls: Call[] = [];
    const { machine, b, timers, grants, r } = farm(agents(calls));
    try {
      await timers.advanceTo(LATE_AT);
      b.t = LATE_AT;
      b.host({ id: 'h1', clusterStorage: true, memGiB: 64 });
      b.vm('vm-0', { name: 'vm-0', memMiB: 256 }, 'h1', { start: true }).report('vm-0', 'RUNNING');
      const first = () => grants.find((g) => g.host === 'h1')!;
      await timers.advanceTo(LATE_AT + 1_000);
      expect(first().durationMs).to.equal(LEASE);
      // Had its first grant arrived, h1 runs vm-0 until then: no restart before, plus the margin.
      const leaseEnd = first().atMs + LEASE;
      await timers.advanceTo(leaseEnd + 499);
      expect(machine.state.hosts.get('h1')!.state).to.equal('HOST_STATE_DOWN');
      expect(machine.state.vms.get('vm-0')!.hostId).to.equal('h1');
      expect(calls).to.deep.equal([]);
      await timers.advanceTo(leaseEnd + 2_000);
      expect(machine.state.vms.get('vm-0')!.hostId).to.equal('h2');
      expect(calls.map((c) => `${c.kind}@${c.host}`)).to.include('create@h2');
    } finally {
      r.stop();
    }
  });
});

describe('afterCreate: the step that follows a create at once (pure)', () => {
  const created = (vmId: string, generation: number, hostId = 'h2') => ({
    vmId,
    hostId,
    generation,
    present: true,
    state: 'VM_STATE_OFF' as const,
    heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT' as const,
    message: '',
    memoryAssignedBytes: 0,
    macs: [],
  });

  it('starts a VM that should run, under its generation; a create with start serves its operation', () => {
    const b = new FarmBuilder();
    b.host({ id: 'h2', clusterStorage: true });
    b.vm('a', { name: 'a', memMiB: 256 }, 'h2', { start: true });
    expect(afterCreate(b.s, created('a', 1))).to.deep.include({
      kind: 'change-state',
      action: 'VM_ACTION_START',
      hostId: 'h2',
      generation: 1,
      opId: 'op-a',
    });
  });

  it('leaves alone a VM meant to stay Off, one moved or bumped since the create, and one on a host not Up', () => {
    const b = new FarmBuilder();
    b.host({ id: 'h2', clusterStorage: true }).host({ id: 'h3', clusterStorage: true });
    b.vm('off', { name: 'off', memMiB: 256 }, 'h2');
    b.vm('a', { name: 'a', memMiB: 256 }, 'h2', { start: true });
    expect(afterCreate(b.s, created('off', 1))).to.equal(undefined);
    expect(afterCreate(b.s, created('a', 0))).to.equal(undefined);
    expect(afterCreate(b.s, created('a', 1, 'h3'))).to.equal(undefined);
    b.must({ type: 'host.state', id: 'h2', state: 'HOST_STATE_SUSPECT', reason: 'test' });
    expect(afterCreate(b.s, created('a', 1))).to.equal(undefined);
  });
});

describe('the controller runner: liveness on a virtual clock', () => {
  /**
   * Hosts h1 and h2 (h1 to h`hosts`) answer each grant after `latencyMs(host, n)` (n counts that
   * host's grants); `lost(host, n)` grants fail. Returns when each host state change was proposed.
   */
  function farm(
    latencyMs: (host: string, n: number) => number,
    lost: (host: string, n: number, t: number) => boolean,
    hosts = 2,
  ) {
    const timers = new ManualTimers(0);
    const machine = new FarmStateMachine();
    const b = new FarmBuilder(machine.state);
    b.t = 0;
    for (let h = 1; h <= hosts; h++) b.host({ id: `h${h}` });
    let index = machine.appliedIndex;
    const changes: string[] = [];
    const raft = {
      propose(data: Uint8Array) {
        const entry = JSON.parse(new TextDecoder().decode(data)) as {
          cmds: { type: string; id?: string; state?: string }[];
        };
        for (const c of entry.cmds)
          if (c.type === 'host.state') changes.push(`${c.id} ${c.state} at ${timers.now()}`);
        index++;
        return Promise.resolve({ index, result: machine.apply(data, index) });
      },
    };
    const count = new Map<string, number>();
    const port = {
      ...agents([]),
      grantLease: (host: HostRef) => {
        const n = (count.get(host.id) ?? 0) + 1;
        count.set(host.id, n);
        return new Promise((resolve, reject) =>
          timers.set(
            () =>
              lost(host.id, n, timers.now())
                ? reject(Object.assign(new Error('unavailable'), { code: 14 }))
                : resolve({} as pb.GrantLeaseResponse__Output),
            latencyMs(host.id, n),
          ),
        );
      },
    } as AgentPort;
    const proposer = new Proposer(raft, machine, logger, { timers });
    const r = new ControllerRunner(machine, proposer, port, timers, logger, RUNNER);
    r.start(1);
    return { timers, changes, stop: () => r.stop() };
  }

  it('declares a host Down 5 s after its last answer, not at the grant round after that', async () => {
    // Grants go out at 0, 1000, 2000...; answers come 10 ms later. h1 dies at 3500: its last
    // answer came at 3010, so it is Suspect at 5010 and Down at 8010 (at rounds: 6000 and 9000).
    const f = farm(
      () => 10,
      (host, _n, t) => host === 'h1' && t >= 3_500,
    );
    try {
      await f.timers.advanceTo(12_000);
      expect(f.changes).to.deep.equal(['h1 HOST_STATE_SUSPECT at 5010', 'h1 HOST_STATE_DOWN at 8010']);
    } finally {
      f.stop();
    }
  });

  it('does not make a host Suspect while a grant sent just now is on its way, a little slower than the last', async () => {
    // h1's 3rd grant (sent at 2000) is lost; its last answer came at 1010. The 4th, sent at 3000,
    // answers after 30 ms instead of 10: its silence passes 2 s at 3010, with that grant on its way.
    const f = farm(
      (host, n) => (host === 'h1' && n === 4 ? 30 : 10),
      (host, n) => host === 'h1' && n === 3,
    );
    try {
      await f.timers.advanceTo(10_000);
      expect(f.changes).to.deep.equal([]);
    } finally {
      f.stop();
    }
  });

  it('judges the hosts once when many grants fail in one turn, not once per failed grant', async () => {
    // 40 hosts answer their first grant and fail every later one, 40 ms after it is sent.
    const f = farm(
      (_host, n) => (n > 1 ? 40 : 10),
      (_host, n) => n > 1,
      40,
    );
    try {
      await f.timers.advanceTo(2_039);
      const before = f.timers.sets;
      await f.timers.advanceTo(2_040);
      // One judgment queued, the next one armed (each judgment arms one), the controllers' run
      // for the host changes: a few timers, not one judgment (and its timer) per failed grant.
      expect(f.timers.sets - before).to.be.at.most(6);
      expect(f.changes.filter((c) => c.endsWith('HOST_STATE_SUSPECT at 2040'))).to.have.length(40);
    } finally {
      f.stop();
    }
  });

  it('judges a host whose grant failed while it was held as soon as the grant settles', async () => {
    // h1 answers nothing after its 1st grant (answer at 10); grants fail 40 ms after they are sent.
    // Silence reaches 2 s at 2010 with the grant sent at 2000 on its way: held until it fails at 2040.
    const f = farm(
      (host, n) => (host === 'h1' && n > 1 ? 40 : 10),
      (host, n) => host === 'h1' && n > 1,
    );
    try {
      await f.timers.advanceTo(6_000);
      expect(f.changes).to.deep.equal(['h1 HOST_STATE_SUSPECT at 2040', 'h1 HOST_STATE_DOWN at 5040']);
    } finally {
      f.stop();
    }
  });
});
