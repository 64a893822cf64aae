import { createLogger, statusOf, status, type pb } from '@hyperfarm/api';
import { useIdBits, type FarmState } from '@hyperfarm/daemon';
import { Role, SimRng } from '@hyperfarm/raft';
import { Scope, VirtualClock } from './clock.js';
import { DEFAULT_SHAPE, SimHost, type HostShape } from './host.js';
import {
  checkHostMemory,
  checkPlacements,
  checkSingleHost,
  runningHosts,
  type Violation,
} from './invariants.js';
import { SimNetwork } from './network.js';
import { SimDaemon } from './replica.js';
import { randomVmConfig } from './workload.js';

export interface FarmOptions {
  seed: number;
  daemons: number;
  hosts: number;
  /** VMs the workload keeps created. */
  vms: number;
  /** Farm time with workload and faults, then with faults healed (convergence). */
  chaosMs: number;
  settleMs: number;
  faults: boolean;
  trace: boolean;
  policy: 'binpack' | 'spread';
  /** A client request this often. */
  requestEveryMs: number;
  /** Check, at the end, that desired and observed state converged once faults stopped. */
  converge: boolean;
  shape: HostShape;
}

export const SMALL: Omit<FarmOptions, 'seed'> = {
  daemons: 3,
  hosts: 5,
  vms: 24,
  chaosMs: 60_000,
  settleMs: 90_000,
  faults: true,
  trace: false,
  policy: 'binpack',
  requestEveryMs: 500,
  converge: true,
  shape: { ...DEFAULT_SHAPE, memoryBytes: 16 * 1024 ** 3 },
};

export interface FarmResult {
  seed: number;
  violations: Violation[];
  trace: string[];
  stats: {
    steps: number;
    requests: number;
    acknowledged: number;
    hostCrashes: number;
    daemonCrashes: number;
    partitions: number;
    elections: number;
    vmsRunning: number;
    messages: number;
  };
}

/** Settings of the runner added by work on other branches; spread, so either shape compiles. */
const RUNNER_EXTRAS = { maxMigrationsPerHost: 2 };

type Handler = (call: { request: unknown }, cb: (err: unknown, value?: unknown) => void) => void;

/** The whole farm in one process on a virtual clock (see docs/simulation.md). */
export class FarmSimulation {
  readonly clock = new VirtualClock();
  readonly rng: SimRng;
  private readonly faultRng: SimRng;
  readonly net: SimNetwork;
  readonly daemons = new Map<string, SimDaemon>();
  readonly hosts = new Map<string, SimHost>();
  private readonly hostsByAddress = new Map<string, SimHost>();
  readonly violations: Violation[] = [];
  readonly traceLines: string[] = [];
  private readonly client: Scope;
  /** Acknowledged creates: VM id to the name the client gave it and its operation. */
  private readonly acked = new Map<string, { name: string; opId: string }>();
  private readonly deleting = new Set<string>();
  private readonly stats: FarmResult['stats'] = {
    steps: 0,
    requests: 0,
    acknowledged: 0,
    hostCrashes: 0,
    daemonCrashes: 0,
    partitions: 0,
    elections: 0,
    vmsRunning: 0,
    messages: 0,
  };
  private names = 0;
  private chaos = true;

