import { type NodeId } from '../types.js';
import { contextKey } from './entries.js';

/** A ReadIndex request waiting for a quorum of heartbeat acknowledgements. */
export interface PendingRead {
  /** The commit index when the request arrived: the read may be served once it is applied. */
  index: number;
  /** Who asked: this node, or a follower that forwarded the request. */
  from: NodeId;
  context: Uint8Array;
  acks: Set<NodeId>;
}

/**
 * The leader's queue of safe ReadIndex requests. Each is confirmed by a round of heartbeats that
 * carries its context: once a majority acknowledges, the leader knows it was still the leader
 * when the request arrived, so the commit index it recorded is linearizable. An acknowledgement
 * of one request also confirms every request queued before it.
 */
export class ReadOnly {
  private pending = new Map<string, PendingRead>();
  private queue: string[] = [];

  add(index: number, from: NodeId, context: Uint8Array): void {
    const key = contextKey(context);
    if (this.pending.has(key)) return;
    this.pending.set(key, { index, from, context, acks: new Set() });
    this.queue.push(key);
  }

  /** Records `from`'s acknowledgement of `context`; returns the acks so far, if pending. */
  recvAck(from: NodeId, context: Uint8Array): Set<NodeId> | undefined {
    const p = this.pending.get(contextKey(context));
    if (!p) return undefined;
    p.acks.add(from);
    return p.acks;
  }

  /** Removes and returns every request up to and including the one with `context`. */
  advance(context: Uint8Array): PendingRead[] {
    const key = contextKey(context);
    const at = this.queue.indexOf(key);
    if (at < 0) return [];
    const done = this.queue.splice(0, at + 1);
    const out: PendingRead[] = [];
    for (const k of done) {
      const p = this.pending.get(k);
      if (p) out.push(p);
      this.pending.delete(k);
    }
    return out;
  }

  /** The context of the newest request: heartbeats carry it so one round confirms them all. */
  lastPendingContext(): Uint8Array | undefined {
    const k = this.queue[this.queue.length - 1];
    return k === undefined ? undefined : this.pending.get(k)?.context;
  }

  size(): number {
    return this.queue.length;
  }
}
