import type { pb, VmActionName, VmStateName } from '@hyperfarm/api';
import type { z } from 'zod';
import type { nlbMemberSchema, nlbPortRuleSchema, vmConfigSchema } from './schemas.js';

export type { VmActionName, VmStateName };

/**
 * The records of the farm state. Every record is immutable: a change replaces it with a new
 * object, so an event can keep the record it announced without copying it, and a reader never
 * sees half a change. No field is ever undefined (null instead): a record read back from a
 * snapshot has the same keys in the same order, so replicas write the same snapshot bytes.
 */

export type HostStateName = Exclude<pb.HostState__Output, 'HOST_STATE_UNSPECIFIED'>;
export type HeartbeatName = pb.HeartbeatStatus__Output;
/** A complete VM configuration, as the edge hands it to the state machine after validation. */
export type VmConfig = z.output<typeof vmConfigSchema>;
export type LimitsProfile = pb.LimitsProfile__Output;
export type GuestOs = pb.GuestOs__Output;

export interface HostCapacity {
  logicalProcessors: number;
  memoryBytes: number;
  rootReserveBytes: number;
  perVmOverheadBytes: number;
}

export interface HostRecord {
  readonly id: string;
  readonly name: string;
  readonly address: string;
  readonly state: HostStateName;
  readonly stateReason: string;
  readonly maintenance: boolean;
  readonly labels: Readonly<Record<string, string>>;
  readonly capacity: Readonly<HostCapacity>;
  readonly limits: Readonly<LimitsProfile>;
  readonly guestOsIds: readonly string[];
  /** The host reaches the farm's cluster storage: it may take part in failover and moves. */
  readonly clusterStorage: boolean;
  /** The MAC range the farm gave this host: block `macBlock` of the 00-15-5D space. */
  readonly macBlock: number;
  readonly registeredAtMs: number;
  readonly stateChangedAtMs: number;
  readonly revision: number;
}

/** What the VM's host last reported of it (through WatchEvents or an answer to a call). */
export interface ObservedVm {
  /** The host has the VM. False until the agent created it, or after it reported it gone. */
  readonly present: boolean;
  readonly state: VmStateName;
  readonly heartbeat: HeartbeatName;
  readonly message: string;
  readonly memoryAssignedBytes: number;
  readonly updatedAtMs: number;
}

export interface VmRecord {
  readonly id: string;
  readonly config: Readonly<VmConfig>;
  /** Off, Running, Saved or Paused: what the user wants. */
  readonly desired: VmStateName;
  /** Empty until placed. */
  readonly hostId: string;
  /** The fencing token: bumped each time the placement changes. */
  readonly generation: number;
  readonly placementNote: string;
  readonly observed: ObservedVm;
  /** The operation that owns the VM's next agent call, '' when none: one at a time. */
  readonly busyOpId: string;
  readonly checkpointCurrentId: string;
  readonly createdAtMs: number;
  readonly revision: number;
}

export interface CheckpointRecord {
  readonly id: string;
  readonly vmId: string;
  readonly name: string;
  readonly parentId: string;
  readonly createdAtMs: number;
  readonly includesMemory: boolean;
  readonly vmState: VmStateName;
  readonly revision: number;
}

export interface OperationError {
  /** A grpc-js status name: 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION'... */
  readonly code: ErrorCode;
  readonly message: string;
}

/** What an operation does; the controller that carries it out reads its parameters here. */
export type OperationParams =
  | { kind: 'vm.create'; start: boolean; pinnedHostId: string }
  | {
      kind: 'vm.change_state';
      action: VmActionName;
      /** The observed state that ends the operation. */
      target: VmStateName;
      previousDesired: VmStateName;
      /** The agent accepted the call: now the operation waits for `target`. */
      issued: boolean;
    }
  | { kind: 'vm.update'; config: VmConfig; paths: string[] }
  | { kind: 'vm.delete' }
  | { kind: 'checkpoint.create'; checkpointId: string; name: string }
  | { kind: 'checkpoint.apply'; checkpointId: string; turnOffFirst: boolean; saveCurrentFirst: boolean }
  | { kind: 'checkpoint.delete'; checkpointId: string; subtree: boolean }
  | { kind: 'checkpoint.rename'; checkpointId: string; name: string }
  | { kind: 'vm.migrate'; migrationId: string }
  | {
      kind: 'host.drain';
      hostId: string;
      /** The migrations the drain asked for, in the order it asked. */
      migrationIds: string[];
      /** VMs that could not move, each with the reason. */
      stranded: { vmId: string; reason: string }[];
    }
  | { kind: 'nlb.drainstop'; clusterId: string; vmId: string };

export type OperationKind = OperationParams['kind'];

export interface OperationRecord {
  readonly id: string;
  readonly kind: OperationKind;
  readonly targetId: string;
  readonly params: OperationParams;
  readonly done: boolean;
  readonly progress: number;
  readonly message: string;
  readonly error: OperationError | null;
  /** The resource the operation produced or changed, as it was when the operation ended. */
  readonly result:
    | { kind: 'vm'; record: VmRecord }
    | { kind: 'checkpoint'; record: CheckpointRecord }
    | { kind: 'migration'; record: MigrationRecord }
    | { kind: 'host'; record: HostRecord }
    | null;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
  readonly revision: number;
}

