import type { EngineCore } from './core.js';
import { turnOff } from './power.js';

// The host lease (self-fencing): grants, and turning every VM off when it runs out.

/**
 * Grants or renews the host lease. A grant from an older term than the one held is ignored.
 * Once a lease is held, letting it run out turns every VM off (the daemon will restart them
 * elsewhere after waiting out the same lease, so no VM ever runs twice).
 */
export function grantLease(
  s: EngineCore,
  daemonId: string,
  term: number,
  durationMs: number,
): { expiresAtMs: number; accepted: boolean } {
  if (s.lease && term < s.lease.term) return { expiresAtMs: s.lease.expiresAtMs, accepted: false };
  const length = durationMs > 0 ? durationMs : s.options.leaseMs;
  s.lease = { daemonId, term, expiresAtMs: s.nowMs + length, expired: false };
  return { expiresAtMs: s.lease.expiresAtMs, accepted: true };
}

export function expireLease(s: EngineCore): void {
  s.lease!.expired = true;
  s.sequence++;
  s.events.push({
    sequence: s.sequence,
    timeMs: s.nowMs,
    type: 'lease_expired',
    vmId: '',
    message: `host lease from ${s.lease!.daemonId} (term ${s.lease!.term}) expired: turning off every VM`,
  });
  for (const vm of [...s.vms.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    if (vm.state === 'VM_STATE_OFF' || vm.state === 'VM_STATE_SAVED') continue;
    vm.migration = undefined;
    turnOff(s, vm, 'self-fenced: the host lease expired');
  }
}
