import { randomBytes, randomInt } from 'node:crypto';
import type { pb, TlsFiles } from '@hyperfarm/api';
import { Registry } from 'prom-client';
import { decodeConfChange } from '../core/entries.js';
import { isRefusal, NotLeaderError, ProposalDroppedError, RaftArgumentError } from '../core/errors.js';
import { type MemoryStorage } from '../core/memory-storage.js';
import { PendingProposals } from '../core/pending-proposals.js';
import { ReadIds } from '../core/read-ids.js';
import { RawNode, type RaftStatus } from '../core/raw-node.js';
import { SeededRng } from '../core/rng.js';
import { LevelStorage, type LevelStorageOptions } from '../storage/level-storage.js';
import { GrpcTransport } from '../transport/grpc-transport.js';
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type Message,
  type NodeId,
  type Ready,
  type ReadState,
  Role,
  type Snapshot,
} from '../types.js';
import { NodeStoppedError, OutcomeUnknownError, ReadNotConfirmedError } from './errors.js';
import { raftErrorFromStatus, throwRaftApiError } from './status.js';
import { bootstrapIfNew, loadMemory } from './startup-state.js';
import { withTimeout } from './with-timeout.js';
import {
  realNodeTimers,
  type NodeStorage,
  type NodeTimers,
  type NodeTransport,
  type NodeTransportFactory,
} from './node-io.js';
import { RaftMetrics } from './metrics.js';
import { decodeSnapshotEnvelope, encodeSnapshotEnvelope } from './snapshot-envelope.js';

/** The application replicated by Raft. Calls come one at a time, in log order. */
export interface StateMachine {
  /**
   * Applies a committed command; the result goes back to whoever proposed it. `awaited` says
   * whether a proposer on this node waits for it (only the node a command was proposed on, or
   * forwarded to, does): when false the node drops the answer, so the state machine may skip
   * building it (an empty array). The state must not depend on `awaited`: every replica applies
   * the same entries, waited for or not, to the same state.
   */
  apply(data: Uint8Array, index: number, awaited: boolean): Uint8Array;
  /**
   * The whole state, for a snapshot. A large state may answer a promise, so that serializing it
   * does not stall the process: it must then capture the state at the call, synchronously (the
   * next entry may be applied before the promise settles), and may encode it over later turns.
   */
  snapshot(): Uint8Array | Promise<Uint8Array>;
  /**
   * Replaces the whole state with a snapshot's (empty data: the initial state). A large state
   * may answer a promise, decoding over later turns: the node applies nothing until it settles,
   * and the state machine keeps serving its old state until then.
   */
  restore(data: Uint8Array): void | Promise<void>;
}

/** What asks for a snapshot besides the count of entries (see RaftNodeOptions). */
export type SnapshotBySize = Pick<RaftNodeOptions, 'snapshotBytes' | 'snapshotLogRatio' | 'snapshotMinBytes'>;

