import { checkLinearizable, type Verdict } from '../checker/checker.js';
import { HistoryRecorder } from '../checker/history.js';
import { type KvInput, kvModel, type KvOutput } from '../checker/kv-model.js';
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  Role,
} from '../types.js';
import { type DiskOp, SimDisk } from './disk.js';
import { InvariantChecker, type Violation } from './invariants.js';
import { decodeCommand, encodeCommand, KvStateMachine } from './kv-app.js';
import { randomNetworkFaults, randomPartition } from './faults.js';
import { type NetworkFaults, SimNetwork } from './network.js';
import type { ReadyDiscipline, SimNode, SimNodeFactory } from './node.js';
import { SimRng } from './rng.js';
import { describeMessage } from './trace.js';

/**
 * Where inside the next Ready a crash strikes: before anything is written, after a random part
 * of the messages went out, after every message went out (and before a late sync, if the
 * discipline syncs late), or like that but in the first Ready that grants a vote or acknowledges
 * an append: the moment a broken edge would break its promise.
 */
export type CrashPoint = 'before-persist' | 'mid-send' | 'after-send' | 'after-promise';

/** Messages that promise the sender's disk holds something: a granted vote, an append ack. */
function isPromise(m: Message): boolean {
  return !m.reject && (m.type === MessageType.VoteResponse || m.type === MessageType.AppendResponse);
}

/** How long a post-heal probe write waits before the client retries it. */
const PROBE_ATTEMPT_TICKS = 8;

/** Virtual time units per node tick: messages take a few units, so several fit in one tick. */
export const UNITS_PER_TICK = 10;

export interface SimOptions {
  seed: number;
  /** Founding voters: 3 or 5. */
  nodes: number;
  factory: SimNodeFactory;
  /** Ticks of faults before the network heals. */
  chaosTicks?: number;
  /** Ticks allowed, after healing, for a leader to emerge. */
  leaderBoundTicks?: number;
  /** Ticks allowed, after a leader emerged, for a fresh proposal from each client to commit. */
  proposalBoundTicks?: number;
  clients?: number;
  keys?: number;
  /** Client operation timeout, in ticks: a write that times out has an unknown outcome. */
  opTimeoutTicks?: number;
  /** Add learners, promote them and remove voters during the chaos. */
  membership?: boolean;
  /** Take a snapshot and compact the log every this many applied entries (0: never). */
  compactEvery?: number;
  /** Scale every fault rate (0: a perfect network and no crashes). */
  chaos?: number;
  /** How each Ready is processed; the default persists and syncs before sending. */
  discipline?: ReadyDiscipline;
  /** Record a replayable trace of every event. */
  trace?: boolean;
  /** Give the linearizability search at most this many steps. */
  checkerMaxSteps?: number;
  /** Restart crashed nodes after a random downtime (scenario tests restart them by hand). */
  autoRestart?: boolean;
}

export interface SimResult {
  seed: number;
  nodes: number;
  violations: Violation[];
  linearizable: Verdict;
  ops: { total: number; ok: number; unknown: number; failed: number };
  elections: number;
  crashes: number;
  /** Ticks from healing to a leader, or -1 if none emerged. */
  ticksToLeader: number;
  committed: number;
  /** Membership changes the leader applied. */
  confChanges: number;
  /** Snapshots followers installed from a leader. */
  snapshotsInstalled: number;
  /** Leadership transfers asked for. */
  transfers: number;
  network: SimNetwork['stats'];
  trace: string[];
}

interface PendingRead {
  op: number;
  client: number;
  key: string;
  /** Known once the node's ReadState arrives. */
  index?: number;
}

/** One simulated server: its disk survives crashes, everything else is rebuilt on restart. */
interface Member {
  id: NodeId;
  disk: SimDisk;
  node?: SimNode;
  role: Role;
  leader: NodeId;
  term: number;
  sm: KvStateMachine;
  applied: number;
  conf: ConfState;
  pausedUntil: number;
  /** Paused and not yet resumed: messages for it pile up. */
  paused: boolean;
  tickPhase: number;
  restartAt: number;
  /** A crash armed to strike inside the next Ready. */
  crashIn?: CrashPoint;
  /** Only a Ready for which this holds triggers the armed crash. */
  crashWhen?: (rd: Ready) => boolean;
  removed: boolean;
  pendingWrites: Map<number, number>;
  pendingReads: Map<string, PendingRead>;
}

