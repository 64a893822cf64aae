import { failedPrecondition, invalidArgument, type pb, resourceExhausted } from '@hyperfarm/api';
import { findGuestOs } from './catalog.js';
import type { EngineCore } from './core.js';
import { checkMemoryFor } from './host-resources.js';
import { GuestMemory, PAGE_SIZE } from './memory.js';
import type { VmEntry } from './model.js';
import { offeredChannels } from './partition.js';
import { beginRestore, beginSave } from './save.js';
import { ACTION_RULES, actionName, MEMORY_ASSIGNED, stateName, type VmAction } from './states.js';
import { revalidateForStart } from './validate.js';

/**
 * State changes (RequestStateChange): start, stop, turn off, save, pause, resume, reset. Which
 * action may start from which state is the table in states.ts; transitions that take time end in
 * clock.ts, saves and restores in save.ts.
 */
export class Power {
  constructor(private readonly s: EngineCore) {}

  change(idOrName: string, action: VmAction, generation = 0): pb.Vm__Output {
    const s = this.s;
    if (action === 'VM_ACTION_UNSPECIFIED' || !Object.hasOwn(ACTION_RULES, action)) {
      throw invalidArgument('action', 'must be one of START, STOP, TURN_OFF, SAVE, PAUSE, RESUME, RESET');
    }
    const what = actionName(action);
    const vm = s.command(idOrName, generation, what);
    if (!allowed(vm, action, what)) return s.view(vm);
    switch (action) {
      case 'VM_ACTION_START':
        return start(s, vm);
      case 'VM_ACTION_STOP':
        return stop(s, vm);
      case 'VM_ACTION_TURN_OFF':
        vm.desiredState = 'VM_STATE_OFF';
        powerOff(s, vm, 'turned off');
        return s.view(vm);
      case 'VM_ACTION_SAVE':
        vm.desiredState = 'VM_STATE_SAVED';
        beginSave(s, vm);
        return s.view(vm);
      case 'VM_ACTION_PAUSE':
        vm.desiredState = 'VM_STATE_PAUSED';
        if (vm.state === 'VM_STATE_RUNNING_CRITICAL') {
          s.setState(vm, 'VM_STATE_PAUSED_CRITICAL', vm.message);
        } else {
          s.transition(vm, 'VM_STATE_PAUSING', s.timings.pauseMs, 'VM_STATE_PAUSED', 'pausing');
        }
        return s.view(vm);
      case 'VM_ACTION_RESUME':
        vm.desiredState = 'VM_STATE_RUNNING';
        vm.storage = 'ok'; // retried: the next write tells whether it is really back
        s.transition(vm, 'VM_STATE_RESUMING', s.timings.resumeMs, 'VM_STATE_RUNNING', 'resuming');
        return s.view(vm);
      case 'VM_ACTION_RESET':
        vm.desiredState = 'VM_STATE_RUNNING';
        s.transition(vm, 'VM_STATE_RESETTING', s.timings.resetMs, 'VM_STATE_STARTING', 'resetting');
        return s.view(vm);
    }
  }

  /**
   * A turn off the host decides by itself (an automatic stop action at a clean agent shutdown),
   * with `message` saying why; the same checks as a requested turn off, without fencing.
   */
  turnOff(idOrName: string, message: string): pb.Vm__Output {
    const vm = this.s.find(idOrName);
    this.s.notMigrating(vm, 'turn off');
    if (allowed(vm, 'VM_ACTION_TURN_OFF', 'turn off')) {
      vm.desiredState = 'VM_STATE_OFF';
      powerOff(this.s, vm, message);
    }
    return this.s.view(vm);
  }
}

/** Whether `action` starts from the VM's state: false for a harmless repeat; refused otherwise. */
function allowed(vm: VmEntry, action: Exclude<VmAction, 'VM_ACTION_UNSPECIFIED'>, what: string): boolean {
  const rule = ACTION_RULES[action];
  if (rule.alreadyThere.includes(vm.state)) return false;
  if (!rule.from.includes(vm.state)) {
    throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': it is ${stateName(vm.state)}`);
  }
  return true;
}

