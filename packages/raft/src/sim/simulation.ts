import { checkLinearizable, type Verdict } from '../checker/checker.js';
import type { HistoryRecorder } from '../checker/history.js';
import { type KvInput, kvModel, type KvOutput } from '../checker/kv-model.js';
import { MessageType, type NodeId, type Ready, Role } from '../types.js';
import { Cluster } from './cluster.js';
import { SimDisk } from './disk.js';
import { FaultSchedule } from './fault-schedule.js';
import { randomNetworkFaults } from './faults.js';
import type { InvariantChecker, Violation } from './invariants.js';
import { Liveness } from './liveness.js';
import { isAlive, type Member } from './member.js';
import { isRpc, SimNetwork } from './network.js';
import {
  type CrashPoint,
  resolveSimOptions,
  type ResolvedSimOptions,
  type SimOptions,
  type SimResult,
  UNITS_PER_TICK,
} from './options.js';
import { SimRng } from './rng.js';
import { describeRpc } from './proposals.js';
import { describeMessage } from './trace.js';
import { type OpState, Workload } from './workload.js';

export { UNITS_PER_TICK, type CrashPoint, type SimOptions, type SimResult } from './options.js';

/**
 * A deterministic Raft cluster: N nodes, a virtual clock, an unreliable network, crashes that
 * lose unsynced writes, clock pauses, membership changes and leadership transfers, with clients
 * running a key-value workload. Everything random comes from the seed, so a seed replays exactly.
 *
 * `run()` is the whole randomized scenario: chaos, then heal, then the liveness and
 * linearizability checks. The manual-control methods (runTicks, crashNode, pauseNode, submit...)
 * let scenario tests script a failure step by step on the same harness.
 *
 * This class wires the parts together and owns the clock; the parts are the cluster (servers and
 * their Ready loop), the workload (clients and history), the fault schedule and the liveness phase.
 */
export class Simulation {
  readonly opts: ResolvedSimOptions;
  readonly network: SimNetwork;
  private readonly cluster: Cluster;
  private readonly workload: Workload;
  private readonly faults: FaultSchedule;
  private readonly liveness: Liveness;

  constructor(options: SimOptions) {
    this.opts = resolveSimOptions(options);
    // Independent streams, so that a change in one part's draws does not reshuffle the others.
    const rng = new SimRng(options.seed);
    const faultRng = rng.fork();
    const clientRng = rng.fork();
    this.network = new SimNetwork(rng.fork(), randomNetworkFaults(faultRng, this.opts.chaos));
    this.cluster = new Cluster(this.opts, rng, faultRng, this.network);
    const voters = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    for (const id of voters) this.cluster.addMember(id, new SimDisk({ voters, learners: [] }));
    this.workload = new Workload(this.cluster, clientRng);
    this.faults = new FaultSchedule(this.cluster);
    this.liveness = new Liveness(this.cluster, this.workload, (o) => this.step(o));
    this.cluster.hooks = {
      crashed: (m) => this.workload.crashed(m),
      writeApplied: (m, e, out) => this.workload.proposals.applied(m, e, out),
      snapshotInstalled: (m, index) => this.workload.proposals.snapshotInstalled(m, index),
      readyDone: (m) => this.workload.serveReads(m),
      confApplied: (cc) => this.faults.confApplied(cc),
    };
    this.cluster.log(
      `seed ${options.seed}: ${options.nodes} nodes, faults ${JSON.stringify(this.network.faults)}`,
    );
  }

  get inv(): InvariantChecker {
    return this.cluster.inv;
  }

  get history(): HistoryRecorder<KvInput, KvOutput> {
    return this.workload.history;
  }

  get members(): ReadonlyMap<NodeId, Member> {
    return this.cluster.members;
  }

  get trace(): string[] {
    return this.cluster.trace;
  }

  /** Virtual time, in units (UNITS_PER_TICK to a tick). */
  get now(): number {
    return this.cluster.now;
  }

  get violations(): readonly Violation[] {
    return this.cluster.inv.violations;
  }

  // ---------------------------------------------------------------- the clock

