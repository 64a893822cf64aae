import type { pb } from '@hyperfarm/api';
import type { CommandOf, MigrationRecord, VmConfig } from '../../src/fsm/index.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

/**
 * Hosts and VMs for the state machine and scheduler tests, with the figures Microsoft documents:
 * Hyper-V 2008's per-VM limits (4 virtual processors, 64 GB, 192 running VMs per host after
 * KB956710, 24 logical processors) and guests of its support list (KB954958).
 */
export const PROFILES: Record<string, pb.LimitsProfile__Output> = {
  '2008': {
    name: '2008',
    maxVcpusPerVm: 4,
    maxMemoryBytesPerVm: 64 * GIB,
    maxRunningVmsPerHost: 192,
    maxLogicalProcessors: 24,
  },
  '2012': {
    name: '2012',
    maxVcpusPerVm: 64,
    maxMemoryBytesPerVm: 1024 * GIB,
    maxRunningVmsPerHost: 1024,
    maxLogicalProcessors: 320,
  },
};

export const GUESTS: pb.GuestOs__Output[] = [
  {
    id: 'windows-server-2008-x64',
    displayName: 'Windows Server 2008 x64',
    architectureBits: 64,
    maxVcpus: 4,
    integrationServicesAvailable: true,
    maxMemoryBytes: 2048 * GIB,
  },
  {
    id: 'windows-xp-sp3-x86',
    displayName: 'Windows XP Professional SP3 x86',
    architectureBits: 32,
    maxVcpus: 2,
    integrationServicesAvailable: true,
    maxMemoryBytes: 4 * GIB,
  },
];

export interface HostSpec {
  id: string;
  name?: string;
  memGiB?: number;
  lp?: number;
  profile?: string;
  reserveMiB?: number;
  overheadMiB?: number;
  guests?: string[];
  address?: string;
  labels?: Record<string, string>;
  clusterStorage?: boolean;
}

export function hostPayload(h: HostSpec): Omit<CommandOf<'host.register'>, 'type' | 'rid' | 't'> {
  return {
    host: {
      id: h.id,
      name: h.name ?? '',
      address: h.address ?? `127.0.0.1:${7100 + Number(h.id.replace(/\D/g, '') || 0)}`,
      labels: h.labels ?? {},
      capacity: {
        logicalProcessors: h.lp ?? 8,
        memoryBytes: (h.memGiB ?? 16) * GIB,
        rootReserveBytes: (h.reserveMiB ?? 2048) * MIB,
        perVmOverheadBytes: (h.overheadMiB ?? 32) * MIB,
      },
      limits: PROFILES[h.profile ?? '2008']!,
      guestOs: GUESTS.filter((g) => !h.guests || h.guests.includes(g.id)),
      ...(h.clusterStorage ? { clusterStorage: true } : {}),
    },
  };
}

export interface VmSpec {
  name: string;
  memMiB?: number;
  cpus?: number;
  guest?: string;
  classes?: string[];
  hard?: boolean;
  group?: string;
  macs?: string[];
  switches?: string[];
  priority?: VmConfig['haPriority'];
}

/** A complete configuration, as the edge hands it to the state machine after validation. */
export function vmConfig(v: VmSpec): VmConfig {
  const nics = (v.macs ?? v.switches ?? []).map((_, i) => ({
    kind: 'NIC_KIND_SYNTHETIC' as const,
    macAddress: v.macs?.[i] ?? '',
    staticMac: v.macs?.[i] !== undefined && v.macs[i] !== '',
    switchName: v.switches?.[i] ?? '',
    vlanId: 0,
    ipv4Address: '',
  }));
  return {
    name: v.name,
    processor: { count: v.cpus ?? 1, reservePercent: 0, limitPercent: 100, relativeWeight: 100 },
    memoryBytes: (v.memMiB ?? 1024) * MIB,
    guestOs: v.guest ?? 'windows-server-2008-x64',
    disks: [],
    networkAdapters: nics,
    integrationServices: true,
    automaticStartAction: 'AUTOMATIC_START_ACTION_START_IF_RUNNING',
    automaticStopAction: 'AUTOMATIC_STOP_ACTION_SAVE',
    haPriority: v.priority ?? 'HA_PRIORITY_MEDIUM',
    workload: {
      cpuDemandPercent: 0,
      workingSetBytes: 0,
      dirtyPagesPerSecond: 0,
      diskIops: 0,
      diskWriteBytes: 4096,
      requestServiceTimeMs: 0,
      bootMs: 0,
    },
    antiAffinityGroup: v.group ?? '',
    labels: {},
    antiAffinityClassNames: v.classes ?? [],
    antiAffinityHard: v.hard ?? false,
  };
}

/** An NLB port rule for the tests' clusters: TCP port 80 on every member, no affinity. */
export const NLB_RULE = {
  startPort: 80,
  endPort: 80,
  protocol: 'tcp' as const,
  filteringMode: 'NLB_FILTERING_MODE_MULTIPLE_HOST' as const,
  affinity: 'NLB_AFFINITY_NONE' as const,
};

/** The External switch 'ext' (it spans every host), as a command. */
export const EXT_SWITCH = {
  type: 'switch.create' as const,
  id: 's-ext',
  name: 'ext',
  switchType: 'SWITCH_TYPE_EXTERNAL' as const,
  hostId: '',
  macAgingSeconds: 300,
  hostAddress: '',
};

/** NLB cluster 'web' (id c1, 10.0.0.100 on 'ext', NLB_RULE) with these members, as a command. */
export function webCluster(vmIds: string[]) {
  return {
    type: 'nlb.create' as const,
    id: 'c1',
    cluster: {
      name: 'web',
      virtualIp: '10.0.0.100',
      mode: 'NLB_MODE_UNICAST' as const,
      switchName: 'ext',
      portRules: [NLB_RULE],
      members: vmIds.map((vmId, i) => ({ vmId, hostPriority: i + 1, loadWeight: 0, ruleSettings: [] })),
      heartbeatThreshold: 5,
      heartbeatPeriodMs: 1000,
    },
  };
}

/** A pending live migration record from h1 to h2, with `over` in place of any field. */
export function migrationRecord(id: string, over: Partial<MigrationRecord> = {}): MigrationRecord {
  return {
    id,
    vmId: `vm-${id}`,
    sourceHostId: 'h1',
    targetHostId: 'h2',
    kind: 'MIGRATION_KIND_LIVE',
    mode: 'memory',
    phase: 'MIGRATION_PHASE_PENDING',
    progress: 0,
    bytesTransferred: 0,
    rounds: 0,
    throttlePercent: 0,
    downtimeMs: 0,
    error: '',
    startedAtMs: 1_000,
    finishedAtMs: 0,
    fromGeneration: 1,
    reason: 'drain',
    opId: `op-${id}`,
    drainOpId: '',
    decision: '',
    deadlineMs: 60_000,
    transferStartedAtMs: 0,
    sha256: '',
    revision: 10,
    ...over,
  };
}
