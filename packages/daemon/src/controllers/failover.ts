import {
  PRIORITY_RANK,
  priorityOf,
  thresholdReached,
  whyNotRestarted,
  type FarmState,
  type HostRecord,
  type Priority,
  type VmRecord,
} from '../fsm/index.js';
import { planPlacements, type PlanItem, type SchedulerOptions } from '../scheduler/plan.js';
import type { HostInventory } from './observed.js';

/**
 * The failover planner: where the HA VMs of failed hosts restart, by priority (High, then
 * Medium, then Low), through the same scheduler as placement, so capacity and anti-affinity hold
 * as they do for any placement. A pure function of the state: the failover controller runs it on
 * the committed state for the hosts it has fenced; WhatIfHostFailure and admission control run
 * it on a copy in which some hosts are Down, and commit nothing.
 */

export interface FailoverPlan {
  /** In restart order. */
  restarts: { vmId: string; hostId: string; note: string; priority: Priority }[];
  /** HA VMs no host can take, each with the reason. */
  stranded: { vmId: string; priority: Priority; reason: string }[];
  /** HA VMs past the failover threshold: they stay Off. */
  held: { vmId: string; priority: Priority; reason: string }[];
  /** VMs of the failed hosts that are not restarted: priority None, not meant to run, busy. */
  left: { vmId: string; reason: string }[];
}

export function planFailover(
  s: FarmState,
  failedHostIds: readonly string[],
  nowMs: number,
  opts: SchedulerOptions,
): FailoverPlan {
  const plan: FailoverPlan = { restarts: [], stranded: [], held: [], left: [] };
  const candidates: VmRecord[] = [];
  for (const hostId of failedHostIds) {
    const host = s.hosts.get(hostId);
    for (const vmId of s.vmsByHost.get(hostId) ?? []) {
      const vm = s.vms.get(vmId)!;
      const why = whyNotRestarted(s, vm);
      if (why) {
        plan.left.push({ vmId, reason: why });
        continue;
      }
      const priority = priorityOf(vm);
      const limit = thresholdReached(s, vmId, nowMs);
      if (limit) plan.held.push({ vmId, priority, reason: limit });
      else if (!host?.clusterStorage)
        plan.stranded.push({
          vmId,
          priority,
          reason: `its files are on host '${hostId}', which has no cluster storage`,
        });
      else candidates.push(vm);
    }
  }
  candidates.sort(restartOrder);
  const items: PlanItem[] = candidates.map((vm) => ({ vmId: vm.id, config: vm.config, pinnedHostId: '' }));
  // The failed hosts are no candidates, even if placement would wait for them to come back.
  const failed = new Set(failedHostIds);
  const placed = planPlacements(
    withHosts(s, (h) => h.clusterStorage && !failed.has(h.id)),
    items,
    opts,
  );
  const byId = new Map(candidates.map((vm) => [vm.id, vm]));
  for (const p of placed.placements)
    plan.restarts.push({
      vmId: p.vmId,
      hostId: p.hostId,
      note: p.note,
      priority: priorityOf(byId.get(p.vmId)!),
    });
  for (const f of placed.failures)
    plan.stranded.push({ vmId: f.vmId, priority: priorityOf(byId.get(f.vmId)!), reason: f.message });
  const decided = new Set([...placed.placements, ...placed.failures].map((p) => p.vmId));
  for (const vm of candidates)
    if (!decided.has(vm.id))
      plan.stranded.push({
        vmId: vm.id,
        priority: priorityOf(vm),
        reason: `no host that is Up can take VM '${vm.config.name}' now`,
      });
  plan.stranded.sort((a, b) => PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority]);
  return plan;
}

