import { type Logger } from '@hyperfarm/api';
import {
  ControllerRunner,
  FarmStateMachine,
  hostHandlers,
  Leadership,
  Proposer,
  vmHandlers,
  type FarmContext,
  type RunnerConfig,
  type SchedulerOptions,
} from '@hyperfarm/daemon';
import {
  EntryType,
  MemoryStorage,
  NodeStoppedError,
  NotLeaderError,
  OutcomeUnknownError,
  PendingProposals,
  ProposalDroppedError,
  RawNode,
  ReadIds,
  ReadNotConfirmedError,
  RequestTimeoutError,
  Role,
  SimRng,
  isRefusal,
  type Message,
  type RaftNode,
  type Ready,
} from '@hyperfarm/raft';
import type { Scope, VirtualClock } from './clock.js';
import type { SimNetwork } from './network.js';
import { SimAgentPort, type HostDirectory } from './agent-port.js';

export interface ReplicaConfig {
  /** Ms per Raft tick, and ticks to an election and between heartbeats (RAFT_PROFILES). */
  tickMs: number;
  electionTick: number;
  heartbeatTick: number;
  /** Snapshot and compact the log every this many applied entries. */
  snapshotEvery: number;
  requestTimeoutMs: number;
  runner: Omit<RunnerConfig, 'daemonId'>;
  scheduler: SchedulerOptions;
}

interface Waiter {
  term: number;
  resolve(v: { index: number; result: Uint8Array }): void;
  reject(err: unknown): void;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * One control daemon: the real Raft core (RawNode) driven the way RaftNode drives it (persist,
 * send, apply, advance; proposals forwarded to the leader; ReadIndex reads), with the real farm
 * state machine, proposer, leadership and controller runner on top, and the ClusterService
 * handlers that clients call. Its log and snapshot (`disk`) survive a crash; everything else is
 * rebuilt on restart, as a killed process is.
 */
export class SimDaemon {
  readonly disk: MemoryStorage;
  scope: Scope | undefined;
  raw: RawNode | undefined;
  machine = new FarmStateMachine();
  runner: ControllerRunner | undefined;
  handlers: ReturnType<typeof vmHandlers> & ReturnType<typeof hostHandlers> = {};
  role: Role = Role.Follower;
  leader = '';
  term = 0;
  boots = 0;
  private applied = 0;
  private snapshotIndex = 0;
  private proposals = new PendingProposals<Waiter>();
  private reads = new Map<string, { resolve(index: number): void; reject(err: unknown): void }>();
  private readIds = new ReadIds('', '');
  private readyScheduled = false;
  private appliedWaiters: { index: number; resolve(): void }[] = [];
  private leadership: Leadership | undefined;

  constructor(
    readonly id: string,
    peers: string[],
    private readonly clock: VirtualClock,
    private readonly net: SimNetwork,
    private readonly daemons: Map<string, SimDaemon>,
    private readonly hosts: HostDirectory,
    private readonly cfg: ReplicaConfig,
    private readonly logger: Logger,
    private readonly seed: number,
    private readonly ids: () => string,
  ) {
    this.disk = MemoryStorage.bootstrap({ voters: peers, learners: [] });
  }

  get alive(): boolean {
    return this.scope !== undefined;
  }

  get appliedIndex(): number {
    return this.applied;
  }

  /** Starts an incarnation from what the disk holds. */
  boot(scope: Scope): void {
    this.boots++;
    this.scope = scope;
    const snap = this.disk.snapshot();
    this.machine = new FarmStateMachine();
    if (snap.data.length > 0) this.machine.restore(snap.data);
    this.applied = snap.meta.index;
    this.snapshotIndex = snap.meta.index;
    this.role = Role.Follower;
    this.leader = '';
    this.proposals = new PendingProposals<Waiter>();
    this.reads = new Map();
    this.appliedWaiters = [];
    this.readIds = new ReadIds(this.id, String(this.boots));
    this.readyScheduled = false;
    this.raw = new RawNode({
      id: this.id,
      storage: this.disk,
      rng: new SimRng(this.seed * 131 + this.boots),
      applied: snap.meta.index,
      electionTick: this.cfg.electionTick,
      heartbeatTick: this.cfg.heartbeatTick,
      forwardProposals: false,
    });
    const logger = this.logger;
    const proposer = new Proposer(this.raftFacade(), this.machine, logger, {
      timers: scope,
      newRid: this.ids,
    });
    const port = new SimAgentPort(this.id, scope, this.net, this.hosts);
    const runner = new ControllerRunner(this.machine, proposer, port, scope, logger, {
      ...this.cfg.runner,
      daemonId: this.id,
    });
    this.runner = runner;
    this.leadership = new Leadership(logger, scope);
    this.leadership.attach(this.raftFacade(), runner);
    const ctx: FarmContext = {
      // The handlers use the read barrier only (GetVm and friends); see raftFacade.
      raft: this.raftFacade() as unknown as RaftNode,
      machine: this.machine,
      proposer,
      runner,
      port,
      logger,
      scheduler: this.cfg.scheduler,
      timers: scope,
    };
    this.handlers = { ...vmHandlers(ctx), ...hostHandlers(ctx) };
    const tick = () => {
      this.input(() => this.raw!.tick());
      scope.set(tick, this.cfg.tickMs);
    };
    scope.set(tick, this.cfg.tickMs);
  }