  constructor(readonly o: FarmOptions) {
    this.rng = new SimRng(o.seed);
    this.faultRng = new SimRng(o.seed * 7 + 3);
    this.net = new SimNetwork(this.clock, new SimRng(o.seed * 13 + 5));
    this.client = new Scope(this.clock, 'client');
    this.net.register('client', () => this.client);
    const idRng = new SimRng(o.seed * 17 + 11);
    const hex = () =>
      idRng
        .int(2 ** 24)
        .toString(16)
        .padStart(6, '0');
    useIdBits(() => hex() + hex());
    const logger = createLogger({ program: 'sim', id: 'sim', level: process.env['SIM_LOG'] ?? 'silent' });
    const ids = [...Array(o.daemons).keys()].map((i) => `d${i + 1}`);
    const directory = { byAddress: (a: string) => this.hostsByAddress.get(a) };
    for (const [i, id] of ids.entries()) {
      const d = new SimDaemon(
        id,
        ids,
        this.net,
        this.daemons,
        directory,
        {
          tickMs: 100,
          electionTick: 10,
          heartbeatTick: 1,
          snapshotEvery: 500,
          snapshotKeep: 125,
          requestTimeoutMs: 10_000,
          scheduler: { policy: o.policy, vcpuRatio: 8 },
          runner: {
            liveness: { intervalMs: 1_000, suspectAfterMs: 2_000, downAfterMs: 5_000 },
            leaseMs: 10_000,
            scheduler: { policy: o.policy, vcpuRatio: 8 },
            placementBatch: 2_000,
            maxCalls: 256,
            // The runner's settings that other work adds (issue 10's migrations per host).
            ...RUNNER_EXTRAS,
          },
        },
        logger,
        o.seed * 31 + i,
        () => `r-${hex()}${hex()}`,
        (daemon, err) =>
          this.violations.push({
            property: 'raft-node-failed',
            time: this.elapsed(),
            detail: `daemon ${daemon}'s Raft node failed: ${(err as Error).stack ?? String(err)}`,
          }),
      );
      this.daemons.set(id, d);
      // Its server binds once Raft has started: until then connections are refused.
      this.net.register(id, () => (d.serving ? d.scope : undefined));
      this.bootDaemon(d);
    }
    for (let i = 0; i < o.hosts; i++) {
      const id = `h${String(i + 1).padStart(4, '0')}`;
      const h = new SimHost(
        id,
        `${id}.sim:7000`,
        o.shape,
        { leaseMs: 10_000, saveMs: 500, restoreMs: 500 },
        o.seed + i,
      );
      this.hosts.set(id, h);
      this.hostsByAddress.set(h.address, h);
      this.net.register(id, () => h.scope);
      this.bootHost(h);
    }
  }

  private log(line: string): void {
    if (this.o.trace) this.traceLines.push(`t=${(this.elapsed() / 1000).toFixed(3)} ${line}`);
  }

  /** Farm time since the start, ms. */
  elapsed(): number {
    return this.clock.now - VirtualClock.EPOCH;
  }

  private bootDaemon(d: SimDaemon): void {
    d.boot(new Scope(this.clock, `${d.id}#${d.boots + 1}`));
    this.log(`daemon ${d.id} boots (${d.boots})`);
  }

  private bootHost(h: SimHost): void {
    h.boot(new Scope(this.clock, `${h.id}#${h.boots + 1}`));
    const scope = h.scope!;
    // The agent's own timer keeps its engine current (leases run out without any call).
    const pump = () => {
      h.pump();
      scope.set(pump, 1_000);
    };
    scope.set(pump, 1_000);
    this.log(`host ${h.id} boots (${h.boots})`);
  }

  leader(): SimDaemon | undefined {
    let best: SimDaemon | undefined;
    for (const d of this.daemons.values())
      if (d.alive && d.role === Role.Leader && (!best || d.term > best.term)) best = d;
    return best;
  }

  /** The live daemon that has applied the most. */
  private mostApplied(): SimDaemon | undefined {
    let best: SimDaemon | undefined;
    for (const d of this.daemons.values())
      if (d.alive && (!best || d.appliedIndex > best.appliedIndex)) best = d;
    return best;
  }

  // --- the client ---

  /** A ClusterService call from the client to a daemon, over the network, with a deadline. */
  private request<T>(method: string, req: unknown): Promise<T> {
    this.stats.requests++;
    const ids = [...this.daemons.keys()];
    const d = this.daemons.get(ids[this.rng.int(ids.length)]!)!;
    return this.net.call(this.client, 'client', d.id, 30_000, () => {
      const handler = (d.handlers as Record<string, Handler | undefined>)[method];
      if (!handler) throw new Error(`the simulated daemon has no handler ${method}`);
      return new Promise<T>((resolve, reject) =>
        handler({ request: req }, (err, value) => (err ? reject(err) : resolve(value as T))),
      );
    });
  }

  private registerHosts(): void {
    for (const h of this.hosts.values()) {
      const attempt = () => {
        this.request('RegisterHost', { address: h.address, name: '', labels: {} }).then(
          () => this.log(`host ${h.id} registered`),
          (err: unknown) => {
            this.log(`host ${h.id} registration failed: ${(err as Error).message}`);
            this.client.set(attempt, 1_000);
          },
        );
      };
      attempt();
    }
  }

