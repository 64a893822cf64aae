import type { EngineCore } from './core.js';
import { PAGE_SIZE } from './memory.js';
import type { VmEntry } from './model.js';

// Saving a VM and restoring it, start to end: the engine asks for the file to be written (or
// read back) with an effect, and the effect's completions finish the job. A completion that
// arrives after the VM moved on (turned off, or another save began) changes nothing.

/** Running or Paused -> Saving; the effect writes memory and device state to the saved-state file. */
export function beginSave(s: EngineCore, vm: VmEntry): void {
  vm.beforeSave = vm.state;
  const token = (vm.ioToken = ++s.ioTokens);
  vm.deadlineMs = undefined;
  vm.next = undefined;
  vm.savedPages = vm.memory!.residentPages;
  s.setState(vm, 'VM_STATE_SAVING', 'saving memory and device state');
  const current = () => s.ioCurrent(vm, token, 'VM_STATE_SAVING');
  s.effects.push({
    kind: 'save',
    vmId: vm.id,
    memory: vm.memory!,
    deviceState: s.deviceStateOf(vm),
    saved(sha256) {
      const v = current();
      if (!v) return;
      // The state is on disk: the memory is released.
      v.savedHash = sha256;
      s.release(v);
      s.setState(v, 'VM_STATE_SAVED', 'saved');
    },
    failed(reason) {
      const v = current();
      if (!v) return;
      s.setState(v, v.beforeSave ?? 'VM_STATE_PAUSED', `save failed: ${reason}`);
      v.desiredState = v.state;
    },
  });
}

/** Saved -> Resuming; the effect reads the saved state back and the VM runs from it. */
export function beginRestore(s: EngineCore, vm: VmEntry): void {
  const token = (vm.ioToken = ++s.ioTokens);
  s.setState(vm, 'VM_STATE_RESUMING', 'restoring saved state');
  const current = () => s.ioCurrent(vm, token, 'VM_STATE_RESUMING');
  s.effects.push({
    kind: 'restore',
    vmId: vm.id,
    totalPages: vm.config.memoryBytes / PAGE_SIZE,
    restored(memory, device) {
      const v = current();
      if (!v) return;
      v.memory = memory;
      v.channels = device.channels.map((c) => ({ ...c }));
      v.boots = device.boots;
      v.heartbeat = v.config.integrationServices && v.guestResponsive ? 'HEARTBEAT_STATUS_OK' : v.heartbeat;
      v.startedAtMs = s.nowMs;
      v.savedHash = '';
      s.setState(v, 'VM_STATE_RUNNING', 'restored from saved state');
    },
    failed(reason) {
      const v = current();
      if (!v) return;
      v.desiredState = 'VM_STATE_SAVED';
      s.setState(v, 'VM_STATE_SAVED', `restore failed: ${reason}`);
    },
  });
}