interface Client {
  id: number;
  busy?: { op: number; node: NodeId; deadline: number; write: boolean };
  nextAt: number;
  hint: NodeId;
  /** The probe write issued after healing, which must commit within the bound. */
  probe?: number;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Errors a node throws to refuse an operation it did not perform. */
const REFUSALS = new Set(['NotLeaderError', 'ProposalDroppedError', 'RaftArgumentError']);

/**
 * A deterministic Raft cluster: N nodes, a virtual clock, an unreliable network, crashes that
 * lose unsynced writes, clock pauses, membership changes and leadership transfers, with clients
 * running a key-value workload. Everything random comes from the seed, so a seed replays exactly.
 *
 * `run()` is the whole randomized scenario: chaos, then heal, then the liveness and
 * linearizability checks. The manual-control methods (runTicks, crashNode, pauseNode, submit...)
 * let scenario tests script a failure step by step on the same harness.
 */
export class Simulation {
  readonly opts: Required<Omit<SimOptions, 'factory'>> & { factory: SimNodeFactory };
  private readonly rng: SimRng;
  private readonly faultRng: SimRng;
  private readonly clientRng: SimRng;
  readonly network: SimNetwork;
  readonly inv = new InvariantChecker();
  readonly history = new HistoryRecorder<KvInput, KvOutput>();
  readonly members = new Map<NodeId, Member>();
  private readonly clients: Client[] = [];
  private readonly opState = new Map<number, 'pending' | 'ok' | 'unknown' | 'failed'>();
  readonly trace: string[] = [];
  now = 0;
  private elections = 0;
  private crashes = 0;
  private confChanges = 0;
  private transfers = 0;
  private snapshotsInstalled = 0;
  private nextNodeNumber: number;
  private confInFlight = false;
  /** Snapshot deliveries and losses to report to their senders, outside any Ready. */
  private snapshotReports: { from: NodeId; to: NodeId; ok: boolean }[] = [];

  constructor(options: SimOptions) {
    if (!Number.isInteger(options.nodes) || options.nodes < 1) {
      throw new Error(`nodes: must be a positive integer, got ${options.nodes}`);
    }
    this.opts = {
      chaosTicks: 300,
      leaderBoundTicks: 60,
      proposalBoundTicks: 40,
      clients: 3,
      keys: 3,
      opTimeoutTicks: 40,
      membership: false,
      compactEvery: 40,
      chaos: 1,
      discipline: { syncBeforeSend: true },
      trace: false,
      checkerMaxSteps: 2_000_000,
      autoRestart: true,
      ...options,
    };
    this.rng = new SimRng(options.seed);
    this.faultRng = this.rng.fork();
    this.clientRng = this.rng.fork();
    this.network = new SimNetwork(this.rng.fork(), this.randomFaults());
    this.network.onLost = (msg) => {
      if (msg.type === MessageType.Snapshot)
        this.snapshotReports.push({ from: msg.from, to: msg.to, ok: false });
    };
    const voters = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    this.nextNodeNumber = options.nodes + 1;
    for (const id of voters) this.addMember(id, new SimDisk({ voters, learners: [] }));
    for (let c = 0; c < this.opts.clients; c++) {
      this.clients.push({ id: c, nextAt: this.clientRng.between(0, 3 * UNITS_PER_TICK), hint: '' });
    }
    this.log(`seed ${options.seed}: ${options.nodes} nodes, faults ${JSON.stringify(this.network.faults)}`);
  }

  // ---------------------------------------------------------------- members

  private addMember(id: NodeId, disk: SimDisk): Member {
    const m: Member = {
      id,
      disk,
      role: Role.Follower,
      leader: '',
      term: 0,
      sm: new KvStateMachine(),
      applied: 0,
      conf: { voters: [], learners: [] },
      pausedUntil: 0,
      paused: false,
      tickPhase: this.rng.int(UNITS_PER_TICK),
      restartAt: Infinity,
      removed: false,
      pendingWrites: new Map(),
      pendingReads: new Map(),
    };
    disk.onSync = (ops, durable) => {
      for (const op of ops) if (op.kind === 'append') this.inv.durableAppend(id, op.entries, durable);
    };
    this.members.set(id, m);
    this.start(m);
    return m;
  }

  /** Boots a node from what its disk holds, as a process does after a restart. */
  private start(m: Member): void {
    const storage = m.disk.current;
    const snap = storage.snapshot();
    const initial = storage.initialState();
    m.sm = KvStateMachine.restore(snap.data);
    m.applied = snap.meta.index;
    m.conf = initial.conf;
    m.term = initial.hardState.term;
    m.role = Role.Follower;
    m.leader = '';
    m.restartAt = Infinity;
    this.inv.restored(m.id, m.applied);
    m.node = this.opts.factory({ id: m.id, storage, applied: m.applied, rng: this.rng.fork() });
  }

