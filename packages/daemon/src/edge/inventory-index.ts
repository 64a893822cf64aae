/** What an agent watcher tells of its inventory as it changes (AgentWatcher's `hook`). */
export interface InventoryHook {
  /** The inventory holds `vmId` (a new entry, or a newer description of it). */
  held(vmId: string): void;
  /** The inventory no longer holds `vmId`. */
  dropped(vmId: string): void;
}

const NONE: ReadonlySet<string> = new Set();

/**
 * Per host, the VMs its agent's inventory holds that the farm does not place on that host (placed
 * on another, or not in the farm): the only ones that can be stale copies (`staleCopies`). Kept
 * up to date as inventories and the farm's VMs change, so that looking for stale copies on a host
 * costs per such VM, not per VM of the host: the sweep went through every inventory each farm
 * minute (5.5% of a full 50,000-VM farm's simulation) and found nothing on almost every host.
 */
export class ForeignCopies {
  private readonly byHost = new Map<string, Set<string>>();
  /** Per VM, the hosts whose inventories hold it: one, or several (a move under way, an old copy). */
  private readonly holders = new Map<string, string | Set<string>>();

  /** `placedOn`: the host the farm places a VM on now (undefined: no such VM). */
  constructor(private readonly placedOn: (vmId: string) => string | undefined) {}

  /** The hook for one host's watcher. */
  hook(hostId: string): InventoryHook {
    return { held: (vmId) => this.held(hostId, vmId), dropped: (vmId) => this.dropped(hostId, vmId) };
  }

  held(hostId: string, vmId: string): void {
    const h = this.holders.get(vmId);
    if (h === undefined) this.holders.set(vmId, hostId);
    else if (typeof h === 'string') {
      if (h !== hostId) this.holders.set(vmId, new Set([h, hostId]));
    } else h.add(hostId);
    this.check(hostId, vmId);
  }

  dropped(hostId: string, vmId: string): void {
    const h = this.holders.get(vmId);
    if (h === hostId) this.holders.delete(vmId);
    else if (typeof h === 'object') {
      h.delete(hostId);
      if (h.size === 1) this.holders.set(vmId, h.values().next().value!);
    }
    this.unmark(hostId, vmId);
  }

  /** The farm's record of `vmId` changed or went: where it is foreign may have changed. */
  vmChanged(vmId: string): void {
    const h = this.holders.get(vmId);
    if (h === undefined) return;
    if (typeof h === 'string') this.check(h, vmId);
    else for (const hostId of h) this.check(hostId, vmId);
  }

  /** The farm's state was replaced (a snapshot): no events say which VMs changed. */
  recheckAll(): void {
    for (const vmId of this.holders.keys()) this.vmChanged(vmId);
  }

  /** The VMs `hostId`'s inventory holds that the farm places elsewhere or not at all. */
  of(hostId: string): ReadonlySet<string> {
    return this.byHost.get(hostId) ?? NONE;
  }

  private check(hostId: string, vmId: string): void {
    if (this.placedOn(vmId) === hostId) this.unmark(hostId, vmId);
    else {
      let set = this.byHost.get(hostId);
      if (!set) this.byHost.set(hostId, (set = new Set()));
      set.add(vmId);
    }
  }

  private unmark(hostId: string, vmId: string): void {
    const set = this.byHost.get(hostId);
    if (!set?.delete(vmId) || set.size > 0) return;
    this.byHost.delete(hostId);
  }
}

/**
 * The VMs the reconciler last found at rest, with how many of each host's VMs are: a sweep of a
 * host whose VMs are all at rest has nothing to look at, and is passed by without going through
 * them (the sweep's pass over every VM each farm minute was 3.7% of a full 50,000-VM farm's
 * simulation). Each VM counts on the host the farm placed it on when it came to rest; the leader
 * takes it out of here (`delete`) when its record changes, so that host is still its host.
 */
export class RestingVms {
  private readonly hostOf = new Map<string, string>();
  private readonly perHost = new Map<string, number>();

  has(vmId: string): boolean {
    return this.hostOf.has(vmId);
  }

  /** `vmId`, placed on `hostId` (undefined: not in the farm), is at rest. */
  add(vmId: string, hostId: string | undefined): void {
    this.delete(vmId);
    if (hostId === undefined) return;
    this.hostOf.set(vmId, hostId);
    this.perHost.set(hostId, (this.perHost.get(hostId) ?? 0) + 1);
  }

  delete(vmId: string): void {
    const hostId = this.hostOf.get(vmId);
    if (hostId === undefined) return;
    this.hostOf.delete(vmId);
    const n = this.perHost.get(hostId)! - 1;
    if (n === 0) this.perHost.delete(hostId);
    else this.perHost.set(hostId, n);
  }

  clear(): void {
    this.hostOf.clear();
    this.perHost.clear();
  }

  /** Whether all `placed` VMs of `hostId` (the farm's VMs on it) are at rest. */
  allAtRest(hostId: string, placed: ReadonlySet<string>): boolean {
    return (this.perHost.get(hostId) ?? 0) === placed.size;
  }
}
