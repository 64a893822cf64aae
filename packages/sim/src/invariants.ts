import { MEMORY_ASSIGNED, type VmStateName } from '@hyperfarm/api';
import {
  usableMemory,
  vmMemoryCost,
  type FarmState,
  type FarmStateMachine,
  type HostRecord,
  type VmRecord,
} from '@hyperfarm/daemon';
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
    for (const vmId of h.states.keys()) {
      if (!hasPartition(h, vmId)) continue;
      let list = where.get(vmId);
      if (!list) where.set(vmId, (list = []));
      list.push(h.id);
    }
  }
  return where;
}

/** The VM has a partition on this host that may run (not a copy frozen for a handover). */
function hasPartition(h: SimHost, vmId: string): boolean {
  const state = h.states.get(vmId);
  if (!state || !MEMORY_ASSIGNED.has(state)) return false;
  return !(state === 'VM_STATE_SAVING' && h.migrations?.frozen.has(vmId));
}

/**
 * The hosts' safety invariants (one host per VM, host memory) checked after each step on what
 * changed in it: the VMs whose state (or frozen mark) changed on some host and the hosts whose
 * VMs or records changed, as SimHost.onTouched reports them. The same properties as the full
 * scans above, at a cost per change instead of per VM of the farm. Nothing else makes a VM run
 * on a host: a lease that runs out only takes VMs away, and a grant after it brings the engine
 * to now (turning them off) before it renews.
 */
export class HostSafetyWatch {
  /** Each VM's hosts that had it in their states at the last check. */
  private readonly holders = new Map<string, Set<SimHost>>();
  private readonly touchedVms = new Map<string, Set<SimHost>>();
  /** Per host, the memory each VM with a partition there takes (with its overhead), and the sum. */
  private readonly memory = new Map<SimHost, { total: number; byVm: Map<string, number> }>();

  /**
   * A record changes with an event of its VM (which touches it), but for a change of config:
   * memory cannot change under a running VM (no dynamic memory), and the full scans see it.
   */
  touched(host: SimHost, vmId: string): void {
    let hosts = this.touchedVms.get(vmId);
    if (!hosts) this.touchedVms.set(vmId, (hosts = new Set()));
    hosts.add(host);
  }

  /** The hosts on which the VM has a partition that runs now (its host alive, its lease held). */
  runningOn(vmId: string, now: number): SimHost[] {
    const out: SimHost[] = [];
    for (const h of this.holders.get(vmId) ?? [])
      if (h.alive && !h.leaseExpired(now) && hasPartition(h, vmId)) out.push(h);
    return out;
  }

  check(now: number, out: Violation[]): void {
    const grown = new Set<SimHost>();
    for (const [vmId, hosts] of this.touchedVms) {
      let holders = this.holders.get(vmId);
      for (const h of hosts) {
        if (h.states.has(vmId)) {
          if (!holders) this.holders.set(vmId, (holders = new Set()));
          holders.add(h);
        } else holders?.delete(h);
        if (this.account(h, vmId)) grown.add(h);
      }
      if (holders?.size === 0) this.holders.delete(vmId);
      const running = this.runningOn(vmId, now);
      if (running.length > 1)
        out.push({
          property: 'vm-on-two-hosts',
          time: now,
          detail: `VM ${vmId} runs on ${running.map((h) => h.id).join(' and ')}`,
        });
    }
    this.touchedVms.clear();
    for (const h of grown) {
      const used = this.memory.get(h)!.total;
      const usable = h.shape.memoryBytes - h.shape.rootReserveBytes;
      if (used > usable) out.push(memoryViolation(h, used, usable, now));
    }
  }

  /** Brings the host's memory in use up to date for the VM; true if it grew. */
  private account(h: SimHost, vmId: string): boolean {
    const state = h.states.get(vmId);
    const record = state && MEMORY_ASSIGNED.has(state) ? h.records.get(vmId) : undefined;
    const bytes = record ? record.config.memoryBytes + h.shape.perVmOverheadBytes : 0;
    let m = this.memory.get(h);
    if (!m) this.memory.set(h, (m = { total: 0, byVm: new Map() }));
    const before = m.byVm.get(vmId) ?? 0;
    if (bytes === before) return false;
    if (bytes === 0) m.byVm.delete(vmId);
    else m.byVm.set(vmId, bytes);
    m.total += bytes - before;
    return bytes > before;
  }
}

function memoryViolation(h: SimHost, used: number, usable: number, now: number): Violation {
  return {
    property: 'host-memory-overcommitted',
    time: now,
    detail: `host ${h.id} runs VMs needing ${used} bytes, ${usable} usable`,
  };
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
    if (used > usable) out.push(memoryViolation(h, used, usable, now));
  }
}

/** Safety: what the farm has placed on each host fits it (every placed VM can run at once). */
export function checkPlacements(s: FarmState, now: number, out: Violation[]): void {
  for (const host of s.hosts.values()) checkHostPlacements(s, host, now, out);
}

function checkHostPlacements(s: FarmState, host: HostRecord, now: number, out: Violation[]): void {
  let used = 0;
  for (const id of s.vmsByHost.get(host.id) ?? []) used += vmMemoryCost(host, s.vms.get(id)!.config);
  if (used > usableMemory(host)) out.push(placementViolation(host, used, now));
}