  private crash(m: Member, how: string): void {
    if (!m.node) return;
    this.crashes++;
    this.log(`crash ${m.id} (${how})${m.disk.hasUnsynced ? ', losing unsynced writes' : ''}`);
    m.node = undefined;
    m.crashIn = undefined;
    m.crashWhen = undefined;
    m.disk.crash();
    m.role = Role.Follower;
    m.leader = '';
    this.network.dropTo(m.id);
    for (const op of m.pendingWrites.keys()) this.finish(op, 'unknown');
    for (const r of m.pendingReads.values()) this.finish(r.op, 'failed');
    m.pendingWrites.clear();
    m.pendingReads.clear();
    for (const c of this.clients) {
      if (c.busy?.node === m.id) this.idle(c);
    }
    // A supervisor restarts some processes at once; others stay down for a while.
    const downTicks = this.faultRng.chance(0.4) ? this.faultRng.between(0, 3) : this.faultRng.between(5, 60);
    m.restartAt = this.opts.autoRestart ? this.now + 1 + downTicks * UNITS_PER_TICK : Infinity;
  }

  private alive(m: Member): m is Member & { node: SimNode } {
    return m.node !== undefined;
  }

  // ---------------------------------------------------------------- the Ready loop

  /** Processes every Ready the node has, in the order persist → send → apply → advance. */
  private drain(m: Member): void {
    let guard = 0;
    while (m.node && m.node.hasReady()) {
      if (++guard > 1000) {
        this.violation('node-error', `${m.id} kept producing Ready after 1000 rounds`);
        return;
      }
      this.handleReady(m, m.node, m.node.ready());
    }
  }

  private handleReady(m: Member, node: SimNode, rd: Ready): void {
    const armed =
      m.crashIn !== undefined &&
      (m.crashWhen ? m.crashWhen(rd) : m.crashIn !== 'after-promise' || rd.messages.some(isPromise));
    if (armed && m.crashIn === 'before-persist') {
      this.crash(m, 'before persisting a Ready');
      return;
    }
    if (rd.softState) {
      if (rd.softState.role === Role.Leader && m.role !== Role.Leader) this.elections++;
      m.role = rd.softState.role;
      m.leader = rd.softState.leader;
    }
    // 1. Persist: the snapshot, then the hard state and entries, in one write.
    const ops: DiskOp[] = [];
    if (rd.snapshot) ops.push({ kind: 'snapshot', snapshot: rd.snapshot });
    if (rd.entries.length > 0) ops.push({ kind: 'append', entries: rd.entries });
    if (rd.hardState) ops.push({ kind: 'hardState', hardState: rd.hardState });
    if (ops.length > 0) {
      try {
        m.disk.write(ops, this.opts.discipline.syncBeforeSend);
      } catch (err) {
        this.violation('node-error', `${m.id} produced a Ready its disk refused: ${(err as Error).message}`);
        this.crash(m, 'unwritable Ready');
        return;
      }
    }
    if (rd.hardState) m.term = rd.hardState.term;
    if (m.role === Role.Leader) {
      this.inv.now = this.now;
      this.inv.leader(m.id, m.term);
      if (rd.hardState) this.inv.leaderCommitted(m.id, m.term, rd.hardState.commit, m.disk.current);
    }
    // 2. Send.
    const cut =
      armed && m.crashIn === 'mid-send' ? this.faultRng.int(rd.messages.length + 1) : rd.messages.length;
    for (let i = 0; i < cut; i++) this.send(rd.messages[i]!);
    if (armed) {
      this.crash(m, `after sending ${cut} of ${rd.messages.length} messages`);
      return;
    }
    if (!this.opts.discipline.syncBeforeSend) m.disk.sync();
    // 3. Apply.
    if (rd.snapshot) {
      const s = rd.snapshot;
      m.sm = KvStateMachine.restore(s.data);
      m.applied = s.meta.index;
      m.conf = s.meta.conf;
      this.inv.restored(m.id, m.applied);
      this.snapshotsInstalled++;
      this.log(`${m.id} installed snapshot at ${s.meta.index} term ${s.meta.term}`);
    }
    const appliedConf: ConfChange[] = [];
    for (const e of rd.committedEntries) this.apply(m, e, appliedConf);
    for (const rs of rd.readStates) {
      const read = m.pendingReads.get(decoder.decode(rs.context));
      if (read) read.index = rs.index;
    }
    // 4. Advance (which applies membership changes inside the core).
    node.advance(rd);
    if (appliedConf.length > 0) {
      m.conf = node.conf();
      if (m.role === Role.Leader) for (const cc of appliedConf) this.confApplied(cc);
    }
    this.serveReads(m);
    this.maybeCompact(m);
  }

