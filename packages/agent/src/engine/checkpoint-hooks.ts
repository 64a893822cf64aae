import { failedPrecondition, type pb } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import { GuestMemory } from './memory.js';
import { stateName, type VmState } from './states.js';
import type { VmConfig } from './validate.js';
import { releaseMacs } from './vms.js';

// The engine's side of checkpoints: the files are the caller's (edge/checkpoints.ts).

/** Fencing and migration checks for an operation the caller carries out on the VM's files. */
export function checkCommand(
  s: EngineCore,
  idOrName: string,
  generation: number,
  what: string,
): pb.Vm__Output {
  const vm = s.find(idOrName);
  s.fence(vm, generation, what);
  s.notMigrating(vm, what);
  return s.view(vm);
}

/**
 * What a checkpoint keeps of a VM at this instant: its configuration, its state, and for a
 * Running or Paused VM a copy of its memory and device state (the guest goes on running).
 */
export function captureForCheckpoint(
  s: EngineCore,
  idOrName: string,
): {
  config: VmConfig;
  state: VmState;
  memory: GuestMemory | undefined;
  deviceState: Buffer | undefined;
} {
  const vm = s.find(idOrName);
  const ok: VmState[] = ['VM_STATE_OFF', 'VM_STATE_RUNNING', 'VM_STATE_PAUSED', 'VM_STATE_SAVED'];
  if (!ok.includes(vm.state)) {
    throw failedPrecondition(`cannot checkpoint VM '${vm.config.name}': it is ${stateName(vm.state)}`);
  }
  let memory: GuestMemory | undefined;
  if (vm.memory) {
    memory = new GuestMemory(vm.id, vm.memory.totalPages);
    for (const p of vm.memory.residentPageNumbers()) memory.install(p, vm.memory.versionOf(p));
  }
  return {
    config: structuredClone(vm.config),
    state: vm.state,
    memory,
    deviceState: vm.memory ? s.deviceStateOf(vm) : undefined,
  };
}

/** Points the VM's disks at new files (a checkpoint's differencing disks); any state. */
export function setDiskPaths(s: EngineCore, idOrName: string, paths: readonly string[]): void {
  const vm = s.find(idOrName);
  if (paths.length !== vm.config.disks.length) throw new Error('one path per disk');
  vm.config.disks.forEach((d, i) => (d.path = paths[i]!));
  s.touch(vm);
}

/**
 * Reverts an Off or Saved VM to a checkpoint: its configuration, and Saved with the
 * checkpoint's memory (already copied to the VM's saved-state file) or Off without.
 */
export function revertToCheckpoint(
  s: EngineCore,
  idOrName: string,
  config: VmConfig,
  savedHash: string | undefined,
  savedPages: number,
  label: string,
): pb.Vm__Output {
  const vm = s.find(idOrName);
  if (vm.state !== 'VM_STATE_OFF' && vm.state !== 'VM_STATE_SAVED') {
    throw failedPrecondition(
      `cannot apply a checkpoint to VM '${vm.config.name}': it is ${stateName(vm.state)}`,
    );
  }
  releaseMacs(s, vm.config);
  for (const n of config.networkAdapters) if (n.macAddress) s.macs.claim(n.macAddress);
  vm.config = structuredClone(config);
  vm.savedHash = savedHash ?? '';
  vm.savedPages = savedHash ? savedPages : 0;
  vm.ioToken = ++s.ioTokens;
  vm.desiredState = savedHash ? 'VM_STATE_SAVED' : 'VM_STATE_OFF';
  s.setState(vm, savedHash ? 'VM_STATE_SAVED' : 'VM_STATE_OFF', `checkpoint '${label}' applied`);
  return s.view(vm);
}
