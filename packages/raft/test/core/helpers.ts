import type { ConfState, Entry, Message, NodeId, Ready, ReadState } from '../../src/types.js';
import { EntryType, MessageType, Role } from '../../src/types.js';
import { makeMessage } from '../../src/core/entries.js';
import { MemoryStorage } from '../../src/core/memory-storage.js';
import { RawNode } from '../../src/core/raw-node.js';
import { SeededRng } from '../../src/core/rng.js';
import { type RaftConfig } from '../../src/core/config.js';

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/** One node of the test network: its core, its storage and what it applied. */
export interface TestNode {
  id: NodeId;
  raw: RawNode;
  storage: MemoryStorage;
  /** Normal entries applied, as strings, in order. */
  applied: string[];
  appliedEntries: Entry[];
  readStates: ReadState[];
  snapshotsInstalled: number;
}

export type Filter = (m: Message) => boolean;

/**
 * A small in-memory cluster: messages go through a queue and are delivered in FIFO order by
 * deliver(); filters drop messages (partitions, losses). Each Ready is handled exactly as the
 * RawNode contract says: persist, then send, then apply, then advance.
 */
export class Network {
  readonly nodes = new Map<NodeId, TestNode>();
  queue: Message[] = [];
  private filters: Filter[] = [];
  /** Every message ever sent, for assertions. */
  sent: Message[] = [];

  constructor(
    ids: NodeId[],
    readonly opts: Partial<RaftConfig> & { learners?: NodeId[]; seed?: number } = {},
  ) {
    const conf: ConfState = { voters: ids, learners: opts.learners ?? [] };
    let seed = opts.seed ?? 1;
    for (const id of [...ids, ...(opts.learners ?? [])]) {
      this.add(id, MemoryStorage.bootstrap(conf), seed++);
    }
  }

  /** Adds a node with the given storage (an empty MemoryStorage for a node joining later). */
  add(id: NodeId, storage: MemoryStorage, seed: number, extra: Partial<RaftConfig> = {}): TestNode {
    const { learners: _l, seed: _s, ...cfg } = this.opts;
    const raw = new RawNode({ ...cfg, ...extra, id, storage, rng: new SeededRng(seed) });
    const node: TestNode = {
      id,
      raw,
      storage,
      applied: [],
      appliedEntries: [],
      readStates: [],
      snapshotsInstalled: 0,
    };
    this.nodes.set(id, node);
    return node;
  }

  node(id: NodeId): TestNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  raw(id: NodeId): RawNode {
    return this.node(id).raw;
  }

  addFilter(f: Filter): () => void {
    this.filters.push(f);
    return () => {
      this.filters = this.filters.filter((x) => x !== f);
    };
  }

  clearFilters(): void {
    this.filters = [];
  }

  /** Cuts all traffic between the two groups (both ways). */
  partition(a: NodeId[], b: NodeId[]): () => void {
    return this.addFilter(
      (m) => (a.includes(m.from) && b.includes(m.to)) || (b.includes(m.from) && a.includes(m.to)),
    );
  }

  /** Cuts one direction only: messages from `from` to `to`. */
  cutOneWay(from: NodeId, to: NodeId): () => void {
    return this.addFilter((m) => m.from === from && m.to === to);
  }

  isolate(id: NodeId): () => void {
    return this.addFilter((m) => m.from === id || m.to === id);
  }

  /** Readies taken but not yet handled, per node (a slow fsync in flight). */
  readonly inFlight = new Map<NodeId, Ready>();

  /** Takes `id`'s next Ready and holds it, as an edge does while its fsync runs. */
  beginReady(id: NodeId): boolean {
    const n = this.node(id);
    if (this.inFlight.has(id) || !n.raw.hasReady()) return false;
    this.inFlight.set(id, n.raw.ready());
    return true;
  }

  /** Handles `id`'s held Ready: persist, then send, then apply, then advance. */
  finishReady(id: NodeId): boolean {
    const n = this.node(id);
    const rd = this.inFlight.get(id);
    if (!rd) return false;
    this.inFlight.delete(id);
    if (rd.snapshot) {
      n.storage.applySnapshot(rd.snapshot);
      // The test state machine is the list of applied values; a snapshot holds it as JSON.
      const data = rd.snapshot.data;
      n.applied = data.byteLength === 0 ? [] : (JSON.parse(dec(data)) as string[]);
      n.snapshotsInstalled++;
    }
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    for (const m of rd.messages) {
      this.sent.push(m);
      const dropped = this.filters.some((f) => f(m));
      if (!dropped) this.queue.push(m);
      // The transport's duty: report how a snapshot stream ended.
      if (m.type === MessageType.Snapshot) n.raw.reportSnapshot(m.to, !dropped);
    }
    for (const e of rd.committedEntries) {
      n.appliedEntries.push(e);
      if (e.type === EntryType.Normal) n.applied.push(dec(e.data));
    }
    n.readStates.push(...rd.readStates);
    n.raw.advance(rd);
    return true;
  }

