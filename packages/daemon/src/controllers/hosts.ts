import type { FarmState, HostRecord, HostStateName } from '../fsm/index.js';

/**
 * The host monitor, as Nomad's heartbeat timers but from the leader's side: the leader grants
 * each host its lease every interval (GrantLease), and a host whose grants have failed for the
 * suspect time is Suspect, for the down time Down. Only these transitions reach the log, never
 * each heartbeat. A new leader counts a host's silence from when it took over (it knows nothing
 * of the grants before), a host that came Up from when it did, and never declares a host better
 * without hearing from it.
 */

export interface LivenessConfig {
  suspectAfterMs: number;
  downAfterMs: number;
}

/** Failover Clustering 2008's defaults: a heartbeat each second, Down after 5 missed. */
export const DEFAULT_LIVENESS: LivenessConfig & { intervalMs: number } = {
  intervalMs: 1_000,
  suspectAfterMs: 2_000,
  downAfterMs: 5_000,
};

export interface HostTransition {
  hostId: string;
  state: HostStateName;
  reason: string;
}

const SEVERITY: Record<HostStateName, number> = {
  HOST_STATE_UP: 0,
  HOST_STATE_SUSPECT: 1,
  HOST_STATE_DOWN: 2,
};

export function hostTransitions(
  s: FarmState,
  /** When each host last answered a grant, on the leader's clock, since this leader took over. */
  lastGrantMs: ReadonlyMap<string, number>,
  /**
   * Silence is counted from no earlier than this: when this leader took over, or when it last
   * resumed from a stall of its own (a leader that asked nothing cannot blame the hosts).
   */
  leaderSinceMs: number,
  nowMs: number,
  cfg: LivenessConfig,
  /**
   * Hosts with a grant just sent and not answered yet: they get no worse until it settles (an
   * answer that is a few ms slower than the last one must not make a healthy host Suspect).
   */
  awaiting: Pick<ReadonlySet<string>, 'has'> = new Set(),
): { transitions: HostTransition[]; nextMs: number } {
  const transitions: HostTransition[] = [];
  let nextMs = Infinity;
  for (const host of s.hosts.values()) {
    const lastOk = lastGrantMs.get(host.id);
    const t = judge(host, lastOk, leaderSinceMs, nowMs, cfg);
    if (t && !(awaiting.has(host.id) && SEVERITY[t.state] > SEVERITY[host.state])) transitions.push(t);
    nextMs = Math.min(nextMs, worseAt(host, lastOk, leaderSinceMs, nowMs, cfg));
  }
  return { transitions, nextMs };
}

/**
 * When the host's silence, if nothing is heard meanwhile, next crosses a threshold (Infinity if
 * it is Down already). Judging at that very moment, rather than at the next grant round, keeps
 * "Down after 5 missed" at 5 s: a round's answers arrive a little after it, so the round 5 s
 * after the last answer sees 4.99 s of silence, and the one after, 5.99 s.
 */
function worseAt(
  host: HostRecord,
  lastOk: number | undefined,
  leaderSinceMs: number,
  nowMs: number,
  cfg: LivenessConfig,
): number {
  // Without an array per host: this runs for every host at every grant round.
  const since = silenceSince(host, lastOk, leaderSinceMs);
  if (since + cfg.suspectAfterMs > nowMs) return since + cfg.suspectAfterMs;
  if (since + cfg.downAfterMs > nowMs) return since + cfg.downAfterMs;
  return Infinity;
}

/** A host that just came Up (registered, re-registered) gets the full time from then. */
function silenceSince(host: HostRecord, lastOk: number | undefined, leaderSinceMs: number): number {
  const upSince = host.state === 'HOST_STATE_UP' ? host.stateChangedAtMs : 0;
  return Math.max(lastOk ?? 0, leaderSinceMs, upSince);
}

function judge(
  host: HostRecord,
  lastOk: number | undefined,
  leaderSinceMs: number,
  nowMs: number,
  cfg: LivenessConfig,
): HostTransition | undefined {
  const since = silenceSince(host, lastOk, leaderSinceMs);
  const silence = nowMs - since;
  let state: HostStateName =
    silence >= cfg.downAfterMs
      ? 'HOST_STATE_DOWN'
      : silence >= cfg.suspectAfterMs
        ? 'HOST_STATE_SUSPECT'
        : 'HOST_STATE_UP';
  // Without an answer since the count started, a host only gets worse.
  const heard = lastOk !== undefined && lastOk >= leaderSinceMs;
  if (!heard && SEVERITY[state] < SEVERITY[host.state]) state = host.state;
  if (state === host.state) return undefined;
  const reason =
    state === 'HOST_STATE_UP'
      ? 'its lease is renewed again'
      : `no lease renewal for ${(silence / 1000).toFixed(1)} s${lastOk === undefined && since === leaderSinceMs ? " (counted from this leader's election)" : ''}`;
  return { hostId: host.id, state, reason };
}
