import { createLogger, statusOf, status, type pb } from '@hyperfarm/api';
import { SNAPSHOT_BY_SIZE, useIdBits, type FarmState } from '@hyperfarm/daemon';
import { Role, SimRng, type SnapshotBySize } from '@hyperfarm/raft';
import { Scope, VirtualClock } from './clock.js';
import { checkNlb, checkNlbConverged } from './nlb-checks.js';
import { FarmNlb } from './nlb-workload.js';
import { DEFAULT_SHAPE, SimHost, type HostShape } from './host.js';
import {
  AppliedLog,
  checkHostMemory,
  checkLeaseWait,
  checkPlacements,
  checkSingleHost,
  HostSafetyWatch,
  PlacementWatch,
  runningHosts,
  type Violation,
} from './invariants.js';
import { SimNetwork } from './network.js';
import { SimDaemon } from './replica.js';
import { ClusterCheckpoints } from './checkpoints.js';
import { MIGRATION_STEPS, type MigrationStep } from './migration.js';
import { OrderedIds, randomVmConfig } from './workload.js';

/** The daemons' and agents' timing: the programs' defaults in small runs, slower in large ones. */
export interface FarmTiming {
  /** Ms per Raft tick, and ticks to an election and between heartbeats (RAFT_PROFILES). */
  tickMs: number;
  electionTick: number;
  heartbeatTick: number;
  /** Snapshot the log every this many applied entries, keeping this many. */
  snapshotEvery: number;
  snapshotKeep: number;
  /** Snapshot too by the size of the entries applied since the last snapshot (RaftNode's options). */
  snapshotBySize?: SnapshotBySize;
  /** Host liveness: lease grants this often, Suspect and Down after this long without an answer. */
  liveness: { intervalMs: number; suspectAfterMs: number; downAfterMs: number };
  leaseMs: number;
  /** Longest step of each engine's guest model (0: the engine's 1 s). */
  engineStepMs: number;
  /**
   * Disk writes each VM issues per engine step at most (0: the engine's 64); the rest are
   * counted, not issued. One still meets a full disk at the next step.
   */
  engineWritesPerStep: number;
  /**
   * The engines' guest model runs lazily (EngineOptions.lazyGuests): a host's guests are worked
   * out when something reads them or their shares change, not at every step; a full disk is
   * met when it fills and at each pump while it is full.
   */
  lazyGuests: boolean;
  /** The agent's own timer that brings its engine to now (calls do too). */
  pumpMs: number;
  /**
   * The timer waits `pumpMs` after the engine last moved (a call moves it too) instead of
   * running every `pumpMs`: a host its daemons call every interval is then stepped once per
   * interval, not twice. Off in small runs, whose seeds replay the runs that found bugs.
   */
  pumpAfterCalls: boolean;
  /** The controllers' sweep over every VM (0: the daemon's default, 5 s). */
  sweepMs: number;
  /** Failover's wait past a Down host's last lease (absent: 500 ms, the default profile's). */
  leaseMarginMs?: number;
}

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
  /** A fault this often (at a random instant in each period). */
  faultEveryMs: number;
  trace: boolean;
  policy: 'binpack' | 'spread';
  /** A client request this often while the farm has fewer VMs than `vms`, and once it has. */
  requestEveryMs: number;
  churnEveryMs: number;
  /** Check, at the end, that desired and observed state converged once faults stopped. */
  converge: boolean;
  /**
   * The safety invariants are checked after every step on what the step changed; full scans of
   * every host and every daemon's books run after every step too (0), or this often in farm time.
   */
  checkEveryMs: number;
  /**
   * Run up to this many callbacks due at the same instant before letting the promises they
   * settled run (0 or 1: one at a time). A large farm's hosts keep their timers in step (a
   * thousand pumps and lease grants at one instant); the promises then run a little later in
   * that same instant, as on a busy event loop.
   */
  sameInstantBatch: number;
  /** Sample host utilisation this often (0: never). */
  sampleEveryMs: number;
  /**
   * Crash the host running the most VMs at this farm time, and keep it down until the faults
   * stop (0: no such crash): every HA VM that ran there must run again within `haBudgetMs`.
   */
  crashBusiestAtMs: number;
  haBudgetMs: number;
  /**
   * Migrations (quick and live), snapshots and host drains in the workload, and the fault that
   * interrupts a migration at one of its steps (false: the workload the first seeds were found
   * with).
   */
  moves: boolean;
  shape: HostShape;
  /** Each host's own shape, by index (a drill's hosts may differ); `shape` for the rest. */
  hostShapes?: HostShape[];
  /**
   * Hosts per agent process (multi-host agents, as bench:scale runs them): the leader's lease
   * grant to one carries its siblings' (up to 32 per call, GRANT_BATCH). 1: an agent per host.
   */
  hostsPerAgent: number;
  /**
   * The hosts have the agent's virtual network (switches spanning hosts over tunnels on the
   * simulated network, NLB members, traffic generators), and the daemons push its configuration
   * and answer the network API. Off by default: the farm's workload uses none of it.
   */
  network?: boolean;
  timing: FarmTiming;
  /**
   * Told once, at the farm time (ms) the workload first has `vms` VMs: a caller that measures
   * wall time tells the fill from the steady churn after it.
   */
  onFilled?: (farmMs: number) => void;
}