  /** One unit of virtual time: faults, ticks, deliveries, clients, then the checks. */
  private step(opts: { faults: boolean; clients: boolean }): void {
    const { cluster } = this;
    const now = ++cluster.now;
    cluster.flushSnapshotReports();
    if (opts.faults && now % UNITS_PER_TICK === 0) this.faults.inject();
    for (const m of cluster.members.values()) {
      if (!isAlive(m) && !m.removed && now >= m.restartAt) cluster.restart(m);
      if (m.paused && m.pausedUntil <= now) {
        // The process wakes up with a backlog on its sockets: it reads it over the next few
        // ticks, interleaved with its timers and its clients, not all before them.
        m.paused = false;
        this.network.spreadHeld(m.id, now, 3 * UNITS_PER_TICK);
        cluster.log(`resume ${m.id}`);
      }
      if (!isAlive(m) || m.pausedUntil > now) continue;
      if (now % UNITS_PER_TICK === m.tickPhase) {
        cluster.guard(m, () => m.node!.tick());
        cluster.drain(m);
      }
    }
    const msgs = this.network.deliverable(now, (id) => (cluster.members.get(id)?.pausedUntil ?? 0) <= now);
    for (const msg of msgs) {
      const m = cluster.members.get(msg.to);
      const alive = m !== undefined && isAlive(m);
      if (isRpc(msg)) {
        if (this.opts.trace) cluster.log(`recv ${describeRpc(msg)}`);
        if (alive) this.workload.proposals.deliver(m, msg);
        continue;
      }
      if (msg.type === MessageType.Snapshot) cluster.snapshotOutcome(msg.from, msg.to, alive);
      if (alive) {
        if (this.opts.trace) cluster.log(`recv ${describeMessage(msg)}`);
        cluster.guard(m, () => m.node!.step(msg));
        cluster.drain(m);
      }
      cluster.flushSnapshotReports();
    }
    this.workload.runClients(opts.clients);
    cluster.inv.now = now;
    for (const m of cluster.members.values()) {
      if (isAlive(m) && m.role === Role.Leader) cluster.inv.leaderHolds(m.id, m.term, m.disk.current);
    }
  }

  // ---------------------------------------------------------------- manual control, for scenario tests

  /** Runs `ticks` ticks with no injected faults (the network's own faults still apply). */
  runTicks(ticks: number, clients = false): void {
    for (let i = 0; i < ticks * UNITS_PER_TICK; i++) this.step({ faults: false, clients });
  }

  /** Runs until `done()` or `ticks` ticks have passed; returns whether `done()` became true. */
  runUntil(done: () => boolean, ticks: number, clients = false): boolean {
    const deadline = this.now + ticks * UNITS_PER_TICK;
    while (this.now < deadline) {
      if (done()) return true;
      this.step({ faults: false, clients });
    }
    return done();
  }

  /**
   * Crashes a node now, or arms a crash at a point inside its next Ready (the next one for
   * which `when` holds, if given).
   */
  crashNode(id: NodeId, at: CrashPoint | 'now' = 'now', when?: (rd: Ready) => boolean): void {
    const m = this.cluster.mustMember(id);
    if (at === 'now') this.cluster.crash(m, 'by the test');
    else {
      m.crashIn = at;
      m.crashWhen = when;
    }
    m.restartAt = Infinity;
  }

  restartNode(id: NodeId): void {
    const m = this.cluster.mustMember(id);
    if (isAlive(m)) throw new Error(`restartNode: ${id} is running`);
    this.cluster.restart(m);
  }

  /** Freezes a node (a long GC or VM pause) for `ticks`: no ticks, no messages, no clients. */
  pauseNode(id: NodeId, ticks: number): void {
    this.cluster.pause(this.cluster.mustMember(id), ticks);
  }

  /** Whether the node is frozen by a pause and has not woken up yet. */
  isPaused(id: NodeId): boolean {
    return this.cluster.mustMember(id).paused;
  }

  /** Makes a node start an election now. */
  campaign(id: NodeId): void {
    const m = this.cluster.mustMember(id);
    if (!isAlive(m) || !m.node.campaign) throw new Error(`campaign: ${id} is down or cannot campaign`);
    this.cluster.guard(m, () => m.node!.campaign!());
    this.cluster.drain(m);
  }

