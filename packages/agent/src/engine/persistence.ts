import type { EngineCore } from './core.js';
import type { VmEntry, VmRecord } from './model.js';
import { stateName, type VmState } from './states.js';
import { alreadyExists } from '@hyperfarm/api';
import { normalizeConfig, validateConfig } from './validate.js';
import { assignMacs, checkNameFree, newEntry } from './vms.js';

// What survives a restart: the records of changed VMs, and loading them back.

/** Nothing changed: one answer for every such call, read-only. */
const NO_CHANGES: { readonly records: readonly VmRecord[]; readonly deleted: readonly string[] } =
  Object.freeze({
    records: Object.freeze([]),
    deleted: Object.freeze([]),
  });

/**
 * Records changed and ids deleted since the last call, for the caller to persist. Most calls
 * find nothing (the host's agent takes them after every pump and call): those allocate nothing.
 */
export function takeChanges(s: EngineCore): {
  readonly records: readonly VmRecord[];
  readonly deleted: readonly string[];
} {
  if (s.changed.size === 0 && s.deleted.size === 0) return NO_CHANGES;
  const records = [...s.changed].flatMap((id) => {
    const vm = s.vms.get(id);
    return vm ? [recordOf(s, vm)] : [];
  });
  const deleted = [...s.deleted];
  s.changed.clear();
  s.deleted.clear();
  return { records, deleted };
}

function recordOf(s: EngineCore, vm: VmEntry): VmRecord {
  return {
    id: vm.id,
    config: vm.config,
    generation: vm.generation,
    state: vm.state,
    desiredState: vm.desiredState,
    createdAtMs: vm.createdAtMs,
    message: vm.message,
    savedHash: vm.savedHash,
    savedPages: vm.savedPages,
  };
}

/** A VM that came back Off from a state it could not keep over a restart. */
export interface TurnedOff {
  vmId: string;
  /** The state it was in. */
  was: VmState;
  /** Why, as its status message says it. */
  message: string;
}

/**
 * Loads a VM persisted by an earlier run. A VM that was Saved stays Saved (if its file is
 * there); anything that had a partition comes back Off, as after a host crash: then it says so.
 */
export function recover(s: EngineCore, record: VmRecord, savedStatePresent: boolean): TurnedOff | undefined {
  const config = normalizeConfig(record.config);
  const vm = newEntry(s, record.id, config, record.generation, record.createdAtMs);
  vm.desiredState = record.desiredState;
  for (const n of config.networkAdapters) if (n.macAddress) s.macs.claim(n.macAddress);
  s.vms.set(vm.id, vm);
  if (record.state === 'VM_STATE_SAVED' && savedStatePresent) {
    vm.state = 'VM_STATE_SAVED';
    vm.savedHash = record.savedHash;
    vm.savedPages = record.savedPages ?? 0;
    vm.message = record.message;
    return undefined;
  }
  if (record.state === 'VM_STATE_OFF') {
    vm.message = record.message;
    return undefined;
  }
  const why =
    record.state === 'VM_STATE_SAVED'
      ? 'its saved state file is missing'
      : `the agent stopped while it was ${stateName(record.state)}, as after a host crash`;
  vm.state = 'VM_STATE_OFF';
  s.emit(vm, 'state_changed', `VM '${config.name}': ${stateName(record.state)} -> Off (${why})`);
  vm.message = `turned off: ${why}`;
  return { vmId: vm.id, was: record.state, message: vm.message };
}

/**
 * Takes in a VM whose files another host left on cluster storage (a failover, or a stopped VM
 * moved here), from the manifest beside them: Saved if its saved state is there, Off otherwise
 * (a VM that ran on a failed host comes back Off, as after a crash). Its configuration is
 * checked against this host's limits, and its MACs are claimed (refused if in use here).
 */
export function adopt(s: EngineCore, record: VmRecord, savedStatePresent: boolean, message: string): VmEntry {
  if (s.vms.has(record.id)) throw alreadyExists('VM', record.id);
  const config = normalizeConfig(record.config);
  validateConfig(config, s.options.limits);
  checkNameFree(s, config.name, record.id);
  assignMacs(s, config, 'config');
  const vm = newEntry(s, record.id, config, record.generation, record.createdAtMs);
  if (record.state === 'VM_STATE_SAVED' && savedStatePresent) {
    vm.state = 'VM_STATE_SAVED';
    vm.desiredState = 'VM_STATE_SAVED';
    vm.savedHash = record.savedHash;
    vm.savedPages = record.savedPages ?? 0;
  }
  s.vms.set(vm.id, vm);
  s.emit(vm, 'state_changed', `VM '${config.name}' ${message}`);
  vm.message = message;
  return vm;
}