const GIB = 1024 ** 3;

export const SMALL: Omit<FarmOptions, 'seed'> = {
  daemons: 3,
  hosts: 5,
  vms: 24,
  chaosMs: 60_000,
  settleMs: 90_000,
  faults: true,
  faultEveryMs: 3_000,
  trace: false,
  policy: 'binpack',
  requestEveryMs: 500,
  churnEveryMs: 500,
  converge: true,
  checkEveryMs: 0,
  sameInstantBatch: 0,
  sampleEveryMs: 0,
  crashBusiestAtMs: 0,
  // Down after 5 s, a 10 s lease and its 0.5 s margin, a boot of up to 10 s, and 15 s to spare.
  haBudgetMs: 40_500,
  moves: true,
  shape: { ...DEFAULT_SHAPE, memoryBytes: 16 * GIB },
  hostsPerAgent: 1,
  // The daemon's defaults (RAFT_PROFILES.default), with a 10 s host lease.
  timing: {
    tickMs: 100,
    electionTick: 10,
    heartbeatTick: 1,
    snapshotEvery: 500,
    snapshotKeep: 125,
    liveness: { intervalMs: 1_000, suspectAfterMs: 2_000, downAfterMs: 5_000 },
    leaseMs: 10_000,
    engineStepMs: 0,
    engineWritesPerStep: 0,
    lazyGuests: false,
    pumpMs: 1_000,
    pumpAfterCalls: false,
    sweepMs: 0,
  },
};

/**
 * 1,000 hosts and 50,000 VMs for 24 hours of farm time, with churn and failures. A farm this
 * size runs a calmer profile (Raft ticks of 500 ms; hosts heard every 15 s, Down after 60 s, in
 * agent processes of 32; the engines' guest model in steps of up to a minute), and the full
 * scans of the invariants run every 10 min of farm time (what changed is checked after every
 * step, as in small runs).
 */
export const LARGE: Omit<FarmOptions, 'seed'> = {
  ...SMALL,
  hosts: 1_000,
  vms: 50_000,
  chaosMs: 24 * 3_600_000,
  settleMs: 15 * 60_000,
  faultEveryMs: 10 * 60_000,
  requestEveryMs: 5,
  churnEveryMs: 2_000,
  checkEveryMs: 600_000,
  sameInstantBatch: 256,
  sampleEveryMs: 3_600_000,
  shape: { ...DEFAULT_SHAPE, logicalProcessors: 64, memoryBytes: 256 * GIB },
  hostsPerAgent: 32,
  timing: {
    tickMs: 500,
    electionTick: 10,
    heartbeatTick: 1,
    // As the daemon does (RaftNode's default count, server.ts's sizes): a 50,000-VM state's
    // snapshot is tens of MB to encode, too much to take every 20,000 entries of a fill.
    snapshotEvery: 100_000,
    snapshotBySize: SNAPSHOT_BY_SIZE,
    snapshotKeep: 5_000,
    liveness: { intervalMs: 15_000, suspectAfterMs: 30_000, downAfterMs: 60_000 },
    leaseMs: 60_000,
    engineStepMs: 60_000,
    engineWritesPerStep: 1,
    lazyGuests: true,
    pumpMs: 15_000,
    pumpAfterCalls: true,
    sweepMs: 60_000,
  },
};

