import { failedPrecondition, invalidArgument, type pb, resourceExhausted } from '@hyperfarm/api';
import { findGuestOs } from './catalog.js';
import type { EngineCore } from './core.js';
import { checkMemoryFor } from './host-resources.js';
import { GuestMemory, PAGE_SIZE } from './memory.js';
import type { VmEntry } from './model.js';
import { type DeviceStateModel, offeredChannels } from './partition.js';
import { ACTION_RULES, actionName, MEMORY_ASSIGNED, stateName, type VmAction } from './states.js';
import { revalidateForStart } from './validate.js';

// State changes (RequestStateChange): start, stop, turn off, save, pause, resume, reset, and
// the completions of the saves and restores the engine asked for.

export function changeState(
  s: EngineCore,
  idOrName: string,
  action: VmAction,
  generation = 0,
): pb.Vm__Output {
  const vm = s.find(idOrName);
  if (action === 'VM_ACTION_UNSPECIFIED' || !(action in ACTION_RULES)) {
    throw invalidArgument('action', 'must be one of START, STOP, TURN_OFF, SAVE, PAUSE, RESUME, RESET');
  }
  const what = actionName(action);
  s.fence(vm, generation, what);
  s.notMigrating(vm, what);
  const rule = ACTION_RULES[action];
  if (rule.alreadyThere.includes(vm.state)) return s.view(vm);
  if (!rule.from.includes(vm.state)) {
    throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': it is ${stateName(vm.state)}`);
  }
  switch (action) {
    case 'VM_ACTION_START':
      return start(s, vm);
    case 'VM_ACTION_STOP':
      return stop(s, vm);
    case 'VM_ACTION_TURN_OFF':
      vm.desiredState = 'VM_STATE_OFF';
      turnOff(s, vm, 'turned off');
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
    default:
      throw invalidArgument('action', `unknown action ${String(action)}`);
  }
}

export function start(s: EngineCore, vm: VmEntry): pb.Vm__Output {
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
    vm.ioToken = ++s.ioTokens;
    s.setState(vm, 'VM_STATE_RESUMING', 'restoring saved state');
    s.effects.push({
      kind: 'restore',
      vmId: vm.id,
      token: vm.ioToken,
      totalPages: vm.config.memoryBytes / PAGE_SIZE,
    });
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

export function stop(s: EngineCore, vm: VmEntry): pb.Vm__Output {
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

/**
 * A turn off the host decides by itself (an automatic stop action at a clean agent shutdown),
 * with `message` saying why; the same checks as a requested turn off, without fencing.
 */
export function turnOffSaying(s: EngineCore, idOrName: string, message: string): pb.Vm__Output {
  const vm = s.find(idOrName);
  s.notMigrating(vm, 'turn off');
  const rule = ACTION_RULES.VM_ACTION_TURN_OFF;
  if (rule.alreadyThere.includes(vm.state)) return s.view(vm);
  if (!rule.from.includes(vm.state)) {
    throw failedPrecondition(`cannot turn off VM '${vm.config.name}': it is ${stateName(vm.state)}`);
  }
  vm.desiredState = 'VM_STATE_OFF';
  turnOff(s, vm, message);
  return s.view(vm);
}

export function turnOff(s: EngineCore, vm: VmEntry, message: string): void {
  if (vm.state === 'VM_STATE_SAVED') s.effects.push({ kind: 'delete-saved-state', vmId: vm.id });
  vm.savedHash = '';
  vm.ioToken = ++s.ioTokens; // any save or restore in flight no longer counts
  s.release(vm);
  s.setState(vm, 'VM_STATE_OFF', message);
}

export function beginSave(s: EngineCore, vm: VmEntry): void {
  vm.beforeSave = vm.state;
  vm.ioToken = ++s.ioTokens;
  vm.deadlineMs = undefined;
  vm.next = undefined;
  vm.savedPages = vm.memory!.residentPages;
  s.setState(vm, 'VM_STATE_SAVING', 'saving memory and device state');
  s.effects.push({
    kind: 'save',
    vmId: vm.id,
    token: vm.ioToken,
    memory: vm.memory!,
    deviceState: s.deviceStateOf(vm),
  });
}

/** The saved state is on disk (fsynced). The memory is released. */
export function completeSave(s: EngineCore, vmId: string, token: number, hash: string): void {
  const vm = s.vms.get(vmId);
  if (!vm || vm.ioToken !== token || vm.state !== 'VM_STATE_SAVING') return;
  vm.savedHash = hash;
  s.release(vm);
  s.setState(vm, 'VM_STATE_SAVED', 'saved');
}

export function failSave(s: EngineCore, vmId: string, token: number, reason: string): void {
  const vm = s.vms.get(vmId);
  if (!vm || vm.ioToken !== token || vm.state !== 'VM_STATE_SAVING') return;
  s.setState(vm, vm.beforeSave ?? 'VM_STATE_PAUSED', `save failed: ${reason}`);
  vm.desiredState = vm.state;
}

/** The saved state was read back into `memory`; the VM runs again. */
export function completeRestore(
  s: EngineCore,
  vmId: string,
  token: number,
  memory: GuestMemory,
  device: DeviceStateModel,
): void {
  const vm = s.vms.get(vmId);
  if (!vm || vm.ioToken !== token || vm.state !== 'VM_STATE_RESUMING') return;
  vm.memory = memory;
  vm.channels = device.channels.map((c) => ({ ...c }));
  vm.boots = device.boots;
  vm.heartbeat = vm.config.integrationServices && vm.guestResponsive ? 'HEARTBEAT_STATUS_OK' : vm.heartbeat;
  vm.startedAtMs = s.nowMs;
  vm.savedHash = '';
  s.setState(vm, 'VM_STATE_RUNNING', 'restored from saved state');
}

export function failRestore(s: EngineCore, vmId: string, token: number, reason: string): void {
  const vm = s.vms.get(vmId);
  if (!vm || vm.ioToken !== token || vm.state !== 'VM_STATE_RESUMING') return;
  vm.desiredState = 'VM_STATE_SAVED';
  s.setState(vm, 'VM_STATE_SAVED', `restore failed: ${reason}`);
}