  private send(msg: Message): void {
    if (this.opts.trace) this.log(`send ${describeMessage(msg)}`);
    this.network.send(msg, this.now);
  }

  private apply(m: Member, e: Entry, appliedConf: ConfChange[]): void {
    this.inv.now = this.now;
    this.inv.applied(m.id, e);
    if (e.index <= m.applied) return; // the apply-order check above reports it
    m.applied = e.index;
    if (e.type === EntryType.Normal && e.data.length > 0) {
      const cmd = decodeCommand(e.data);
      const out = m.sm.applyOnce(cmd);
      if (m.pendingWrites.delete(cmd.op)) {
        if (this.opState.get(cmd.op) === 'pending') {
          this.history.complete(cmd.op, out, this.now);
          this.finish(cmd.op, 'ok');
        }
      }
    } else if (e.type === EntryType.ConfChange) {
      appliedConf.push(JSON.parse(decoder.decode(e.data)) as ConfChange);
    }
  }

  private serveReads(m: Member): void {
    for (const [ctx, r] of m.pendingReads) {
      if (r.index === undefined || r.index > m.applied) continue;
      m.pendingReads.delete(ctx);
      if (this.opState.get(r.op) !== 'pending') continue;
      this.history.complete(r.op, m.sm.get(r.key), this.now);
      this.finish(r.op, 'ok');
    }
  }

  private maybeCompact(m: Member): void {
    const every = this.opts.compactEvery;
    if (every <= 0) return;
    const storage = m.disk.current;
    const snapIndex = storage.snapshot().meta.index;
    if (m.applied - snapIndex < every || m.applied > storage.lastIndex()) return;
    // Keep a few entries behind the snapshot so a slightly slow follower can still catch up by log.
    const keep = Math.max(storage.firstIndex() - 1, m.applied - Math.floor(every / 4));
    const ops: DiskOp[] = [{ kind: 'createSnapshot', index: m.applied, conf: m.conf, data: m.sm.snapshot() }];
    if (keep >= storage.firstIndex()) ops.push({ kind: 'compact', index: keep });
    m.disk.write(ops, true);
  }

  // ---------------------------------------------------------------- clients

  private idle(c: Client): void {
    c.busy = undefined;
    c.hint = '';
    c.nextAt = this.now + this.clientRng.between(1, 2 * UNITS_PER_TICK);
  }

  private finish(op: number, how: 'ok' | 'unknown' | 'failed'): void {
    if (this.opState.get(op) !== 'pending') return;
    this.opState.set(op, how);
    if (how === 'unknown') this.history.abandon(op);
    if (how === 'failed') this.history.fail(op);
    if (this.opts.trace) this.log(`op ${op} ${how}`);
    for (const c of this.clients) {
      if (c.busy?.op === op) {
        const node = c.busy.node;
        this.idle(c);
        if (how === 'ok') c.hint = node;
      }
    }
  }

  private randomInput(): KvInput {
    const key = `k${this.clientRng.int(this.opts.keys)}`;
    const value = `v${this.opState.size}-${this.clientRng.int(1000)}`;
    const r = this.clientRng.next();
    if (r < 0.4) return { op: 'put', key, value };
    if (r < 0.7) return { op: 'get', key };
    if (r < 0.85) return { op: 'append', key, value: `,${this.clientRng.int(100)}` };
    return { op: 'cas', key, expected: this.clientRng.chance(0.5) ? null : value, value };
  }

  private targetFor(c: Client): Member | undefined {
    const hinted = c.hint ? this.members.get(c.hint) : undefined;
    if (hinted && !hinted.removed) return hinted;
    const candidates = [...this.members.values()].filter((m) => !m.removed);
    return candidates.length ? this.clientRng.pick(candidates) : undefined;
  }

  /** Starts an operation from client `c`; returns its history id. */
  private issue(c: Client, input: KvInput = this.randomInput()): number | undefined {
    const m = this.targetFor(c);
    if (!m) return undefined;
    const op = this.history.invoke(c.id, input, this.now);
    this.opState.set(op, 'pending');
    if (this.opts.trace) this.log(`op ${op} client ${c.id} → ${m.id}: ${JSON.stringify(input)}`);
    c.busy = {
      op,
      node: m.id,
      deadline: this.now + this.opts.opTimeoutTicks * UNITS_PER_TICK,
      write: input.op !== 'get',
    };
    if (!this.alive(m) || m.pausedUntil > this.now) {
      // Connection refused, or the node is frozen: the client gives up at once, nothing was sent.
      this.finish(op, 'failed');
      return op;
    }
    try {
      if (input.op === 'get') {
        const ctx = `r${op}`;
        m.pendingReads.set(ctx, { op, client: c.id, key: input.key });
        m.node.readIndex(encoder.encode(ctx));
      } else {
        m.pendingWrites.set(op, c.id);
        m.node.propose(encodeCommand({ op, input }));
      }
    } catch (err) {
      m.pendingReads.delete(`r${op}`);
      m.pendingWrites.delete(op);
      this.refused(op, m, err);
      const leader = (err as { leader?: unknown }).leader;
      c.hint = typeof leader === 'string' ? leader : '';
      return op;
    }
    this.drain(m);
    return op;
  }

