import type { PendingPlacement } from '../scheduler/index.js';

/**
 * The placements this daemon has proposed and not yet seen applied. The next plan counts them as
 * taken (planPlacements' `pending`): the create path and the placement controller plan while
 * each other's entries are still in the log, and without this both would pick the same room,
 * leaving the state machine to refuse one and the VM to wait another round. Counting one twice
 * for the moment between its apply and its removal here only leaves room unused.
 */
export class PlacementsInFlight {
  private readonly held = new Set<PendingPlacement & { vmId: string }>();
  private readonly vms = new Map<string, number>();

  values(): Iterable<PendingPlacement> {
    return this.held;
  }

  /**
   * Whether a placement of the VM is on its way: the controller leaves it alone meanwhile (its
   * create may apply an entry ahead of its placement), and takes it up if that one is refused.
   */
  has(vmId: string): boolean {
    return this.vms.has(vmId);
  }

  /** Holds `placements` until `commit` settles, and returns what it returned. */
  async during<T>(
    placements: readonly (PendingPlacement & { vmId: string })[],
    commit: Promise<T>,
  ): Promise<T> {
    const mine = placements.map((p) => ({ vmId: p.vmId, hostId: p.hostId, config: p.config }));
    for (const p of mine) {
      this.held.add(p);
      this.vms.set(p.vmId, (this.vms.get(p.vmId) ?? 0) + 1);
    }
    try {
      return await commit;
    } finally {
      for (const p of mine) {
        this.held.delete(p);
        const n = this.vms.get(p.vmId)! - 1;
        if (n === 0) this.vms.delete(p.vmId);
        else this.vms.set(p.vmId, n);
      }
    }
  }
}
