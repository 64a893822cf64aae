import { z } from 'zod';
import { SAFETY_FILTERS, refusals } from '../scheduler/feasible.js';
import { antiAffinityClasses, hostLoad } from './capacity.js';
import type { Changes } from './changes.js';
import { defineCommand } from './command.js';
import type { OperationKind, VmRecord } from './model.js';
import { failOperation } from './operations.js';
import { str } from './schemas.js';
import { failoverThreshold } from './settings.js';
import type { FarmState } from './state.js';

/**
 * Failover in the state machine: a Down host's HA VMs placed elsewhere under a new generation,
 * the fencing token that makes every older command to the old host stale. The leader decides
 * when (after its fencing wait) and where (the scheduler); the state machine checks each
 * restart again against the committed state, and counts the failovers of each VM against
 * Failover Clustering's threshold.
 */

export type Priority = 'HIGH' | 'MEDIUM' | 'LOW' | 'NONE';

/** A VM's HA priority; unset is Medium (the proto's rule). */
export function priorityOf(vm: Pick<VmRecord, 'config'>): Priority {
  const p = vm.config.haPriority;
  return p === 'HA_PRIORITY_UNSPECIFIED' ? 'MEDIUM' : (p.replace('HA_PRIORITY_', '') as Priority);
}

/** Restart order: High, then Medium, then Low. */
export const PRIORITY_RANK: Record<Priority, number> = { HIGH: 0, MEDIUM: 1, LOW: 2, NONE: 3 };

/** Operations a failover ends: calls to the failed host that can no longer be made there. */
const ENDED_BY_FAILOVER = new Set<OperationKind>([
  'vm.change_state',
  'vm.update',
  'checkpoint.create',
  'checkpoint.apply',
  'checkpoint.delete',
  'checkpoint.rename',
]);

/**
 * Whether a VM of a failed host restarts elsewhere: undefined if it does, else why it stays.
 * HA VMs are those with a priority other than None that should be running; a VM in the middle
 * of work another controller owns (a migration) is left to it.
 */
export function whyNotRestarted(s: FarmState, vm: VmRecord): string | undefined {
  if (priorityOf(vm) === 'NONE') return 'its HA priority is None: it stays on its host';
  if (vm.desired !== 'VM_STATE_RUNNING') return 'it is not meant to run: it stays on its host';
  const op = vm.busyOpId ? s.operations.get(vm.busyOpId) : undefined;
  if (op && op.kind !== 'vm.create' && !ENDED_BY_FAILOVER.has(op.kind))
    return `operation ${op.id} (${op.kind}) owns the VM`;
  return undefined;
}

/** Why the failover threshold keeps the VM from another failover at `nowMs`, if it does. */
export function thresholdReached(s: FarmState, vmId: string, nowMs: number): string | undefined {
  const { max, periodMs } = failoverThreshold(s);
  const recent = (s.failovers.get(vmId) ?? []).filter((t) => t > nowMs - periodMs).length;
  if (recent < max) return undefined;
  const hours = Math.round((periodMs / 3_600_000) * 10) / 10;
  return `the failover threshold is reached: ${recent} failover${recent === 1 ? '' : 's'} in the last ${hours} h, at most ${max}; the VM is left Off`;
}

const restartSchema = z.object({ vmId: str(128), hostId: str(63), note: str(1024) });

