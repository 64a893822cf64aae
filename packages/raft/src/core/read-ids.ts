import type { NodeId } from '../types.js';

/**
 * Ids for a node's ReadIndex requests, unique across its incarnations. The leader merges a
 * request with a pending one of the same id, and a follower matches the leader's answer by id
 * alone: an id reused after a restart could take an answer meant for the previous incarnation,
 * an old read index, and serve a stale read. So each incarnation brings its own `incarnation`
 * (RaftNode: 64 random bits; the simulator: the boot count) and counts from 1 under it.
 */
export class ReadIds {
  private counter = 0;

  constructor(
    private readonly node: NodeId,
    private readonly incarnation: string,
  ) {}

  next(): string {
    return `${this.node}/${this.incarnation}/${++this.counter}`;
  }
}
