import { awaitsPlacement, type FarmState } from '../fsm/index.js';
import {
  planPlacements,
  type PendingPlacement,
  type Plan,
  type PlanItem,
  type SchedulerOptions,
} from '../scheduler/plan.js';

/**
 * The placement controller: the VMs waiting for a host, oldest first, planned together so that
 * one round never overcommits a host; the state machine re-checks each placement on commit.
 * VMs in `skip` (known to wait for a host to come back) are left out, so that they never hold
 * up the ones behind them. `pending` are placements proposed and not applied yet (they count as
 * taken).
 */
export function placementRound(
  s: FarmState,
  opts: SchedulerOptions,
  maxVms: number,
  skip: { has(vmId: string): boolean } = new Set<string>(),
  pending: Iterable<PendingPlacement> = [],
): Plan {
  const items: PlanItem[] = [];
  for (const id of s.unplaced) {
    if (items.length >= maxVms) break;
    if (skip.has(id)) continue;
    const vm = s.vms.get(id)!;
    if (!awaitsPlacement(s, vm)) continue;
    const op = s.operations.get(vm.busyOpId)!;
    const pinnedHostId = op.params.kind === 'vm.create' ? op.params.pinnedHostId : '';
    items.push({ vmId: vm.id, config: vm.config, pinnedHostId });
  }
  return items.length === 0
    ? { placements: [], failures: [], waiting: [] }
    : planPlacements(s, items, opts, pending);
}
