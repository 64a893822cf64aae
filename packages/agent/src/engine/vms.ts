import { alreadyExists, failedPrecondition, invalidArgument, type pb } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import type { VmEntry } from './model.js';
import { stateName } from './states.js';
import { normalizeConfig, validateConfig, type VmConfig } from './validate.js';

// VM records: create, update, delete, and the names and MAC addresses they hold.

export function createVm(
  s: EngineCore,
  vmId: string,
  input: pb.VmConfig | pb.VmConfig__Output,
  generation = 0,
): pb.Vm__Output {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(vmId)) {
    throw invalidArgument('vm_id', `'${vmId}' must be 1 to 128 letters, digits, '-', '_' or '.'`);
  }
  const config = normalizeConfig(input);
  validateConfig(config, s.options.limits);
  const existing = s.vms.get(vmId);
  if (existing) {
    // A repeated create of the same VM is harmless; anything else is a conflict.
    if (
      existing.generation === generation &&
      JSON.stringify(existing.config.name) === JSON.stringify(config.name)
    ) {
      return s.view(existing);
    }
    throw alreadyExists('VM', vmId);
  }
  checkNameFree(s, config.name, vmId);
  assignMacs(s, config, 'config');
  const vm = newEntry(s, vmId, config, generation, s.nowMs);
  s.vms.set(vmId, vm);
  s.emit(vm, 'state_changed', `VM '${config.name}' created`);
  return s.view(vm);
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
    dirtyCarry: 0,
    ioCarry: 0,
    diskCursor: 0,
    storage: 'ok',
    ioToken: 0,
    beforeSave: undefined,
    savedHash: '',
    savedPages: 0,
    migration: undefined,
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

/**
 * Applies the fields named by `paths` (proto field-mask paths, snake_case, dotted) from `input`;
 * no paths means the whole configuration.
 */
export function updateVm(
  s: EngineCore,
  idOrName: string,
  input: pb.VmConfig | pb.VmConfig__Output,
  paths: readonly string[],
  generation = 0,
): pb.Vm__Output {
  const vm = s.find(idOrName);
  s.fence(vm, generation, 'update');
  s.notMigrating(vm, 'update');
  const given = normalizeConfig(input);
  const next = structuredClone(vm.config);
  const camel = (s: string): string => s.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
  const fields = paths.length > 0 ? paths.map((p) => p.split('.').map(camel).join('.')) : Object.keys(next);
  const touched: string[] = [];
  for (const path of fields) {
    const [top, sub, ...rest] = path.split('.');
    if (!top || !(top in next) || rest.length > 0)
      throw invalidArgument('update_mask', `unknown field '${path}'`);
    const src = given as unknown as Record<string, unknown>;
    const dst = next as unknown as Record<string, unknown>;
    let before: unknown;
    let after: unknown;
    if (sub === undefined) {
      before = dst[top];
      after = src[top];
      dst[top] = structuredClone(after);
    } else {
      const s = src[top] as Record<string, unknown> | null;
      const d = dst[top] as Record<string, unknown> | null;
      if (!s || !d || !(sub in d)) throw invalidArgument('update_mask', `unknown field '${path}'`);
      before = d[sub];
      after = s[sub];
      d[sub] = after;
    }
    if (JSON.stringify(before) !== JSON.stringify(after)) touched.push(path);
  }
  if (touched.length === 0) return s.view(vm);
  const needsOff = touched.filter(
    (p) => !LIVE_FIELDS.has(p) && !(p === 'processor' && onlyControlsChanged(s, vm.config, next)),
  );
  if (needsOff.length > 0 && vm.state !== 'VM_STATE_OFF') {
    const snake = needsOff[0]!.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    throw failedPrecondition(
      `cannot change ${snake} of VM '${vm.config.name}': it is ${stateName(vm.state)}; turn it off first`,
    );
  }
  // Keep the MACs the VM has unless the caller changed the adapters.
  if (touched.some((p) => p === 'networkAdapters')) {
    next.networkAdapters.forEach((n, i) => {
      const old = vm.config.networkAdapters[i];
      if (!n.staticMac && n.macAddress === '' && old && !old.staticMac) n.macAddress = old.macAddress;
    });
  }
  validateConfig(next, s.options.limits);
  if (next.name !== vm.config.name) checkNameFree(s, next.name, vm.id);
  if (touched.includes('networkAdapters')) {
    releaseMacs(s, vm.config);
    try {
      assignMacs(s, next, 'config');
    } catch (err) {
      assignMacs(s, vm.config, 'config');
      throw err;
    }
  }
  vm.config = next;
  s.emit(vm, 'state_changed', `VM '${next.name}' configuration changed: ${touched.join(', ')}`);
  return s.view(vm);
}

export function onlyControlsChanged(s: EngineCore, a: VmConfig, b: VmConfig): boolean {
  return a.processor!.count === b.processor!.count;
}

export function deleteVm(s: EngineCore, idOrName: string, generation = 0): void {
  const vm = s.find(idOrName);
  s.fence(vm, generation, 'delete');
  s.notMigrating(vm, 'delete');
  if (vm.state !== 'VM_STATE_OFF' && vm.state !== 'VM_STATE_SAVED') {
    throw failedPrecondition(
      `cannot delete VM '${vm.config.name}': it is ${stateName(vm.state)}; turn it off first`,
    );
  }
  remove(s, vm, `VM '${vm.config.name}' deleted`);
  s.effects.push({ kind: 'delete-vm-files', vmId: vm.id, config: vm.config });
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