  private refused(op: number, m: Member, err: unknown): void {
    const name = (err as Error)?.name ?? '';
    if (!REFUSALS.has(name)) this.violation('node-error', `${m.id} threw on a client call: ${String(err)}`);
    this.finish(op, 'failed');
  }

  private runClients(allowNew: boolean): void {
    for (const c of this.clients) {
      if (c.busy) {
        if (this.now >= c.busy.deadline) {
          const { op, node, write } = c.busy;
          const m = this.members.get(node);
          m?.pendingReads.delete(`r${op}`);
          m?.pendingWrites.delete(op);
          this.finish(op, write ? 'unknown' : 'failed');
        }
        continue;
      }
      if (allowNew && this.now >= c.nextAt) this.issue(c);
    }
  }

  // ---------------------------------------------------------------- faults

  private randomFaults(): NetworkFaults {
    return randomNetworkFaults(this.faultRng, this.opts.chaos);
  }

  private ids(): NodeId[] {
    return [...this.members.values()].filter((m) => !m.removed).map((m) => m.id);
  }

  private injectFaults(): void {
    const k = this.opts.chaos;
    if (k <= 0) return;
    const r = this.faultRng;
    const ids = this.ids();
    if (r.chance(0.03 * k)) {
      this.log(`network: ${randomPartition(r, ids, this.network)}`);
      if (r.chance(0.3)) {
        this.network.faults = this.randomFaults();
        this.log(`network: faults ${JSON.stringify(this.network.faults)}`);
      }
    }
    const live = [...this.members.values()].filter((m) => this.alive(m) && !m.removed);
    if (live.length > 0 && r.chance(0.012 * k)) {
      const m = r.pick(live);
      const how = r.next();
      if (how < 0.3) this.crash(m, 'between steps');
      else m.crashIn = how < 0.5 ? 'before-persist' : how < 0.7 ? 'mid-send' : 'after-promise';
    }
    if (live.length > 0 && r.chance(0.01 * k)) {
      const m = r.pick(live);
      m.pausedUntil = this.now + r.between(3, 40) * UNITS_PER_TICK;
      m.paused = true;
      this.log(`pause ${m.id} until ${m.pausedUntil}`);
    }
    if (this.opts.membership && !this.confInFlight && r.chance(0.01 * k)) this.changeMembership();
    if (r.chance(0.005 * k)) this.transferLeadership();
  }

  private leaderMember(): (Member & { node: SimNode }) | undefined {
    let best: (Member & { node: SimNode }) | undefined;
    for (const m of this.members.values()) {
      if (
        this.alive(m) &&
        m.role === Role.Leader &&
        m.pausedUntil <= this.now &&
        (!best || m.term > best.term)
      )
        best = m;
    }
    return best;
  }

  private changeMembership(): void {
    const leader = this.leaderMember();
    if (!leader) return;
    const conf = leader.conf;
    const r = this.faultRng;
    let cc: ConfChange;
    if (conf.learners.length > 0 && r.chance(0.6)) {
      cc = { type: ConfChangeType.PromoteLearner, node: r.pick(conf.learners) };
    } else if (conf.voters.length > this.opts.nodes && r.chance(0.7)) {
      cc = { type: ConfChangeType.RemoveNode, node: r.pick(conf.voters) };
    } else if (conf.voters.length + conf.learners.length < this.opts.nodes + 2) {
      cc = { type: ConfChangeType.AddLearner, node: `n${this.nextNodeNumber}` };
    } else {
      return;
    }
    try {
      leader.node.proposeConfChange(cc);
    } catch (err) {
      this.refusedAdmin(leader, err, `proposeConfChange ${JSON.stringify(cc)}`);
      return;
    }
    this.log(`membership: ${leader.id} proposes ${JSON.stringify(cc)}`);
    if (cc.type === ConfChangeType.AddLearner) {
      this.nextNodeNumber++;
      this.addMember(cc.node, new SimDisk());
    }
    this.confInFlight = true;
    this.drain(leader);
  }