export interface RaftNodeOptions {
  id: NodeId;
  /** Folder for the log (LevelDB) and snapshot files; required unless `storage` is given. */
  dataDir?: string;
  /**
   * An opened storage to use instead of LevelStorage in `dataDir` (the farm simulator's disk);
   * the node closes it when it stops.
   */
  storage?: NodeStorage;
  /** Builds the transport to the peers; the gRPC transport when absent. */
  transport?: NodeTransportFactory;
  /** The clock and timers; the real ones when absent. */
  timers?: NodeTimers;
  /** Tells this start's read requests apart from earlier starts' (see ReadIds); random when absent. */
  readSession?: string;
  /**
   * RaftService addresses of the founding members, this node included; with `join`, of the
   * running members this node may hear from, so it can answer them before it has their log.
   */
  peers: Record<NodeId, string>;
  /** Join a running cluster (after addMember on its leader) instead of founding one: start empty. */
  join?: boolean;
  stateMachine: StateMachine;
  /** The timing profile (RAFT_PROFILES): 'default' or 'fast'. The three settings below override it. */
  profile?: RaftProfile;
  /** Milliseconds per tick. */
  tickMs?: number;
  /** Ticks without a leader before campaigning: the timeout is random in [e, 2e) ticks. */
  electionTick?: number;
  /** Ticks between heartbeats. */
  heartbeatTick?: number;
  /** Take a snapshot and compact the log every this many applied entries. Default 100,000 (etcd 3.4's). */
  snapshotEvery?: number;
  /**
   * Also take one once the entries applied since the last hold this many bytes (default: no
   * limit by size). The log since the last snapshot is held in memory: at 100,000 entries of
   * 11 KB (a farm's batched commands) that is 1.1 GB before the count says snapshot.
   */
  snapshotBytes?: number;
  /**
   * Also take one once the entries applied since the last snapshot hold this many times that
   * snapshot's size in bytes, and at least `snapshotMinBytes` (default: not by this measure). A
   * node that restarts restores its last snapshot and then applies every entry after it, so
   * this bounds what the restart replays against what it restores, whatever the state's size;
   * and since each snapshot is encoded once per this many bytes of log, its encoding costs at
   * most a set share of applying that log.
   */
  snapshotLogRatio?: number;
  /** The least bytes applied since the last snapshot before `snapshotLogRatio` asks for one. Default 1 MiB. */
  snapshotMinBytes?: number;
  /** Entries kept before a snapshot, so briefly lagging followers avoid a snapshot. Default 5,000. */
  snapshotKeep?: number;
  /** On a follower, forward proposals to the leader over ForwardPropose instead of refusing them. */
  forwardProposals?: boolean;
  /** How long propose(), read() and membership calls wait. Default 10 s. */
  requestTimeoutMs?: number;
  /** Prometheus registry for the node's metrics; a private one when absent. */
  registry?: Registry;
  /** Seed of the election-timeout randomness; random when absent. */
  seed?: number;
  /** Mutual TLS for the channels to peers (the program's server has its own). */
  tls?: TlsFiles;
  maxSizePerMsg?: number;
  maxInflightMsgs?: number;
  /**
   * Largest command accepted by propose(), in bytes. Default 1 MiB: an entry must fit in one
   * append message, and messages must stay under gRPC's 4 MiB limit.
   */
  maxProposalBytes?: number;
  /**
   * A leader sends its appends while it writes them to its own disk (default true); false
   * writes first and sends after, doubling commit latency.
   */
  leaderParallelPersist?: boolean;
  /**
   * Committed entries applied in one turn of the event loop at most for this long (ms); then the
   * node yields to the event loop before it applies the next (a large farm's batch of creates
   * took hundreds of ms, during which no call was answered). Absent: a Ready's entries are
   * applied in one turn (the simulators, whose clock does not move while they apply, do not
   * change either way).
   */
  applyBudgetMs?: number;
  /** Test hook: runs before each storage batch; may stall it (a slow disk) or throw (a crash). */
  beforeWrite?: LevelStorageOptions['beforeWrite'];
  /** Called when this node's view of the leader or its own role changes (for logs). */
  onRoleChange?: (change: { leader: NodeId; role: Role; term: number }) => void;
  /** Called once if the node fails for good (a disk write failed): it has stopped. */
  onFatal?: (err: unknown) => void;
}

export type RaftProfile = 'default' | 'fast';

/**
 * Timing profiles. The election timeout is random in [electionTick, 2 electionTick) ticks.
 *
 * - default: 100 ms ticks, election after 1 to 2 s, a heartbeat every tick: a kill -9 of the
 *   leader costs about 1.3 s of writes (median), and the cluster shrugs off pauses (GC, a busy
 *   machine, a slow disk) of up to a second.
 * - fast: 10 ms ticks, election after 150 to 300 ms (the Raft paper's setting), a heartbeat every
 *   30 ms: failover in about a quarter of a second, for drills that kill the leader. The price: a
 *   leader that stalls for 150 ms (a long GC pause, an fsync stuck behind other I/O, an
 *   overloaded machine) is deposed, and the cluster pays an election for it; the heartbeats cost
 *   about 33 messages a second per follower. PreVote and CheckQuorum keep a stalled follower from
 *   disrupting a healthy leader either way.
 */
export const RAFT_PROFILES: Record<
  RaftProfile,
  { tickMs: number; electionTick: number; heartbeatTick: number }
> = {
  default: { tickMs: 100, electionTick: 10, heartbeatTick: 1 },
  fast: { tickMs: 10, electionTick: 15, heartbeatTick: 3 },
};

interface ProposalWaiter {
  term: number;
  started: number;
  resolve(v: { index: number; result: Uint8Array }): void;
  reject(err: unknown): void;
}

interface IndexWaiter {
  index: number;
  resolve(): void;
}

/**
 * Drives the sans-I/O core with a real clock, LevelDB storage and the gRPC transport. It does not
 * listen: the program registers `service` (RaftService) on the gRPC server it owns.
 *
 * One loop handles Readies strictly in order: persist (one synced batch), then send, then apply,
 * then advance. While a batch is being synced, proposals and messages keep arriving and pile up
 * in the core, so the next Ready carries them all: that is what makes many entries per fsync.
 */
