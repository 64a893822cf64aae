import { alreadyExists, failedPrecondition, invalidArgument, type pb } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import { settleGuest } from './guest.js';
import type { GuestMemory } from './memory.js';
import type { VmEntry } from './model.js';
import type { VmbusChannel } from './partition.js';
import { stateName, type VmState } from './states.js';
import { checkId, normalizeConfig, validateConfig, type VmConfig } from './validate.js';

/** What the engine needs to know of a VM's snapshots, which the caller keeps. */
export interface SnapshotFacts {
  /** How many snapshots the VM has (their differencing disks hang on its current disk files). */
  snapshots: number;
  /** The merge folding its snapshot disks now, if one does. */
  merging?: { id: string; state: string } | undefined;
}

export const NO_SNAPSHOTS: SnapshotFacts = { snapshots: 0 };

/** Refuses `what` while a merge folds the VM's snapshot disks. */
export function noMerge(vm: VmEntry, facts: SnapshotFacts, what: string): void {
  if (facts.merging) {
    throw failedPrecondition(
      `cannot ${what} VM '${vm.config.name}': merge ${facts.merging.id} is folding its snapshot disks (${facts.merging.state}); retry once GetMerge says completed`,
    );
  }
}

/** An update checked against the VM as it is, not yet applied. */
export interface PlannedUpdate {
  vmId: string;
  /** The configuration the update leads to. */
  config: VmConfig;
  /** Fields (camelCase, dotted) whose value changes. */
  touched: string[];
}

/** VM records: create, read, update, delete, and the names and MAC addresses they hold. */
export class Vms {
  constructor(private readonly s: EngineCore) {}

  create(vmId: string, input: pb.VmConfig | pb.VmConfig__Output, generation = 0): pb.Vm__Output {
    const s = this.s;
    checkId('vm_id', vmId);
    const config = normalizeConfig(input);
    validateConfig(config, s.options.limits);
    const existing = s.vms.get(vmId);
    if (existing) {
      // A repeated create of the same VM is harmless; anything else is a conflict.
      if (existing.generation === generation && existing.config.name === config.name) return s.view(existing);
      throw alreadyExists('VM', vmId);
    }
    checkNameFree(s, config.name, vmId);
    assignMacs(s, config, 'config');
    const vm = newEntry(s, vmId, config, generation, s.nowMs);
    s.vms.set(vmId, vm);
    s.emit(vm, 'state_changed', `VM '${config.name}' created`);
    return s.view(vm);
  }

  get(idOrName: string): pb.Vm__Output {
    return this.s.view(this.s.find(idOrName));
  }

  list(): pb.Vm__Output[] {
    return [...this.s.vms.values()].sort((a, b) => a.id.localeCompare(b.id)).map((vm) => this.s.view(vm));
  }

  /**
   * Every VM's id, configuration and state in id order, without the copies `list` makes: for a
   * reader that only looks, and does so before the engine changes again. The network's sync
   * runs on every event and every 250 ms; with `list` it cloned every VM's configuration each
   * time, most of a multi-host agent's CPU once 10,000 VMs were placed (bench:placement).
   */
  peek(): { id: string; config: Readonly<VmEntry['config']>; state: VmState }[] {
    return [...this.s.vms.values()]
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((vm) => ({ id: vm.id, config: vm.config, state: vm.state }));
  }

  has(id: string): boolean {
    return this.s.vms.has(id);
  }

  /**
   * Checks an update (the fields named by `paths`, proto field-mask paths in snake_case, dotted;
   * none means the whole configuration) without applying it: what the caller must prepare
   * first (disk files) is in the plan.
   */
  planUpdate(
    idOrName: string,
    input: pb.VmConfig | pb.VmConfig__Output,
    paths: readonly string[],
    generation: number,
    facts: SnapshotFacts,
  ): PlannedUpdate {
    const vm = this.s.command(idOrName, generation, 'update');
    return { vmId: vm.id, ...planUpdate(this.s, vm, input, paths, facts) };
  }

  /** Applies an update (see planUpdate). */
  update(
    idOrName: string,
    input: pb.VmConfig | pb.VmConfig__Output,
    paths: readonly string[],
    generation: number,
    facts: SnapshotFacts = NO_SNAPSHOTS,
  ): pb.Vm__Output {
    const s = this.s;
    const vm = s.command(idOrName, generation, 'update');
    const { config: next, touched } = planUpdate(s, vm, input, paths, facts);
    if (touched.length === 0) return s.view(vm);
    if (touched.includes('networkAdapters')) {
      releaseMacs(s, vm.config);
      try {
        assignMacs(s, next, 'config');
      } catch (err) {
        assignMacs(s, vm.config, 'config');
        throw err;
      }
    }
    s.guestsChange();
    vm.config = next;
    s.emit(vm, 'state_changed', `VM '${next.name}' configuration changed: ${touched.join(', ')}`);
    return s.view(vm);
  }

