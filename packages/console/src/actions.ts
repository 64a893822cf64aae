import { ACTION_RULES, type VmActionName } from '../../api/src/vm-states.js';
import type { Connection } from './connection.js';
import type { Operation, Vm, VmStateName } from './wire.js';

/**
 * What a person can ask of a VM from the console. Which ones a state allows comes from the API's
 * own table of Hyper-V's RequestStateChange rules (the one the daemon checks against), so the
 * console never offers what the farm would refuse; the daemon still decides.
 */
export interface VmActionDef {
  key: string;
  label: string;
  /** Asked before doing it: what is lost. */
  confirm?: (vm: string) => string;
  allowed(state: VmStateName | undefined): boolean;
  run(conn: Connection, vm: Vm): Promise<Operation>;
}

const stateAction = (action: VmActionName, label: string, confirm?: (vm: string) => string): VmActionDef => ({
  key: action.replace('VM_ACTION_', '').toLowerCase().replace(/_/g, '-'),
  label,
  confirm,
  allowed: (s) => !!s && ACTION_RULES[action].from.includes(s),
  run: (conn, vm) => conn.call<Operation>('ChangeVmState', { id: vm.id, action }),
});

/** States a VM can be snapshotted in: not while it changes state. */
const CHECKPOINTABLE: readonly VmStateName[] = [
  'VM_STATE_OFF',
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSED',
  'VM_STATE_SAVED',
];
/** Quick and live migration move a VM that runs; an Off or Saved one moves by configuration. */
export const MIGRATABLE: readonly VmStateName[] = [...CHECKPOINTABLE];
const DELETABLE: readonly VmStateName[] = ['VM_STATE_OFF', 'VM_STATE_SAVED'];

export const VM_ACTIONS: VmActionDef[] = [
  stateAction('VM_ACTION_START', 'Start'),
  stateAction(
    'VM_ACTION_STOP',
    'Shut down',
    (vm) => `Shut down ${vm}? The guest operating system closes its programs and powers off.`,
  ),
  stateAction(
    'VM_ACTION_TURN_OFF',
    'Turn off',
    (vm) => `Turn off ${vm}? Like pulling the plug: whatever the guest has not written to disk is lost.`,
  ),
  stateAction('VM_ACTION_SAVE', 'Save'),
  stateAction('VM_ACTION_PAUSE', 'Pause'),
  stateAction('VM_ACTION_RESUME', 'Resume'),
  {
    key: 'checkpoint',
    label: 'Checkpoint',
    allowed: (s) => !!s && CHECKPOINTABLE.includes(s),
    run: (conn, vm) => conn.call<Operation>('CreateCheckpoint', { vmId: vm.id }),
  },
  {
    key: 'delete',
    label: 'Delete',
    confirm: (vm) =>
      `Delete ${vm}? Its configuration and checkpoints are removed from the farm; this cannot be undone.`,
    allowed: (s) => !!s && DELETABLE.includes(s),
    run: (conn, vm) => conn.call<Operation>('DeleteVm', { id: vm.id }),
  },
];
