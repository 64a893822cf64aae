import type { VmAction__Output } from './generated/hyperfarm/v1/VmAction.js';
import type { VmState__Output } from './generated/hyperfarm/v1/VmState.js';

/**
 * Hyper-V's RequestStateChange (Msvm_ComputerSystem), shared by the agent, which carries actions
 * out, and the daemon, which checks them against the state its hosts report.
 */

export type VmStateName = VmState__Output;
export type VmActionName = Exclude<VmAction__Output, 'VM_ACTION_UNSPECIFIED'>;

/**
 * For each action: the states it may start from, the states in which it is already done or under
 * way (then the request is a harmless repeat, as every fenced command must be idempotent), and
 * the state that ends it. Anything else is refused naming the current state.
 */
export interface ActionRule {
  from: readonly VmStateName[];
  alreadyThere: readonly VmStateName[];
  target: VmStateName;
}

export const ACTION_RULES: Record<VmActionName, ActionRule> = {
  VM_ACTION_START: {
    from: ['VM_STATE_OFF', 'VM_STATE_SAVED'],
    alreadyThere: ['VM_STATE_STARTING', 'VM_STATE_RUNNING', 'VM_STATE_RESUMING'],
    target: 'VM_STATE_RUNNING',
  },
  VM_ACTION_STOP: {
    from: ['VM_STATE_RUNNING'],
    alreadyThere: ['VM_STATE_STOPPING', 'VM_STATE_OFF'],
    target: 'VM_STATE_OFF',
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
    target: 'VM_STATE_OFF',
  },
  VM_ACTION_SAVE: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_PAUSED'],
    alreadyThere: ['VM_STATE_SAVING', 'VM_STATE_SAVED'],
    target: 'VM_STATE_SAVED',
  },
  VM_ACTION_PAUSE: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_RUNNING_CRITICAL'],
    alreadyThere: ['VM_STATE_PAUSING', 'VM_STATE_PAUSED', 'VM_STATE_PAUSED_CRITICAL'],
    target: 'VM_STATE_PAUSED',
  },
  VM_ACTION_RESUME: {
    from: ['VM_STATE_PAUSED', 'VM_STATE_PAUSED_CRITICAL'],
    alreadyThere: ['VM_STATE_RESUMING', 'VM_STATE_RUNNING'],
    target: 'VM_STATE_RUNNING',
  },
  VM_ACTION_RESET: {
    from: ['VM_STATE_RUNNING', 'VM_STATE_PAUSED', 'VM_STATE_RUNNING_CRITICAL'],
    alreadyThere: ['VM_STATE_RESETTING'],
    target: 'VM_STATE_RUNNING',
  },
};

/** "VM_STATE_RUNNING_CRITICAL" → "RunningCritical", as Hyper-V Manager shows states. */
export function stateName(state: VmStateName): string {
  return state
    .replace(/^VM_STATE_/, '')
    .toLowerCase()
    .split('_')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('');
}

/** "VM_ACTION_TURN_OFF" → "turn off". */
export function actionName(action: VmAction__Output): string {
  return action
    .replace(/^VM_ACTION_/, '')
    .toLowerCase()
    .replace(/_/g, ' ');
}

/**
 * States in which the guest executes: the same VM in one of them on two hosts at once runs twice
 * (what the safety checkers of tests, drills and the simulator look for).
 */
export const GUEST_EXECUTES: ReadonlySet<VmStateName> = new Set<VmStateName>([
  'VM_STATE_STARTING',
  'VM_STATE_RUNNING',
  'VM_STATE_RUNNING_CRITICAL',
  'VM_STATE_STOPPING',
  'VM_STATE_RESETTING',
  'VM_STATE_PAUSING',
  'VM_STATE_RESUMING',
]);

/** States in which the VM's partition exists and its memory is assigned. */
export const MEMORY_ASSIGNED: ReadonlySet<VmStateName> = new Set<VmStateName>([
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