  private workload(): void {
    const vms = [...this.acked.keys()].filter((id) => !this.deleting.has(id));
    const r = this.rng.next();
    if (vms.length < this.o.vms && r < 0.5) {
      const name = `vm-${++this.names}`;
      const requestId = `create-${name}`;
      const req = {
        config: randomVmConfig(this.rng, name, { disks: true }),
        hostId: '',
        start: this.rng.chance(0.8),
        requestId,
      };
      this.log(`client creates ${name}`);
      const attempt = (tries: number) =>
        this.request<pb.Operation>('CreateVm', req).then(
          (op) => {
            this.stats.acknowledged++;
            this.acked.set(op.targetId!, { name, opId: op.id! });
            this.log(`client: create ${name} acknowledged (${op.targetId})`);
          },
          (err: unknown) => {
            this.log(`client: create ${name} failed: ${(err as Error).message}`);
            // Retried with the same request id: the farm creates it once.
            if (tries < 5 && isRetryable(err)) this.client.set(() => void attempt(tries + 1), 1_000);
          },
        );
      void attempt(0);
      return;
    }
    if (vms.length === 0) return;
    const vmId = vms[this.rng.int(vms.length)]!;
    if (r < 0.9) {
      const action = ['VM_ACTION_START', 'VM_ACTION_STOP', 'VM_ACTION_TURN_OFF'][this.rng.int(3)]!;
      this.log(`client: ${action} ${vmId}`);
      this.request('ChangeVmState', { id: vmId, action }).then(
        () => this.stats.acknowledged++,
        () => undefined,
      );
    } else if (vms.length > this.o.vms / 2) {
      this.log(`client: delete ${vmId}`);
      this.deleting.add(vmId);
      this.request('DeleteVm', { id: vmId }).then(
        () => this.stats.acknowledged++,
        // The outcome of a failed delete is unknown: it may have committed.
        () => undefined,
      );
    }
  }

  // --- faults ---

  private fault(): void {
    if (!this.chaos) return;
    const r = this.faultRng.next();
    const pick = <T>(xs: T[]): T | undefined => (xs.length ? xs[this.faultRng.int(xs.length)] : undefined);
    const back = (ms: number, fn: () => void) => this.clock.root.set(fn, ms);
    if (r < 0.2) {
      const h = pick([...this.hosts.values()].filter((x) => x.alive));
      if (!h) return;
      this.stats.hostCrashes++;
      this.log(`FAULT host ${h.id} crashes`);
      h.crash();
      back(5_000 + this.faultRng.int(25_000), () => !h.alive && this.bootHost(h));
    } else if (r < 0.35) {
      const alive = [...this.daemons.values()].filter((d) => d.alive);
      if (alive.length <= Math.floor(this.daemons.size / 2) + 0) return;
      const d = this.faultRng.chance(0.5) ? (this.leader() ?? pick(alive)!) : pick(alive)!;
      this.stats.daemonCrashes++;
      this.log(`FAULT daemon ${d.id} crashes${d.role === Role.Leader ? ' (the leader)' : ''}`);
      d.crash();
      back(2_000 + this.faultRng.int(15_000), () => !d.alive && this.bootDaemon(d));
    } else if (r < 0.5) {
      const node = this.faultRng.chance(0.5)
        ? pick([...this.hosts.keys()])!
        : pick([...this.daemons.keys()])!;
      this.stats.partitions++;
      this.log(`FAULT ${node} is partitioned`);
      this.net.isolate(node);
      back(3_000 + this.faultRng.int(20_000), () => {
        this.log(`network heals`);
        this.net.heal();
      });
    } else if (r < 0.6) {
      this.net.faults = { loss: 0.05 + this.faultRng.next() * 0.2, jitterMs: this.faultRng.int(200) };
      this.log(`FAULT lossy network ${JSON.stringify(this.net.faults)}`);
      back(2_000 + this.faultRng.int(10_000), () => (this.net.faults = { loss: 0, jitterMs: 0 }));
    } else if (r < 0.7) {
      const all = [...this.daemons.values(), ...this.hosts.values()].filter((x) => x.scope);
      const x = pick(all);
      if (!x?.scope) return;
      const ms = 500 + this.faultRng.int(4_000);
      this.log(`FAULT ${x.id} pauses for ${ms} ms`);
      x.scope.pausedUntil = this.clock.now + ms;
    } else if (r < 0.75) {
      const h = pick([...this.hosts.values()])!;
      this.log(`FAULT host ${h.id}'s disk is full`);
      h.diskFull = true;
      back(2_000 + this.faultRng.int(10_000), () => (h.diskFull = false));
    }
  }