export class RaftNode {
  readonly metrics: RaftMetrics;
  private readonly raw: RawNode;
  private readonly addresses: Record<NodeId, string>;
  private transport!: NodeTransport;
  private ticker: unknown;
  private wakeup: (() => void) | undefined;
  private loopDone: Promise<void> = Promise.resolve();
  private stopped = false;
  private failure: unknown;
  private applied: number;
  private snapshotIndex: number;
  /** Bytes of the entries applied since the last snapshot (taken or installed). */
  private bytesSinceSnapshot = 0;
  /** Bytes of the last snapshot (taken, installed or restored at start). */
  private snapshotSize: number;
  /** A snapshot being encoded in the background, and one encoded and waiting to be saved. */
  private encoding: Promise<void> | undefined;
  private encoded: { index: number; conf: ConfState; data: Uint8Array } | undefined;
  private leader: NodeId = '';
  private role: Role = Role.Follower;
  /** Unique across restarts: see ReadIds. */
  private readonly readIds: ReadIds;
  private readonly proposals = new PendingProposals<ProposalWaiter>();
  private readonly reads = new Map<string, { resolve(index: number): void; reject(err: unknown): void }>();
  private appliedWaiters: IndexWaiter[] = [];
  private leaderWaiters: Array<() => void> = [];
  private readonly timeoutMs: number;
  private readonly tickMs: number;
  private readonly timers: NodeTimers;

  private constructor(
    private readonly opts: RaftNodeOptions,
    private readonly storage: NodeStorage,
    private readonly mem: MemoryStorage,
    addresses: Record<NodeId, string>,
  ) {
    this.addresses = addresses;
    this.timers = opts.timers ?? realNodeTimers;
    this.metrics = new RaftMetrics(opts.registry ?? new Registry());
    this.timeoutMs = opts.requestTimeoutMs ?? 10_000;
    const profile = RAFT_PROFILES[opts.profile ?? 'default'];
    this.tickMs = opts.tickMs ?? profile.tickMs;
    this.readIds = new ReadIds(opts.id, opts.readSession ?? randomBytes(8).toString('hex'));
    const snap = mem.snapshot();
    this.applied = snap.meta.index;
    this.snapshotIndex = snap.meta.index;
    this.snapshotSize = snap.data.length;
    this.raw = new RawNode({
      id: opts.id,
      storage: mem,
      rng: new SeededRng(opts.seed ?? randomInt(2 ** 31)),
      electionTick: opts.electionTick ?? profile.electionTick,
      heartbeatTick: opts.heartbeatTick ?? profile.heartbeatTick,
      // RaftNode forwards itself (ForwardPropose) so the caller learns the index and result.
      forwardProposals: false,
      maxSizePerMsg: opts.maxSizePerMsg ?? 1024 * 1024,
      maxInflightMsgs: opts.maxInflightMsgs ?? 256,
    });
  }

  /** Opens the data folder, restores the state machine, starts the transport, clock and loop. */
  static async start(opts: RaftNodeOptions): Promise<RaftNode> {
    let metrics: RaftMetrics | undefined;
    const storage = opts.storage ?? (await openLevelStorage(opts, () => metrics));
    try {
      const state = await bootstrapIfNew(storage, opts);
      const { mem, addresses } = loadMemory(state, opts);
      const node = new RaftNode(opts, storage, mem, addresses);
      metrics = node.metrics;
      const restored = opts.stateMachine.restore(decodeSnapshotEnvelope(mem.snapshot().data).app);
      if (restored) await restored;
      const makeTransport: NodeTransportFactory =
        opts.transport ?? ((o) => new GrpcTransport({ ...o, tls: opts.tls }));
      node.transport = makeTransport({
        id: opts.id,
        peers: addresses,
        handlers: {
          onMessages: (messages) => node.onMessages(messages),
          onUnreachable: (peer) => node.input(() => node.raw.reportUnreachable(peer)),
          onSnapshotStatus: (peer, ok) => node.input(() => node.raw.reportSnapshot(peer, ok)),
          forwardPropose: (data) => node.proposeLocal(data).catch(throwRaftApiError),
          forwardReadIndex: () => node.readIndex().catch(throwRaftApiError),
        },
      });
      node.ticker = node.timers.every(() => node.input(() => node.raw.tick()), node.tickMs);
      node.loopDone = node.loop();
      return node;
    } catch (err) {
      await storage.close();
      throw err;
    }
  }

