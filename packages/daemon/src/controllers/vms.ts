import {
  STABLE_VM_STATES,
  type FarmState,
  type VmActionName,
  type VmRecord,
  type VmStateName,
} from '../fsm/index.js';
import type { AgentAction } from './actions.js';
import { differs, type HostInventory, type VmReport } from './observed.js';

/**
 * The VM reconciler: a pure function of the state and what the leader has in flight, returning
 * the agent calls that move each VM toward what is wanted (of every VM, or of `only` those that
 * changed). It asks nothing of a host it cannot
 * vouch for (not Up, or whose VM inventory the leader has not read since it connected), nor of a
 * VM with a call in flight or backing off after a failure. Every call is idempotent and fenced
 * by the VM's generation, so running it again (after a leader change) is harmless.
 */
export interface ReconcileInput {
  /**
   * Hosts whose agent's VMs the leader has read since connecting: their reports are current. A
   * lookup, not a set: the leader answers it from its watchers rather than copying them per run.
   */
  synced: { has(hostId: string): boolean };
  /** VMs with an agent call in flight. */
  inFlight: { has(vmId: string): boolean };
  /** VMs not to touch before the given time (after a failed call). */
  backoffUntilMs: { get(vmId: string): number | undefined };
  nowMs: number;
}

export function reconcileVms(s: FarmState, input: ReconcileInput, only?: Iterable<string>): AgentAction[] {
  const actions: AgentAction[] = [];
  for (const vmId of only ?? vmsOnSyncedHosts(s, input.synced)) {
    const vm = s.vms.get(vmId);
    if (!vm || !input.synced.has(vm.hostId) || s.hosts.get(vm.hostId)?.state !== 'HOST_STATE_UP') continue;
    if (input.inFlight.has(vmId) || (input.backoffUntilMs.get(vmId) ?? 0) > input.nowMs) continue;
    const action = next(s, vm);
    if (action) actions.push(action);
  }
  return actions;
}

/**
 * The step that follows a create at once, without waiting for the create's report to reach the
 * log: the reconciler's next step for the VM as the host answered the create (a start, for a VM
 * that should run, such as one failing over). Only for a VM still placed there under the same
 * generation, free or busy with its create; anything else waits for the report as usual. The
 * step carries the same generation as the create, so it is fenced exactly as the create was.
 */
export function afterCreate(s: FarmState, created: VmReport): AgentAction | undefined {
  const vm = s.vms.get(created.vmId);
  if (!vm || vm.hostId !== created.hostId || vm.generation !== created.generation) return undefined;
  if (s.hosts.get(vm.hostId)?.state !== 'HOST_STATE_UP') return undefined;
  const op = vm.busyOpId ? s.operations.get(vm.busyOpId) : undefined;
  if (op && op.params.kind !== 'vm.create') return undefined;
  const observed = {
    ...vm.observed,
    present: true,
    state: created.state,
    heartbeat: created.heartbeat,
    message: created.message,
    memoryAssignedBytes: created.memoryAssignedBytes,
  };
  const action = next(s, { ...vm, observed });
  return action?.kind === 'change-state' ? action : undefined;
}

/**
 * A VM with nothing to report and nothing to do: placed on an Up host whose inventory is
 * current, described there under its own generation just as the log has it, with no operation
 * under way and no drift from what is wanted. The observed-state controller and the reconciler
 * both pass it by, and would again until something is said of it (its record, its operation, its
 * host, its agent's description), so a sweep need not look at it.
 */
export function atRest(s: FarmState, inventories: ReadonlyMap<string, HostInventory>, vmId: string): boolean {
  const vm = s.vms.get(vmId);
  if (!vm || vm.busyOpId || !vm.observed.present || DRIFT[vm.desired]?.[vm.observed.state]) return false;
  if (s.hosts.get(vm.hostId)?.state !== 'HOST_STATE_UP') return false;
  const inv = inventories.get(vm.hostId);
  const view = inv?.synced ? inv.vms.get(vmId) : undefined;
  return view !== undefined && view.generation === vm.generation && !differs(vm, view);
}