  /** The node's role and term as its last Ready showed them. */
  roleOf(id: NodeId): { role: Role; term: number; leader: NodeId } {
    const m = this.cluster.mustMember(id);
    return { role: m.role, term: m.term, leader: m.leader };
  }

  isRunning(id: NodeId): boolean {
    return isAlive(this.cluster.mustMember(id));
  }

  /** The leader followed by a majority, waiting up to `ticks` for one. */
  awaitStableLeader(ticks: number): NodeId | undefined {
    return this.liveness.awaitLeader(ticks)?.id;
  }

  /** Client `client` sends `input` to node `id`; returns the operation's history id. */
  submit(client: number, id: NodeId, input: KvInput): number {
    const clients = this.workload.clients;
    const c = clients[client];
    if (!c) throw new Error(`client: no client ${client} (there are ${clients.length})`);
    if (c.busy) throw new Error(`client ${client}: already has operation ${c.busy.op} in flight`);
    c.hint = id;
    const op = this.workload.issue(c, input);
    if (op === undefined) throw new Error(`submit: node ${id} cannot take requests`);
    return op;
  }

  /** pending, ok, unknown (the client gave up: it may have happened) or failed (it did not). */
  opStatus(op: number): OpState {
    const s = this.workload.opState.get(op);
    if (s === undefined) throw new Error(`op: no operation ${op}`);
    return s;
  }

  /** What the node's state machine holds for `key`. */
  valueAt(id: NodeId, key: string): string | null {
    return this.cluster.mustMember(id).sm.get(key);
  }

  appliedIndex(id: NodeId): number {
    return this.cluster.mustMember(id).applied;
  }

  diskOf(id: NodeId): SimDisk {
    return this.cluster.mustMember(id).disk;
  }

  /** Checks the client history recorded so far. */
  checkHistory(): Verdict {
    return checkLinearizable(kvModel, this.history.operations(), { maxSteps: this.opts.checkerMaxSteps })
      .verdict;
  }

  // ---------------------------------------------------------------- the run

  run(): SimResult {
    const { cluster, liveness } = this;
    const { chaosTicks, leaderBoundTicks, proposalBoundTicks } = this.opts;
    for (let t = 0; t < chaosTicks * UNITS_PER_TICK; t++) this.step({ faults: true, clients: true });

    liveness.heal();
    const healedAt = this.now;
    const ticksToLeader = liveness.awaitLeader(leaderBoundTicks, true)
      ? Math.ceil((this.now - healedAt) / UNITS_PER_TICK)
      : -1;
    if (ticksToLeader < 0) {
      cluster.violation('liveness', `no leader within ${leaderBoundTicks} ticks of healing`);
    } else {
      liveness.probe(proposalBoundTicks);
    }
    // Let the last operations finish, then check the history.
    liveness.settle(this.opts.opTimeoutTicks + 2);
    for (const [op, state] of this.workload.opState) {
      if (state === 'pending') cluster.violation('liveness', `operation ${op} never resolved`);
    }

    const check = checkLinearizable(kvModel, this.history.operations(), {
      maxSteps: this.opts.checkerMaxSteps,
    });
    if (check.verdict === 'illegal') {
      const bad = check.partitions.find((p) => p.verdict === 'illegal');
      cluster.violation(
        'linearizability',
        `key ${bad?.partition}: no linearization of:\n  ${(bad?.operationsDescribed ?? []).join('\n  ')}`,
      );
    }
    return {
      seed: this.opts.seed,
      nodes: this.opts.nodes,
      violations: cluster.inv.violations,
      linearizable: check.verdict,
      ops: this.workload.counts(),
      elections: cluster.elections,
      crashes: cluster.crashes,
      ticksToLeader,
      committed: cluster.inv.committedCount,
      confChanges: this.faults.confChanges,
      snapshotsInstalled: cluster.snapshotsInstalled,
      transfers: this.faults.transfers,
      forwarded: this.workload.proposals.forwarded,
      network: this.network.stats,
      trace: cluster.trace,
    };
  }
}

/** Runs one seed. */
export function runSimulation(options: SimOptions): SimResult {
  return new Simulation(options).run();
}