/**
 * checkPlacements on one daemon's state machine after each step, from its applied commands'
 * events: each VM's memory is tallied on the host its record names (a count of its own, not the
 * state machine's kept loads), and the hosts whose tally grew, or whose record changed, are
 * checked. A new machine (a boot) or a snapshot that replaced the state is counted again whole.
 */
export class PlacementWatch {
  /** Each placed VM's host and memory (without the host's per-VM overhead). */
  private readonly placed = new Map<string, { hostId: string; bytes: number }>();
  /** Per host, the memory and the number of the VMs placed there. */
  private readonly tally = new Map<string, { bytes: number; vms: number }>();
  private readonly grown = new Set<string>();
  private all = true;
  private unfollow: (() => void)[] = [];
  private machine: FarmStateMachine | undefined;

  follow(machine: FarmStateMachine): void {
    for (const f of this.unfollow) f();
    this.machine = machine;
    this.all = true;
    this.unfollow = [
      machine.onApplied((a) => {
        if (this.all) return;
        for (const ev of a.events) {
          if (ev.kind === 'RESOURCE_KIND_HOST') this.grown.add(ev.id);
          else if (ev.kind === 'RESOURCE_KIND_VM')
            this.place(ev.id, ev.type === 'EVENT_TYPE_PUT' ? ev.resource : undefined);
        }
      }),
      machine.onRestored(() => (this.all = true)),
    ];
  }

  private place(vmId: string, vm: VmRecord | undefined): void {
    const before = this.placed.get(vmId);
    const hostId = vm?.hostId ?? '';
    const bytes = vm?.config.memoryBytes ?? 0;
    if (before?.hostId === hostId && before.bytes === bytes) return;
    if (before) {
      const t = this.tally.get(before.hostId)!;
      t.bytes -= before.bytes;
      t.vms--;
      this.placed.delete(vmId);
    }
    if (!hostId) return;
    this.placed.set(vmId, { hostId, bytes });
    let t = this.tally.get(hostId);
    if (!t) this.tally.set(hostId, (t = { bytes: 0, vms: 0 }));
    t.bytes += bytes;
    t.vms++;
    this.grown.add(hostId);
  }

  check(now: number, out: Violation[]): void {
    const s = this.machine?.state;
    if (!s) return;
    if (this.all) {
      this.all = false;
      this.placed.clear();
      this.tally.clear();
      for (const vm of s.vms.values()) this.place(vm.id, vm);
      checkPlacements(s, now, out);
    } else
      for (const id of this.grown) {
        const host = s.hosts.get(id);
        const t = this.tally.get(id);
        if (!host || !t) continue;
        const used = t.bytes + t.vms * host.capacity.perVmOverheadBytes;
        if (used > usableMemory(host)) out.push(placementViolation(host, used, now));
      }
    this.grown.clear();
  }
}

function placementViolation(host: HostRecord, used: number, now: number): Violation {
  return {
    property: 'placement-overcommitted',
    time: now,
    detail: `the farm placed VMs needing ${used} bytes on host ${host.id}, ${usableMemory(host)} usable`,
  };
}

/** States in which a VM is wanted with its partition up. */
export const WANTS_PARTITION: ReadonlySet<VmStateName> = new Set(['VM_STATE_RUNNING', 'VM_STATE_PAUSED']);

/**
 * Raft's State Machine Safety (the Raft paper, Figure 3): once a daemon has applied a command at
 * an index, no daemon applies a different one there. A committed entry lost (say, acknowledged
 * before it was on disk, then a crash) shows up as another command at its index.
 */
export class AppliedLog {
  /**
   * Per index, the hash of the command first applied there and which daemon applied it (its
   * number plus one; 0: none yet), in flat arrays grown by doubling: a map of an object per
   * index held one for every entry of the run's log, which the garbage collector walked again
   * and again in a long run.
   */
  private hashes = new Uint32Array(1_024);
  private firsts = new Uint8Array(1_024);
  private readonly daemons: string[] = [];

  record(daemon: string, index: number, data: Uint8Array, time: number, out: Violation[]): void {
    const hash = fnv1a(data);
    if (index >= this.firsts.length) this.grow(index);
    const first = this.firsts[index]!;
    if (first === 0) {
      let n = this.daemons.indexOf(daemon);
      if (n < 0) n = this.daemons.push(daemon) - 1;
      this.firsts[index] = n + 1;
      this.hashes[index] = hash;
    } else if (this.hashes[index] !== hash)
      out.push({
        property: 'applied-entries-differ',
        time,
        detail: `daemon ${daemon} applied another command at index ${index} than daemon ${this.daemons[first - 1]} did`,
      });
  }

  private grow(index: number): void {
    const size = Math.max(index + 1, 2 * this.firsts.length);
    const hashes = new Uint32Array(size);
    const firsts = new Uint8Array(size);
    hashes.set(this.hashes);
    firsts.set(this.firsts);
    this.hashes = hashes;
    this.firsts = firsts;
  }
}

function fnv1a(data: Uint8Array): number {
  let h = 0x811c9dc5;
  // Indexed: every daemon hashes every entry it applies.
  for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i]!, 0x01000193);
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
