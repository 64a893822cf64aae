import { alreadyExists, failedPrecondition, invalidArgument, type pb } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import { checkMemoryFor } from './host-resources.js';
import type { GuestMemory } from './memory.js';
import type { DeviceStateModel } from './partition.js';
import { beginSave } from './power.js';
import { stateName, type VmState } from './states.js';
import { validateConfig, type VmConfig } from './validate.js';
import { assignMacs, checkNameFree, newEntry, remove } from './vms.js';

// The engine's side of a migration: marking a VM as leaving, freezing it, and installing an
// incoming one. The transfer itself is the caller's (edge/migration.ts).

/**
 * Marks a VM as leaving; live migration starts tracking dirty pages from here, a quick one
 * stops the VM at once. A Saved VM has no memory here: the caller reads its saved state.
 */
export function beginMigrationOut(
  s: EngineCore,
  idOrName: string,
  generation: number,
  kind: pb.MigrationKind__Output,
): { vmId: string; memory: GuestMemory | undefined; config: VmConfig; state: VmState } {
  const vm = s.find(idOrName);
  s.fence(vm, generation, 'migrate');
  s.notMigrating(vm, 'migrate');
  s.leaseHeld(`migrate VM '${vm.config.name}'`);
  const state = vm.state;
  if (state !== 'VM_STATE_RUNNING' && state !== 'VM_STATE_PAUSED' && state !== 'VM_STATE_SAVED') {
    throw failedPrecondition(`cannot migrate VM '${vm.config.name}': it is ${stateName(vm.state)}`);
  }
  vm.migration = { kind, before: state };
  if (vm.memory) {
    vm.memory.clearDirty();
    if (kind !== 'MIGRATION_KIND_LIVE') freezeForMigration(s, vm.id);
  }
  return { vmId: vm.id, memory: vm.memory, config: structuredClone(vm.config), state };
}

/** Stops the virtual processors for the final copy; returns the device state to send. */
export function freezeForMigration(s: EngineCore, vmId: string): Buffer {
  const vm = s.find(vmId);
  if (vm.state !== 'VM_STATE_SAVING') {
    vm.deadlineMs = undefined;
    vm.next = undefined;
    s.setState(vm, 'VM_STATE_SAVING', 'migrating: final copy');
  }
  return s.deviceStateOf(vm);
}

/** The target confirmed: the VM now lives there. */
export function completeMigrationOut(s: EngineCore, vmId: string, targetHost: string): void {
  const vm = s.find(vmId);
  if (!vm.migration) throw failedPrecondition(`VM '${vm.config.name}' is no longer migrating: ${vm.message}`);
  vm.migration = undefined;
  remove(s, vm, `VM '${vm.config.name}' migrated to ${targetHost}`);
  s.effects.push({ kind: 'delete-vm-files', vmId: vm.id, config: vm.config });
}

/** The migration failed: the VM goes on where it was. */
export function abortMigrationOut(s: EngineCore, vmId: string, reason: string): void {
  const vm = s.vms.get(vmId);
  if (!vm || !vm.migration) return;
  const before = vm.migration.before;
  vm.migration = undefined;
  if (vm.memory) s.setState(vm, before, `migration failed: ${reason}`);
}

/** Holds memory for an incoming VM while its pages arrive. */
export function reserveImport(s: EngineCore, vmId: string, config: VmConfig, generation: number): void {
  s.leaseHeld(`import VM '${config.name}'`);
  validateConfig(config, s.options.limits);
  if (s.vms.has(vmId)) throw alreadyExists('VM', vmId);
  checkNameFree(s, config.name, vmId);
  checkMemoryFor(s, config.memoryBytes, `import VM '${config.name}'`);
  if (generation < 1)
    throw invalidArgument('header.generation', 'an imported VM needs a generation of 1 or more');
  s.reservedImports.set(vmId, config.memoryBytes + s.options.perVmOverheadBytes);
}

export function releaseImport(s: EngineCore, vmId: string): void {
  s.reservedImports.delete(vmId);
}

/** Installs a VM whose state arrived whole and verified; it runs (or stays paused) at once. */
export function importVm(
  s: EngineCore,
  vmId: string,
  config: VmConfig,
  generation: number,
  memory: GuestMemory,
  device: DeviceStateModel,
  targetState: VmState,
): pb.Vm__Output {
  releaseImport(s, vmId);
  if (s.vms.has(vmId)) throw alreadyExists('VM', vmId);
  checkNameFree(s, config.name, vmId);
  checkMemoryFor(s, config.memoryBytes, `import VM '${config.name}'`);
  assignMacs(s, config, 'header.config');
  const vm = newEntry(s, vmId, config, generation, s.nowMs);
  vm.memory = memory;
  vm.channels = device.channels.map((c) => ({ ...c }));
  vm.boots = device.boots;
  vm.startedAtMs = s.nowMs;
  s.vms.set(vmId, vm);
  const paused = targetState === 'VM_STATE_PAUSED';
  vm.heartbeat =
    config.integrationServices && !paused ? 'HEARTBEAT_STATUS_OK' : 'HEARTBEAT_STATUS_NO_CONTACT';
  vm.desiredState = paused ? 'VM_STATE_PAUSED' : 'VM_STATE_RUNNING';
  s.setState(vm, paused ? 'VM_STATE_PAUSED' : 'VM_STATE_RUNNING', 'migrated in');
  if (targetState === 'VM_STATE_SAVED') {
    vm.desiredState = 'VM_STATE_SAVED';
    beginSave(s, vm);
  }
  return s.view(vm);
}