function start(s: EngineCore, vm: VmEntry): pb.Vm__Output {
  const name = vm.config.name;
  revalidateForStart(name, vm.config, s.options.limits);
  s.leaseHeld(`start VM '${name}'`);
  const running = [...s.vms.values()].filter((v) => MEMORY_ASSIGNED.has(v.state)).length;
  if (running >= s.options.limits.maxRunningVmsPerHost) {
    throw resourceExhausted(
      `cannot start VM '${name}': ${running} VMs already run, the ${s.options.limits.name} profile's limit per host`,
    );
  }
  checkMemoryFor(s, vm.config.memoryBytes, `start VM '${name}'`);
  vm.desiredState = 'VM_STATE_RUNNING';
  if (vm.state === 'VM_STATE_SAVED') {
    beginRestore(s, vm);
    return s.view(vm);
  }
  powerOn(s, vm);
  s.transition(vm, 'VM_STATE_STARTING', bootMs(s, vm), 'VM_STATE_RUNNING', 'booting');
  return s.view(vm);
}

export function bootMs(s: EngineCore, vm: VmEntry): number {
  return vm.config.workload!.bootMs || findGuestOs(vm.config.guestOs)!.defaultBootMs;
}

/** Creates the child partition: fresh memory, channels offered, no heartbeat yet. */
export function powerOn(s: EngineCore, vm: VmEntry): void {
  vm.memory = new GuestMemory(vm.id, vm.config.memoryBytes / PAGE_SIZE);
  vm.channels = offeredChannels(vm.config);
  vm.heartbeat = 'HEARTBEAT_STATUS_NO_CONTACT';
  vm.unresponsiveSinceMs = vm.guestResponsive ? undefined : s.nowMs;
  vm.storage = 'ok';
  vm.dirtyCarry = 0;
  vm.ioCarry = 0;
  vm.boots++;
}

/** The guest's kernel is loaded (its first pages written) and it opens its VMBus channels. */
export function bootCompleted(s: EngineCore, vm: VmEntry): void {
  const memory = vm.memory!;
  const kernelPages = Math.min(256, memory.totalPages);
  for (let p = 0; p < kernelPages; p++) memory.write(p);
  vm.startedAtMs = s.nowMs;
  if (vm.config.integrationServices) {
    for (const ch of vm.channels) ch.open = true;
    vm.heartbeat = vm.guestResponsive ? 'HEARTBEAT_STATUS_OK' : 'HEARTBEAT_STATUS_LOST_COMMUNICATION';
  }
}

function stop(s: EngineCore, vm: VmEntry): pb.Vm__Output {
  const name = vm.config.name;
  if (!vm.config.integrationServices) {
    throw failedPrecondition(
      `cannot stop VM '${name}': its guest has no shutdown integration service; turn it off instead`,
    );
  }
  if (vm.heartbeat !== 'HEARTBEAT_STATUS_OK') {
    throw failedPrecondition(
      `cannot stop VM '${name}': its guest does not answer (heartbeat ${vm.heartbeat === 'HEARTBEAT_STATUS_LOST_COMMUNICATION' ? 'Lost communication' : 'No contact'}); turn it off instead`,
    );
  }
  vm.desiredState = 'VM_STATE_OFF';
  s.transition(vm, 'VM_STATE_STOPPING', s.timings.shutdownMs, 'VM_STATE_OFF', 'shutting down');
  return s.view(vm);
}

export function powerOff(s: EngineCore, vm: VmEntry, message: string): void {
  if (vm.state === 'VM_STATE_SAVED') s.effects.push({ kind: 'delete-saved-state', vmId: vm.id });
  vm.savedHash = '';
  vm.ioToken = ++s.ioTokens; // any save or restore in flight no longer counts
  s.release(vm);
  s.setState(vm, 'VM_STATE_OFF', message);
}
