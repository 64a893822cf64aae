import type { NlbClusterState, TrafficReport } from './wire.js';

/**
 * The NLB view's figures as pure functions: who answered how many requests between two polls,
 * and each member's share of them, kept as a bounded series for the chart.
 */

export const SERIES_LENGTH = 60;

/** Requests each member has answered in a run so far, over its three phases. */
export function requestsByMember(r: TrafficReport): Map<string, number> {
  const out = new Map<string, number>();
  for (const phase of [r.before, r.during, r.after])
    for (const m of phase?.members ?? [])
      if (m.vmId) out.set(m.vmId, (out.get(m.vmId) ?? 0) + Number(m.requests));
  return out;
}

/** Connections each member tracks now, as its host reports it. */
export function connectionsByMember(s: NlbClusterState): Map<string, number> {
  return new Map(s.members.map((m) => [m.vmId, m.connections]));
}

export interface SharePoint {
  at: number;
  /** Each member's fraction, 0 to 1; empty when nothing happened in the interval. */
  shares: Map<string, number>;
  total: number;
}

/**
 * The share of each member in what changed between two counts (`delta`, for requests answered)
 * or in the latest count (connections held now). A member absent from `now` counts 0.
 */
export function sharePoint(at: number, now: Map<string, number>, before?: Map<string, number>): SharePoint {
  const amounts = new Map<string, number>();
  for (const [vm, n] of now) amounts.set(vm, Math.max(0, n - (before?.get(vm) ?? 0)));
  const total = [...amounts.values()].reduce((a, b) => a + b, 0);
  const shares = new Map<string, number>();
  if (total > 0) for (const [vm, n] of amounts) shares.set(vm, n / total);
  return { at, shares, total };
}

/** Appends a point, keeping the newest SERIES_LENGTH. */
export function pushPoint(series: SharePoint[], p: SharePoint): SharePoint[] {
  const next = [...series, p];
  return next.length > SERIES_LENGTH ? next.slice(next.length - SERIES_LENGTH) : next;
}
