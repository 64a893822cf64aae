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
const MERGED = ['processor', 'workload'] as const;
type Merged = (typeof MERGED)[number];

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

/** The fields of `config` that differ from the base (the leader's side). */
export function configDiff(config: VmConfig): ConfigDiff {
  const out: Record<string, unknown> = {};
  const base = CONFIG_BASE_V1 as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(config)) {
    if ((MERGED as readonly string[]).includes(k)) {
      const part: Record<string, unknown> = {};
      const from = base[k] as Record<string, unknown>;
      for (const [f, x] of Object.entries(v as Record<string, unknown>)) if (x !== from[f]) part[f] = x;
      if (Object.keys(part).length > 0) out[k] = part;
    } else if (!sameValue(v, base[k])) out[k] = v;
  }
  return out as ConfigDiff;
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