  private endChaos(): void {
    this.chaos = false;
    this.log('faults stop: network healed, everything restarted');
    this.net.heal();
    this.net.faults = { loss: 0, jitterMs: 0 };
    for (const d of this.daemons.values()) if (!d.alive) this.bootDaemon(d);
    for (const h of this.hosts.values()) {
      h.diskFull = false;
      if (!h.alive) this.bootHost(h);
    }
  }

  // --- checks ---

  private checkSafety(): void {
    const now = this.clock.now;
    const where = runningHosts(this.hosts.values(), now);
    checkSingleHost(where, now, this.violations);
    checkHostMemory(this.hosts.values(), now, this.violations);
    for (const d of this.daemons.values())
      if (d.alive) checkPlacements(d.machine.state, now, this.violations);
  }

  /** Every acknowledged create is in the farm's state (unless the client deleted it since). */
  private checkAcknowledged(s: FarmState): void {
    for (const [vmId, { name, opId }] of this.acked) {
      if (this.deleting.has(vmId)) continue;
      // A create whose operation failed (no host could take it) leaves no VM, and says so.
      const op = s.operations.get(opId);
      if (op?.error) continue;
      if (!s.vms.has(vmId))
        this.violations.push({
          property: 'acknowledged-create-lost',
          time: this.elapsed(),
          detail: `VM ${name} (${vmId}) was acknowledged but is not in the farm's state`,
        });
    }
  }

  /** Once faults stop, every VM ends up as wanted, on the host the farm placed it on. */
  private checkConverged(s: FarmState): void {
    for (const vm of s.vms.values()) {
      if (vm.busyOpId) {
        const op = s.operations.get(vm.busyOpId);
        if (op?.params.kind === 'vm.delete') continue;
      }
      if (!vm.hostId) continue;
      const host = this.hosts.get(vm.hostId);
      const actual = host?.states.get(vm.id);
      const wanted = vm.desired;
      if (actual !== wanted)
        this.violations.push({
          property: 'not-converged',
          time: this.elapsed(),
          detail: `VM ${vm.config.name} (${vm.id}) should be ${wanted} on ${vm.hostId}, the host has it ${actual ?? 'absent'}`,
        });
    }
  }

  async run(): Promise<FarmResult> {
    const o = this.o;
    const endChaos = o.chaosMs;
    const end = o.chaosMs + o.settleMs;
    this.clock.root.set(() => this.registerHosts(), 500);
    const every = (ms: number, fn: () => void, until: number) => {
      const loop = () => {
        if (this.elapsed() >= until) return;
        fn();
        this.clock.root.set(loop, ms);
      };
      this.clock.root.set(loop, ms);
    };
    every(o.requestEveryMs, () => this.workload(), endChaos);
    if (o.faults) every(3_000, () => this.fault(), endChaos);
    this.clock.root.set(() => this.endChaos(), endChaos);
    let leader: string | undefined;
    try {
      for (;;) {
        const ev = this.clock.pop();
        if (!ev || ev.time - VirtualClock.EPOCH > end) break;
        ev.fn();
        // Let the promises it settled run (and the proposer's batch), still at this time.
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setImmediate(r));
        this.stats.steps++;
        const l = this.leader()?.id;
        if (l !== leader) {
          if (l) this.stats.elections++;
          leader = l;
          this.log(`leader: ${l ?? 'none'}`);
        }
        this.checkSafety();
        if (this.violations.length > 0) break;
      }
      const d = this.mostApplied();
      if (this.violations.length === 0 && d) {
        this.checkAcknowledged(d.machine.state);
        if (o.converge) this.checkConverged(d.machine.state);
      }
    } finally {
      useIdBits(undefined);
    }
    for (const h of this.hosts.values())
      for (const s of h.states.values()) if (s === 'VM_STATE_RUNNING') this.stats.vmsRunning++;
    this.stats.messages = this.net.messages;
    for (const v of this.violations) this.log(`VIOLATION ${v.property}: ${v.detail}`);
    return { seed: o.seed, violations: this.violations, trace: this.traceLines, stats: this.stats };
  }
}

function isRetryable(err: unknown): boolean {
  const code = statusOf(err);
  return code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === undefined;
}

export function runFarm(o: FarmOptions): Promise<FarmResult> {
  return new FarmSimulation(o).run();
}
