import type { EngineCore } from './core.js';
import type { Storage, VmEntry } from './model.js';
import { stateName } from './states.js';

/**
 * Storage and the guest's health: critical states from failed or full disks and stuck merges,
 * and the heartbeat an unresponsive or starved guest stops answering.
 */
export class Health {
  constructor(private readonly s: EngineCore) {}

  /**
   * The storage VSP reports how a guest write ended. A failed disk leaves the VM running with its
   * I/O suspended (RunningCritical); a full one pauses it (PausedCritical), as Hyper-V does when
   * a VHD's volume runs out of space.
   */
  reportStorage(vmId: string, result: Storage, detail = ''): void {
    const s = this.s;
    const vm = s.vms.get(vmId);
    if (!vm) return;
    const previous = vm.storage;
    vm.storage = result;
    if (result === 'ok') {
      if (vm.state === 'VM_STATE_RUNNING_CRITICAL' && !vm.mergeBlocked)
        s.setState(vm, 'VM_STATE_RUNNING', 'storage is back');
      return;
    }
    const why = `${result === 'full' ? 'its storage is full' : 'its storage failed'}${detail ? `: ${detail}` : ''}`;
    if (vm.state === 'VM_STATE_RUNNING') {
      if (result === 'full') s.setState(vm, 'VM_STATE_PAUSED_CRITICAL', why);
      else s.setState(vm, 'VM_STATE_RUNNING_CRITICAL', why);
      s.emit(vm, 'critical', `VM '${vm.config.name}' is ${stateName(vm.state)}: ${why}`);
    } else if (vm.state === 'VM_STATE_RUNNING_CRITICAL' && result === 'full' && previous !== 'full') {
      s.setState(vm, 'VM_STATE_PAUSED_CRITICAL', why);
      s.emit(vm, 'critical', `VM '${vm.config.name}' is PausedCritical: ${why}`);
    }
  }

  /**
   * A snapshot merge of this VM ran out of space (`why`), or has space again (undefined). A
   * Running VM turns RunningCritical while its merge waits, as Hyper-V flags a VM whose merge
   * cannot go on, and Running again once the merge goes on and its own storage is fine.
   */
  setMergeBlocked(idOrName: string, why: string | undefined): void {
    const s = this.s;
    const vm = s.find(idOrName);
    if ((vm.mergeBlocked ?? '') === (why ?? '')) return;
    vm.mergeBlocked = why;
    if (why && vm.state === 'VM_STATE_RUNNING') {
      s.setState(vm, 'VM_STATE_RUNNING_CRITICAL', `its snapshot merge is stuck: ${why}`);
      s.emit(
        vm,
        'critical',
        `VM '${vm.config.name}' is RunningCritical: its snapshot merge is stuck: ${why}`,
      );
    } else if (!why && vm.state === 'VM_STATE_RUNNING_CRITICAL' && vm.storage === 'ok') {
      s.setState(vm, 'VM_STATE_RUNNING', 'snapshot merge has space again');
    }
  }

  /** A model hook: the guest stops answering its integration services (hang, or back again). */
  setGuestResponsive(idOrName: string, responsive: boolean): void {
    const s = this.s;
    const vm = s.find(idOrName);
    vm.guestResponsive = responsive;
    updateResponsiveness(s, vm, vm.starving);
  }
}

/**
 * A guest answers its heartbeat unless it hangs or is starved of CPU; after
 * `heartbeatLostAfterMs` without an answer the host shows Lost communication.
 */
export function updateResponsiveness(s: EngineCore, vm: VmEntry, starving: boolean): void {
  vm.starving = starving;
  if (!vm.guestResponsive || starving) {
    vm.unresponsiveSinceMs ??= s.nowMs;
    return;
  }
  if (vm.unresponsiveSinceMs === undefined) return;
  vm.unresponsiveSinceMs = undefined;
  if (vm.heartbeat === 'HEARTBEAT_STATUS_LOST_COMMUNICATION' && vm.state === 'VM_STATE_RUNNING') {
    vm.heartbeat = 'HEARTBEAT_STATUS_OK';
    s.emit(vm, 'heartbeat_ok', `VM '${vm.config.name}': heartbeat OK`);
  }
}
