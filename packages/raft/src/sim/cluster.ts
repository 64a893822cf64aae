import { PendingProposals } from '../core/pending-proposals.js';
import { ReadIds } from '../core/read-ids.js';
import type { ConfChange, Entry, NodeId } from '../types.js';
import { MessageType, Role } from '../types.js';
import type { KvOutput } from '../checker/kv-model.js';
import type { SimDisk } from './disk.js';
import { InvariantChecker, type Violation } from './invariants.js';
import { KvStateMachine } from './kv-app.js';
import { isAlive, type LiveMember, type Member } from './member.js';
import { isRpc, type SimNetwork } from './network.js';
import type { ResolvedSimOptions } from './options.js';
import { UNITS_PER_TICK } from './options.js';
import { processReady } from './ready.js';
import type { SimRng } from './rng.js';

/** What the cluster tells the workload and the fault schedule about, as it happens. */
export interface ClusterHooks {
  /** A node crashed: the client operations it held are abandoned. */
  crashed(m: Member): void;
  /** A node applied a client write in entry `e`, which returned `out`. */
  writeApplied(m: Member, e: Entry, out: KvOutput): void;
  /** A node installed a snapshot up to `index`. */
  snapshotInstalled(m: Member, index: number): void;
  /** A node finished a Ready: reads waiting for its applied index may be answered. */
  readyDone(m: Member): void;
  /** The leader applied a membership change. */
  confApplied(cc: ConfChange): void;
}

const NO_HOOKS: ClusterHooks = {
  crashed: () => {},
  writeApplied: () => {},
  snapshotInstalled: () => {},
  readyDone: () => {},
  confApplied: () => {},
};

/**
 * The simulated servers and their lifecycle: boot from disk, crash (losing unsynced writes),
 * restart, the Ready loop, and the trace and violation log every other part writes to.
 */
export class Cluster {
  readonly members = new Map<NodeId, Member>();
  readonly inv = new InvariantChecker();
  readonly trace: string[] = [];
  now = 0;
  elections = 0;
  crashes = 0;
  snapshotsInstalled = 0;
  hooks: ClusterHooks = NO_HOOKS;
  /** Snapshot deliveries and losses to report to their senders, outside any Ready. */
  private snapshotReports: { from: NodeId; to: NodeId; ok: boolean }[] = [];

  constructor(
    readonly opts: ResolvedSimOptions,
    private readonly rng: SimRng,
    /** Draws crash points and downtimes; shared with the fault schedule. */
    readonly faultRng: SimRng,
    readonly network: SimNetwork,
  ) {
    this.network.onLost = (msg) => {
      if (!isRpc(msg) && msg.type === MessageType.Snapshot)
        this.snapshotReports.push({ from: msg.from, to: msg.to, ok: false });
    };
  }

  addMember(id: NodeId, disk: SimDisk): Member {
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
      proposals: new PendingProposals(),
      readIds: new ReadIds(id, '0'),
      boots: 0,
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
    m.readIds = new ReadIds(m.id, String(++m.boots));
    m.proposals = new PendingProposals();
    this.inv.restored(m.id, m.applied);
    m.node = this.opts.factory({ id: m.id, storage, applied: m.applied, rng: this.rng.fork() });
  }

  /** Restarts a crashed node: what it applied before the crash no longer counts. */
  restart(m: Member): void {
    this.log(`restart ${m.id}`);
    this.inv.forgetApplied(m.id);
    this.start(m);
  }

  crash(m: Member, how: string): void {
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
    this.hooks.crashed(m);
    // A supervisor restarts some processes at once; others stay down for a while.
    const downTicks = this.faultRng.chance(0.4) ? this.faultRng.between(0, 3) : this.faultRng.between(5, 60);
    m.restartAt = this.opts.autoRestart ? this.now + 1 + downTicks * UNITS_PER_TICK : Infinity;
  }

  /** Freezes a node for `ticks`: no ticks, no messages, no clients. */
  pause(m: Member, ticks: number): void {
    m.pausedUntil = this.now + ticks * UNITS_PER_TICK;
    m.paused = true;
    this.log(`pause ${m.id} until ${m.pausedUntil}`);
  }

  /** Processes every Ready the node has, in the order persist → send → apply → advance. */
  drain(m: Member): void {
    let guard = 0;
    while (m.node && m.node.hasReady()) {
      if (++guard > 1000) {
        this.violation('node-error', `${m.id} kept producing Ready after 1000 rounds`);
        return;
      }
      processReady(this, m, m.node, m.node.ready());
    }
  }

  /** Runs a call into a node; a node that throws is a violation, and crashes. */
  guard(m: Member, f: () => void): void {
    try {
      f();
    } catch (err) {
      this.violation('node-error', `${m.id} threw: ${(err as Error)?.stack ?? String(err)}`);
      this.crash(m, 'threw');
    }
  }

  /** A Snapshot message to `msg.to` was delivered (ok) or lost: its sender must hear of it. */
  snapshotOutcome(from: NodeId, to: NodeId, ok: boolean): void {
    this.snapshotReports.push({ from, to, ok });
  }

  flushSnapshotReports(): void {
    while (this.snapshotReports.length > 0) {
      const r = this.snapshotReports.shift()!;
      const sender = this.members.get(r.from);
      if (!sender || !isAlive(sender)) continue;
      this.log(`snapshot ${r.from}→${r.to} ${r.ok ? 'delivered' : 'lost'}`);
      this.guard(sender, () => sender.node!.reportSnapshot(r.to, r.ok));
      this.drain(sender);
    }
  }

  /** The live, unpaused leader with the highest term, if any. */
  leaderMember(): LiveMember | undefined {
    let best: LiveMember | undefined;
    for (const m of this.members.values()) {
      if (isAlive(m) && m.role === Role.Leader && m.pausedUntil <= this.now && (!best || m.term > best.term))
        best = m;
    }
    return best;
  }

  /** The members still in the cluster (not removed), running or not. */
  current(): Member[] {
    return [...this.members.values()].filter((m) => !m.removed);
  }

  mustMember(id: NodeId): Member {
    const m = this.members.get(id);
    if (!m) throw new Error(`node: no node '${id}' in the simulation`);
    return m;
  }

  violation(property: Violation['property'], detail: string): void {
    this.inv.now = this.now;
    this.inv.violations.push({ property, time: this.now, detail });
    this.log(`VIOLATION ${property}: ${detail}`);
  }

  log(line: string): void {
    if (this.opts.trace) this.trace.push(`t=${this.now} ${line}`);
  }
}
