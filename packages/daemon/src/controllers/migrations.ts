import {
  migrationFinal,
  type FarmState,
  type MigrationKindName,
  type MigrationRecord,
  type VmRecord,
} from '../fsm/index.js';
import { activeCount, leaveRefusal } from '../fsm/index.js';
import { planPlacements, type SchedulerOptions } from '../scheduler/plan.js';

/**
 * The migration controller's pure parts: which pending migrations may begin (at most `limit`
 * under way per host, as source or target: Hyper-V's MaximumVirtualMachineMigrations, 2 by
 * default), which are under way, and a drain's plan.
 */

/** Unfinished migrations, oldest request first. */
export function unfinishedMigrations(s: FarmState): MigrationRecord[] {
  const out: MigrationRecord[] = [];
  for (const ids of s.incoming.values()) for (const id of ids) out.push(s.migrations.get(id)!);
  return out.filter((m) => !migrationFinal(m)).sort(migrationOrder);
}

const pending = (m: MigrationRecord): number => (m.phase === 'MIGRATION_PHASE_PENDING' ? 0 : 1);

/**
 * A total order, so the result does not depend on the order the state's maps were filled in (the
 * order hosts first had a migration, which differs between a replica that applied the log and
 * one restored from a snapshot): the request's time, pending ones first and among them the
 * revision they were recorded at (the order they were asked in), then the id. Before, pending
 * and under-way ones were compared by id and pending ones by revision alone: not transitive,
 * and a drain's migrations (one revision) kept the maps' order.
 */
export const migrationOrder = (a: MigrationRecord, b: MigrationRecord): number =>
  a.startedAtMs - b.startedAtMs ||
  pending(a) - pending(b) ||
  (pending(a) === 0 ? a.revision - b.revision : 0) ||
  (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** The pending migrations that may begin now, in the order they were asked for. */
export function migrationsToStart(
  s: FarmState,
  limit: number,
  unfinished: readonly MigrationRecord[] = unfinishedMigrations(s),
): MigrationRecord[] {
  // Counted per host as a host comes up, not over every migration of the farm at each run.
  const counts = new Map<string, number>();
  const count = (h: string): number => {
    let n = counts.get(h);
    if (n === undefined) counts.set(h, (n = activeCount(s, h)));
    return n;
  };
  const out: MigrationRecord[] = [];
  for (const m of unfinished) {
    if (m.phase !== 'MIGRATION_PHASE_PENDING') continue;
    const hosts = [m.sourceHostId, m.targetHostId];
    if (hosts.some((h) => count(h) >= limit)) continue;
    for (const h of hosts) counts.set(h, count(h) + 1);
    out.push(m);
  }
  return out;
}

/** The kind a move of `vm` takes when the caller did not say: live for a running VM. */
export function defaultKind(requested: MigrationKindName | undefined): MigrationKindName {
  return requested ?? 'MIGRATION_KIND_LIVE';
}

const PRIORITY_ORDER: Record<VmRecord['config']['haPriority'], number> = {
  HA_PRIORITY_HIGH: 0,
  HA_PRIORITY_MEDIUM: 1,
  HA_PRIORITY_UNSPECIFIED: 1,
  HA_PRIORITY_LOW: 2,
  HA_PRIORITY_NONE: 3,
};

/** The state as placement should see it for a VM leaving `hostId`: that host takes nothing. */
function withoutHost(s: FarmState, hostId: string): FarmState {
  const host = s.hosts.get(hostId);
  return host ? { ...s, hosts: new Map(s.hosts).set(hostId, { ...host, maintenance: true }) } : s;
}

/** The host placement picks for a VM that moves off its own: the host, or why none fits. */
export function pickTarget(
  s: FarmState,
  vm: VmRecord,
  opts: SchedulerOptions,
): { hostId: string } | { reason: string } {
  // The host it leaves closed for this plan only: a copy of the state (withoutHost) would be
  // weighed host by host afresh, where the state's own is kept between plans.
  const plan = planPlacements(s, [{ vmId: vm.id, config: vm.config, pinnedHostId: '' }], opts, [], vm.hostId);
  const placed = plan.placements[0];
  return placed ? { hostId: placed.hostId } : { reason: plan.failures[0]?.message ?? 'no host fits' };
}

export interface DrainPlan {
  moves: { vmId: string; targetHostId: string; kind: MigrationKindName }[];
  stranded: { vmId: string; reason: string }[];
}

/**
 * Where each VM of a host goes when it drains, in priority order (High, Medium, Low, None), each
 * placement seeing the ones before it: High and Medium by live migration, Low and None by quick
 * (Windows Server 2012's drain), Off and Saved VMs by handing their configuration over. A VM
 * that cannot move (busy, in a passing state, no host fits) is stranded, with the reason.
 */
export function planDrain(s: FarmState, hostId: string, opts: SchedulerOptions): DrainPlan {
  const host = s.hosts.get(hostId);
  const plan: DrainPlan = { moves: [], stranded: [] };
  if (!host) return plan;
  const view = withoutHost(s, hostId);
  const vms = [...(s.vmsByHost.get(hostId) ?? [])]
    .map((id) => s.vms.get(id)!)
    .sort(
      (a, b) =>
        PRIORITY_ORDER[a.config.haPriority] - PRIORITY_ORDER[b.config.haPriority] ||
        a.createdAtMs - b.createdAtMs ||
        (a.id < b.id ? -1 : 1),
    );
  const movable: VmRecord[] = [];
  for (const vm of vms) {
    const refused = leaveRefusal(view, vm);
    if (refused) plan.stranded.push({ vmId: vm.id, reason: refused });
    else movable.push(vm);
  }
  const placed = planPlacements(
    view,
    movable.map((vm) => ({ vmId: vm.id, config: vm.config, pinnedHostId: '' })),
    opts,
  );
  const failures = new Map(placed.failures.map((f) => [f.vmId, f.message]));
  const targets = new Map(placed.placements.map((p) => [p.vmId, p.hostId]));
  for (const vm of movable) {
    const target = targets.get(vm.id);
    if (!target) {
      plan.stranded.push({ vmId: vm.id, reason: failures.get(vm.id) ?? 'no host fits' });
      continue;
    }
    const low = vm.config.haPriority === 'HA_PRIORITY_LOW' || vm.config.haPriority === 'HA_PRIORITY_NONE';
    plan.moves.push({
      vmId: vm.id,
      targetHostId: target,
      kind: low ? 'MIGRATION_KIND_QUICK' : 'MIGRATION_KIND_LIVE',
    });
  }
  return plan;
}
