import { z } from 'zod';

/**
 * Shapes of the values commands carry. A command reaches the state machine as bytes from the
 * log, and the log takes what any daemon (or a caller of RaftService.ForwardPropose) proposed:
 * everything is checked here, so a malformed command is refused the same way on every replica
 * instead of corrupting the state. Value rules (ranges, names) are the edge's: these are shapes.
 */

const u64 = z.number().int().nonnegative();
const u32 = z.number().int().min(0).max(0xffffffff);
const str = (max = 1024) => z.string().max(max);

export const vmStateSchema = z.enum([
  'VM_STATE_UNSPECIFIED',
  'VM_STATE_OFF',
  'VM_STATE_STARTING',
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSING',
  'VM_STATE_PAUSED',
  'VM_STATE_RESUMING',
  'VM_STATE_SAVING',
  'VM_STATE_SAVED',
  'VM_STATE_STOPPING',
  'VM_STATE_RESETTING',
  'VM_STATE_RUNNING_CRITICAL',
  'VM_STATE_PAUSED_CRITICAL',
  'VM_STATE_UNKNOWN',
]);

export const vmActionSchema = z.enum([
  'VM_ACTION_START',
  'VM_ACTION_STOP',
  'VM_ACTION_TURN_OFF',
  'VM_ACTION_SAVE',
  'VM_ACTION_PAUSE',
  'VM_ACTION_RESUME',
  'VM_ACTION_RESET',
]);

export const heartbeatSchema = z.enum([
  'HEARTBEAT_STATUS_UNSPECIFIED',
  'HEARTBEAT_STATUS_NO_CONTACT',
  'HEARTBEAT_STATUS_OK',
  'HEARTBEAT_STATUS_LOST_COMMUNICATION',
]);

export const hostStateSchema = z.enum(['HOST_STATE_UP', 'HOST_STATE_SUSPECT', 'HOST_STATE_DOWN']);

const labels = z.record(str(255), str(255));

export const vmConfigSchema = z.object({
  name: str(63),
  processor: z.object({
    count: u32,
    reservePercent: u32,
    limitPercent: u32,
    relativeWeight: u32,
  }),
  memoryBytes: u64,
  guestOs: str(63),
  disks: z
    .array(
      z.object({
        controller: z.enum(['DISK_CONTROLLER_UNSPECIFIED', 'DISK_CONTROLLER_IDE', 'DISK_CONTROLLER_SCSI']),
        controllerNumber: u32,
        location: u32,
        path: str(4096),
        createType: z.enum([
          'DISK_TYPE_UNSPECIFIED',
          'DISK_TYPE_FIXED',
          'DISK_TYPE_DYNAMIC',
          'DISK_TYPE_DIFFERENCING',
        ]),
        createSizeBytes: u64,
      }),
    )
    .max(260),
  networkAdapters: z
    .array(
      z.object({
        kind: z.enum(['NIC_KIND_UNSPECIFIED', 'NIC_KIND_SYNTHETIC', 'NIC_KIND_LEGACY']),
        macAddress: str(17),
        staticMac: z.boolean(),
        switchName: str(63),
        vlanId: u32,
        // Configurations recorded before adapters had addresses have none.
        ipv4Address: str(18).default(''),
      }),
    )
    .max(12),
  integrationServices: z.boolean(),
  automaticStartAction: z.enum([
    'AUTOMATIC_START_ACTION_UNSPECIFIED',
    'AUTOMATIC_START_ACTION_NOTHING',
    'AUTOMATIC_START_ACTION_START_IF_RUNNING',
    'AUTOMATIC_START_ACTION_ALWAYS_START',
  ]),
  automaticStopAction: z.enum([
    'AUTOMATIC_STOP_ACTION_UNSPECIFIED',
    'AUTOMATIC_STOP_ACTION_TURN_OFF',
    'AUTOMATIC_STOP_ACTION_SAVE',
    'AUTOMATIC_STOP_ACTION_SHUT_DOWN',
  ]),
  haPriority: z.enum([
    'HA_PRIORITY_UNSPECIFIED',
    'HA_PRIORITY_HIGH',
    'HA_PRIORITY_MEDIUM',
    'HA_PRIORITY_LOW',
    'HA_PRIORITY_NONE',
  ]),
  workload: z.object({
    cpuDemandPercent: z.number().finite(),
    workingSetBytes: u64,
    dirtyPagesPerSecond: u64,
    diskIops: u32,
    diskWriteBytes: u32,
    requestServiceTimeMs: z.number().finite(),
    bootMs: u64,
  }),
  antiAffinityGroup: str(63),
  labels,
  antiAffinityClassNames: z.array(str(63)).max(16),
  antiAffinityHard: z.boolean(),
});