  get id(): NodeId {
    return this.opts.id;
  }

  /** RaftService's handlers, for the program to register on its gRPC server. */
  get service(): pb.RaftServiceHandlers {
    const service = this.transport.service;
    if (!service) throw new Error(`the transport of Raft node '${this.opts.id}' serves no RaftService`);
    return service;
  }

  status(): RaftStatus & { addresses: Record<NodeId, string>; snapshotIndex: number } {
    return { ...this.raw.status(), addresses: { ...this.addresses }, snapshotIndex: this.snapshotIndex };
  }

  isLeader(): boolean {
    return this.raw.status().role === Role.Leader;
  }

  /**
   * Replicates a command; resolves with its index and the state machine's result once it is
   * applied here. On a follower: NotLeaderError naming the leader, or forwarded to the leader
   * when `forwardProposals` is on. Failures say what happened to the command (see status.ts):
   * refused (NotLeaderError, ProposalDroppedError, RaftArgumentError, NodeStoppedError) or
   * unknown (OutcomeUnknownError).
   */
  async propose(data: Uint8Array): Promise<{ index: number; result: Uint8Array }> {
    if (this.opts.forwardProposals && data instanceof Uint8Array) {
      // A follower that knows the leader forwards without asking the core, which would refuse
      // with a NotLeaderError (and core() with another): two errors and their stack traces per
      // forwarded command were 6 s of the 462 s of a 50,000-VM fill in the simulator.
      this.checkProposal(data);
      const leader = this.raw.leaderElsewhere();
      if (leader !== '') return this.forward(leader, data);
    }
    try {
      return await this.proposeLocal(data);
    } catch (err) {
      if (err instanceof NotLeaderError && this.opts.forwardProposals && err.leader !== '')
        return this.forward(err.leader, data);
      throw err;
    }
  }

  private forward(leader: NodeId, data: Uint8Array): Promise<{ index: number; result: Uint8Array }> {
    return this.transport.forwardPropose(leader, data, this.timeoutMs).catch((e: unknown) => {
      throw raftErrorFromStatus(e, leader);
    });
  }

  /** A linearizable read barrier: resolves once this node has applied everything committed before the call. */
  async read(): Promise<void> {
    const index = await this.readIndex();
    await this.waitApplied(index);
  }

  /** Adds a member as a voter or (with `learner`) a learner; resolves once the change is applied here. */
  async addMember(id: NodeId, address: string, options: { learner?: boolean } = {}): Promise<void> {
    await this.changeMembership({
      type: options.learner ? ConfChangeType.AddLearner : ConfChangeType.AddVoter,
      node: id,
      address,
    });
  }

  async promoteMember(id: NodeId): Promise<void> {
    await this.changeMembership({ type: ConfChangeType.PromoteLearner, node: id });
  }

  async removeMember(id: NodeId): Promise<void> {
    await this.changeMembership({ type: ConfChangeType.RemoveNode, node: id });
  }

  /** Hands leadership to `to`; resolves when this node sees `to` lead. */
  async transferLeadership(to: NodeId): Promise<void> {
    this.assertRunning();
    this.core(() => this.raw.transferLeader(to));
    this.notify();
    await withTimeout<void>(
      `transfer of leadership to '${to}'`,
      this.timeoutMs,
      (resolve, _reject, onCancel) => {
        const check = (): void => {
          if (this.leader === to) resolve();
          else this.leaderWaiters.push(check);
        };
        onCancel(() => (this.leaderWaiters = this.leaderWaiters.filter((w) => w !== check)));
        check();
      },
      this.timers,
    );
  }

  /** Stops the clock, the loop, the transport and the storage; pending requests fail. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.timers.clear(this.ticker);
    this.notify();
    await this.loopDone;
    this.failAll(this.failure);
    this.transport.close();
    await this.storage.close();
  }

  // --- requests ---

  private async proposeLocal(data: Uint8Array): Promise<{ index: number; result: Uint8Array }> {
    this.checkProposal(data);
    const started = this.timers.now();
    const res = this.core(() => this.raw.propose(data));
    if (res.forwarded) throw new Error('the core forwarded a proposal although forwarding is off');
    this.notify();
    return this.waitForEntry('proposal', res, started);
  }

  /** Waits until the entry proposed at `at` is applied here (see PendingProposals). */
  private waitForEntry(
    what: string,
    at: { index: number; term: number },
    started: number,
  ): Promise<{ index: number; result: Uint8Array }> {
    return withTimeout(
      what,
      this.timeoutMs,
      (resolve, reject, onCancel) => {
        const waiter: ProposalWaiter = { term: at.term, started, resolve, reject };
        this.proposals.add(at.index, waiter);
        onCancel(() => this.proposals.cancel(at.index, waiter));
      },
      this.timers,
    );
  }

