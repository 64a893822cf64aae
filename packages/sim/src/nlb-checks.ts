import type { NlbMemberStatus } from '@hyperfarm/agent';
import type { SimHost } from './host.js';
import type { Violation } from './invariants.js';

/** One member as its host's network reports it. */
export interface MemberSeen {
  host: string;
  /** Whether its VM's adapter runs (a frozen or Off VM's member sends and answers nothing). */
  running: boolean;
  status: NlbMemberStatus;
}

/** Every NLB member on the live hosts, by cluster id, as their networks report them now. */
export function nlbMembers(hosts: Iterable<SimHost>): Map<string, MemberSeen[]> {
  const out = new Map<string, MemberSeen[]>();
  for (const h of hosts) {
    const n = h.network;
    if (!n) continue;
    for (const c of n.config().nlbClusters) {
      const list = out.get(c.id) ?? [];
      for (const status of n.net.nlbStatus(c.id))
        list.push({ host: h.id, running: n.net.vmState(status.vmId) === 'running', status });
      out.set(c.id, list);
    }
  }
  return out;
}

const ACTIVE = new Set(['converging', 'converged', 'draining']);

/**
 * A cluster is converged as GetNlbClusterState says (the daemon's network API): its active
 * members all converged, on one view and one bucket map. Returns that view and map, or undefined.
 */
export function convergedMap(
  members: MemberSeen[],
): { view: number[]; maps: (number[] | null)[] } | undefined {
  const active = members.filter((m) => ACTIVE.has(m.status.state));
  if (active.length === 0 || !active.every((m) => m.status.state === 'converged')) return undefined;
  const key = (m: MemberSeen) => JSON.stringify([m.status.view, m.status.maps]);
  const first = key(active[0]!);
  if (!active.every((m) => key(m) === first)) return undefined;
  return { view: active[0]!.status.view, maps: active[0]!.status.maps };
}

/**
 * The network's safety, after every step of a run with networks:
 * - an NLB member is active on one host at most (a migrated VM's member leaves its old host
 *   with the VM: two copies would both answer the clients of its buckets);
 * - once a cluster has converged (one view, one map), every bucket of every rule belongs to one
 *   member that the members count alive, or to none: never to a member they have dropped.
 */
export function checkNlb(hosts: Iterable<SimHost>, time: number, violations: Violation[]): void {
  for (const [cluster, members] of nlbMembers(hosts)) {
    const where = new Map<string, string>();
    for (const m of members) {
      if (!ACTIVE.has(m.status.state)) continue;
      const other = where.get(m.status.vmId);
      if (other !== undefined)
        violations.push({
          property: 'nlb-member-twice',
          time,
          detail: `NLB cluster ${cluster}: member ${m.status.vmId} is active on ${other} and ${m.host}`,
        });
      where.set(m.status.vmId, m.host);
    }
    const converged = convergedMap(members);
    if (!converged) continue;
    const view = new Set(converged.view);
    converged.maps.forEach((map, rule) => {
      if (!map) return;
      const stray = map.findIndex((owner) => owner !== 0 && !view.has(owner));
      if (stray >= 0)
        violations.push({
          property: 'nlb-bucket-owner',
          time,
          detail: `NLB cluster ${cluster}, rule ${rule}: bucket ${stray} belongs to priority ${map[stray]}, which is not in the converged view [${converged.view.join(', ')}]`,
        });
    });
  }
}

/**
 * The clusters as the hosts' networks hold them now, for a drill's report: converged or not, and
 * each member's host, state and share of the first rule's buckets in the converged map.
 */
export function nlbSummary(
  hosts: Iterable<SimHost>,
  clusterName: (id: string) => string,
  vmName: (id: string) => string,
  hostName: (id: string) => string,
): {
  cluster: string;
  converged: boolean;
  members: { vm: string; host: string; state: string; buckets: number }[];
}[] {
  return [...nlbMembers(hosts)].map(([id, members]) => {
    const c = convergedMap(members);
    const first = c?.maps[0] ?? [];
    return {
      cluster: clusterName(id),
      converged: c !== undefined,
      members: members
        .sort((a, b) => a.status.priority - b.status.priority)
        .map((m) => ({
          vm: vmName(m.status.vmId),
          host: hostName(m.host),
          state: m.status.state,
          buckets: first.filter((owner) => owner === m.status.priority).length,
        })),
    };
  });
}

/**
 * Liveness, checked once the faults have stopped and the farm has had its calm: every NLB
 * cluster has converged over the members whose VMs run. `running` holds, per cluster id, those
 * members (VM id to host priority) as the farm's state and the hosts have them: each must be
 * reported by its host's network as converged, all of them on one view and one bucket map, and
 * that view must be exactly their priorities (none missing, none the others still count alive).
 */
export function checkNlbConverged(
  hosts: Iterable<SimHost>,
  running: Map<string, Map<string, number>>,
  time: number,
  violations: Violation[],
): void {
  const seen = nlbMembers(hosts);
  for (const [cluster, wanted] of running) {
    if (wanted.size === 0) continue;
    const members = (seen.get(cluster) ?? []).filter((m) => m.running);
    const want = [...wanted.values()].sort((a, b) => a - b);
    const converged = convergedMap(members);
    const behind = [...wanted.keys()].filter(
      (vmId) => !members.some((m) => m.status.vmId === vmId && m.status.state === 'converged'),
    );
    if (converged && behind.length === 0 && converged.view.join() === want.join()) continue;
    const states = members
      .map((m) => `${m.status.vmId} on ${m.host} ${m.status.state} [${m.status.view.join(', ')}]`)
      .join('; ');
    violations.push({
      property: 'nlb-not-converged',
      time,
      detail:
        `NLB cluster ${cluster} has not converged over its running members (priorities ${want.join(', ')})` +
        `${behind.length > 0 ? `; not converged: ${behind.join(', ')}` : ''}; members seen: ${states || 'none'}`,
    });
  }
}
