import type { pb } from '@hyperfarm/api';
import type { FarmState, HeartbeatName, VmRecord, VmStateName } from '../fsm/index.js';

/** A VM as its agent last described it (WatchEvents, or the answer to a call). */
export interface AgentVmView {
  state: VmStateName;
  heartbeat: HeartbeatName;
  message: string;
  memoryAssignedBytes: number;
  generation: number;
  macs: string[];
  /** The agent's sequence number of the VM's last change: orders what the agent said. */
  revision: number;
}

/** What the leader has read of one agent since it connected. */
export interface HostInventory {
  /** The agent's full list of VMs has been read since the stream (re)connected. */
  synced: boolean;
  vms: ReadonlyMap<string, AgentVmView>;
}

/** The report a vm.observed command carries (the shape the state machine checks). */
export interface VmReport {
  vmId: string;
  hostId: string;
  generation: number;
  present: boolean;
  state: VmStateName;
  heartbeat: HeartbeatName;
  message: string;
  memoryAssignedBytes: number;
  macs: string[];
}

export function agentView(vm: pb.Vm__Output): AgentVmView {
  return {
    state: vm.status?.state ?? 'VM_STATE_OFF',
    heartbeat: vm.status?.heartbeat ?? 'HEARTBEAT_STATUS_NO_CONTACT',
    message: vm.status?.message ?? '',
    memoryAssignedBytes: vm.status?.memoryAssignedBytes ?? 0,
    generation: vm.status?.generation ?? 0,
    macs: (vm.config?.networkAdapters ?? []).map((n) => n.macAddress),
    revision: vm.revision,
  };
}

export function reportOf(vmId: string, hostId: string, view: AgentVmView | undefined): VmReport {
  return view
    ? {
        vmId,
        hostId,
        generation: view.generation,
        present: true,
        state: view.state,
        heartbeat: view.heartbeat,
        message: view.message,
        memoryAssignedBytes: view.memoryAssignedBytes,
        macs: view.macs,
      }
    : {
        vmId,
        hostId,
        generation: 0,
        present: false,
        state: 'VM_STATE_OFF',
        heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
        message: '',
        memoryAssignedBytes: 0,
        macs: [],
      };
}

/**
 * The observed-state controller: for each VM placed on a host whose inventory is current, a
 * report when what the agent says differs from what the log holds (of every VM, or of `only`
 * those that changed). Only changes reach the log, batched; copies with another generation (left
 * behind by a move) are not the farm's VM.
 */
export function observedReports(
  s: FarmState,
  inventories: ReadonlyMap<string, HostInventory>,
  only?: Iterable<string>,
): VmReport[] {
  const reports: VmReport[] = [];
  const look = (vmId: string) => {
    const vm = s.vms.get(vmId);
    const inv = vm && inventories.get(vm.hostId);
    if (!vm || !inv?.synced || s.hosts.get(vm.hostId)?.state === 'HOST_STATE_DOWN') return;
    if (handingOver(s, vm)) return;
    const view = inv.vms.get(vmId);
    if (view && view.generation !== vm.generation) return;
    if (differs(vm, view)) reports.push(reportOf(vmId, vm.hostId, view));
  };
  // The sweep walks every VM of the farm: host by host, without copying the ids first.
  if (only) for (const vmId of only) look(vmId);
  else for (const h of inventories.keys()) for (const vmId of s.vmsByHost.get(h) ?? []) look(vmId);
  return reports;
}

/**
 * The VM's handover is committed and the target not yet told: the log has it on the target, whose
 * agent still describes the import it holds (not running yet). Reported now, the VM would show
 * Off there between the commit and the agent's next event (a drill saw it Off after its live
 * migration); the migration's end settles it, and the VM is looked at again then.
 */
function handingOver(s: FarmState, vm: VmRecord): boolean {
  const op = vm.busyOpId ? s.operations.get(vm.busyOpId) : undefined;
  if (op?.params.kind !== 'vm.migrate') return false;
  return s.migrations.get(op.params.migrationId)?.phase === 'MIGRATION_PHASE_RESTORING';
}

/** What the agent says of the VM (nothing: not there) is not what the log holds. */
export function differs(vm: VmRecord, view: AgentVmView | undefined): boolean {
  const o = vm.observed;
  if (!view) return o.present;
  if (!o.present) return true;
  if (o.state !== view.state || o.heartbeat !== view.heartbeat || o.message !== view.message) return true;
  if (o.memoryAssignedBytes !== view.memoryAssignedBytes) return true;
  return vm.config.networkAdapters.some(
    (n, i) => !n.staticMac && view.macs[i] !== undefined && n.macAddress !== view.macs[i],
  );
}