  private async changeMembership(cc: ConfChange): Promise<void> {
    this.assertRunning();
    const started = this.timers.now();
    // A new leader refuses a change until it has committed an entry of its term, and a change
    // waits for the previous one: both clear within a few heartbeats, so retry until the deadline.
    let res: { index: number; term: number };
    for (;;) {
      try {
        res = this.core(() => this.raw.proposeConfChange(cc));
        break;
      } catch (err) {
        if (!(err instanceof ProposalDroppedError) || this.timers.now() - started > this.timeoutMs) throw err;
        await new Promise((resolve) => this.timers.set(() => resolve(undefined), this.tickMs));
        this.assertRunning();
      }
    }
    this.notify();
    await this.waitForEntry('membership change', res, started);
  }

  /** Asks the core for a read index (the leader confirms it still leads). */
  private async readIndex(): Promise<number> {
    this.assertRunning();
    const context = this.readIds.next();
    this.core(() => this.raw.readIndex(new TextEncoder().encode(context)));
    this.notify();
    return withTimeout<number>(
      'read index',
      this.timeoutMs,
      (resolve, reject, onCancel) => {
        this.reads.set(context, { resolve, reject });
        onCancel(() => this.reads.delete(context));
      },
      this.timers,
    );
  }

  /** Runs a local request on the core; a refusal for not leading names the leader's address. */
  private core<T>(request: () => T): T {
    try {
      return request();
    } catch (err) {
      if (err instanceof NotLeaderError && err.leader !== '')
        throw new NotLeaderError(err.leader, this.addresses[err.leader]);
      throw err;
    }
  }

  private waitApplied(index: number): Promise<void> {
    if (this.applied >= index) return Promise.resolve();
    return withTimeout<void>(
      `apply up to index ${index}`,
      this.timeoutMs,
      (resolve, _reject, onCancel) => {
        const w: IndexWaiter = { index, resolve };
        this.appliedWaiters.push(w);
        onCancel(() => (this.appliedWaiters = this.appliedWaiters.filter((x) => x !== w)));
      },
      this.timers,
    );
  }

  // --- the loop ---

  /**
   * Steps peers' messages. The core refuses a message that makes no sense (addressed to another
   * node, from itself, without a term; a forwarded proposal it cannot take): such a message is
   * dropped and counted. Any other exception is the core finding its own state broken (say, an
   * append conflicting with a committed entry): the node stops, as etcd panics, rather than
   * carry on from a state it no longer trusts.
   */
  private onMessages(messages: Message[]): void {
    this.input(() => {
      for (const m of messages) {
        try {
          this.raw.step(m);
        } catch (err) {
          if (!isRefusal(err)) throw err;
          this.metrics.droppedMessages.inc({ reason: (err as Error).name });
        }
      }
    });
  }

  /** Runs an input to the core and wakes the loop; an exception from the core is fatal. */
  private input(fn: () => void): void {
    if (this.stopped) return;
    try {
      fn();
    } catch (err) {
      this.fatal(err);
      return;
    }
    this.notify();
  }

  private notify(): void {
    this.scheduleAhead();
    const w = this.wakeup;
    if (w) {
      this.wakeup = undefined;
      w();
    }
  }

  private aheadQueued = false;

  /**
   * Sends what the core lets go ahead of its Ready (heartbeats, their acknowledgements, read
   * indexes; see RawNode.takeAhead) once the event loop has taken in what already arrived, so
   * that the inputs of one turn share a batch: also, and above all, while the loop is writing or
   * applying a Ready, which at a large farm's fill is tens to hundreds of ms a Ready, on every
   * node a read's heartbeat round goes through.
   */
  private scheduleAhead(): void {
    if (this.aheadQueued || this.stopped) return;
    this.aheadQueued = true;
    void this.timers.yield().then(() => {
      this.aheadQueued = false;
      this.sendAhead();
    });
  }

