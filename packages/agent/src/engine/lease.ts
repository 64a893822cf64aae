import type { EngineCore } from './core.js';
import { powerOff } from './power.js';

/**
 * The host lease (self-fencing). Once a lease is held, letting it run out turns every VM off: the
 * daemon restarts them elsewhere only after waiting out the same lease, so no VM runs twice.
 */
export class Lease {
  constructor(private readonly s: EngineCore) {}

  /** Grants or renews the lease. A grant from an older term than the one held is ignored. */
  grant(daemonId: string, term: number, durationMs: number): { expiresAtMs: number; accepted: boolean } {
    const s = this.s;
    if (s.lease && term < s.lease.term) return { expiresAtMs: s.lease.expiresAtMs, accepted: false };
    const length = durationMs > 0 ? durationMs : s.options.leaseMs;
    s.lease = { daemonId, term, expiresAtMs: s.nowMs + length, expired: false };
    return { expiresAtMs: s.lease.expiresAtMs, accepted: true };
  }

  state(): { daemonId: string; term: number; expiresAtMs: number; expired: boolean } | undefined {
    return this.s.lease ? { ...this.s.lease } : undefined;
  }
}

/** The lease ran out: every VM with a partition is turned off, a migration in flight ends. */
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
    powerOff(s, vm, 'self-fenced: the host lease expired');
  }
}