/** Host utilisation at one instant. */
export interface UtilisationSample {
  hour: number;
  vmsRunning: number;
  hostsUp: number;
  hostsWithVms: number;
  /** Memory in use over usable memory: mean over live hosts, and the fullest. */
  memMean: number;
  memMax: number;
}

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
    /** VMs the farm restarted on another host (failover) and moved (migrations). */
    failovers: number;
    migrations: number;
    /** Migrations asked for (by a client or a drain) that ended aborted, and drains asked for. */
    migrationsAborted: number;
    drains: number;
    /** Migrations the armed fault interrupted at a step. */
    migrationsInterrupted: number;
    /** Snapshot operations (create, apply, delete) the farm completed. */
    checkpointOps: number;
  };
  /** Per host crash: ms until every VM that ran there ran again (anywhere); unrecovered ones are left out. */
  recoveriesMs: number[];
  utilisation: UtilisationSample[];
}

/** What a drill drives on a FarmSimulation (FarmSimulation.drillHandle). */
export interface DrillHandle {
  /** The client's process: its timers run the drill's timeline. */
  client: Scope;
  /** A ClusterService call from the client to a daemon, over the simulated network. */
  request<T>(method: string, req: unknown): Promise<T>;
  registerHosts(): void;
  crashHost(h: SimHost): void;
  bootHost(h: SimHost): void;
  bootDaemon(d: SimDaemon): void;
  /** The safety invariants now: violations go to the farm's `violations`. */
  checkSafety(): void;
  mostApplied(): SimDaemon | undefined;
  /** The run is over: the daemons' id source goes back to its default. */
  end(): void;
}