  private sendAhead(): void {
    if (this.stopped) return;
    const { messages, readStates } = this.raw.takeAhead();
    if (messages.length > 0) this.transport.send(messages);
    this.answerReads(readStates);
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      if (this.encoded) {
        try {
          await this.saveEncodedSnapshot();
          // Entries applied while it was encoded may call for the next one already: asked now,
          // not at the next Ready, which an idle cluster may not have for a long time (its
          // heartbeats and their acknowledgements go ahead of Readies).
          await this.maybeSnapshot();
        } catch (err) {
          this.fatal(err);
          return;
        }
        continue;
      }
      // What may go ahead goes now rather than with a Ready (a follower sends its Ready's
      // messages only once the Ready is written): the ahead turn may not have come yet, and
      // advance() may have made some.
      this.sendAhead();
      if (!this.raw.hasReady()) {
        await new Promise<void>((resolve) => (this.wakeup = resolve));
        // Let the event loop take in what already arrived (client requests, peers' messages)
        // before cutting the Ready, so one synced batch carries all of it.
        await this.timers.yield();
        continue;
      }
      const rd = this.raw.ready();
      try {
        await this.handleReady(rd);
        this.raw.advance(rd);
        await this.maybeSnapshot();
      } catch (err) {
        this.fatal(err);
        return;
      }
    }
  }

  private async handleReady(rd: Ready): Promise<void> {
    if (rd.softState) this.onSoftState(rd.softState.leader, rd.softState.role);
    // A leader may send its appends while it writes them itself (Raft thesis §10.2.1; etcd does
    // the same): it counts its own copy towards a commit, but a commit only takes effect in a
    // later Ready, which this loop handles after this Ready's write is durable. Every other
    // message (votes, acknowledgements) promises what this Ready writes, so it waits.
    const sendFirst = this.role === Role.Leader && this.opts.leaderParallelPersist !== false;
    if (sendFirst && rd.messages.length > 0) this.transport.send(rd.messages);
    // A read index answered in this Ready was confirmed by a quorum already: the read needs only
    // the entries up to it applied, not this Ready's write nor its entries (waitApplied sees to
    // that), so it is answered before the fsync rather than after it and the apply. (Most are
    // answered sooner still, by sendAhead; these came with a step of advance() or a Ready cut
    // before the ahead turn.)
    const answered = this.answerReads(rd.readStates);
    // 1. Durable before anything that depends on it leaves this node.
    const termOrVote = rd.hardState !== undefined && this.termOrVoteChanged(rd.hardState);
    if (rd.snapshot || rd.entries.length > 0 || termOrVote || rd.mustSync === true) {
      await this.storage.persist({ hardState: rd.hardState, entries: rd.entries, snapshot: rd.snapshot });
      if (rd.snapshot) this.mem.applySnapshot(rd.snapshot);
      this.mem.append(rd.entries);
    }
    // A Ready that only moves the commit index writes nothing: a commit index lost in a crash
    // is learned again from the leader (etcd's MustSync makes the same call). The next synced
    // batch carries it anyway.
    if (rd.hardState) {
      this.mem.setHardState(rd.hardState);
      this.metrics.term.set(rd.hardState.term);
    }
    // 2. Send.
    if (!sendFirst && rd.messages.length > 0) this.transport.send(rd.messages);
    // 3. Apply.
    if (rd.snapshot) {
      // Awaited only when the state machine decodes over several turns, so that a synchronous
      // one (the simulators') runs in exactly the same steps as before.
      const installing = this.installSnapshot(rd.snapshot);
      if (installing) await installing;
    }
    await this.applyCommitted(rd.committedEntries, answered);
    if (rd.committedEntries.length > 0) this.metrics.appliedIndex.set(this.applied);
    this.releaseAppliedWaiters();
  }

  /** Answers these read indexes; says whether it answered any. */
  private answerReads(readStates: ReadState[]): boolean {
    let answered = false;
    for (const rs of readStates) {
      const key = new TextDecoder().decode(rs.context);
      const waiter = this.reads.get(key);
      if (waiter) {
        this.reads.delete(key);
        waiter.resolve(rs.index);
        answered = true;
      }
    }
    return answered;
  }

  /**
   * Applies committed entries in order, yielding to the event loop whenever a turn has taken
   * `applyBudgetMs`: between two entries the state is whole, so what waits on an index already
   * applied (a read, a proposal's answer) goes ahead, and calls are taken in meanwhile. When this
   * Ready answered reads, they go first (a read on the leader needs nothing of these entries).
   */
  private async applyCommitted(entries: Entry[], readsFirst: boolean): Promise<void> {
    const budget = this.opts.applyBudgetMs;
    if (budget === undefined) {
      for (const e of entries) this.applyEntry(e);
      return;
    }
    let turnStarted = this.timers.now();
    for (let i = 0; i < entries.length; i++) {
      if (i === 0 ? readsFirst : this.timers.now() - turnStarted >= budget) {
        this.releaseAppliedWaiters();
        await this.timers.yield();
        turnStarted = this.timers.now();
      }
      this.applyEntry(entries[i]!);
    }
  }

  private lastHard = { term: -1, vote: '' };
  private termOrVoteChanged(hs: { term: number; vote: NodeId }): boolean {
    const changed = hs.term !== this.lastHard.term || hs.vote !== this.lastHard.vote;
    this.lastHard = { term: hs.term, vote: hs.vote };
    return changed;
  }

  private onSoftState(leader: NodeId, role: Role): void {
    this.role = role;
    this.opts.onRoleChange?.({ leader, role, term: this.raw.status().term });
    if (leader !== this.leader) {
      this.leader = leader;
      if (leader !== '') this.metrics.leaderChanges.inc();
      // A read index asked of the old leader may never be answered: fail it now so the caller
      // retries against the new one instead of waiting out its timeout.
      const reads = [...this.reads.values()];
      this.reads.clear();
      for (const r of reads)
        r.reject(new ReadNotConfirmedError('the leader changed before it confirmed the read'));
      const waiters = this.leaderWaiters;
      this.leaderWaiters = [];
      for (const w of waiters) w();
    }
    this.metrics.isLeader.set(role === Role.Leader ? 1 : 0);
  }

  private installSnapshot(snapshot: Snapshot): Promise<void> | undefined {
    const env = decodeSnapshotEnvelope(snapshot.data);
    for (const [id, address] of Object.entries(env.addresses)) this.learnAddress(id, address);
    // Decoded over several turns for a large farm: messages from peers are taken in meanwhile
    // (a heartbeat from the leader keeps this follower from starting an election), and what
    // they make this node send goes out with the next Ready.
    const restored = this.opts.stateMachine.restore(env.app);
    const size = snapshot.data.length;
    if (restored) return restored.then(() => this.snapshotInstalled(snapshot.meta.index, size));
    this.snapshotInstalled(snapshot.meta.index, size);
    return undefined;
  }

  private snapshotInstalled(index: number, size: number): void {
    this.applied = index;
    this.snapshotIndex = index;
    this.snapshotSize = size;
    this.bytesSinceSnapshot = 0;
    // Proposals at or below the snapshot can no longer be matched to their entries.
    for (const w of this.proposals.replacedThrough(index)) {
      w.reject(
        new OutcomeUnknownError(
          `the log up to ${index} was replaced by a snapshot from the leader before the proposal was applied here; outcome unknown`,
        ),
      );
    }
  }

  private applyEntry(e: Entry): void {
    let result: Uint8Array = new Uint8Array();
    if (e.type === EntryType.Normal) {
      // Followers encoded every command's result for nobody: about 8 s of the 330 s of CPU of a
      // 50,000-VM fill in the farm simulator (issues 9 and 14).
      result = this.opts.stateMachine.apply(e.data, e.index, this.proposals.awaits(e));
    } else if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      if (cc.type === ConfChangeType.RemoveNode) {
        delete this.addresses[cc.node];
        if (cc.node !== this.opts.id) this.transport.removePeer(cc.node);
      } else if (cc.address) {
        this.learnAddress(cc.node, cc.address);
      }
    }
    this.applied = e.index;
    this.bytesSinceSnapshot += e.data.length;
    const pending = this.proposals.applied(e);
    if (pending?.taken) {
      this.metrics.commitLatency.observe((this.timers.now() - pending.waiter.started) / 1000);
      pending.waiter.resolve({ index: e.index, result });
    } else if (pending) {
      pending.waiter.reject(
        new ProposalDroppedError(
          `index ${e.index} was taken by an entry of term ${e.term}: a new leader overwrote it`,
        ),
      );
    }
  }

  private learnAddress(id: NodeId, address: string): void {
    this.addresses[id] = address;
    if (id !== this.opts.id) this.transport.addPeer(id, address);
  }

  private releaseAppliedWaiters(): void {
    if (this.appliedWaiters.length === 0) return;
    const ready = this.appliedWaiters.filter((w) => w.index <= this.applied);
    if (ready.length === 0) return;
    this.appliedWaiters = this.appliedWaiters.filter((w) => w.index > this.applied);
    for (const w of ready) w.resolve();
  }

  private async maybeSnapshot(): Promise<void> {
    if (this.encoding || !this.snapshotDue()) return;
    const index = this.applied;
    this.bytesSinceSnapshot = 0;
    const conf = this.raw.status().conf;
    const addresses = { ...this.addresses };
    const app = this.opts.stateMachine.snapshot();
    if (app instanceof Uint8Array)
      return this.saveSnapshot(index, conf, encodeSnapshotEnvelope({ addresses, app }));
    // Encoded while the loop goes on (a farm of 50,000 VMs took seconds: a leader that stalls
    // that long loses its followers and its hosts' leases); saved by the loop once ready.
    this.encoding = app.then(
      (data) => {
        this.encoded = { index, conf, data: encodeSnapshotEnvelope({ addresses, app: data }) };
        this.encoding = undefined;
        this.notify();
      },
      (err: unknown) => this.fatal(err),
    );
  }

  /** By count, by size, or by the log's size against the last snapshot's (see the options). */
  private snapshotDue(): boolean {
    const o = this.opts;
    if (this.applied - this.snapshotIndex >= (o.snapshotEvery ?? 100_000)) return true;
    const since = this.bytesSinceSnapshot;
    if (since >= (o.snapshotBytes ?? Infinity)) return true;
    if (o.snapshotLogRatio === undefined) return false;
    return since >= Math.max(o.snapshotMinBytes ?? 1024 * 1024, o.snapshotLogRatio * this.snapshotSize);
  }

  /** Saves a snapshot encoded in the background, in the loop, so storage writes stay in order. */
  private async saveEncodedSnapshot(): Promise<void> {
    const e = this.encoded;
    if (!e) return;
    this.encoded = undefined;
    // A snapshot installed from the leader meanwhile is newer: this one is of no use.
    if (e.index <= this.mem.snapshot().meta.index) return;
    await this.saveSnapshot(e.index, e.conf, e.data);
  }

  private async saveSnapshot(index: number, conf: ConfState, data: Uint8Array): Promise<void> {
    const snapshot = this.mem.createSnapshot(index, conf, data);
    const compactThrough = Math.max(this.mem.firstIndex() - 1, index - (this.opts.snapshotKeep ?? 5_000));
    await this.storage.saveSnapshot(snapshot, compactThrough);
    if (compactThrough >= this.mem.firstIndex()) this.mem.compact(compactThrough);
    this.snapshotIndex = index;
    this.snapshotSize = data.length;
  }

  /**
   * Stops the node for good (a failed disk write, a broken invariant): pending requests fail and
   * `onFatal` hears of it; without an `onFatal` the error is thrown out of the event loop, so
   * the process crashes as etcd's would, instead of running on without consensus.
   */
  private fatal(err: unknown): void {
    if (this.failure !== undefined || this.stopped) return;
    this.failure = err;
    this.stopped = true;
    this.timers.clear(this.ticker);
    this.failAll(err);
    this.transport.close();
    void this.storage.close();
    if (this.opts.onFatal) this.opts.onFatal(err);
    else
      setImmediate(() => {
        throw err;
      });
  }

  /** Fails what waits: a proposal already in the log may still commit, so its outcome is unknown. */
  private failAll(cause: unknown): void {
    const stopped = new NodeStoppedError(this.opts.id, cause);
    for (const w of this.proposals.drain())
      w.reject(new OutcomeUnknownError(`${stopped.message} while the proposal waited; outcome unknown`));
    for (const r of this.reads.values()) r.reject(stopped);
    this.reads.clear();
  }

  /** What refuses a proposal before the core sees it: a stopped node, a command above the limit. */
  private checkProposal(data: Uint8Array): void {
    this.assertRunning();
    const max = this.opts.maxProposalBytes ?? 1024 * 1024;
    if (data.byteLength > max) {
      throw new RaftArgumentError(
        'data',
        `is ${data.byteLength} bytes, above the ${max}-byte limit for one command`,
      );
    }
  }

  private assertRunning(): void {
    if (this.stopped) throw new NodeStoppedError(this.opts.id, this.failure);
  }
}

/** The programs' storage: LevelDB in `dataDir`, its fsyncs counted in the node's metrics. */
function openLevelStorage(
  opts: RaftNodeOptions,
  metrics: () => RaftMetrics | undefined,
): Promise<LevelStorage> {
  if (opts.dataDir === undefined)
    throw new RaftArgumentError('dataDir', 'is required when no storage is given');
  return LevelStorage.open(opts.dataDir, {
    beforeWrite: opts.beforeWrite,
    onFsync: (seconds, entries) => {
      metrics()?.fsyncSeconds.observe(seconds);
      metrics()?.entriesPerFsync.observe(entries);
    },
  });
}
