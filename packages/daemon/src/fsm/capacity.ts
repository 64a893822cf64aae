import { MEMORY_ASSIGNED } from '@hyperfarm/api';
import type { FarmState } from './state.js';
import type { HostRecord, VmConfig, VmRecord } from './model.js';

/**
 * What a host has committed to its VMs. Every VM placed on a host reserves its memory (plus the
 * per-VM overhead), its virtual processors and a running slot there, whatever its state: so
 * every VM a host holds can run at once, and a host's memory is never overcommitted, even when
 * all of them start together. (Hyper-V 2008 has no dynamic memory: a VM runs with all of it.)
 */
export interface HostLoad {
  memoryBytes: number;
  vcpus: number;
  vms: number;
  /** Anti-affinity classes held on the host: class name to the VMs holding it. */
  classes: Map<string, { vmName: string; hard: boolean }[]>;
}

export const vmMemoryCost = (host: HostRecord, config: VmConfig): number =>
  config.memoryBytes + host.capacity.perVmOverheadBytes;

/** Memory VMs may use: the host's memory less the root partition's reserve. */
export const usableMemory = (host: HostRecord): number =>
  Math.max(0, host.capacity.memoryBytes - host.capacity.rootReserveBytes);

/**
 * Each host's load from the VMs placed on it, kept by the set of its VMs and updated as VMs come
 * and go (state.ts): a planning round weighs every host, and recounting a farm of 50,000 VMs each
 * round was most of its cost. An entry holds only for the VM map it was counted from and the
 * host's per-VM overhead (what-if copies of the state replace the map, or the set, and miss).
 */
const baseLoads = new WeakMap<
  Set<string>,
  { overhead: number; vms: Map<string, VmRecord>; load: HostLoad }
>();

/**
 * Each host's VMs with memory assigned and the memory they use (a host's view: ListHosts views
 * every host, and counting them from the host's VMs walked a 50,000-VM farm for every page of
 * 1,000 hosts, 60 to 100 ms of the leader's loop). Kept by the set of the host's VMs as
 * `baseLoads` is, and updated by the same calls: a VM's every change passes through them (putVm
 * takes the old record out and puts the new one in).
 */
const usages = new WeakMap<
  Set<string>,
  { overhead: number; vms: Map<string, VmRecord>; running: number; memoryBytes: number }
>();

/** What `host`'s VMs with memory assigned use: how many, and their memory with the overhead. */
export function hostUsage(s: FarmState, host: HostRecord): { running: number; memoryBytes: number } {
  const ids = s.vmsByHost.get(host.id);
  if (!ids) return { running: 0, memoryBytes: 0 };
  const overhead = host.capacity.perVmOverheadBytes;
  let c = usages.get(ids);
  if (!c || c.overhead !== overhead || c.vms !== s.vms) {
    c = { overhead, vms: s.vms, running: 0, memoryBytes: 0 };
    for (const id of ids) usageOf(c, s.vms.get(id)!, 1);
    usages.set(ids, c);
  }
  return { running: c.running, memoryBytes: c.memoryBytes };
}

function usageOf(c: { overhead: number; running: number; memoryBytes: number }, vm: VmRecord, sign: 1 | -1) {
  if (!MEMORY_ASSIGNED.has(vm.observed.state)) return;
  c.running += sign;
  c.memoryBytes += sign * (vm.config.memoryBytes + c.overhead);
}

/** A VM joins or leaves (`sign`) the set `vmIds`, before it does: its host's kept usage follows. */
export function usageChanged(vmIds: Set<string> | undefined, vm: VmRecord, sign: 1 | -1): void {
  const c = vmIds && usages.get(vmIds);
  if (!c) return;
  if (vmIds.has(vm.id) === (sign === 1)) usages.delete(vmIds);
  else usageOf(c, vm, sign);
}

/** A VM joins the set `vmIds` (before it is added): its host's kept load counts it. */
export function loadAdded(vmIds: Set<string> | undefined, vm: VmRecord): void {
  usageChanged(vmIds, vm, 1);
  const c = vmIds && baseLoads.get(vmIds);
  if (!c || vmIds.has(vm.id)) {
    if (vmIds) baseLoads.delete(vmIds);
    return;
  }
  c.load = copyLoad(c.load);
  addCost(c.load, c.overhead, vm.config);
}

/** A VM leaves the set `vmIds` (before it is removed): its host's kept load no longer counts it. */
export function loadRemoved(vmIds: Set<string> | undefined, vm: VmRecord): void {
  usageChanged(vmIds, vm, -1);
  const c = vmIds && baseLoads.get(vmIds);
  if (!c || !vmIds.has(vm.id)) {
    if (vmIds) baseLoads.delete(vmIds);
    return;
  }
  const load = copyLoad(c.load);
  subtractCost(load, c.overhead, vm.config);
  c.load = load;
}

