import { setTimeout as delay } from 'node:timers/promises';
import type { Logger, pb } from '@hyperfarm/api';
import type { HypervisorEngine } from '../engine/engine.js';
import { stateName } from '../engine/states.js';

/** How long a clean shutdown waits for guests to shut down, unless configured: well under the
 * launcher's 10 s grace between SIGTERM and SIGKILL. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 5_000;

/** How often the wait for shutting-down guests advances the engine and looks again. */
const POLL_MS = 20;

/** What the stop actions need of the host: its engine, and a way to bring it to the present. */
export interface StopActionHost {
  readonly engine: HypervisorEngine;
  readonly logger: Logger;
  /** Advances the engine to the host's clock and carries out what it asked for. */
  pump(): void;
}

export interface StopActionOptions {
  /** The longest wait for guests asked to shut down; those still up are then turned off. */
  timeoutMs: number;
  /** Real time, bounding the wait (the engine's own clock may be a virtual one in tests). */
  now?: () => number;
}

/** States with nothing left to stop: no partition, or a save already under way. */
const AT_REST: ReadonlySet<pb.VmState__Output> = new Set([
  'VM_STATE_OFF',
  'VM_STATE_SAVED',
  'VM_STATE_SAVING',
]);

/**
 * A clean agent shutdown, as Hyper-V's automatic stop action does it for every VM with a
 * partition: Save saves a Running or Paused VM; Shut down asks the guest through its shutdown
 * integration service and waits for it, at most `timeoutMs`; anything else, and a VM that cannot
 * do what its action asks (no integration services, heartbeat lost, still booting, or a guest
 * that did not stop in time), is turned off, with the reason in its message. Saves in flight are
 * the caller's to settle.
 */
export async function applyStopActions(host: StopActionHost, opts: StopActionOptions): Promise<void> {
  const now = opts.now ?? (() => Date.now());
  const engine = host.engine;
  host.pump();
  const shuttingDown: string[] = [];
  for (const vm of engine.vms.list()) {
    const state = vm.status!.state;
    if (AT_REST.has(state)) continue;
    const action = vm.config!.automaticStopAction;
    try {
      if (
        action === 'AUTOMATIC_STOP_ACTION_SAVE' &&
        (state === 'VM_STATE_RUNNING' || state === 'VM_STATE_PAUSED')
      ) {
        engine.power.change(vm.id, 'VM_ACTION_SAVE');
      } else if (action === 'AUTOMATIC_STOP_ACTION_SHUT_DOWN') {
        askGuestToShutDown(host, vm, shuttingDown);
      } else {
        engine.power.change(vm.id, 'VM_ACTION_TURN_OFF');
      }
    } catch (err) {
      host.logger.warn({ err, vmId: vm.id }, 'automatic stop action failed; turning off');
      try {
        engine.power.change(vm.id, 'VM_ACTION_TURN_OFF');
      } catch {
        // already off or migrating: nothing more to do
      }
    }
  }
  host.pump();
  const deadline = now() + opts.timeoutMs;
  let waiting = shuttingDown;
  while (waiting.length > 0) {
    const left = deadline - now();
    if (left <= 0) break;
    await delay(Math.min(POLL_MS, left));
    // Past the deadline the engine is not advanced again before the turn-off: a guest counts as
    // shut down only if it was by the deadline.
    if (now() >= deadline) break;
    host.pump();
    waiting = waiting.filter(
      (id) => engine.vms.has(id) && engine.vms.get(id).status!.state === 'VM_STATE_STOPPING',
    );
  }
  for (const id of waiting) {
    host.logger.warn({ vmId: id, timeoutMs: opts.timeoutMs }, 'guest did not shut down in time; turning off');
    turnOff(
      host,
      id,
      `turned off: the guest did not shut down within ${opts.timeoutMs} ms of the agent stopping`,
    );
  }
  host.pump();
}

/** Asks a guest to shut down, or turns it off (saying why) when its guest cannot be asked. */
function askGuestToShutDown(host: StopActionHost, vm: pb.Vm__Output, shuttingDown: string[]): void {
  const state = vm.status!.state;
  if (state !== 'VM_STATE_RUNNING' && state !== 'VM_STATE_STOPPING') {
    turnOff(host, vm.id, `turned off: a ${stateName(state)} guest cannot shut down at agent shutdown`);
    return;
  }
  if (!vm.config!.integrationServices) {
    turnOff(host, vm.id, 'turned off: the guest has no shutdown integration service');
    return;
  }
  if (vm.status!.heartbeat !== 'HEARTBEAT_STATUS_OK' && state === 'VM_STATE_RUNNING') {
    turnOff(
      host,
      vm.id,
      'turned off: the guest does not answer its heartbeat, so it cannot be asked to shut down',
    );
    return;
  }
  host.engine.power.change(vm.id, 'VM_ACTION_STOP');
  shuttingDown.push(vm.id);
}

function turnOff(host: StopActionHost, vmId: string, message: string): void {
  try {
    host.engine.power.turnOff(vmId, message);
  } catch (err) {
    // Already off, or migrating (the migration's own end decides): nothing more to do here.
    host.logger.warn({ err, vmId }, 'could not turn the VM off at agent shutdown');
  }
}