export type ResourceKindName =
  | 'RESOURCE_KIND_HOST'
  | 'RESOURCE_KIND_VM'
  | 'RESOURCE_KIND_CHECKPOINT'
  | 'RESOURCE_KIND_OPERATION'
  | 'RESOURCE_KIND_MIGRATION'
  | 'RESOURCE_KIND_SWITCH'
  | 'RESOURCE_KIND_NLB_CLUSTER';

export type FarmEvent =
  | EventOf<'RESOURCE_KIND_HOST', HostRecord>
  | EventOf<'RESOURCE_KIND_VM', VmRecord>
  | EventOf<'RESOURCE_KIND_CHECKPOINT', CheckpointRecord>
  | EventOf<'RESOURCE_KIND_OPERATION', OperationRecord>
  | EventOf<'RESOURCE_KIND_MIGRATION', MigrationRecord>
  | EventOf<'RESOURCE_KIND_SWITCH', SwitchRecord>
  | EventOf<'RESOURCE_KIND_NLB_CLUSTER', NlbClusterRecord>;

interface EventOf<K extends ResourceKindName, R> {
  readonly revision: number;
  readonly type: 'EVENT_TYPE_PUT' | 'EVENT_TYPE_DELETE';
  readonly kind: K;
  readonly id: string;
  readonly timeMs: number;
  /** The resource after the change (PUT) or before it (DELETE). */
  readonly resource: R;
}

/** The status codes a command can fail with, named as grpc-js names them. */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  | 'ABORTED'
  | 'UNAVAILABLE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL'
  | 'DEADLINE_EXCEEDED'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'OUT_OF_RANGE'
  | 'CANCELLED'
  | 'UNKNOWN'
  | 'DATA_LOSS';

export type MigrationKindName = 'MIGRATION_KIND_QUICK' | 'MIGRATION_KIND_LIVE';
export type MigrationPhaseName = Exclude<pb.MigrationPhase__Output, 'MIGRATION_PHASE_UNSPECIFIED'>;

/**
 * A VM move between hosts, recorded in the log with its phase, so that a leader change in the
 * middle finishes it or rolls it back: the handover (commit or abort) is decided here, in the
 * log, before either host is told.
 */
export interface MigrationRecord {
  readonly id: string;
  readonly vmId: string;
  readonly sourceHostId: string;
  readonly targetHostId: string;
  readonly kind: MigrationKindName;
  /**
   * How the VM moves: 'memory' (a Running, Paused or Saved VM's state goes from host to host) or
   * 'config' (an Off or Saved VM's configuration is handed over; its files stay on cluster
   * storage and the target adopts them).
   */
  readonly mode: 'memory' | 'config';
  readonly phase: MigrationPhaseName;
  readonly progress: number;
  readonly bytesTransferred: number;
  readonly rounds: number;
  readonly throttlePercent: number;
  /** Measured on the target's clock alone, from the target's answer to the commit. */
  readonly downtimeMs: number;
  readonly error: string;
  readonly startedAtMs: number;
  readonly finishedAtMs: number;
  /** The VM's generation on the source; the target's is one more. */
  readonly fromGeneration: number;
  readonly reason: 'user' | 'drain';
  readonly opId: string;
  /** The drain operation that asked for it, '' for a user's migration. */
  readonly drainOpId: string;
  /** '' until decided; once 'commit' or 'abort', it never changes. */
  readonly decision: '' | 'commit' | 'abort';
  /** The pull's deadline, ms: a leader that finds it undecided past it decides abort. */
  readonly deadlineMs: number;
  /** When the transfer began (the proposer's clock), 0 while pending. */
  readonly transferStartedAtMs: number;
  /** The verified state hash the target reported (memory moves). */
  readonly sha256: string;
  readonly revision: number;
}

/** A farm virtual switch (fsm/network.ts). */
export interface SwitchRecord {
  readonly id: string;
  readonly name: string;
  readonly type: 'SWITCH_TYPE_EXTERNAL' | 'SWITCH_TYPE_INTERNAL' | 'SWITCH_TYPE_PRIVATE';
  /** Internal and Private switches live on this host; empty for External ones. */
  readonly hostId: string;
  /** Seconds a learned MAC stays in the switch's table without traffic. */
  readonly macAgingSeconds: number;
  /** Internal switches: the host's own address on its port ("172.20.0.1/24"), or ''. */
  readonly hostAddress: string;
  readonly createdAtMs: number;
  readonly revision: number;
}

export type NlbPortRuleRecord = Readonly<z.output<typeof nlbPortRuleSchema>>;
export type NlbMemberRecord = Readonly<z.output<typeof nlbMemberSchema>>;

/** A Windows-NLB-style cluster of VMs (fsm/network.ts), in the API's terms. */
export interface NlbClusterRecord {
  readonly id: string;
  readonly name: string;
  readonly virtualIp: string;
  readonly mode: 'NLB_MODE_UNICAST' | 'NLB_MODE_MULTICAST' | 'NLB_MODE_IGMP_MULTICAST';
  readonly switchName: string;
  readonly portRules: readonly NlbPortRuleRecord[];
  readonly members: readonly NlbMemberRecord[];
  readonly heartbeatThreshold: number;
  readonly heartbeatPeriodMs: number;
  readonly createdAtMs: number;
  readonly revision: number;
}

/** The states a VM rests in; the reconciler leaves the transitional ones to finish. */
export const STABLE_VM_STATES: ReadonlySet<VmStateName> = new Set<VmStateName>([
  'VM_STATE_OFF',
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSED',
  'VM_STATE_SAVED',
]);