/** Settings of the runner added by work on other branches; spread, so either shape compiles. */
const RUNNER_EXTRAS = { maxMigrationsPerHost: 2, leaseMarginMs: 500 };

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
  /** Cluster storage's snapshot trees, which every host reaches. */
  private readonly snapshots = new ClusterCheckpoints();
  readonly violations: Violation[] = [];
  private readonly appliedLog = new AppliedLog();
  private readonly hostSafety = new HostSafetyWatch();
  /** Per daemon, its state machine's placements. */
  private readonly placementWatch = new Map<string, PlacementWatch>();
  readonly traceLines: string[] = [];
  private readonly client: Scope;
  /** Acknowledged creates: VM id to the name the client gave it and its operation. */
  private readonly acked = new Map<string, { name: string; opId: string }>();
  private readonly deleting = new Set<string>();
  /** Acknowledged and not being deleted, in the order acknowledged: what the workload picks from. */
  private readonly live = new OrderedIds();
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
    failovers: 0,
    migrations: 0,
    migrationsAborted: 0,
    drains: 0,
    migrationsInterrupted: 0,
    checkpointOps: 0,
  };
  /** The fault armed to interrupt the next migration that reaches a step, and how. */
  private interrupt:
    { step: MigrationStep; how: 'crash-host' | 'partition-host' | 'crash-leader' } | undefined;
  /** Host crashes whose VMs have not all run again yet: when, and which VMs. */
  private readonly recovering: { at: number; vms: Set<string>; host: string; budgetMs?: number }[] = [];
  /** Hosts down now (crashed, not restarted). */
  private readonly down = new Set<SimHost>();
  private readonly recoveriesMs: number[] = [];
  private readonly utilisation: UtilisationSample[] = [];
  private names = 0;
  private chaos = true;
  private filled = false;
  private powerFailureArmed = false;
  /** The network part of the workload, with `network`. */
  private readonly nlb: FarmNlb | undefined;

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
    this.nlb = o.network
      ? new FarmNlb(
          this.client,
          (method, req) => this.request(method, req),
          (line) => this.log(line),
          o.chaosMs + o.settleMs,
        )
      : undefined;
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
          tickMs: o.timing.tickMs,
          electionTick: o.timing.electionTick,
          heartbeatTick: o.timing.heartbeatTick,
          snapshotEvery: o.timing.snapshotEvery,
          snapshotKeep: o.timing.snapshotKeep,
          ...(o.timing.snapshotBySize ? { snapshotBySize: o.timing.snapshotBySize } : {}),
          requestTimeoutMs: 10_000,
          scheduler: { policy: o.policy, vcpuRatio: 8 },
          network: o.network ?? false,
          runner: {
            liveness: o.timing.liveness,
            leaseMs: o.timing.leaseMs,
            scheduler: { policy: o.policy, vcpuRatio: 8 },
            placementBatch: 2_000,
            maxCalls: 256,
            // The runner's settings that other work adds (issue 10's migrations per host).
            ...RUNNER_EXTRAS,
            ...(o.timing.leaseMarginMs !== undefined ? { leaseMarginMs: o.timing.leaseMarginMs } : {}),
            ...(o.timing.sweepMs ? { sweepMs: o.timing.sweepMs } : {}),
          },
        },
        logger,
        o.seed * 31 + i,
        () => `r-${hex()}${hex()}`,
        {
          fatal: (daemon, err) =>
            this.violations.push({
              property: 'raft-node-failed',
              time: this.elapsed(),
              detail: `daemon ${daemon}'s Raft node failed: ${(err as Error).stack ?? String(err)}`,
            }),
          applied: (daemon, index, data) =>
            this.appliedLog.record(daemon, index, data, this.elapsed(), this.violations),
        },
      );
      d.disk.onWrite = () => {
        if (!this.powerFailureArmed || !this.chaos) return;
        this.powerFailureArmed = false;
        this.clock.root.set(() => this.powerFailure(), this.faultRng.int(10));
      };
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
        o.hostShapes?.[i] ?? o.shape,
        {
          leaseMs: o.timing.leaseMs,
          saveMs: 500,
          restoreMs: 500,
          ...(o.timing.engineStepMs ? { engineStepMs: o.timing.engineStepMs } : {}),
          ...(o.timing.engineWritesPerStep ? { engineWritesPerStep: o.timing.engineWritesPerStep } : {}),
          ...(o.timing.lazyGuests ? { lazyGuests: true } : {}),
        },
        o.seed + i,
      );
      h.onStates = (vmId) => checkLeaseWait(this.down, h, vmId, this.clock.now, this.violations);
      h.onTouched = (host, vmId) => this.hostSafety.touched(host, vmId);
      h.useClusterStorage(this.snapshots);
      h.links = {
        net: this.net,
        byAddress: (a) => this.hostsByAddress.get(a),
        step: (on, migrationId, step) => this.migrationStep(on, migrationId, step),
        networks: o.network ? (hostId) => this.hosts.get(hostId)?.network : undefined,
      };
      this.hosts.set(id, h);
      this.hostsByAddress.set(h.address, h);
      this.net.register(id, () => h.scope);
      this.bootHost(h);
    }
    const all = [...this.hosts.values()];
    for (let i = 0; i < all.length; i += o.hostsPerAgent) {
      const agent = all.slice(i, i + o.hostsPerAgent);
      if (agent.length > 1) for (const h of agent) h.siblings = agent.filter((x) => x !== h);
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
    let watch = this.placementWatch.get(d.id);
    if (!watch) this.placementWatch.set(d.id, (watch = new PlacementWatch()));
    watch.follow(d.machine);
    this.log(`daemon ${d.id} boots (${d.boots})`);
  }

  private bootHost(h: SimHost): void {
    h.boot(new Scope(this.clock, `${h.id}#${h.boots + 1}`));
    const scope = h.scope!;
    // The agent's own timer keeps its engine current (leases run out without any call).
    this.down.delete(h);
    const pumpMs = this.o.timing.pumpMs;
    const pump = () => {
      if (!this.o.timing.pumpAfterCalls) {
        h.pump();
        scope.set(pump, pumpMs);
        return;
      }
      if (scope.now() >= (h.engine?.now() ?? 0) + pumpMs) h.pump();
      scope.set(pump, (h.engine?.now() ?? scope.now()) + pumpMs - scope.now());
    };
    scope.set(pump, pumpMs);
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
    this.nlb?.start();
    const vms = this.live;
    const r = this.rng.next();
    if (vms.size < this.o.vms && r < 0.5) {
      const name = `vm-${++this.names}`;
      const requestId = `create-${name}`;
      const config = randomVmConfig(this.rng, name, { disks: true });
      if (this.nlb) config.networkAdapters = [this.nlb.adapter(this.names)];
      const req = {
        config,
        hostId: '',
        start: this.rng.chance(0.8),
        requestId,
      };
      this.log(`client creates ${name}`);
      const attempt = (tries: number) =>
        this.request<pb.Operation>('CreateVm', req).then(
          (op) => {
            this.stats.acknowledged++;
            if (!this.acked.has(op.targetId!) && !this.deleting.has(op.targetId!)) {
              this.live.push(op.targetId!);
              this.nlb?.created(op.targetId!);
            }
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
    if (vms.size === 0) return;
    const vmId = vms.at(this.rng.int(vms.size))!;
    const moves = this.o.moves;
    if (moves && r >= 0.78 && r < 0.9) {
      if (r < 0.83) this.migrate(vmId);
      else if (r < 0.88) this.checkpoint(vmId);
      else this.drain();
      return;
    }
    if (r < 0.9) {
      const action = ['VM_ACTION_START', 'VM_ACTION_STOP', 'VM_ACTION_TURN_OFF'][this.rng.int(3)]!;
      this.log(`client: ${action} ${vmId}`);
      this.request('ChangeVmState', { id: vmId, action }).then(
        () => this.stats.acknowledged++,
        () => undefined,
      );
    } else if (vms.size > this.o.vms / 2) {
      this.log(`client: delete ${vmId}`);
      this.deleting.add(vmId);
      this.live.delete(vmId);
      this.snapshotsKnown.delete(vmId);
      this.request('DeleteVm', { id: vmId }).then(
        () => this.stats.acknowledged++,
        // The outcome of a failed delete is unknown: it may have committed.
        () => undefined,
      );
    }
  }

  /** A client moves a VM (quick or live) to the host the scheduler picks. */
  private migrate(vmId: string): void {
    const kind = this.rng.chance(0.5) ? 'MIGRATION_KIND_LIVE' : 'MIGRATION_KIND_QUICK';
    this.log(`client: migrate ${vmId} (${kind})`);
    this.request<pb.Operation>('MigrateVm', { vmId, kind, targetHostId: '' }).then(
      (op) => {
        this.stats.acknowledged++;
        this.log(`client: migration of ${vmId} acknowledged (${op.id})`);
      },
      (err: unknown) => this.log(`client: migration of ${vmId} refused: ${(err as Error).message}`),
    );
  }

  /** A client takes a snapshot of a VM, or applies or deletes one of its snapshots. */
  private checkpoint(picked: string): void {
    const r = this.rng.next();
    // Apply and delete go to a VM the client took a snapshot of (if any still stands).
    const known = this.snapshotsKnown;
    const vmId = r < 0.6 || known.size === 0 ? picked : known.at(this.rng.int(known.size))!;
    const done = (what: string) =>
      [
        () => {
          this.stats.acknowledged++;
          this.log(`client: ${what} acknowledged`);
        },
        (err: unknown) => this.log(`client: ${what} refused: ${(err as Error).message}`),
      ] as const;
    if (r < 0.6) {
      this.log(`client: snapshot of ${vmId}`);
      const [ok, failed] = done(`snapshot of ${vmId}`);
      this.request('CreateCheckpoint', { vmId, name: '' }).then(() => {
        if (!this.snapshotted.has(vmId)) {
          this.snapshotted.add(vmId);
          if (!this.deleting.has(vmId)) this.snapshotsKnown.push(vmId);
        }
        ok();
      }, failed);
      return;
    }
    const pick = this.rng.next();
    this.request<pb.ListCheckpointsResponse>('ListCheckpoints', {
      vmId,
      consistency: 'CONSISTENCY_LINEARIZABLE',
    }).then(
      (list) => {
        const cps = list.checkpoints ?? [];
        if (cps.length === 0) return;
        const id = cps[Math.floor(pick * cps.length)]!.id!;
        if (r < 0.8) {
          this.log(`client: apply snapshot ${id} to ${vmId}`);
          this.request('ApplyCheckpoint', { id, turnOffFirst: true, saveCurrentFirst: false }).then(
            ...done(`apply of ${id}`),
          );
        } else {
          this.log(`client: delete snapshot ${id} of ${vmId}`);
          this.request('DeleteCheckpoint', { id, subtree: false }).then(...done(`delete of ${id}`));
        }
      },
      () => undefined,
    );
  }

  /** VMs the client asked to snapshot (acknowledged). */
  private readonly snapshotted = new Set<string>();
  /** Those not being deleted, in the order first snapshotted: what apply and delete pick from. */
  private readonly snapshotsKnown = new OrderedIds();

  /** The host a client drains now (one at a time, as an administrator would). */
  private draining: string | undefined;

  /** A client drains a host (its VMs move elsewhere), and undrains it a while later. */
  private drain(): void {
    if (this.draining) return;
    const ids = [...this.hosts.keys()];
    const hostId = ids[this.rng.int(ids.length)]!;
    this.draining = hostId;
    this.stats.drains++;
    this.log(`client: drain ${hostId}`);
    const undrain = (tries: number) =>
      this.request('UndrainHost', { id: hostId }).then(
        () => {
          this.log(`client: ${hostId} undrained`);
          this.draining = undefined;
        },
        (err: unknown) => {
          this.log(`client: undrain ${hostId} failed: ${(err as Error).message}`);
          if (tries < 10) this.client.set(() => void undrain(tries + 1), 1_000);
          else this.draining = undefined;
        },
      );
    this.request<pb.Operation>('DrainHost', { id: hostId }).then(
      (op) => {
        this.stats.acknowledged++;
        this.log(`client: drain of ${hostId} acknowledged (${op.id})`);
        this.client.set(() => void undrain(0), 10_000 + this.rng.int(20_000));
      },
      (err: unknown) => {
        this.log(`client: drain of ${hostId} failed: ${(err as Error).message}`);
        this.draining = undefined;
      },
    );
  }

  /** A migration reached `step` on host `on`: the armed fault interrupts it there. */
  private migrationStep(on: SimHost, migrationId: string, step: MigrationStep): void {
    this.log(`host ${on.id}: migration ${migrationId} ${step}`);
    const i = this.interrupt;
    if (!i || i.step !== step || !this.chaos) return;
    this.interrupt = undefined;
    this.stats.migrationsInterrupted++;
    // After the step's own call returns: a crash lands between two steps, as a real one would.
    this.clock.root.set(() => {
      if (!this.chaos) return;
      this.log(`FAULT migration ${migrationId} interrupted after ${step} on ${on.id}: ${i.how}`);
      if (i.how === 'crash-host') {
        if (!on.alive) return;
        this.stats.hostCrashes++;
        this.crashHost(on);
        this.clock.root.set(() => !on.alive && this.bootHost(on), 5_000 + this.faultRng.int(25_000));
      } else if (i.how === 'partition-host') {
        this.stats.partitions++;
        this.net.isolate(on.id);
        this.clock.root.set(() => this.net.heal(), 3_000 + this.faultRng.int(20_000));
      } else {
        const d = this.leader();
        if (!d) return;
        this.stats.daemonCrashes++;
        d.crash();
        this.clock.root.set(() => !d.alive && this.bootDaemon(d), 2_000 + this.faultRng.int(15_000));
      }
    }, 0);
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
      this.crashHost(h);
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
      // A lazy engine's guests meet the full disk now (a stepping one's at their next step).
      if (this.o.timing.lazyGuests) h.pump();
      back(2_000 + this.faultRng.int(10_000), () => (h.diskFull = false));
    } else if (r < 0.8) {
      // Timed by the next Raft write, so it lands while that write (and maybe others) is unsynced.
      this.log('FAULT power failure armed: every daemon crashes during the next Raft write');
      this.powerFailureArmed = true;
    } else if (r < 0.9 && this.o.moves) {
      // The next migration to reach this step (on either host) is interrupted there.
      const step = MIGRATION_STEPS[this.faultRng.int(MIGRATION_STEPS.length)]!;
      const how = (['crash-host', 'partition-host', 'crash-leader'] as const)[this.faultRng.int(3)]!;
      this.log(`FAULT armed: the next migration to reach ${step} is interrupted there (${how})`);
      this.interrupt = { step, how };
    }
  }

  /** Every daemon at once: only what each had synced survives, and Raft must lose no committed entry. */
  private powerFailure(): void {
    const lost = [...this.daemons.values()].map((d) => `${d.id} ${d.disk.unsynced}`).join(', ');
    this.log(`FAULT power failure: every daemon crashes (unsynced writes lost: ${lost})`);
    this.stats.daemonCrashes += this.daemons.size;
    for (const d of this.daemons.values()) {
      d.crash();
      this.clock.root.set(() => !d.alive && this.bootDaemon(d), 1_000 + this.faultRng.int(10_000));
    }
  }

  private crashHost(h: SimHost, budgetMs?: number): void {
    const ran = [...h.states].filter(([, st]) => st === 'VM_STATE_RUNNING').map(([id]) => id);
    if (ran.length > 0)
      this.recovering.push({
        at: this.clock.now,
        vms: new Set(ran),
        host: h.id,
        ...(budgetMs ? { budgetMs } : {}),
      });
    h.crash();
    this.down.add(h);
  }

  /** The scripted crash: the host running the most VMs, down until the faults stop. */
  private crashBusiest(): void {
    let busiest: SimHost | undefined;
    let most = 0;
    for (const h of this.hosts.values()) {
      const running = [...h.states.values()].filter((st) => st === 'VM_STATE_RUNNING').length;
      if (h.alive && running > most) [busiest, most] = [h, running];
    }
    if (!busiest) return;
    this.stats.hostCrashes++;
    this.log(`FAULT host ${busiest.id} crashes with ${most} VMs running, down until the faults stop`);
    this.crashHost(busiest, this.o.haBudgetMs);
  }

  private endChaos(): void {
    this.chaos = false;
    this.interrupt = undefined;
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

  /** The safety invariants over what the last step changed (see HostSafetyWatch, PlacementWatch). */
  private checkChanges(): void {
    const now = this.clock.now;
    this.hostSafety.check(now, this.violations);
    for (const d of this.daemons.values())
      if (d.alive) this.placementWatch.get(d.id)?.check(now, this.violations);
    this.trackRecoveries((id) =>
      this.hostSafety.runningOn(id, now).some((h) => h.states.get(id) === 'VM_STATE_RUNNING'),
    );
  }

  /** The safety invariants by full scans of every host and every daemon's books. */
  private checkSafety(): void {
    const now = this.clock.now;
    const where = runningHosts(this.hosts.values(), now);
    checkSingleHost(where, now, this.violations);
    checkHostMemory(this.hosts.values(), now, this.violations);
    for (const d of this.daemons.values())
      if (d.alive) checkPlacements(d.machine.state, now, this.violations);
    if (this.o.network) checkNlb(this.hosts.values(), now, this.violations);
  }

  /**
   * Time to recover: a host crash is over once every VM that ran there runs again, anywhere
   * (or is no longer wanted Running: stopped or deleted since).
   */
  private trackRecoveries(running: (vmId: string) => boolean): void {
    if (this.recovering.length === 0) return;
    const s = this.leader()?.machine.state;
    if (!s) return;
    for (let i = this.recovering.length - 1; i >= 0; i--) {
      const r = this.recovering[i]!;
      for (const id of r.vms) {
        const vm = s.vms.get(id);
        if (!vm || vm.desired !== 'VM_STATE_RUNNING' || running(id)) r.vms.delete(id);
      }
      if (r.vms.size === 0) {
        this.recoveriesMs.push(this.clock.now - r.at);
        this.recovering.splice(i, 1);
      } else if (r.budgetMs !== undefined && this.clock.now - r.at > r.budgetMs) {
        this.violations.push({
          property: 'ha-budget-exceeded',
          time: this.elapsed(),
          detail: `${r.vms.size} HA VMs of host ${r.host} (${[...r.vms].slice(0, 3).join(', ')}) not Running again ${r.budgetMs} ms after it crashed`,
        });
        this.recovering.splice(i, 1);
      }
    }
  }

  /** Host utilisation now: VMs running, hosts up and in use, memory used over usable. */
  private sample(): void {
    let vmsRunning = 0;
    let hostsUp = 0;
    let hostsWithVms = 0;
    let sum = 0;
    let max = 0;
    for (const h of this.hosts.values()) {
      if (!h.alive) continue;
      hostsUp++;
      let running = 0;
      for (const st of h.states.values()) if (st === 'VM_STATE_RUNNING') running++;
      vmsRunning += running;
      if (running > 0) hostsWithVms++;
      const u = h.memoryInUse() / (h.shape.memoryBytes - h.shape.rootReserveBytes);
      sum += u;
      max = Math.max(max, u);
    }
    const round = (x: number) => Math.round(x * 1000) / 1000;
    this.utilisation.push({
      hour: round(this.elapsed() / 3_600_000),
      vmsRunning,
      hostsUp,
      hostsWithVms,
      memMean: hostsUp ? round(sum / hostsUp) : 0,
      memMax: round(max),
    });
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
      // Paused for a full disk, a VM waits for the administrator to resume it once there is
      // space (Hyper-V does not resume it by itself): converged if the farm reports it so.
      if (actual === 'VM_STATE_PAUSED_CRITICAL' && vm.observed.state === actual) continue;
      if (actual !== wanted)
        this.violations.push({
          property: 'not-converged',
          time: this.elapsed(),
          detail: `VM ${vm.config.name} (${vm.id}) should be ${wanted} on ${vm.hostId}, the host has it ${actual ?? 'absent'}`,
        });
    }
  }

  /** Once faults stop, every NLB cluster converges over the members whose VMs run. */
  private checkNlbConverged(s: FarmState): void {
    const running = new Map<string, Map<string, number>>();
    for (const c of s.nlbClusters.values()) {
      const members = new Map<string, number>();
      for (const m of c.members) {
        const hostId = s.vms.get(m.vmId)?.hostId;
        const host = hostId ? this.hosts.get(hostId) : undefined;
        if (host?.states.get(m.vmId) === 'VM_STATE_RUNNING') members.set(m.vmId, m.hostPriority);
      }
      running.set(c.id, members);
    }
    checkNlbConverged(this.hosts.values(), running, this.elapsed(), this.violations);
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
    const request = () => {
      if (this.elapsed() >= endChaos) return;
      this.workload();
      const below = this.acked.size - this.deleting.size < o.vms;
      if (!below && !this.filled) {
        this.filled = true;
        o.onFilled?.(this.elapsed());
      }
      this.clock.root.set(request, below ? o.requestEveryMs : o.churnEveryMs);
    };
    this.clock.root.set(request, o.requestEveryMs);
    if (o.checkEveryMs > 0) every(o.checkEveryMs, () => this.checkSafety(), end);
    if (o.sampleEveryMs > 0) {
      every(o.sampleEveryMs, () => this.sample(), end);
      // And as the faults stop, and at the end (after the calm).
      this.clock.root.set(() => this.sample(), endChaos - 1);
      this.clock.root.set(() => this.sample(), end);
    }
    // One fault every 3 s, at a random instant in it: not in step with the workload's and the
    // daemons' round-numbered timers, so a crash can land between a write and its sync.
    if (o.faults)
      every(
        o.faultEveryMs,
        () => this.clock.root.set(() => this.fault(), this.faultRng.int(o.faultEveryMs)),
        endChaos,
      );
    this.clock.root.set(() => this.endChaos(), endChaos);
    if (o.crashBusiestAtMs > 0) this.clock.root.set(() => this.crashBusiest(), o.crashBusiestAtMs);
    let leader: string | undefined;
    try {
      for (;;) {
        const ev = this.clock.pop();
        if (!ev || ev.time - VirtualClock.EPOCH > end) break;
        ev.fn();
        for (let n = 1; n < o.sameInstantBatch; n++) {
          const more = this.clock.popBy(ev.time);
          if (!more) break;
          more.fn();
          this.stats.steps++;
        }
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
        this.checkChanges();
        if (o.checkEveryMs === 0) this.checkSafety();
        if (this.violations.length > 0) break;
      }
      const d = this.mostApplied();
      if (this.violations.length === 0 && d) {
        this.checkAcknowledged(d.machine.state);
        if (o.converge) this.checkConverged(d.machine.state);
        if (o.converge && o.network) this.checkNlbConverged(d.machine.state);
      }
    } finally {
      useIdBits(undefined);
    }
    for (const h of this.hosts.values())
      for (const s of h.states.values()) if (s === 'VM_STATE_RUNNING') this.stats.vmsRunning++;
    for (const times of this.mostApplied()?.machine.state.failovers.values() ?? [])
      this.stats.failovers += times.length;
    for (const op of this.mostApplied()?.machine.state.operations.values() ?? [])
      if (op.done && !op.error && op.params.kind.startsWith('checkpoint.')) this.stats.checkpointOps++;
    for (const m of this.mostApplied()?.machine.state.migrations.values() ?? []) {
      if (m.decision === 'commit') this.stats.migrations++;
      else if (m.decision === 'abort') this.stats.migrationsAborted++;
    }
    this.stats.messages = this.net.messages;
    for (const v of this.violations) this.log(`VIOLATION ${v.property}: ${v.detail}`);
    return {
      seed: o.seed,
      violations: this.violations,
      trace: this.traceLines,
      stats: this.stats,
      recoveriesMs: this.recoveriesMs,
      utilisation: this.utilisation,
    };
  }

  // --- what a drill plays here (drill/) ---

  /**
   * The farm's own client, faults and checks, for a drill that plays its timeline on this farm
   * instead of the random workload: the same crash and boot (so the lease-wait invariant knows
   * which hosts are down), the same client path to the daemons, the same safety checks.
   */
  drillHandle(): DrillHandle {
    return {
      client: this.client,
      request: (method, req) => this.request(method, req),
      registerHosts: () => this.registerHosts(),
      crashHost: (h) => {
        this.stats.hostCrashes++;
        this.crashHost(h);
      },
      bootHost: (h) => this.bootHost(h),
      bootDaemon: (d) => this.bootDaemon(d),
      checkSafety: () => this.checkSafety(),
      mostApplied: () => this.mostApplied(),
      end: () => useIdBits(undefined),
    };
  }
}

function isRetryable(err: unknown): boolean {
  const code = statusOf(err);
  return code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === undefined;
}

export function runFarm(o: FarmOptions): Promise<FarmResult> {
  return new FarmSimulation(o).run();
}
