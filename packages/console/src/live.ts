import type { Host } from './wire.js';

/**
 * A host's figures that the event stream does not carry: the farm does not commit them (they
 * change every heartbeat), so the page asks ListHosts for them every few seconds. They are the
 * leader's live view, a second or two old when a follower answers.
 */
export interface HostLive {
  cpuPercent: number;
  /** The host's last answered heartbeat, Unix ms on the leader's clock; 0 if none yet. */
  lastHeartbeatMs: number;
}

/**
 * The hosts' live figures from a full ListHosts answer. An unchanged host keeps its object, so
 * its card is not drawn again; nothing changed at all gives `prev` back.
 */
export function mergeLive(
  prev: ReadonlyMap<string, HostLive>,
  hosts: readonly Host[],
): ReadonlyMap<string, HostLive> {
  const next = new Map<string, HostLive>();
  let changed = hosts.length !== prev.size;
  for (const h of hosts) {
    const before = prev.get(h.id);
    const cpuPercent = h.usage?.cpuPercent ?? 0;
    const lastHeartbeatMs = Number(h.lastHeartbeatMs);
    if (before && before.cpuPercent === cpuPercent && before.lastHeartbeatMs === lastHeartbeatMs) {
      next.set(h.id, before);
    } else {
      next.set(h.id, { cpuPercent, lastHeartbeatMs });
      changed = true;
    }
  }
  return changed ? next : prev;
}