/** High before Medium before Low; then the oldest VM first, so the order is the same every run. */
function restartOrder(a: VmRecord, b: VmRecord): number {
  return (
    PRIORITY_RANK[priorityOf(a)] - PRIORITY_RANK[priorityOf(b)] ||
    a.createdAtMs - b.createdAtMs ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/**
 * A read-only view of the state with only the hosts `keep` accepts (and, for a what-if, some
 * hosts Down): the scheduler reads `hosts` and the VMs on them, nothing else changes.
 */
export function withHosts(
  s: FarmState,
  keep: (h: HostRecord) => boolean,
  down: ReadonlySet<string> = new Set(),
): FarmState {
  const hosts = new Map<string, HostRecord>();
  for (const [id, h] of s.hosts) {
    if (!keep(h)) continue;
    hosts.set(id, down.has(id) ? { ...h, state: 'HOST_STATE_DOWN' } : h);
  }
  return { ...s, hosts };
}

/**
 * The failover controller's round: the plan for the Down hosts whose leases have surely run out
 * (`fenced`), as the commands that carry it out. Stranded VMs are reported only when their reason
 * changes, so a farm that cannot take them does not fill the log.
 */
export function failoverRound(
  s: FarmState,
  fenced: readonly string[],
  nowMs: number,
  opts: SchedulerOptions,
): {
  restarts: { vmId: string; hostId: string; note: string }[];
  held: string[];
  stranded: { vmId: string; message: string }[];
} {
  const down = fenced.filter((id) => s.hosts.get(id)?.state === 'HOST_STATE_DOWN');
  const plan = planFailover(s, down, nowMs, opts);
  return {
    restarts: plan.restarts.map(({ vmId, hostId, note }) => ({ vmId, hostId, note })),
    held: plan.held.map((h) => h.vmId),
    stranded: plan.stranded
      .map((x) => ({ vmId: x.vmId, message: `waiting to restart on another host: ${x.reason}` }))
      .filter((x) => s.vms.get(x.vmId)?.observed.message !== x.message),
  };
}

/**
 * Copies of VMs that hosts hold under an older generation than the farm's, while the farm has
 * placed the VM on another host (a failover, a move): each is dropped with DropStaleVm, never
 * started. Only hosts that are Up and whose inventory the leader has read are asked.
 *
 * `foreign`, when given, names per host the VMs of its inventory that the farm does not place on
 * it (at least those): the only ones that can be stale. A host with none is passed by, one with
 * one has that one looked at; the inventory is gone through (in its order, the order the copies
 * are dropped in) only when there are several.
 */
export function staleCopies(
  s: FarmState,
  inventories: ReadonlyMap<string, HostInventory>,
  hosts: Iterable<string>,
  foreign?: (hostId: string) => ReadonlySet<string>,
): { hostId: string; vmId: string; generation: number }[] {
  const out: { hostId: string; vmId: string; generation: number }[] = [];
  const stale = (hostId: string, vmId: string, view: { generation: number } | undefined) => {
    const vm = s.vms.get(vmId);
    if (view && vm && vm.hostId !== hostId && vm.generation > view.generation)
      out.push({ hostId, vmId, generation: vm.generation });
  };
  for (const hostId of hosts) {
    const inv = inventories.get(hostId);
    if (!inv?.synced || s.hosts.get(hostId)?.state !== 'HOST_STATE_UP') continue;
    const few = foreign?.(hostId);
    if (few?.size === 0) continue;
    if (few?.size === 1) {
      const vmId: string = few.values().next().value!;
      stale(hostId, vmId, inv.vms.get(vmId));
      continue;
    }
    for (const [vmId, view] of inv.vms) stale(hostId, vmId, view);
  }
  return out;
}

export interface FencingConfig {
  /** The lease each grant gives. */
  leaseMs: number;
  /** Past the lease's end: clock drift, an agent late to notice. */
  marginMs: number;
}

/**
 * The Down hosts with VMs whose last lease has surely run out at `nowMs` (they fenced
 * themselves), and the earliest time another will have. A lease runs on the agent from when it
 * took the grant, which is before its answer arrived here, and no grant promises more than a
 * lease past the instant it was sent to count from (`leaseFromMs`: per host, the latest of
 * both this leader knows); a leader that has no answer from a host counts a full lease from its
 * own election, since the grants of the leader before it are not in the log.
 */
export function fencedHosts(
  s: FarmState,
  leaseFromMs: ReadonlyMap<string, number>,
  leaderSinceMs: number,
  nowMs: number,
  cfg: FencingConfig,
): { fenced: string[]; nextMs: number } {
  const fenced: string[] = [];
  let nextMs = Infinity;
  // Only the hosts that are not Up, in the order of all hosts: the controllers run this up to 50
  // times a second, and a farm's hosts are nearly all Up.
  for (const id of s.hostsNotUp) {
    const host = s.hosts.get(id)!;
    if (host.state !== 'HOST_STATE_DOWN' || !s.vmsByHost.get(host.id)?.size) continue;
    const ends =
      Math.max(leaseFromMs.get(host.id) ?? leaderSinceMs, leaderSinceMs) + cfg.leaseMs + cfg.marginMs;
    if (nowMs >= ends) fenced.push(host.id);
    else nextMs = Math.min(nextMs, ends);
  }
  return { fenced, nextMs };
}