  /** The process dies: timers, memory and pending requests go; the disk stays. */
  crash(): void {
    if (!this.scope) return;
    this.leadership?.detach();
    this.scope.kill();
    this.scope = undefined;
    this.raw = undefined;
    this.runner = undefined;
    this.role = Role.Follower;
    this.leader = '';
    const stopped = new NodeStoppedError(this.id);
    for (const w of this.proposals.drain())
      w.reject(new OutcomeUnknownError(`${stopped.message} while the proposal waited; outcome unknown`));
    for (const r of this.reads.values()) r.reject(stopped);
    this.reads.clear();
  }

  /** What the proposer, leadership and handlers ask of RaftNode, answered as RaftNode does. */
  private raftFacade(): Pick<RaftNode, 'propose' | 'read'> {
    return { propose: (data) => this.propose(data), read: () => this.read() };
  }

  // --- requests (RaftNode's semantics) ---

  async propose(data: Uint8Array): Promise<{ index: number; result: Uint8Array }> {
    try {
      return await this.proposeLocal(data);
    } catch (err) {
      if (!(err instanceof NotLeaderError) || err.leader === '' || !this.scope) throw err;
      const leader = this.daemons.get(err.leader)!;
      return this.net.call(this.scope, this.id, leader.id, this.cfg.requestTimeoutMs, () =>
        leader.proposeLocal(data),
      );
    }
  }

  proposeLocal(data: Uint8Array): Promise<{ index: number; result: Uint8Array }> {
    const scope = this.scope;
    const raw = this.raw;
    if (!scope || !raw) return Promise.reject(new NodeStoppedError(this.id));
    let at: { index: number; term: number };
    try {
      const res = raw.propose(data);
      if (res.forwarded) throw new Error('the core forwarded a proposal although forwarding is off');
      at = { index: res.index, term: res.term };
    } catch (err) {
      return Promise.reject(err);
    }
    this.kick();
    return new Promise((resolve, reject) => {
      const timer = scope.set(() => {
        this.proposals.cancel(at.index, waiter);
        reject(new RequestTimeoutError('proposal', this.cfg.requestTimeoutMs));
      }, this.cfg.requestTimeoutMs);
      const waiter: Waiter = {
        term: at.term,
        resolve: (v) => {
          scope.clear(timer);
          resolve(v);
        },
        reject: (e) => {
          scope.clear(timer);
          reject(e);
        },
      };
      this.proposals.add(at.index, waiter);
    });
  }

  async read(): Promise<void> {
    const index = await this.readIndex();
    await this.waitApplied(index);
  }

  private readIndex(): Promise<number> {
    const scope = this.scope;
    const raw = this.raw;
    if (!scope || !raw) return Promise.reject(new NodeStoppedError(this.id));
    const context = this.readIds.next();
    try {
      raw.readIndex(enc.encode(context));
    } catch (err) {
      return Promise.reject(err);
    }
    this.kick();
    return new Promise((resolve, reject) => {
      const timer = scope.set(() => {
        this.reads.delete(context);
        reject(new RequestTimeoutError('read index', this.cfg.requestTimeoutMs));
      }, this.cfg.requestTimeoutMs);
      this.reads.set(context, {
        resolve: (i) => {
          scope.clear(timer);
          resolve(i);
        },
        reject: (e) => {
          scope.clear(timer);
          reject(e);
        },
      });
    });
  }

