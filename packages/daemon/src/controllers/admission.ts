import {
  priorityOf,
  someNames,
  vmMemoryCost,
  type FarmState,
  type VmConfig,
  type VmRecord,
} from '../fsm/index.js';
import { planPlacements, type SchedulerOptions } from '../scheduler/plan.js';
import { whatIfHostFailure } from './whatif.js';

/**
 * Admission control, as vSphere HA's "host failures cluster tolerates": an HA VM may be created
 * running or started only if, with it running, the loss of the `hostFailuresToTolerate` hosts
 * that hold the most HA memory would still leave every HA VM somewhere to restart. The answer
 * comes from the failover planner itself (whatIfHostFailure), so it counts capacity,
 * anti-affinity and cluster storage exactly as a failover would.
 */
export interface AdmissionAsk {
  /** The VM's id; for a VM not created yet, any id no VM has. */
  vmId: string;
  config: VmConfig;
  /** Its host; '' for a VM not placed yet (placement's choice is assumed). */
  hostId: string;
}

/** Why admitting the VM would break the setting, or undefined when it would not. */
export function admissionRefusal(
  s: FarmState,
  ask: AdmissionAsk,
  nowMs: number,
  opts: SchedulerOptions,
): string | undefined {
  const k = s.ha.hostFailuresToTolerate;
  if (k === 0 || priorityOf(ask) === 'NONE') return undefined;
  const hostId =
    ask.hostId ||
    planPlacements(s, [{ vmId: ask.vmId, config: ask.config, pinnedHostId: '' }], opts).placements[0]?.hostId;
  // No host takes it at all: placement refuses it with its own reasons.
  if (!hostId) return undefined;
  const view = withRunning(s, ask, hostId);
  const setting = `admission control: the farm must tolerate ${k} host failure${k === 1 ? '' : 's'}`;
  if (k >= view.hosts.size)
    return `${setting}, and it has ${view.hosts.size} host${view.hosts.size === 1 ? '' : 's'}`;
  const failed = mostHaMemory(view, k);
  const plan = whatIfHostFailure(view, failed, nowMs, opts);
  if (plan.stranded.length === 0) return undefined;
  const names = plan.stranded.map((x) => `'${view.vms.get(x.vmId)!.config.name}'`);
  const first = plan.stranded[0]!;
  return `${setting}; with VM '${ask.config.name}' running on host '${hostId}', if host${k === 1 ? '' : 's'} ${failed.map((h) => `'${h}'`).join(', ')} failed, ${plan.stranded.length} HA VM${plan.stranded.length === 1 ? '' : 's'} could not restart (${someNames(names)}): ${first.reason}`;
}

/** The state as it would be with the VM placed on `hostId` and meant to run. */
function withRunning(s: FarmState, ask: AdmissionAsk, hostId: string): FarmState {
  const prev = s.vms.get(ask.vmId);
  const vm: VmRecord = {
    ...(prev ?? {
      id: ask.vmId,
      placementNote: '',
      observed: {
        present: false,
        state: 'VM_STATE_OFF',
        heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
        message: '',
        memoryAssignedBytes: 0,
        updatedAtMs: 0,
      },
      busyOpId: '',
      checkpointCurrentId: '',
      createdAtMs: Number.MAX_SAFE_INTEGER,
      revision: 0,
      generation: 0,
    }),
    config: ask.config,
    hostId,
    desired: 'VM_STATE_RUNNING',
  };
  const vms = new Map(s.vms).set(vm.id, vm);
  const vmsByHost = new Map(s.vmsByHost);
  if (prev?.hostId)
    vmsByHost.set(
      prev.hostId,
      new Set([...(s.vmsByHost.get(prev.hostId) ?? [])].filter((id) => id !== vm.id)),
    );
  vmsByHost.set(hostId, new Set(s.vmsByHost.get(hostId)).add(vm.id));
  return { ...s, vms, vmsByHost };
}

/** The `k` hosts holding the most memory of HA VMs meant to run (ties: by id). */
function mostHaMemory(s: FarmState, k: number): string[] {
  const held = [...s.hosts.values()].map((h) => {
    let bytes = 0;
    for (const id of s.vmsByHost.get(h.id) ?? []) {
      const vm = s.vms.get(id)!;
      if (priorityOf(vm) !== 'NONE' && vm.desired === 'VM_STATE_RUNNING') bytes += vmMemoryCost(h, vm.config);
    }
    return { id: h.id, bytes };
  });
  held.sort((a, b) => b.bytes - a.bytes || (a.id < b.id ? -1 : 1));
  return held.slice(0, k).map((h) => h.id);
}