  /** The leader hands over to another voter, under the clients' load. */
  private transferLeadership(): void {
    const leader = this.leaderMember();
    if (!leader?.node.transferLeader) return;
    const others = leader.conf.voters.filter((v) => v !== leader.id);
    if (others.length === 0) return;
    const to = this.faultRng.pick(others);
    this.transfers++;
    this.log(`transfer leadership ${leader.id} → ${to}`);
    try {
      leader.node.transferLeader(to);
    } catch (err) {
      this.refusedAdmin(leader, err, 'transferLeader');
      return;
    }
    this.drain(leader);
  }

  private refusedAdmin(m: Member, err: unknown, what: string): void {
    const name = (err as Error)?.name ?? '';
    if (!REFUSALS.has(name)) this.violation('node-error', `${m.id} threw on ${what}: ${String(err)}`);
    else this.log(`${m.id} refused ${what}: ${(err as Error).message}`);
  }

  /** The leader applied a membership change. */
  private confApplied(cc: ConfChange): void {
    this.confInFlight = false;
    this.confChanges++;
    this.log(`membership: applied ${JSON.stringify(cc)}`);
    if (cc.type === ConfChangeType.RemoveNode) {
      const m = this.members.get(cc.node);
      if (m && !m.removed) {
        // The removed server is shut down for good, as an operator would do.
        m.removed = true;
        this.crash(m, 'removed from the cluster');
        m.restartAt = Infinity;
      }
    }
  }

  // ---------------------------------------------------------------- the clock

  /** One unit of virtual time: faults, ticks, deliveries, clients, then the checks. */
  private step(opts: { faults: boolean; clients: boolean }): void {
    this.now++;
    this.flushSnapshotReports();
    if (opts.faults && this.now % UNITS_PER_TICK === 0) this.injectFaults();
    for (const m of this.members.values()) {
      if (!this.alive(m) && !m.removed && this.now >= m.restartAt) {
        this.log(`restart ${m.id}`);
        this.inv.forgetApplied(m.id);
        this.start(m);
      }
      if (m.paused && m.pausedUntil <= this.now) {
        // The process wakes up with a backlog on its sockets: it reads it over the next few
        // ticks, interleaved with its timers and its clients, not all before them.
        m.paused = false;
        this.network.spreadHeld(m.id, this.now, 3 * UNITS_PER_TICK);
        this.log(`resume ${m.id}`);
      }
      if (!this.alive(m) || m.pausedUntil > this.now) continue;
      if (this.now % UNITS_PER_TICK === m.tickPhase) {
        this.guard(m, () => m.node!.tick());
        this.drain(m);
      }
    }
    const msgs = this.network.deliverable(
      this.now,
      (id) => (this.members.get(id)?.pausedUntil ?? 0) <= this.now,
    );
    for (const msg of msgs) {
      const m = this.members.get(msg.to);
      const alive = m !== undefined && this.alive(m);
      if (msg.type === MessageType.Snapshot)
        this.snapshotReports.push({ from: msg.from, to: msg.to, ok: alive });
      if (alive) {
        if (this.opts.trace) this.log(`recv ${describeMessage(msg)}`);
        this.guard(m, () => m.node!.step(msg));
        this.drain(m);
      }
      this.flushSnapshotReports();
    }
    this.runClients(opts.clients);
    this.inv.now = this.now;
    for (const m of this.members.values()) {
      if (this.alive(m) && m.role === Role.Leader) this.inv.leaderHolds(m.id, m.term, m.disk.current);
    }
  }

  private flushSnapshotReports(): void {
    while (this.snapshotReports.length > 0) {
      const r = this.snapshotReports.shift()!;
      const sender = this.members.get(r.from);
      if (!sender || !this.alive(sender)) continue;
      this.log(`snapshot ${r.from}→${r.to} ${r.ok ? 'delivered' : 'lost'}`);
      this.guard(sender, () => sender.node!.reportSnapshot(r.to, r.ok));
      this.drain(sender);
    }
  }

  private guard(m: Member, f: () => void): void {
    try {
      f();
    } catch (err) {
      this.violation('node-error', `${m.id} threw: ${(err as Error)?.stack ?? String(err)}`);
      this.crash(m, 'threw');
    }
  }

  private violation(property: Violation['property'], detail: string): void {
    this.inv.now = this.now;
    this.inv.violations.push({ property, time: this.now, detail });
    this.log(`VIOLATION ${property}: ${detail}`);
  }

  private log(line: string): void {
    if (this.opts.trace) this.trace.push(`t=${this.now} ${line}`);
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
    const m = this.mustMember(id);
    if (at === 'now') this.crash(m, 'by the test');
    else {
      m.crashIn = at;
      m.crashWhen = when;
    }
    m.restartAt = Infinity;
  }

