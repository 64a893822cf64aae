/**
 * Proposals waiting for their entries, by log index: how an edge (RaftNode, and the simulator
 * that models it) tells what became of a proposal. The entry applied at the proposal's index is
 * the proposal when its term is the same (Log Matching); another term there means a new leader
 * overwrote it, so it certainly did not take effect; a snapshot over the index leaves it unknown.
 */
export class PendingProposals<W extends { term: number }> {
  private readonly byIndex = new Map<number, W>();

  get size(): number {
    return this.byIndex.size;
  }

  add(index: number, waiter: W): void {
    this.byIndex.set(index, waiter);
  }

  /** Forgets the waiter at `index` if it is `waiter` (it timed out). */
  cancel(index: number, waiter: W): void {
    if (this.byIndex.get(index) === waiter) this.byIndex.delete(index);
  }

  /**
   * Whether a proposer here waits for `e`'s result: a waiter at its index of its term. Asked
   * before `e` is applied, so the state machine need not build a result nobody reads.
   */
  awaits(e: { index: number; term: number }): boolean {
    return this.byIndex.get(e.index)?.term === e.term;
  }

  /** The waiter for applied entry `e`, and whether `e` is its proposal. */
  applied(e: { index: number; term: number }): { waiter: W; taken: boolean } | undefined {
    const waiter = this.byIndex.get(e.index);
    if (!waiter) return undefined;
    this.byIndex.delete(e.index);
    return { waiter, taken: waiter.term === e.term };
  }

  /** Removes and returns the waiters at or below `index`, which a snapshot replaced. */
  replacedThrough(index: number): W[] {
    const gone: W[] = [];
    for (const [i, w] of this.byIndex) {
      if (i > index) continue;
      this.byIndex.delete(i);
      gone.push(w);
    }
    return gone;
  }

  /** Removes and returns every waiter. */
  drain(): W[] {
    const all = [...this.byIndex.values()];
    this.byIndex.clear();
    return all;
  }
}