/** Takes a VM's cost out of a load (a copy: see copyLoad). */
function subtractCost(load: HostLoad, overhead: number, config: VmConfig): void {
  load.memoryBytes -= config.memoryBytes + overhead;
  load.vcpus -= config.processor.count;
  load.vms -= 1;
  for (const name of antiAffinityClasses(config).keys()) {
    const members = load.classes.get(name) ?? [];
    const at = members.findIndex((m) => m.vmName === config.name);
    if (at >= 0) members.splice(at, 1);
    if (members.length === 0) load.classes.delete(name);
  }
}

function countLoad(s: FarmState, host: HostRecord, ids: Iterable<string>): HostLoad {
  const load: HostLoad = { memoryBytes: 0, vcpus: 0, vms: 0, classes: new Map() };
  for (const id of ids) addToLoad(load, host, s.vms.get(id)!.config);
  return load;
}

/** A copy to change (a kept load is shared and never changed in place). */
export function copyLoad(l: HostLoad): HostLoad {
  if (l.classes.size === 0)
    return { memoryBytes: l.memoryBytes, vcpus: l.vcpus, vms: l.vms, classes: new Map() };
  const classes = new Map<string, { vmName: string; hard: boolean }[]>();
  for (const [name, members] of l.classes) classes.set(name, [...members]);
  return { memoryBytes: l.memoryBytes, vcpus: l.vcpus, vms: l.vms, classes };
}

/**
 * What `host` has committed (see HostLoad), leaving out `except`. The answer may be shared: it
 * is not to be changed in place (copyLoad first).
 */
export function hostLoad(s: FarmState, host: HostRecord, except?: string): HostLoad {
  const ids = s.vmsByHost.get(host.id);
  let load: HostLoad;
  let shared = false;
  if (!ids) load = countLoad(s, host, []);
  else {
    const overhead = host.capacity.perVmOverheadBytes;
    let c = baseLoads.get(ids);
    if (!c || c.overhead !== overhead || c.vms !== s.vms) {
      c = { overhead, vms: s.vms, load: countLoad(s, host, ids) };
      baseLoads.set(ids, c);
    }
    load = c.load;
    shared = true;
    // A VM of the host left out (its own change weighed, as UpdateVm's): the kept load less its
    // cost, rather than a recount of the host's VMs for every change of one of them.
    if (except !== undefined && ids.has(except)) {
      load = copyLoad(load);
      subtractCost(load, overhead, s.vms.get(except)!.config);
      shared = false;
    }
  }
  // A VM migrating here holds its room from the request on, so nothing else takes it meanwhile;
  // one migrating away keeps its room here until the migration ends (a committed handover is
  // placed on the target, but the source holds the frozen copy until told, and may get it back).
  for (const moving of [s.incoming.get(host.id), s.outgoing.get(host.id)]) {
    if (!moving) continue;
    for (const mid of moving) {
      const vm = s.vms.get(s.migrations.get(mid)!.vmId);
      if (!vm || vm.id === except || vm.hostId === host.id) continue;
      if (shared) [load, shared] = [copyLoad(load), false];
      addToLoad(load, host, vm.config);
    }
  }
  return load;
}

export function addToLoad(load: HostLoad, host: HostRecord, config: VmConfig): void {
  addCost(load, host.capacity.perVmOverheadBytes, config);
}

function addCost(load: HostLoad, overhead: number, config: VmConfig): void {
  load.memoryBytes += config.memoryBytes + overhead;
  load.vcpus += config.processor.count;
  load.vms += 1;
  for (const [name, hard] of antiAffinityClasses(config)) {
    let members = load.classes.get(name);
    if (!members) load.classes.set(name, (members = []));
    members.push({ vmName: config.name, hard });
  }
}

/** The anti-affinity classes of a VM, each marked hard or soft. */
export function antiAffinityClasses(config: VmConfig): Map<string, boolean> {
  const classes = new Map<string, boolean>();
  for (const name of config.antiAffinityClassNames ?? []) classes.set(name, config.antiAffinityHard);
  if (config.antiAffinityGroup) classes.set(config.antiAffinityGroup, true);
  return classes;
}

/**
 * The classes a VM would share on a host: hard when either side holds the class as hard (a VM
 * that asked never to share a host is not joined by one that only prefers it). Each comes with
 * one VM that holds it there.
 */
export function sharedClasses(
  mine: Map<string, boolean>,
  load: HostLoad,
): { name: string; hard: boolean; with: string; count: number }[] {
  const shared: { name: string; hard: boolean; with: string; count: number }[] = [];
  for (const [name, hard] of mine) {
    const members = load.classes.get(name);
    if (!members || members.length === 0) continue;
    shared.push({
      name,
      hard: hard || members.some((m) => m.hard),
      with: members[0]!.vmName,
      count: members.length,
    });
  }
  return shared;
}

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

/** "1.5 GB", "512 MB": sizes as Hyper-V Manager shows them (binary units). */
export function formatBytes(bytes: number): string {
  if (bytes >= GIB) return `${Math.round((bytes / GIB) * 10) / 10} GB`;
  return `${Math.round(bytes / MIB)} MB`;
}
