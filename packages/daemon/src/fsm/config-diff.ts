import type { VmConfig } from './model.js';

/**
 * A VM configuration as its differences from a fixed base (vm.create_compact): most of a
 * configuration is the proto's defaults (604 of the 724 bytes of a typical create's JSON in
 * vm.create_many), and every replica decoded, parsed, checked and collected them for each VM.
 *
 * The base is part of the log's format: an entry written against it must expand to the same
 * configuration on every replica, forever. Never edit it; a different base is a new command type
 * beside this one. It is the configuration an empty request normalizes to (normalizeVmConfig of
 * `{}` on the day it was fixed; test/fsm/create-compact.test.ts says when the two part).
 */
export const CONFIG_BASE_V1: Readonly<VmConfig> = deepFreeze({
  name: '',
  processor: { count: 0, reservePercent: 0, limitPercent: 100, relativeWeight: 100 },
  memoryBytes: 0,
  guestOs: '',
  disks: [],
  networkAdapters: [],
  integrationServices: false,
  automaticStartAction: 'AUTOMATIC_START_ACTION_START_IF_RUNNING',
  automaticStopAction: 'AUTOMATIC_STOP_ACTION_SAVE',
  haPriority: 'HA_PRIORITY_MEDIUM',
  workload: {
    cpuDemandPercent: 0,
    workingSetBytes: 0,
    dirtyPagesPerSecond: 0,
    diskIops: 0,
    diskWriteBytes: 4096,
    requestServiceTimeMs: 0,
    bootMs: 0,
  },
  antiAffinityGroup: '',
  labels: {},
  antiAffinityClassNames: [],
  antiAffinityHard: false,
});

/**
 * The fields of the base that are merged field by field; every other field (a value, a list,
 * the labels) is given whole or not at all.
 */
type Merged = 'processor' | 'workload';

/** The differences: any field of the configuration, and any field of its merged parts. */
export type ConfigDiff = Partial<Omit<VmConfig, Merged>> & {
  [K in Merged]?: Partial<VmConfig[K]>;
};

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object') for (const x of Object.values(v)) deepFreeze(x);
  return Object.freeze(v);
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every(
    (k) =>
      Object.hasOwn(b, k) && sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]),
  );
}

/** The fields of a merged part that differ from the base's, or undefined if none does. */
function partDiff<T extends object>(part: T, base: T): Partial<T> | undefined {
  let out: Partial<T> | undefined;
  for (const k of Object.keys(base) as (keyof T)[])
    if (part[k] !== base[k]) (out ??= {} as Partial<T>)[k] = part[k];
  return out;
}

/**
 * The fields of `config` that differ from the base (the leader's side, for every create: field
 * by field, without building lists of entries to walk).
 */
export function configDiff(c: VmConfig): ConfigDiff {
  const b = CONFIG_BASE_V1;
  const d: ConfigDiff = {};
  if (c.name !== b.name) d.name = c.name;
  const processor = partDiff(c.processor, b.processor);
  if (processor) d.processor = processor;
  if (c.memoryBytes !== b.memoryBytes) d.memoryBytes = c.memoryBytes;
  if (c.guestOs !== b.guestOs) d.guestOs = c.guestOs;
  if (!sameValue(c.disks, b.disks)) d.disks = c.disks;
  if (!sameValue(c.networkAdapters, b.networkAdapters)) d.networkAdapters = c.networkAdapters;
  if (c.integrationServices !== b.integrationServices) d.integrationServices = c.integrationServices;
  if (c.automaticStartAction !== b.automaticStartAction) d.automaticStartAction = c.automaticStartAction;
  if (c.automaticStopAction !== b.automaticStopAction) d.automaticStopAction = c.automaticStopAction;
  if (c.haPriority !== b.haPriority) d.haPriority = c.haPriority;
  const workload = partDiff(c.workload, b.workload);
  if (workload) d.workload = workload;
  if (c.antiAffinityGroup !== b.antiAffinityGroup) d.antiAffinityGroup = c.antiAffinityGroup;
  if (!sameValue(c.labels, b.labels)) d.labels = c.labels;
  if (!sameValue(c.antiAffinityClassNames, b.antiAffinityClassNames))
    d.antiAffinityClassNames = c.antiAffinityClassNames;
  if (c.antiAffinityHard !== b.antiAffinityHard) d.antiAffinityHard = c.antiAffinityHard;
  return d;
}

/**
 * The configuration the differences stand for (every replica's side): the base with the given
 * fields in place of its own. The differences are checked first (each field against its schema),
 * so the result is a configuration the schema takes; it shares nothing with the base.
 */
export function withBase(diff: ConfigDiff): VmConfig {
  const b = CONFIG_BASE_V1;
  return {
    name: diff.name ?? b.name,
    processor: { ...b.processor, ...diff.processor },
    memoryBytes: diff.memoryBytes ?? b.memoryBytes,
    guestOs: diff.guestOs ?? b.guestOs,
    disks: diff.disks ?? [],
    networkAdapters: diff.networkAdapters ?? [],
    integrationServices: diff.integrationServices ?? b.integrationServices,
    automaticStartAction: diff.automaticStartAction ?? b.automaticStartAction,
    automaticStopAction: diff.automaticStopAction ?? b.automaticStopAction,
    haPriority: diff.haPriority ?? b.haPriority,
    workload: { ...b.workload, ...diff.workload },
    antiAffinityGroup: diff.antiAffinityGroup ?? b.antiAffinityGroup,
    labels: diff.labels ?? {},
    antiAffinityClassNames: diff.antiAffinityClassNames ?? [],
    antiAffinityHard: diff.antiAffinityHard ?? b.antiAffinityHard,
  };
}
