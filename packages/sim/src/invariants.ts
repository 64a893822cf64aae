import { MEMORY_ASSIGNED, type VmStateName } from '@hyperfarm/api';
import { usableMemory, vmMemoryCost, type FarmState } from '@hyperfarm/daemon';
import type { SimHost } from './host.js';

export interface Violation {
  property: string;
  time: number;
  detail: string;
}

/**
 * Where each VM really runs: its partition exists on a live host whose lease has not run out. A
 * copy frozen for a migration's handover does not count until the decision: it never runs again
 * unless the migration is aborted (and then the target must not run it: that shows up here).
 */
export function runningHosts(hosts: Iterable<SimHost>, now: number): Map<string, string[]> {
  const where = new Map<string, string[]>();
  for (const h of hosts) {
    if (!h.alive || h.leaseExpired(now)) continue;
    const frozen = h.migrations?.frozen;
    for (const [vmId, state] of h.states) {
      if (!MEMORY_ASSIGNED.has(state)) continue;
      if (state === 'VM_STATE_SAVING' && frozen?.has(vmId)) continue;
      let list = where.get(vmId);
      if (!list) where.set(vmId, (list = []));
      list.push(h.id);
    }
  }
  return where;
}

/** Safety: no VM has a partition on two hosts at once. */
export function checkSingleHost(where: Map<string, string[]>, now: number, out: Violation[]): void {
  for (const [vmId, hosts] of where)
    if (hosts.length > 1)
      out.push({
        property: 'vm-on-two-hosts',
        time: now,
        detail: `VM ${vmId} runs on ${hosts.join(' and ')}`,
      });
}

/** Safety: what runs on a host fits its memory (less the root reserve, plus each VM's overhead). */
export function checkHostMemory(hosts: Iterable<SimHost>, now: number, out: Violation[]): void {
  for (const h of hosts) {
    if (!h.alive) continue;
    const used = h.memoryInUse();
    const usable = h.shape.memoryBytes - h.shape.rootReserveBytes;
    if (used > usable)
      out.push({
        property: 'host-memory-overcommitted',
        time: now,
        detail: `host ${h.id} runs VMs needing ${used} bytes, ${usable} usable`,
      });
  }
}

/** Safety: what the farm has placed on each host fits it (every placed VM can run at once). */
export function checkPlacements(s: FarmState, now: number, out: Violation[]): void {
  for (const host of s.hosts.values()) {
    let used = 0;
    for (const id of s.vmsByHost.get(host.id) ?? []) used += vmMemoryCost(host, s.vms.get(id)!.config);
    if (used > usableMemory(host))
      out.push({
        property: 'placement-overcommitted',
        time: now,
        detail: `the farm placed VMs needing ${used} bytes on host ${host.id}, ${usableMemory(host)} usable`,
      });
  }
}

/** States in which a VM is wanted with its partition up. */
export const WANTS_PARTITION: ReadonlySet<VmStateName> = new Set(['VM_STATE_RUNNING', 'VM_STATE_PAUSED']);

/**
 * Raft's State Machine Safety (the Raft paper, Figure 3): once a daemon has applied a command at
 * an index, no daemon applies a different one there. A committed entry lost (say, acknowledged
 * before it was on disk, then a crash) shows up as another command at its index.
 */
export class AppliedLog {
  private readonly byIndex = new Map<number, { daemon: string; hash: number }>();

  record(daemon: string, index: number, data: Uint8Array, time: number, out: Violation[]): void {
    const hash = fnv1a(data);
    const first = this.byIndex.get(index);
    if (!first) this.byIndex.set(index, { daemon, hash });
    else if (first.hash !== hash)
      out.push({
        property: 'applied-entries-differ',
        time,
        detail: `daemon ${daemon} applied another command at index ${index} than daemon ${first.daemon} did`,
      });
  }
}

function fnv1a(data: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of data) h = Math.imul(h ^ b, 0x01000193);
  return h >>> 0;
}

/**
 * Fencing before failover: a VM gets a partition on a host while a crashed host that ran it
 * under an older generation may still hold its lease (as far as the farm can know, that host
 * is only unreachable and still runs it). `down` are the hosts that are down now.
 */
export function checkLeaseWait(
  down: Iterable<SimHost>,
  on: SimHost,
  vmId: string,
  now: number,
  out: Violation[],
): void {
  const state = on.states.get(vmId);
  const generation = on.records.get(vmId)?.generation;
  if (!state || !MEMORY_ASSIGNED.has(state) || generation === undefined) return;
  for (const h of down) {
    const old = h.records.get(vmId);
    // A copy frozen for a handover when its host crashed could not have run on (nor does it after).
    if (h.frozenAtCrash.has(vmId)) continue;
    if (old && old.generation < generation && MEMORY_ASSIGNED.has(old.state) && now < h.leaseAtCrash)
      out.push({
        property: 'restarted-before-lease-expired',
        time: now,
        detail: `VM ${vmId} runs on ${on.id} (generation ${generation}) ${h.leaseAtCrash - now} ms before the lease of ${h.id}, which ran it under generation ${old.generation}, runs out`,
      });
  }
}