const failover = defineCommand(
  'vm.failover',
  z.object({
    restarts: z.array(restartSchema).max(20_000),
    /** VMs past the threshold: left Off with the reason. */
    held: z.array(str(128)).max(20_000),
    /** VMs no host can take now: their status says why; the leader tries again. */
    stranded: z.array(z.object({ vmId: str(128), message: str(4096) })).max(20_000),
  }),
  (s, p, changes) => {
    const restarted: string[] = [];
    const rejected: { vmId: string; reason: string }[] = [];
    const held: string[] = [];
    const onDownHost = (vmId: string): VmRecord | undefined => {
      const vm = s.vms.get(vmId);
      const from = vm && s.hosts.get(vm.hostId);
      return from?.state === 'HOST_STATE_DOWN' && !whyNotRestarted(s, vm!) ? vm : undefined;
    };
    const ctx = { guests: s.guests, switches: s.switches, vcpuRatio: Infinity };
    for (const r of p.restarts) {
      const vm = onDownHost(r.vmId);
      if (!vm) {
        rejected.push({ vmId: r.vmId, reason: 'not an HA VM of a Down host' });
        continue;
      }
      const limit = thresholdReached(s, vm.id, changes.timeMs);
      if (limit) {
        hold(s, vm, limit, changes);
        held.push(vm.id);
        continue;
      }
      const host = s.hosts.get(r.hostId);
      const reasons = !host
        ? ['not found']
        : [
            ...refusals(SAFETY_FILTERS, ctx, host, hostLoad(s, host), {
              config: vm.config,
              classes: antiAffinityClasses(vm.config),
            }),
            ...(host.clusterStorage ? [] : ['does not reach cluster storage']),
          ];
      if (reasons.length > 0) {
        rejected.push({ vmId: vm.id, reason: `${r.hostId}: ${reasons.join(', ')}` });
        continue;
      }
      restart(s, vm, r.hostId, r.note, changes);
      restarted.push(vm.id);
    }
    for (const vmId of p.held) {
      const vm = onDownHost(vmId);
      const limit = vm && thresholdReached(s, vm.id, changes.timeMs);
      if (vm && limit) {
        hold(s, vm, limit, changes);
        held.push(vm.id);
      }
    }
    for (const { vmId, message } of p.stranded) {
      const vm = onDownHost(vmId);
      if (vm && vm.observed.message !== message)
        changes.vm({ ...vm, observed: { ...vm.observed, message, updatedAtMs: changes.timeMs } });
    }
    return { restarted, held, rejected };
  },
);

/**
 * Ends the VM's operation that waited on the failed host; a create that restarts goes on, on
 * the new host. Returns the VM's busy operation after that.
 */
function endOperation(
  s: FarmState,
  vm: VmRecord,
  message: string,
  changes: Changes,
  keepCreate: boolean,
): string {
  const op = vm.busyOpId ? s.operations.get(vm.busyOpId) : undefined;
  if (!op || (keepCreate && op.kind === 'vm.create')) return vm.busyOpId;
  failOperation(changes, op, { code: 'ABORTED', message });
  return '';
}

function restart(s: FarmState, vm: VmRecord, hostId: string, note: string, changes: Changes): void {
  const from = vm.hostId;
  const busyOpId = endOperation(
    s,
    vm,
    `host '${from}' went Down; VM '${vm.config.name}' is restarted on host '${hostId}'`,
    changes,
    true,
  );
  changes.vm({
    ...vm,
    hostId,
    generation: vm.generation + 1,
    placementNote: note,
    busyOpId,
    observed: {
      present: false,
      state: 'VM_STATE_OFF',
      heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
      message: `failed over from host '${from}' (Down); restarting on host '${hostId}'`,
      memoryAssignedBytes: 0,
      updatedAtMs: changes.timeMs,
    },
  });
  s.failovers.set(vm.id, [...(s.failovers.get(vm.id) ?? []), changes.timeMs].slice(-64));
}

/**
 * Past the threshold the VM stays on its Down host, Off (its host has fenced it) and meant to
 * be Off, with the reason; a user starts it again once its host is back or it has moved.
 */
function hold(s: FarmState, vm: VmRecord, reason: string, changes: Changes): void {
  const busyOpId = endOperation(s, vm, `host '${vm.hostId}' went Down; ${reason}`, changes, false);
  changes.vm({
    ...vm,
    desired: 'VM_STATE_OFF',
    busyOpId,
    observed: {
      ...vm.observed,
      state: 'VM_STATE_OFF',
      heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
      memoryAssignedBytes: 0,
      message: `host '${vm.hostId}' is Down and ${reason}`,
      updatedAtMs: changes.timeMs,
    },
  });
}

export const failoverCommands = [failover];
