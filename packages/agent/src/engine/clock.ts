import type { EngineCore } from './core.js';
import { step } from './guest.js';
import { expireLease } from './lease.js';
import { MAX_STEP_MS, type VmEntry } from './model.js';
import { bootCompleted, bootMs, powerOn } from './power.js';
import type { VmState } from './states.js';

// Time: moving the engine's clock and firing the deadlines of transitions, heartbeats and the lease.

/**
 * Moves the clock to `toMs`, firing every deadline on the way in time order. Steps are at
 * most MAX_STEP_MS long, so what a step itself sets off (a starved guest's heartbeat timer)
 * is noticed within one step.
 */
export function advance(s: EngineCore, toMs: number): void {
  if (!(toMs > s.nowMs)) return;
  while (s.nowMs < toMs) {
    const next = nextDeadline(s);
    const end = Math.min(toMs, s.nowMs + (s.options.maxStepMs ?? MAX_STEP_MS), next ?? Infinity);
    if (end > s.nowMs) {
      step(s, end - s.nowMs);
      s.nowMs = end;
    }
    if (next !== undefined && next <= s.nowMs) fireDeadlines(s);
  }
}

function nextDeadline(s: EngineCore): number | undefined {
  let next: number | undefined;
  const consider = (t: number | undefined) => {
    if (t !== undefined && (next === undefined || t < next)) next = t;
  };
  for (const vm of s.vms.values()) {
    consider(vm.deadlineMs);
    if (vm.unresponsiveSinceMs !== undefined && vm.heartbeat === 'HEARTBEAT_STATUS_OK') {
      consider(vm.unresponsiveSinceMs + s.timings.heartbeatLostAfterMs);
    }
  }
  if (s.lease && !s.lease.expired) consider(s.lease.expiresAtMs);
  return next;
}

function fireDeadlines(s: EngineCore): void {
  const now = s.nowMs;
  if (s.lease && !s.lease.expired && s.lease.expiresAtMs <= now) expireLease(s);
  for (const vm of [...s.vms.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    if (vm.deadlineMs !== undefined && vm.deadlineMs <= now) {
      const next = vm.next!;
      vm.deadlineMs = undefined;
      vm.next = undefined;
      finishTransition(s, vm, next);
    }
    if (
      vm.unresponsiveSinceMs !== undefined &&
      vm.heartbeat === 'HEARTBEAT_STATUS_OK' &&
      vm.unresponsiveSinceMs + s.timings.heartbeatLostAfterMs <= now
    ) {
      vm.heartbeat = 'HEARTBEAT_STATUS_LOST_COMMUNICATION';
      s.emit(vm, 'heartbeat_lost', `VM '${vm.config.name}': heartbeat Lost communication`);
    }
  }
}

function finishTransition(s: EngineCore, vm: VmEntry, next: VmState): void {
  switch (vm.state) {
    case 'VM_STATE_STARTING':
      bootCompleted(s, vm);
      s.setState(vm, 'VM_STATE_RUNNING', 'running');
      break;
    case 'VM_STATE_STOPPING':
      s.release(vm);
      s.setState(vm, 'VM_STATE_OFF', 'shut down by the guest');
      break;
    case 'VM_STATE_RESETTING':
      powerOn(s, vm);
      s.setState(vm, 'VM_STATE_STARTING', 'booting after a reset');
      vm.deadlineMs = s.nowMs + bootMs(s, vm);
      vm.next = 'VM_STATE_RUNNING';
      break;
    default:
      s.setState(vm, next, next === 'VM_STATE_RUNNING' ? 'running' : '');
  }
}