/** Every VM placed on a synced host. */
export function* vmsOnSyncedHosts(s: FarmState, synced: ReconcileInput['synced']): Iterable<string> {
  for (const hostId of s.hosts.keys()) if (synced.has(hostId)) yield* s.vmsByHost.get(hostId) ?? [];
}

function next(s: FarmState, vm: VmRecord): AgentAction | undefined {
  // Most VMs of a sweep are at rest as wanted, with nothing under way: nothing to build.
  if (!vm.busyOpId && vm.observed.present && !DRIFT[vm.desired]?.[vm.observed.state]) return undefined;
  const t = { hostId: vm.hostId, vmId: vm.id, generation: vm.generation };
  const op = vm.busyOpId ? s.operations.get(vm.busyOpId) : undefined;
  const p = op?.params;
  // A migrating VM is the migration orchestrator's until the migration ends.
  if (p?.kind === 'vm.migrate') return undefined;
  if (!vm.observed.present) {
    // Not on its host: create it there, unless it is on its way out.
    if (p?.kind === 'vm.delete') return { ...t, kind: 'delete', opId: op!.id };
    // A VM that should run is started by the host as soon as it is created (or adopted, Off or
    // Saved: a start either way), not after the create's answer and a call of its own.
    const start = vm.desired === 'VM_STATE_RUNNING';
    return { ...t, kind: 'create', config: vm.config, start, opId: p?.kind === 'vm.create' ? op!.id : '' };
  }
  switch (p?.kind) {
    case undefined:
      return drift(vm, t, '');
    case 'vm.create':
      // Created: what remains is to start it, as a step of the create.
      return drift(vm, t, op!.id);
    case 'vm.change_state':
      return p.issued && !cameToRestShort(vm, op!, p.target)
        ? undefined
        : { ...t, kind: 'change-state', action: p.action, opId: op!.id };
    case 'vm.update':
      return { ...t, kind: 'update', config: p.config, paths: p.paths, opId: op!.id };
    case 'vm.delete':
      return { ...t, kind: 'delete', opId: op!.id };
    default:
      return { ...t, ...p, opId: op!.id } as AgentAction;
  }
}

/**
 * The host accepted the state change, but the VM has since been reported at rest short of the
 * target: the change was lost on the host (it restarted, and a VM that was Starting comes back
 * Off). The operation would wait for good, so the call is made again; the host refuses what no
 * longer applies, which ends the operation with its reason. A report older than the issue (the
 * operation's revision is newer) does not count: the VM has not been seen since.
 */
function cameToRestShort(vm: VmRecord, op: { revision: number }, target: VmStateName): boolean {
  const state = vm.observed.state;
  return vm.revision > op.revision && STABLE_VM_STATES.has(state) && state !== target;
}

/**
 * From a stable observed state toward the desired one. A VM that came back Off after its host
 * restarted, and should run, is started again (Hyper-V leaves automatic start to the cluster).
 */
const DRIFT: Partial<Record<VmStateName, Partial<Record<VmStateName, VmActionName>>>> = {
  VM_STATE_RUNNING: {
    VM_STATE_OFF: 'VM_ACTION_START',
    VM_STATE_SAVED: 'VM_ACTION_START',
    VM_STATE_PAUSED: 'VM_ACTION_RESUME',
  },
  VM_STATE_OFF: { VM_STATE_RUNNING: 'VM_ACTION_TURN_OFF', VM_STATE_PAUSED: 'VM_ACTION_TURN_OFF' },
  VM_STATE_SAVED: { VM_STATE_RUNNING: 'VM_ACTION_SAVE', VM_STATE_PAUSED: 'VM_ACTION_SAVE' },
  VM_STATE_PAUSED: { VM_STATE_RUNNING: 'VM_ACTION_PAUSE' },
};

function drift(
  vm: VmRecord,
  t: { hostId: string; vmId: string; generation: number },
  opId: string,
): AgentAction | undefined {
  if (!STABLE_VM_STATES.has(vm.observed.state)) return undefined;
  const action = DRIFT[vm.desired]?.[vm.observed.state];
  return action ? { ...t, kind: 'change-state', action, opId } : undefined;
}