  /** Handles every pending Ready of every node (persist, send, apply, advance). */
  flushReadies(): boolean {
    let any = false;
    for (const id of this.nodes.keys()) {
      if (this.finishReady(id)) any = true;
      while (this.beginReady(id)) {
        any = true;
        this.finishReady(id);
      }
    }
    return any;
  }

  /** Delivers messages until the network is quiet. Returns how many were delivered. */
  deliver(maxMessages = 100_000): number {
    let delivered = 0;
    for (;;) {
      this.flushReadies();
      const m = this.queue.shift();
      if (!m) return delivered;
      if (++delivered > maxMessages) throw new Error('network did not quiesce');
      const to = this.nodes.get(m.to);
      if (!to) continue;
      to.raw.step(m);
    }
  }

  /** Ticks every node (or the given ones) n times, delivering after each tick. */
  tick(n = 1, ids?: NodeId[]): void {
    for (let i = 0; i < n; i++) {
      for (const id of ids ?? [...this.nodes.keys()]) this.raw(id).tick();
      this.deliver();
    }
  }

  /** Makes `id` campaign and delivers the election. */
  campaign(id: NodeId): void {
    this.raw(id).campaign();
    this.deliver();
  }

  leaders(): NodeId[] {
    return [...this.nodes.values()].filter((n) => n.raw.status().role === Role.Leader).map((n) => n.id);
  }

  /** The leader with the highest term, if any. */
  leader(): NodeId | undefined {
    let best: NodeId | undefined;
    let term = -1;
    for (const n of this.nodes.values()) {
      const s = n.raw.status();
      if (s.role === Role.Leader && s.term > term) {
        best = n.id;
        term = s.term;
      }
    }
    return best;
  }

  /** Ticks until some node leads (no more than `maxTicks`). */
  tickUntilLeader(maxTicks = 200): NodeId {
    for (let i = 0; i < maxTicks; i++) {
      const l = this.leader();
      if (l !== undefined && this.leaders().length === 1) return l;
      this.tick(1);
    }
    throw new Error(`no leader after ${maxTicks} ticks`);
  }

  /**
   * Crash and restart: the node loses everything but its storage (every Ready was persisted
   * before its messages left, as the contract requires). The application rebuilds its state
   * from the snapshot and re-applies the committed entries the new core hands out.
   */
  restart(id: NodeId, seed: number, extra: Partial<RaftConfig> = {}): TestNode {
    const old = this.node(id);
    // A Ready still in flight is lost with the process: nothing of it was persisted or sent.
    this.inFlight.delete(id);
    const snap = old.storage.snapshot();
    const node = this.add(id, old.storage, seed, extra);
    node.applied = snap.data.byteLength === 0 ? [] : (JSON.parse(dec(snap.data)) as string[]);
    node.snapshotsInstalled = old.snapshotsInstalled;
    return node;
  }

  /** The application compacts `id`'s log: a snapshot of its applied state, then compaction. */
  compact(id: NodeId, keep = 0): void {
    const n = this.node(id);
    const st = n.raw.status();
    n.storage.createSnapshot(st.applied, st.conf, enc(JSON.stringify(n.applied)));
    if (st.applied - keep > n.storage.firstIndex() - 1) n.storage.compact(st.applied - keep);
  }

  propose(id: NodeId, value: string): void {
    this.raw(id).propose(enc(value));
    this.deliver();
  }
}

/** A message with the fields a test does not care about zeroed: the core's own builder. */
export const msg = makeMessage;

export function entry(index: number, term: number, data = ''): Entry {
  return { index, term, type: EntryType.Normal, data: enc(data) };
}

/** A lone node (its peers exist only as message addresses) with a hand-built log. */
export function lone(
  id: NodeId,
  voters: NodeId[],
  opts: { terms?: number[]; term?: number; vote?: NodeId; seed?: number; config?: Partial<RaftConfig> } = {},
): { raw: RawNode; storage: MemoryStorage } {
  const storage = new MemoryStorage();
  storage.setConfState({ voters, learners: [] });
  storage.append((opts.terms ?? []).map((t, i) => entry(i + 1, t)));
  storage.setHardState({ term: opts.term ?? 0, vote: opts.vote ?? '', commit: 0 });
  const raw = new RawNode({
    preVote: false,
    ...opts.config,
    id,
    storage,
    rng: new SeededRng(opts.seed ?? 1),
  });
  return { raw, storage };
}

/** Handles one node's Readies the contract's way and returns the messages it would send. */
export function drain(n: { raw: RawNode; storage: MemoryStorage }): Message[] {
  const out: Message[] = [];
  while (n.raw.hasReady()) {
    const rd = n.raw.ready();
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    out.push(...rd.messages);
    n.raw.advance(rd);
  }
  return out;
}

/** The terms of a storage's log, from index 1. */
export function termsOf(s: MemoryStorage): number[] {
  const out: number[] = [];
  for (let i = s.firstIndex(); i <= s.lastIndex(); i++) out.push(s.term(i));
  return out;
}