/**
 * A VM configuration as its differences from CONFIG_BASE_V1 (config-diff.ts): any of its fields,
 * and any of the fields of its processor and workload, each of the shape vmConfigSchema gives it.
 */
export const configDiffSchema = vmConfigSchema
  .extend({
    processor: vmConfigSchema.shape.processor.partial(),
    workload: vmConfigSchema.shape.workload.partial(),
  })
  .partial();

export const limitsSchema = z.object({
  name: str(16),
  maxVcpusPerVm: u32,
  maxMemoryBytesPerVm: u64,
  maxRunningVmsPerHost: u32,
  maxLogicalProcessors: u32,
});

export const guestOsSchema = z.object({
  id: str(63),
  displayName: str(255),
  architectureBits: u32,
  maxVcpus: u32,
  integrationServicesAvailable: z.boolean(),
  maxMemoryBytes: u64,
});

export const errorSchema = z.object({
  code: z.enum([
    'INVALID_ARGUMENT',
    'NOT_FOUND',
    'ALREADY_EXISTS',
    'FAILED_PRECONDITION',
    'RESOURCE_EXHAUSTED',
    'ABORTED',
    'UNAVAILABLE',
    'UNIMPLEMENTED',
    'INTERNAL',
    'DEADLINE_EXCEEDED',
    'PERMISSION_DENIED',
    'UNAUTHENTICATED',
    'OUT_OF_RANGE',
    'CANCELLED',
    'UNKNOWN',
    'DATA_LOSS',
  ]),
  message: str(4096),
});

/** A VM as its host reported it: the agent's view, in the farm's terms. */
export const reportSchema = z.object({
  vmId: str(128),
  hostId: str(63),
  generation: u64,
  present: z.boolean(),
  state: vmStateSchema,
  heartbeat: heartbeatSchema,
  message: str(1024),
  memoryAssignedBytes: u64,
  /** The MACs of the VM's adapters, in order, as the host assigned them. */
  macs: z.array(str(17)).max(12),
});

export const checkpointSchema = z.object({
  id: str(128),
  name: str(255),
  parentId: str(128),
  createdAtMs: u64,
  includesMemory: z.boolean(),
  vmState: vmStateSchema,
});

export const nlbPortRuleSchema = z.object({
  startPort: u32,
  endPort: u32,
  protocol: z.enum(['tcp', 'udp', 'both']),
  filteringMode: z.enum([
    'NLB_FILTERING_MODE_MULTIPLE_HOST',
    'NLB_FILTERING_MODE_SINGLE_HOST',
    'NLB_FILTERING_MODE_DISABLED',
  ]),
  affinity: z.enum(['NLB_AFFINITY_NONE', 'NLB_AFFINITY_SINGLE', 'NLB_AFFINITY_NETWORK']),
});

export const nlbMemberSchema = z.object({
  vmId: str(128),
  hostPriority: u32,
  loadWeight: u32,
  ruleSettings: z
    .array(z.object({ startPort: u32, equalLoad: z.boolean(), loadWeight: u32, handlingPriority: u32 }))
    .max(32),
});

export { u64, u32, str, labels };