  restartNode(id: NodeId): void {
    const m = this.mustMember(id);
    if (this.alive(m)) throw new Error(`restartNode: ${id} is running`);
    this.log(`restart ${m.id}`);
    this.inv.forgetApplied(m.id);
    this.start(m);
  }

  /** Freezes a node (a long GC or VM pause) for `ticks`: no ticks, no messages, no clients. */
  pauseNode(id: NodeId, ticks: number): void {
    const m = this.mustMember(id);
    m.pausedUntil = this.now + ticks * UNITS_PER_TICK;
    m.paused = true;
    this.log(`pause ${m.id} until ${m.pausedUntil}`);
  }

  /** Whether the node is frozen by a pause and has not woken up yet. */
  isPaused(id: NodeId): boolean {
    return this.mustMember(id).paused;
  }

  /** Makes a node start an election now. */
  campaign(id: NodeId): void {
    const m = this.mustMember(id);
    if (!this.alive(m) || !m.node.campaign) throw new Error(`campaign: ${id} is down or cannot campaign`);
    this.guard(m, () => m.node!.campaign!());
    this.drain(m);
  }

  /** The node's role and term as its last Ready showed them. */
  roleOf(id: NodeId): { role: Role; term: number; leader: NodeId } {
    const m = this.mustMember(id);
    return { role: m.role, term: m.term, leader: m.leader };
  }

  isRunning(id: NodeId): boolean {
    return this.alive(this.mustMember(id));
  }

  /** The leader followed by a majority, waiting up to `ticks` for one. */
  awaitStableLeader(ticks: number): NodeId | undefined {
    return this.awaitLeader(ticks)?.id;
  }

  /** Client `client` sends `input` to node `id`; returns the operation's history id. */
  submit(client: number, id: NodeId, input: KvInput): number {
    const c = this.clients[client];
    if (!c) throw new Error(`client: no client ${client} (there are ${this.clients.length})`);
    if (c.busy) throw new Error(`client ${client}: already has operation ${c.busy.op} in flight`);
    c.hint = id;
    const op = this.issue(c, input);
    if (op === undefined) throw new Error(`submit: node ${id} cannot take requests`);
    return op;
  }

  /** pending, ok, unknown (the client gave up: it may have happened) or failed (it did not). */
  opStatus(op: number): 'pending' | 'ok' | 'unknown' | 'failed' {
    const s = this.opState.get(op);
    if (s === undefined) throw new Error(`op: no operation ${op}`);
    return s;
  }

  /** What the node's state machine holds for `key`. */
  valueAt(id: NodeId, key: string): string | null {
    return this.mustMember(id).sm.get(key);
  }

  appliedIndex(id: NodeId): number {
    return this.mustMember(id).applied;
  }

  diskOf(id: NodeId): SimDisk {
    return this.mustMember(id).disk;
  }

  /** Checks the client history recorded so far. */
  checkHistory(): Verdict {
    return checkLinearizable(kvModel, this.history.operations(), { maxSteps: this.opts.checkerMaxSteps })
      .verdict;
  }

  get violations(): readonly Violation[] {
    return this.inv.violations;
  }

  private mustMember(id: NodeId): Member {
    const m = this.members.get(id);
    if (!m) throw new Error(`node: no node '${id}' in the simulation`);
    return m;
  }

  // ---------------------------------------------------------------- the run

  run(): SimResult {
    const { chaosTicks, leaderBoundTicks, proposalBoundTicks } = this.opts;
    for (let t = 0; t < chaosTicks * UNITS_PER_TICK; t++) this.step({ faults: true, clients: true });

    // Heal: a reliable network, every server back up, nobody paused.
    this.network.heal();
    this.network.faults = {
      drop: 0,
      duplicate: 0,
      minDelay: 1,
      maxDelay: 3,
      longDelayChance: 0,
      longDelay: 0,
    };
    for (const m of this.members.values()) {
      m.pausedUntil = 0;
      m.crashIn = undefined;
      m.crashWhen = undefined;
      if (!this.alive(m) && !m.removed) m.restartAt = this.now + 1;
    }
    this.log('heal: network healed, every node restarted');
    const healedAt = this.now;
    const ticksToLeader = this.awaitLeader(leaderBoundTicks, true)
      ? Math.ceil((this.now - healedAt) / UNITS_PER_TICK)
      : -1;
    if (ticksToLeader < 0) {
      this.violation('liveness', `no leader within ${leaderBoundTicks} ticks of healing`);
    } else {
      this.probe(proposalBoundTicks);
    }
    // Let the last operations finish, then check the history.
    const end = this.now + (this.opts.opTimeoutTicks + 2) * UNITS_PER_TICK;
    while (this.now < end && this.clients.some((c) => c.busy)) this.step({ faults: false, clients: false });
    for (const [op, state] of this.opState) {
      if (state === 'pending') this.violation('liveness', `operation ${op} never resolved`);
    }

    const ops = this.history.operations();
    const check = checkLinearizable(kvModel, ops, { maxSteps: this.opts.checkerMaxSteps });
    if (check.verdict === 'illegal') {
      const bad = check.partitions.find((p) => p.verdict === 'illegal');
      this.violation(
        'linearizability',
        `key ${bad?.partition}: no linearization of:\n  ${(bad?.operationsDescribed ?? []).join('\n  ')}`,
      );
    }
    const counts = { total: 0, ok: 0, unknown: 0, failed: 0 };
    for (const s of this.opState.values()) {
      counts.total++;
      if (s !== 'pending') counts[s]++;
    }
    return {
      seed: this.opts.seed,
      nodes: this.opts.nodes,
      violations: this.inv.violations,
      linearizable: check.verdict,
      ops: counts,
      elections: this.elections,
      crashes: this.crashes,
      ticksToLeader,
      committed: this.inv.committedCount,
      confChanges: this.confChanges,
      snapshotsInstalled: this.snapshotsInstalled,
      transfers: this.transfers,
      network: this.network.stats,
      trace: this.trace,
    };
  }

