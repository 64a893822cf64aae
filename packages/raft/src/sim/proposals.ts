import type { KvOutput } from '../checker/kv-model.js';
import { isRefusal, NotLeaderError } from '../core/errors.js';
import type { Entry, NodeId } from '../types.js';
import type { Cluster } from './cluster.js';
import type { Member } from './member.js';

/**
 * Client writes as RaftNode takes them. A node proposes a write and waits for the entry at the
 * index the core gave it: the same term there means it is this write (Log Matching), another
 * term means another leader's entry took the index and the write certainly did not happen, and a
 * snapshot over the index leaves its outcome unknown.
 *
 * A follower's core refuses a write (NotLeaderError); the follower sends it to the leader it
 * knows over ForwardPropose, and the leader answers once it has applied it, with the same three
 * outcomes. A lost request or answer, or a crash, leaves the client to time out: unknown.
 */
export interface ForwardRequest {
  rpc: 'ForwardPropose';
  from: NodeId;
  to: NodeId;
  op: number;
  data: Uint8Array;
}

export type Outcome = 'ok' | 'refused' | 'unknown';

export interface ForwardAnswer {
  rpc: 'ForwardProposeAnswer';
  from: NodeId;
  to: NodeId;
  op: number;
  outcome: Outcome;
  out: KvOutput;
}

export type Rpc = ForwardRequest | ForwardAnswer;

/** A write a node proposed, waiting for its entry; `from` names the follower that forwarded it. */
export interface ProposedWrite {
  term: number;
  op: number;
  from?: NodeId;
}

export function describeRpc(r: Rpc): string {
  return `${r.from}→${r.to} ${r.rpc} op=${r.op}${r.rpc === 'ForwardProposeAnswer' ? ` ${r.outcome}` : ''}`;
}

export class Proposals {
  /** Writes a follower sent to the leader. */
  forwarded = 0;

  constructor(
    private readonly cluster: Cluster,
    /** The client write `op` that node `m` took ended so. */
    private readonly ended: (m: Member, op: number, outcome: Outcome, out: KvOutput) => void,
  ) {}

  /** Node `m` takes client write `op`; a refusal it cannot forward is thrown to the client. */
  propose(m: Member, op: number, data: Uint8Array): void {
    try {
      this.proposeOn(m, data, { op });
    } catch (err) {
      if (!(err instanceof NotLeaderError) || err.leader === '') throw err;
      this.forwarded++;
      this.post({ rpc: 'ForwardPropose', from: m.id, to: err.leader, op, data });
    }
  }

  /** An RPC arrived at running node `m`. */
  deliver(m: Member, r: Rpc): void {
    if (r.rpc === 'ForwardProposeAnswer') {
      this.ended(m, r.op, r.outcome, r.out);
      return;
    }
    try {
      this.proposeOn(m, r.data, { op: r.op, from: r.from });
    } catch (err) {
      if (!isRefusal(err))
        this.cluster.violation('node-error', `${m.id} threw on ForwardPropose: ${String(err)}`);
      this.end(m, { op: r.op, from: r.from }, 'refused', null);
    }
  }

  /** Node `m` applied `e`, whose command returned `out`. */
  applied(m: Member, e: Entry, out: KvOutput): void {
    const pending = m.proposals.applied(e);
    if (pending) this.end(m, pending.waiter, pending.taken ? 'ok' : 'refused', out);
  }

  /** A snapshot replaced `m`'s log up to `index` before it applied its writes there. */
  snapshotInstalled(m: Member, index: number): void {
    for (const w of m.proposals.replacedThrough(index)) this.end(m, w, 'unknown', null);
  }

  private proposeOn(m: Member, data: Uint8Array, w: Omit<ProposedWrite, 'term'>): void {
    const { index, term } = m.node!.propose(data);
    m.proposals.add(index, { ...w, term });
    this.cluster.drain(m);
  }

  private end(m: Member, w: { op: number; from?: NodeId }, outcome: Outcome, out: KvOutput): void {
    if (w.from === undefined) this.ended(m, w.op, outcome, out);
    else this.post({ rpc: 'ForwardProposeAnswer', from: m.id, to: w.from, op: w.op, outcome, out });
  }

  private post(r: Rpc): void {
    if (this.cluster.opts.trace) this.cluster.log(`send ${describeRpc(r)}`);
    this.cluster.network.send(r, this.cluster.now);
  }
}
