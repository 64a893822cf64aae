import { HistoryRecorder } from '../checker/history.js';
import type { KvInput, KvOutput } from '../checker/kv-model.js';
import { type Outcome, Proposals } from './proposals.js';
import type { NodeId } from '../types.js';
import type { Cluster } from './cluster.js';
import { encodeCommand } from './kv-app.js';
import { isRefusal } from '../core/errors.js';
import { isAlive, type Member } from './member.js';
import { UNITS_PER_TICK } from './options.js';
import type { SimRng } from './rng.js';

export type OpState = 'pending' | 'ok' | 'unknown' | 'failed';

export interface Client {
  id: number;
  busy?: { op: number; node: NodeId; deadline: number; write: boolean; read?: string };
  nextAt: number;
  hint: NodeId;
  /** The probe write issued after healing, which must commit within the bound. */
  probe?: number;
}

const encoder = new TextEncoder();

/**
 * The clients: each runs one key-value operation at a time against some node, gives up after a
 * timeout, and every invocation and outcome goes into the history the linearizability check reads.
 */
export class Workload {
  readonly clients: Client[] = [];
  readonly history = new HistoryRecorder<KvInput, KvOutput>();
  readonly opState = new Map<number, OpState>();
  readonly proposals: Proposals;

  constructor(
    private readonly cluster: Cluster,
    private readonly rng: SimRng,
  ) {
    this.proposals = new Proposals(cluster, (m, op, outcome, out) => this.writeEnded(m, op, outcome, out));
    for (let c = 0; c < cluster.opts.clients; c++) {
      this.clients.push({ id: c, nextAt: this.rng.between(0, 3 * UNITS_PER_TICK), hint: '' });
    }
  }

  /** Issues new operations when clients are due, and times out those that waited too long. */
  runClients(allowNew: boolean): void {
    const now = this.cluster.now;
    for (const c of this.clients) {
      if (c.busy) {
        if (now >= c.busy.deadline) {
          const { op, node, write, read } = c.busy;
          const m = this.cluster.members.get(node);
          if (read) m?.pendingReads.delete(read);
          m?.pendingWrites.delete(op);
          this.finish(op, write ? 'unknown' : 'failed');
        }
        continue;
      }
      if (allowNew && now >= c.nextAt) this.issue(c);
    }
  }

  /** Starts an operation from client `c`; returns its history id. */
  issue(c: Client, input: KvInput = this.randomInput()): number | undefined {
    const cluster = this.cluster;
    const m = this.targetFor(c);
    if (!m) return undefined;
    const op = this.history.invoke(c.id, input, cluster.now);
    this.opState.set(op, 'pending');
    if (cluster.opts.trace) cluster.log(`op ${op} client ${c.id} → ${m.id}: ${JSON.stringify(input)}`);
    const read = input.op === 'get' ? m.readIds.next() : undefined;
    c.busy = {
      op,
      node: m.id,
      deadline: cluster.now + cluster.opts.opTimeoutTicks * UNITS_PER_TICK,
      write: input.op !== 'get',
      ...(read ? { read } : {}),
    };
    if (!isAlive(m) || m.pausedUntil > cluster.now) {
      // Connection refused, or the node is frozen: the client gives up at once, nothing was sent.
      this.finish(op, 'failed');
      return op;
    }
    try {
      if (read) {
        m.pendingReads.set(read, { op, client: c.id, key: input.key });
        m.node.readIndex(encoder.encode(read));
      } else {
        m.pendingWrites.set(op, c.id);
        this.proposals.propose(m, op, encodeCommand({ op, input }));
      }
    } catch (err) {
      if (read) m.pendingReads.delete(read);
      m.pendingWrites.delete(op);
      this.refused(op, m, err);
      const leader = (err as { leader?: unknown }).leader;
      c.hint = typeof leader === 'string' ? leader : '';
      return op;
    }
    cluster.drain(m);
    return op;
  }

  /** A node crashed: its writes may or may not have happened, its reads did not. */
  crashed(m: Member): void {
    for (const op of m.pendingWrites.keys()) this.finish(op, 'unknown');
    for (const r of m.pendingReads.values()) this.finish(r.op, 'failed');
    m.pendingWrites.clear();
    m.pendingReads.clear();
    for (const c of this.clients) {
      if (c.busy?.node === m.id) this.idle(c);
    }
  }

  /** Write `op`, which node `m` took from its client, ended: the client hears how. */
  private writeEnded(m: Member, op: number, outcome: Outcome, out: KvOutput): void {
    if (!m.pendingWrites.delete(op) || this.opState.get(op) !== 'pending') return;
    if (outcome === 'ok') this.history.complete(op, out, this.cluster.now);
    this.finish(op, outcome === 'refused' ? 'failed' : outcome);
  }

  /** Answers the reads whose ReadIndex node `m` has applied. */
  serveReads(m: Member): void {
    for (const [ctx, r] of m.pendingReads) {
      if (r.index === undefined || r.index > m.applied) continue;
      m.pendingReads.delete(ctx);
      if (this.opState.get(r.op) !== 'pending') continue;
      this.history.complete(r.op, m.sm.get(r.key), this.cluster.now);
      this.finish(r.op, 'ok');
    }
  }

  /** How many operations ended each way. */
  counts(): { total: number; ok: number; unknown: number; failed: number } {
    const counts = { total: 0, ok: 0, unknown: 0, failed: 0 };
    for (const s of this.opState.values()) {
      counts.total++;
      if (s !== 'pending') counts[s]++;
    }
    return counts;
  }

  private idle(c: Client): void {
    c.busy = undefined;
    c.hint = '';
    c.nextAt = this.cluster.now + this.rng.between(1, 2 * UNITS_PER_TICK);
  }

  private finish(op: number, how: 'ok' | 'unknown' | 'failed'): void {
    if (this.opState.get(op) !== 'pending') return;
    this.opState.set(op, how);
    if (how === 'unknown') this.history.abandon(op);
    if (how === 'failed') this.history.fail(op);
    if (this.cluster.opts.trace) this.cluster.log(`op ${op} ${how}`);
    for (const c of this.clients) {
      if (c.busy?.op === op) {
        const node = c.busy.node;
        this.idle(c);
        if (how === 'ok') c.hint = node;
      }
    }
  }

  private randomInput(): KvInput {
    const r = this.rng;
    const key = `k${r.int(this.cluster.opts.keys)}`;
    const value = `v${this.opState.size}-${r.int(1000)}`;
    const p = r.next();
    if (p < 0.4) return { op: 'put', key, value };
    if (p < 0.7) return { op: 'get', key };
    if (p < 0.85) return { op: 'append', key, value: `,${r.int(100)}` };
    return { op: 'cas', key, expected: r.chance(0.5) ? null : value, value };
  }

  private targetFor(c: Client): Member | undefined {
    const hinted = c.hint ? this.cluster.members.get(c.hint) : undefined;
    if (hinted && !hinted.removed) return hinted;
    const candidates = this.cluster.current();
    return candidates.length ? this.rng.pick(candidates) : undefined;
  }

  private refused(op: number, m: Member, err: unknown): void {
    if (!isRefusal(err))
      this.cluster.violation('node-error', `${m.id} threw on a client call: ${String(err)}`);
    this.finish(op, 'failed');
  }
}
