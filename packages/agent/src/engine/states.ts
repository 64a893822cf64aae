import type { pb } from '@hyperfarm/api';

// Hyper-V's state-change rules are part of the API contract, shared with the daemon.
export { ACTION_RULES, actionName, MEMORY_ASSIGNED, stateName, type ActionRule } from '@hyperfarm/api';

export type VmState = pb.VmState__Output;
export type VmAction = pb.VmAction__Output;

/** States in which the guest's virtual processors execute. */
export const VCPUS_RUN: ReadonlySet<VmState> = new Set<VmState>([
  'VM_STATE_STARTING',
  'VM_STATE_RUNNING',
  'VM_STATE_STOPPING',
  'VM_STATE_RUNNING_CRITICAL',
]);