  delete(idOrName: string, generation = 0, facts: SnapshotFacts = NO_SNAPSHOTS): void {
    const s = this.s;
    const vm = s.command(idOrName, generation, 'delete');
    noMerge(vm, facts, 'delete');
    if (vm.state !== 'VM_STATE_OFF' && vm.state !== 'VM_STATE_SAVED') {
      throw failedPrecondition(
        `cannot delete VM '${vm.config.name}': it is ${stateName(vm.state)}; turn it off first`,
      );
    }
    remove(s, vm, `VM '${vm.config.name}' deleted`);
    s.effects.push({ kind: 'delete-vm-files', vmId: vm.id, config: vm.config });
  }

  /** Hash and resident pages of a VM's memory and device state (Saved: as saved). */
  stateHash(idOrName: string): { sha256: string; residentPages: number } {
    const vm = this.s.find(idOrName);
    if (vm.memory)
      return {
        sha256: vm.memory.stateHash(this.s.deviceStateOf(vm)),
        residentPages: vm.memory.residentPages,
      };
    if (vm.state === 'VM_STATE_SAVED' && vm.savedHash) {
      return { sha256: vm.savedHash, residentPages: vm.savedPages };
    }
    throw failedPrecondition(`VM '${vm.config.name}' is ${stateName(vm.state)}: it has no memory state`);
  }

  /** The live memory of a VM (a model hook for tests and benchmarks). */
  memoryOf(idOrName: string): GuestMemory | undefined {
    return this.s.find(idOrName).memory;
  }

  channelsOf(idOrName: string): VmbusChannel[] {
    return this.s.find(idOrName).channels.map((c) => ({ ...c }));
  }

  ioStats(idOrName: string): { diskIos: number; emulatedIos: number; packets: number; rootCpuLp: number } {
    const vm = this.s.find(idOrName);
    settleGuest(this.s, vm);
    return { ...vm.stats, rootCpuLp: vm.rootCpuLp };
  }
}

export function newEntry(
  s: EngineCore,
  id: string,
  config: VmConfig,
  generation: number,
  createdAtMs: number,
): VmEntry {
  return {
    id,
    config,
    generation,
    state: 'VM_STATE_OFF',
    desiredState: 'VM_STATE_OFF',
    createdAtMs,
    message: '',
    updatedAtMs: s.nowMs,
    revision: 0,
    deadlineMs: undefined,
    next: undefined,
    startedAtMs: 0,
    memory: undefined,
    channels: [],
    boots: 0,
    heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
    guestResponsive: true,
    unresponsiveSinceMs: undefined,
    starving: false,
    cpuLp: 0,
    rootCpuLp: 0,
    packetsPerSecond: 0,
    guestAtMs: s.nowMs,
    dirtyCarry: 0,
    ioCarry: 0,
    diskCursor: 0,
    storage: 'ok',
    ioToken: 0,
    beforeSave: undefined,
    savedHash: '',
    savedPages: 0,
    migration: undefined,
    throttlePercent: 0,
    stats: { diskIos: 0, emulatedIos: 0, packets: 0 },
  };
}

export function checkNameFree(s: EngineCore, name: string, exceptId: string): void {
  for (const other of s.vms.values()) {
    if (other.id !== exceptId && other.config.name === name) {
      throw invalidArgument(
        'config.name',
        `a VM named '${name}' already exists on this host (id ${other.id})`,
      );
    }
  }
}

/** Dynamic adapters without an address get one from the pool; given addresses are claimed. */
export function assignMacs(s: EngineCore, config: VmConfig, prefix: string): void {
  const claimed: string[] = [];
  try {
    config.networkAdapters.forEach((n, i) => {
      if (n.macAddress !== '') {
        if (!s.macs.claim(n.macAddress)) {
          throw invalidArgument(
            `${prefix}.network_adapters[${i}].mac_address`,
            `${n.macAddress} is in use by another VM`,
          );
        }
        claimed.push(n.macAddress);
      } else {
        n.macAddress = s.macs.allocate();
        claimed.push(n.macAddress);
      }
    });
  } catch (err) {
    for (const m of claimed) s.macs.release(m);
    throw err;
  }
}

export function releaseMacs(s: EngineCore, config: VmConfig): void {
  for (const n of config.networkAdapters) if (n.macAddress) s.macs.release(n.macAddress);
}

