import type { pb } from '@hyperfarm/api';

export type VmState = pb.VmState__Output;
export type VmAction = pb.VmAction__Output;

/** "VM_STATE_RUNNING_CRITICAL" → "RunningCritical", as Hyper-V Manager shows states. */
export function stateName(state: VmState): string {
  return state
    .replace(/^VM_STATE_/, '')
    .toLowerCase()
    .split('_')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('');
}

/** "VM_ACTION_TURN_OFF" → "turn off". */
export function actionName(action: VmAction): string {
  return action
    .replace(/^VM_ACTION_/, '')
    .toLowerCase()
    .replace(/_/g, ' ');
}

/**
 * Hyper-V's RequestStateChange rules. For each action: the states it may start from, and the
 * states in which it is already done or under way (then the request is a harmless repeat, as
 * every fenced command must be idempotent). Anything else is refused naming the current state.
 */
export interface ActionRule {
  from: readonly VmState[];
  alreadyThere: readonly VmState[];
}

export const ACTION_RULES: Record<Exclude<VmAction, 'VM_ACTION_UNSPECIFIED'>, ActionRule> = {
  VM_ACTION_START: {
    from: ['VM_STATE_OFF', 'VM_STATE_SAVED'],
    alreadyThere: ['VM_STATE_STARTING', 'VM_STATE_RUNNING', 'VM_STATE_RESUMING'],
  },
  VM_ACTION_STOP: {
    from: ['VM_STATE_RUNNING'],
    alreadyThere: ['VM_STATE_STOPPING', 'VM_STATE_OFF'],
  },
  VM_ACTION_TURN_OFF: {
    from: [
      'VM_STATE_STARTING',
      'VM_STATE_RUNNING',
      'VM_STATE_PAUSING',
      'VM_STATE_PAUSED',
      'VM_STATE_RESUMING',
      'VM_STATE_SAVED',
      'VM_STATE_STOPPING',
      'VM_STATE_RESETTING',
      'VM_STATE_RUNNING_CRITICAL',
      'VM_STATE_PAUSED_CRITICAL',
    ],
    alreadyThere: ['VM_STATE_OFF'],
  },
  VM_ACTION_SAVE: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_PAUSED'],
    alreadyThere: ['VM_STATE_SAVING', 'VM_STATE_SAVED'],
  },
  VM_ACTION_PAUSE: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_RUNNING_CRITICAL'],
    alreadyThere: ['VM_STATE_PAUSING', 'VM_STATE_PAUSED', 'VM_STATE_PAUSED_CRITICAL'],
  },
  VM_ACTION_RESUME: {
    from: ['VM_STATE_PAUSED', 'VM_STATE_PAUSED_CRITICAL'],
    alreadyThere: ['VM_STATE_RESUMING', 'VM_STATE_RUNNING'],
  },
  VM_ACTION_RESET: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_PAUSED', 'VM_STATE_RUNNING_CRITICAL'],
    alreadyThere: ['VM_STATE_RESETTING'],
  },
};

/** States in which the VM's partition exists and its memory is assigned. */
export const MEMORY_ASSIGNED: ReadonlySet<VmState> = new Set<VmState>([
  'VM_STATE_STARTING',
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSING',
  'VM_STATE_PAUSED',
  'VM_STATE_RESUMING',
  'VM_STATE_SAVING',
  'VM_STATE_STOPPING',
  'VM_STATE_RESETTING',
  'VM_STATE_RUNNING_CRITICAL',
  'VM_STATE_PAUSED_CRITICAL',
]);

/** States in which the guest's virtual processors execute. */
export const VCPUS_RUN: ReadonlySet<VmState> = new Set<VmState>([
  'VM_STATE_STARTING',
  'VM_STATE_RUNNING',
  'VM_STATE_STOPPING',
  'VM_STATE_RUNNING_CRITICAL',
]);