  /** Runs until a leader followed by a majority exists, for at most `boundTicks`. */
  private awaitLeader(boundTicks: number, clients = false): Member | undefined {
    const deadline = this.now + boundTicks * UNITS_PER_TICK;
    while (this.now < deadline) {
      if (this.majorityFollows()) return this.leaderMember();
      this.step({ faults: false, clients });
    }
    return this.majorityFollows() ? this.leaderMember() : undefined;
  }

  /** A majority of the leader's voters, alive, name it as leader. */
  private majorityFollows(): boolean {
    const leader = this.leaderMember();
    if (!leader) return false;
    const voters = leader.conf.voters;
    let n = 0;
    for (const v of voters) {
      const m = this.members.get(v);
      if (m && this.alive(m) && (m.id === leader.id || (m.leader === leader.id && m.term === leader.term)))
        n++;
    }
    return n * 2 > voters.length;
  }

  /** After healing, every client's next write must commit within the bound. */
  private probe(boundTicks: number): void {
    // Operations from before the heal finish first (at worst by their timeout).
    const settle = this.now + (this.opts.opTimeoutTicks + 1) * UNITS_PER_TICK;
    while (this.now < settle && this.clients.some((c) => c.busy))
      this.step({ faults: false, clients: false });
    // A leader found right at the heal may have been a stale one about to step down
    // (CheckQuorum): the probe goes to whoever leads now, found within the same bound.
    const leader = this.awaitLeader(this.opts.leaderBoundTicks);
    if (!leader) {
      this.violation('liveness', `no leader within ${this.opts.leaderBoundTicks} ticks on a healthy network`);
      return;
    }
    // Each client writes until one write commits, as a real client retries a refused or timed
    // out request (a leadership transfer in flight refuses proposals for a moment).
    const deadline = this.now + boundTicks * UNITS_PER_TICK;
    const attempts = new Map<number, number>();
    const committed = (c: Client) => c.probe !== undefined && this.opState.get(c.probe) === 'ok';
    while (this.now < deadline && !this.clients.every(committed)) {
      for (const c of this.clients) {
        if (c.busy || committed(c) || this.now < c.nextAt) continue;
        c.hint = this.leaderMember()?.id ?? c.hint;
        attempts.set(c.id, (attempts.get(c.id) ?? 0) + 1);
        c.probe = this.issue(c, {
          op: 'put',
          key: `k${c.id % this.opts.keys}`,
          value: `probe-${c.id}-${attempts.get(c.id)}`,
        });
        // A proposal can be lost without an error (a leader deposed right after accepting
        // it, a forwarded one dropped): retry well within the bound, as real clients do.
        const busy = c.busy as Client['busy']; // issue() just set it
        if (busy) busy.deadline = Math.min(busy.deadline, this.now + PROBE_ATTEMPT_TICKS * UNITS_PER_TICK);
      }
      this.step({ faults: false, clients: false });
    }
    for (const c of this.clients) {
      if (!committed(c)) {
        this.violation(
          'liveness',
          `client ${c.id}: no write committed within ${boundTicks} ticks of a leader (${attempts.get(c.id) ?? 0} attempts, last ${c.probe === undefined ? 'never issued' : this.opState.get(c.probe)})`,
        );
      }
    }
  }
}

/** Runs one seed. */
export function runSimulation(options: SimOptions): SimResult {
  return new Simulation(options).run();
}