/** Fields that may change while the VM runs; everything else needs it Off. */
const LIVE_FIELDS = new Set([
  'name',
  'haPriority',
  'automaticStartAction',
  'automaticStopAction',
  'labels',
  'antiAffinityGroup',
  'workload',
  'processor.reservePercent',
  'processor.limitPercent',
  'processor.relativeWeight',
]);

/** Fields a mask may name below the top level. */
const NESTED = new Set(['processor', 'workload']);
const MASK_PATH = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$/;
const camel = (p: string): string => p.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
const snake = (p: string): string => p.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function planUpdate(
  s: EngineCore,
  vm: VmEntry,
  input: pb.VmConfig | pb.VmConfig__Output,
  paths: readonly string[],
  facts: SnapshotFacts,
): { config: VmConfig; touched: string[] } {
  const given = normalizeConfig(input) as unknown as Record<string, unknown>;
  const next = structuredClone(vm.config);
  const dst = next as unknown as Record<string, unknown>;
  const fields = paths.length > 0 ? paths.map((p) => maskField(p, next)) : Object.keys(next);
  const touched: string[] = [];
  for (const path of fields) {
    const [top, sub] = path.split('.') as [string, string | undefined];
    let before: unknown;
    let after: unknown;
    if (sub === undefined) {
      before = dst[top];
      after = given[top];
      dst[top] = structuredClone(after);
    } else {
      const d = dst[top] as Record<string, unknown>;
      before = d[sub];
      after = (given[top] as Record<string, unknown>)[sub];
      d[sub] = after;
    }
    if (JSON.stringify(before) !== JSON.stringify(after) && !touched.includes(path)) touched.push(path);
  }
  if (facts.snapshots > 0 && touched.includes('disks')) {
    keepSnapshotDisks(vm, next);
    touched.splice(touched.indexOf('disks'), 1);
  }
  if (touched.length === 0) return { config: next, touched };
  const needsOff = touched.filter(
    (p) =>
      !LIVE_FIELDS.has(p) && !(p === 'processor' && next.processor!.count === vm.config.processor!.count),
  );
  if (needsOff.length > 0 && vm.state !== 'VM_STATE_OFF') {
    throw failedPrecondition(
      `cannot change ${snake(needsOff[0]!)} of VM '${vm.config.name}': it is ${stateName(vm.state)}; turn it off first`,
    );
  }
  // Keep the MACs the VM has unless the caller changed the adapters.
  if (touched.includes('networkAdapters')) {
    next.networkAdapters.forEach((n, i) => {
      const old = vm.config.networkAdapters[i];
      if (!n.staticMac && n.macAddress === '' && old && !old.staticMac) n.macAddress = old.macAddress;
    });
  }
  validateConfig(next, s.options.limits);
  if (next.name !== vm.config.name) checkNameFree(s, next.name, vm.id);
  return { config: next, touched };
}

/** A field-mask path as the configuration names it (camelCase), if it names a field there. */
function maskField(path: string, config: VmConfig): string {
  const unknown = () =>
    invalidArgument(
      'update_mask',
      'names a field VmConfig does not have (paths are snake_case, like memory_bytes or processor.count)',
    );
  if (!MASK_PATH.test(path)) throw unknown();
  const [top, sub] = path.split('.').map(camel) as [string, string | undefined];
  const c = config as unknown as Record<string, unknown>;
  if (!Object.hasOwn(c, top)) throw unknown();
  if (sub !== undefined && !(NESTED.has(top) && Object.hasOwn(c[top] as object, sub))) throw unknown();
  return sub === undefined ? top : `${top}.${sub}`;
}

/**
 * A VM with snapshots runs on the top of its differencing chain, whose file names the caller does
 * not know: an update that repeats the disks as they were (same attachments, other paths) keeps
 * the current files; one that changes them is refused, or it would write into a frozen file.
 */
function keepSnapshotDisks(vm: VmEntry, next: VmConfig): void {
  const shape = (disks: VmConfig['disks']) =>
    JSON.stringify(disks.map((d) => ({ ...d, path: '', createSizeBytes: 0, createType: '' })));
  if (shape(next.disks) !== shape(vm.config.disks)) {
    throw failedPrecondition(
      `cannot change the disks of VM '${vm.config.name}': it has snapshots, whose differencing disks hang on them; delete the snapshots first`,
    );
  }
  next.disks = structuredClone(vm.config.disks);
}

export function remove(s: EngineCore, vm: VmEntry, message: string): void {
  s.release(vm);
  releaseMacs(s, vm.config);
  s.vms.delete(vm.id);
  s.changed.delete(vm.id);
  s.deleted.add(vm.id);
  s.sequence++;
  s.events.push({ sequence: s.sequence, timeMs: s.nowMs, type: 'deleted', vmId: vm.id, message });
}