  /** Resolves once this node applied `index` (an empty entry counts: RaftNode's own waiters). */
  private waitApplied(index: number): Promise<void> {
    const scope = this.scope;
    if (!scope) return Promise.reject(new NodeStoppedError(this.id));
    if (this.applied >= index) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { index, resolve: () => (scope.clear(timer), resolve()) };
      const timer = scope.set(() => {
        this.appliedWaiters = this.appliedWaiters.filter((x) => x !== w);
        reject(new RequestTimeoutError(`apply up to index ${index}`, this.cfg.requestTimeoutMs));
      }, this.cfg.requestTimeoutMs);
      this.appliedWaiters.push(w);
    });
  }

  private releaseAppliedWaiters(): void {
    if (this.appliedWaiters.length === 0) return;
    const ready = this.appliedWaiters.filter((w) => w.index <= this.applied);
    if (ready.length === 0) return;
    this.appliedWaiters = this.appliedWaiters.filter((w) => w.index > this.applied);
    for (const w of ready) w.resolve();
  }

  // --- the loop ---

  /** A message from a peer. A message the core refuses is dropped, as RaftNode drops it. */
  receive(m: Message): void {
    this.input(() => {
      try {
        this.raw!.step(m);
      } catch (err) {
        if (!isRefusal(err)) throw err;
      }
    });
  }

  private input(fn: () => void): void {
    if (!this.raw) return;
    fn();
    this.kick();
  }

  /** Handles Readies at the current virtual time, after what arrives in this turn (one batch). */
  private kick(): void {
    if (this.readyScheduled || !this.scope) return;
    this.readyScheduled = true;
    this.scope.set(() => {
      this.readyScheduled = false;
      while (this.raw?.hasReady()) this.handleReady(this.raw, this.raw.ready());
    }, 0);
  }

  private handleReady(raw: RawNode, rd: Ready): void {
    if (rd.softState) {
      const was = this.role;
      this.role = rd.softState.role;
      if (rd.softState.leader !== this.leader) {
        this.leader = rd.softState.leader;
        const reads = [...this.reads.values()];
        this.reads.clear();
        for (const r of reads)
          r.reject(new ReadNotConfirmedError('the leader changed before it confirmed the read'));
      }
      if (was !== this.role || this.role === Role.Leader)
        this.leadership?.changed(this.role === Role.Leader, raw.status().term);
    }
    // 1. Persist (synchronously: the simulated disk syncs every write), 2. send, 3. apply.
    if (rd.snapshot) this.disk.applySnapshot(rd.snapshot);
    if (rd.entries.length > 0) this.disk.append(rd.entries);
    if (rd.hardState) {
      this.disk.setHardState(rd.hardState);
      this.term = rd.hardState.term;
    }
    for (const m of rd.messages) {
      const to = this.daemons.get(m.to);
      if (to) this.net.send(this.id, m.to, () => to.receive(m));
    }
    if (rd.snapshot) {
      this.machine.restore(rd.snapshot.data);
      this.applied = rd.snapshot.meta.index;
      this.snapshotIndex = rd.snapshot.meta.index;
      for (const w of this.proposals.replacedThrough(rd.snapshot.meta.index))
        w.reject(new OutcomeUnknownError('the log was replaced by a snapshot; outcome unknown'));
    }
    for (const e of rd.committedEntries) {
      let result: Uint8Array = new Uint8Array();
      if (e.type === EntryType.Normal && e.data.length > 0) result = this.machine.apply(e.data, e.index);
      this.applied = e.index;
      const pending = this.proposals.applied(e);
      if (pending?.taken) pending.waiter.resolve({ index: e.index, result });
      else if (pending)
        pending.waiter.reject(new ProposalDroppedError(`index ${e.index} was taken by another entry`));
    }
    for (const rs of rd.readStates) {
      const key = dec.decode(rs.context);
      const w = this.reads.get(key);
      if (w) {
        this.reads.delete(key);
        w.resolve(rs.index);
      }
    }
    this.releaseAppliedWaiters();
    raw.advance(rd);
    this.maybeSnapshot(raw);
  }

  private maybeSnapshot(raw: RawNode): void {
    if (this.applied - this.snapshotIndex < this.cfg.snapshotEvery) return;
    const index = this.applied;
    this.disk.createSnapshot(index, raw.status().conf, this.machine.snapshot());
    const keep = Math.max(this.disk.firstIndex() - 1, index - Math.floor(this.cfg.snapshotEvery / 4));
    if (keep >= this.disk.firstIndex()) this.disk.compact(keep);
    this.snapshotIndex = index;
  }
}
