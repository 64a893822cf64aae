import { status, type pb } from '@hyperfarm/api';
import { hostUsage } from './capacity.js';
import { MAC_BLOCK_SIZE, macBlockStart } from './hosts.js';
import { nlbClusterMessage } from './network.js';
import type {
  CheckpointRecord,
  FarmEvent,
  HostRecord,
  MigrationRecord,
  OperationRecord,
  SwitchRecord,
  VmRecord,
} from './model.js';
import { emptyState, type FarmState } from './state.js';

/** The records as the API shows them. */

/** What the leader knows of a host between committed changes: its last lease renewal. */
export interface HostLiveView {
  lastHeartbeatMs: number;
  cpuPercent: number;
}

export function vmView(vm: VmRecord): pb.Vm__Output {
  return {
    id: vm.id,
    config: vm.config as pb.VmConfig__Output,
    desiredState: vm.desired,
    status: {
      state: vm.observed.state,
      hostId: vm.hostId,
      generation: vm.generation,
      heartbeat: vm.observed.heartbeat,
      cpuPercent: 0,
      memoryAssignedBytes: vm.observed.memoryAssignedBytes,
      uptimeMs: 0,
      message: vm.observed.message,
      updatedAtMs: vm.observed.updatedAtMs,
      placementNote: vm.placementNote,
    },
    createdAtMs: vm.createdAtMs,
    revision: vm.revision,
  };
}

export function hostView(s: FarmState, h: HostRecord, live?: HostLiveView): pb.Host__Output {
  const usage = hostUsage(s, h);
  return {
    id: h.id,
    name: h.name,
    address: h.address,
    state: h.state,
    capacity: { ...h.capacity },
    usage: {
      memoryUsedBytes: usage.memoryBytes,
      runningVms: usage.running,
      vms: s.vmsByHost.get(h.id)?.size ?? 0,
      cpuPercent: live?.cpuPercent ?? 0,
    },
    limits: { ...h.limits },
    maintenance: h.maintenance,
    labels: { ...h.labels },
    lastHeartbeatMs: live?.lastHeartbeatMs ?? 0,
    macPoolStart: macBlockStart(h.macBlock),
    macPoolSize: MAC_BLOCK_SIZE,
    stateReason: h.stateReason,
    guestOsIds: [...h.guestOsIds],
    clusterStorage: h.clusterStorage,
  };
}

export function checkpointView(c: CheckpointRecord): pb.Checkpoint__Output {
  return {
    id: c.id,
    vmId: c.vmId,
    name: c.name,
    parentId: c.parentId,
    createdAtMs: c.createdAtMs,
    includesMemory: c.includesMemory,
    vmState: c.vmState,
  };
}

export function migrationView(m: MigrationRecord): pb.Migration__Output {
  return {
    id: m.id,
    vmId: m.vmId,
    sourceHostId: m.sourceHostId,
    targetHostId: m.targetHostId,
    kind: m.kind,
    phase: m.phase,
    progressPercent: m.progress,
    bytesTransferred: m.bytesTransferred,
    rounds: m.rounds,
    downtimeMs: m.downtimeMs,
    error: m.error,
    startedAtMs: m.startedAtMs,
    finishedAtMs: m.finishedAtMs,
    fromGeneration: m.fromGeneration,
    reason: m.reason,
    operationId: m.opId,
    throttlePercent: m.throttlePercent,
    decision: m.decision,
  };
}

export function operationView(op: OperationRecord): pb.Operation {
  const view: pb.Operation = {
    id: op.id,
    kind: op.kind,
    targetId: op.targetId,
    done: op.done,
    progressPercent: op.progress,
    message: op.message,
    createdAtMs: op.createdAtMs,
    updatedAtMs: op.updatedAtMs,
  };
  if (op.error) view.error = { code: status[op.error.code], message: op.error.message };
  if (op.result?.kind === 'vm') view.vm = vmView(op.result.record);
  if (op.result?.kind === 'checkpoint') view.checkpoint = checkpointView(op.result.record);
  if (op.result?.kind === 'migration') view.migration = migrationView(op.result.record);
  // A drained host holds no VMs: its usage shows none.
  if (op.result?.kind === 'host') view.host = hostView(emptyState(), op.result.record);
  return view;
}

export function switchView(w: SwitchRecord): pb.VirtualSwitch__Output {
  return {
    id: w.id,
    name: w.name,
    type: w.type,
    hostId: w.hostId,
    macAgingSeconds: w.macAgingSeconds,
    hostAddress: w.hostAddress,
  };
}

export function eventView(s: FarmState, e: FarmEvent): pb.Event {
  const base = { revision: e.revision, type: e.type, kind: e.kind, id: e.id, timeMs: e.timeMs };
  switch (e.kind) {
    case 'RESOURCE_KIND_HOST':
      return { ...base, host: hostView(s, e.resource) };
    case 'RESOURCE_KIND_VM':
      return { ...base, vm: vmView(e.resource) };
    case 'RESOURCE_KIND_CHECKPOINT':
      return { ...base, checkpoint: checkpointView(e.resource) };
    case 'RESOURCE_KIND_OPERATION':
      return { ...base, operation: operationView(e.resource) };
    case 'RESOURCE_KIND_MIGRATION':
      return { ...base, migration: migrationView(e.resource) };
    case 'RESOURCE_KIND_SWITCH':
      return { ...base, switch: switchView(e.resource) };
    case 'RESOURCE_KIND_NLB_CLUSTER':
      return { ...base, nlbCluster: nlbClusterMessage(e.resource) };
  }
}
