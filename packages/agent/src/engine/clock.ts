import type { EngineCore } from './core.js';
import { shareHostCpu, step } from './guest.js';
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
    // A lazy engine whose shares are steady has nothing to do until a deadline or `toMs`.
    const stepMs = s.lazyGuests && s.steady ? Infinity : (s.options.maxStepMs ?? MAX_STEP_MS);
    const end = Math.min(toMs, s.nowMs + stepMs, next ?? Infinity);
    if (end > s.nowMs) {
      if (!s.lazyGuests) step(s, end - s.nowMs);
      else if (!s.steady) {
        // The guests ran the last step at the shares it began with; then the shares as they are now.
        s.settleGuests();
        s.steady = !shareHostCpu(s);
      }
      s.nowMs = end;
    }
    if (next !== undefined && next <= s.nowMs) fireDeadlines(s);
  }
}

/** When the engine next does something by itself with no guest running: a deadline's time. */
export function nextDeadline(s: EngineCore): number | undefined {
  // A plain loop: it runs at every step of every host.
  let next = s.lease && !s.lease.expired ? s.lease.expiresAtMs : Infinity;
  const lostAfter = s.timings.heartbeatLostAfterMs;
  for (const vm of s.vms.values()) {
    if (vm.deadlineMs !== undefined && vm.deadlineMs < next) next = vm.deadlineMs;
    if (vm.unresponsiveSinceMs !== undefined && vm.heartbeat === 'HEARTBEAT_STATUS_OK') {
      const at = vm.unresponsiveSinceMs + lostAfter;
      if (at < next) next = at;
    }
  }
  return next === Infinity ? undefined : next;
}

function fireDeadlines(s: EngineCore): void {
  const now = s.nowMs;
  if (s.lease && !s.lease.expired && s.lease.expiresAtMs <= now) expireLease(s);
  // Only the VMs with something due, in id order: what one of them does due changes no other's.
  const due = [...s.vms.values()].filter((vm) => deadlineDue(vm, now) || heartbeatDue(s, vm, now));
  for (const vm of due.sort((a, b) => a.id.localeCompare(b.id))) {
    if (deadlineDue(vm, now)) {
      const next = vm.next!;
      vm.deadlineMs = undefined;
      vm.next = undefined;
      finishTransition(s, vm, next);
    }
    if (heartbeatDue(s, vm, now)) {
      vm.heartbeat = 'HEARTBEAT_STATUS_LOST_COMMUNICATION';
      s.emit(vm, 'heartbeat_lost', `VM '${vm.config.name}': heartbeat Lost communication`);
    }
  }
}

const deadlineDue = (vm: VmEntry, now: number): boolean =>
  vm.deadlineMs !== undefined && vm.deadlineMs <= now;

const heartbeatDue = (s: EngineCore, vm: VmEntry, now: number): boolean =>
  vm.unresponsiveSinceMs !== undefined &&
  vm.heartbeat === 'HEARTBEAT_STATUS_OK' &&
  vm.unresponsiveSinceMs + s.timings.heartbeatLostAfterMs <= now;

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
