import type { Message, NodeId } from '../types.js';
import type { Rpc } from './proposals.js';
import type { SimRng } from './rng.js';

/** What travels: Raft's messages, and the RPCs the edge makes besides them (ForwardPropose). */
export type Packet = Message | Rpc;

export const isRpc = (p: Packet): p is Rpc => 'rpc' in p;

/** How unreliable the simulated network is. Probabilities are per message. */
export interface NetworkFaults {
  drop: number;
  duplicate: number;
  /** Delivery delay in virtual time units, uniform in [min, max]; different delays reorder. */
  minDelay: number;
  maxDelay: number;
  /** Chance that a message is held much longer (up to `longDelay`), overtaken by later ones. */
  longDelayChance: number;
  longDelay: number;
}

export const RELIABLE: NetworkFaults = {
  drop: 0,
  duplicate: 0,
  minDelay: 1,
  maxDelay: 1,
  longDelayChance: 0,
  longDelay: 0,
};

interface InFlight {
  at: number;
  seq: number;
  msg: Packet;
}

/**
 * A network of directed links. A blocked link drops what is sent over it, which models every
 * partition: symmetric (both directions between two groups), asymmetric (a node is heard by
 * nobody but still hears everybody, or the reverse) and one-way (a single direction of one link).
 */
export class SimNetwork {
  private queue: InFlight[] = [];
  private seq = 0;
  private readonly blocked = new Set<string>();
  private holds: Array<(msg: Packet) => boolean> = [];
  faults: NetworkFaults;
  stats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0, blocked: 0 };
  /** Told about every message that will never arrive (the sender of a snapshot must hear of it). */
  onLost?: (msg: Packet) => void;

  constructor(
    private readonly rng: SimRng,
    faults: NetworkFaults = RELIABLE,
  ) {
    this.faults = faults;
  }

  send(msg: Packet, now: number): void {
    this.stats.sent++;
    const f = this.faults;
    if (this.isBlocked(msg.from, msg.to)) {
      this.stats.blocked++;
      this.onLost?.(msg);
      return;
    }
    if (f.drop > 0 && this.rng.chance(f.drop)) {
      this.stats.dropped++;
      this.onLost?.(msg);
      return;
    }
    this.enqueue(msg, now);
    // An RPC rides on a TCP stream, which never delivers a request twice; Raft's messages may be.
    if (f.duplicate > 0 && !isRpc(msg) && this.rng.chance(f.duplicate)) {
      this.stats.duplicated++;
      this.enqueue({ ...msg }, now);
    }
  }

  private enqueue(msg: Packet, now: number): void {
    const f = this.faults;
    let delay = this.rng.between(f.minDelay, f.maxDelay);
    if (f.longDelayChance > 0 && this.rng.chance(f.longDelayChance))
      delay += this.rng.between(1, f.longDelay);
    this.queue.push({ at: now + delay, seq: this.seq++, msg });
  }

  /**
   * Messages due by `now` whose receiver `canReceive`, in delivery order. A partition that
   * appears while a message is in flight drops it on arrival, as a cut cable would.
   */
  deliverable(now: number, canReceive: (id: NodeId) => boolean): Packet[] {
    const due: InFlight[] = [];
    const rest: InFlight[] = [];
    for (const m of this.queue) {
      if (m.at <= now && canReceive(m.msg.to) && !this.holds.some((held) => held(m.msg))) due.push(m);
      else rest.push(m);
    }
    this.queue = rest;
    due.sort((a, b) => a.at - b.at || a.seq - b.seq);
    const out: Packet[] = [];
    for (const m of due) {
      if (this.isBlocked(m.msg.from, m.msg.to)) {
        this.stats.blocked++;
        this.onLost?.(m.msg);
        continue;
      }
      this.stats.delivered++;
      out.push(m.msg);
    }
    return out;
  }

  /**
   * Holds back every message for which `held` is true, until `release` (a scenario's slow
   * link): they stay in flight, neither lost nor delivered.
   */
  hold(held: (msg: Packet) => boolean): void {
    this.holds.push(held);
  }

  /** Lets messages held by `held` (every hold, if absent) arrive, in the order they were sent. */
  release(held?: (msg: Packet) => boolean): void {
    this.holds = held ? this.holds.filter((h) => h !== held) : [];
  }

  /** Messages that waited for a paused node arrive spread over the next `spread` units. */
  spreadHeld(id: NodeId, now: number, spread: number): void {
    for (const m of this.queue) {
      if (m.msg.to === id && m.at <= now) m.at = now + this.rng.between(1, spread);
    }
  }

  /** Messages in flight to a node are lost when it crashes (its sockets die with it). */
  dropTo(id: NodeId): void {
    const lost = this.queue.filter((m) => m.msg.to === id);
    this.queue = this.queue.filter((m) => m.msg.to !== id);
    for (const m of lost) this.onLost?.(m.msg);
  }

  get inFlight(): number {
    return this.queue.length;
  }

  isBlocked(from: NodeId, to: NodeId): boolean {
    return this.blocked.has(from + '>' + to);
  }

  /** Blocks one direction of one link: `from` can no longer reach `to`. */
  blockOneWay(from: NodeId, to: NodeId): void {
    this.blocked.add(from + '>' + to);
  }

  /** Splits the nodes into groups that cannot reach each other in either direction. */
  partition(groups: readonly (readonly NodeId[])[]): void {
    for (const a of groups) {
      for (const b of groups) {
        if (a === b) continue;
        for (const x of a) for (const y of b) this.blockOneWay(x, y);
      }
    }
  }

  /** `node` hears everybody but nobody hears it (`deaf` false), or the reverse (`deaf` true). */
  isolateOneWay(node: NodeId, others: readonly NodeId[], deaf: boolean): void {
    for (const o of others) {
      if (o === node) continue;
      if (deaf) this.blockOneWay(o, node);
      else this.blockOneWay(node, o);
    }
  }

  heal(): void {
    this.blocked.clear();
  }

  describeBlocked(): string {
    return [...this.blocked].sort().join(' ');
  }
}
