import type { pb } from '@hyperfarm/api';
import type { VmActionName, VmConfig } from '../fsm/index.js';

/** Where a host's agent answers. */
export interface HostRef {
  id: string;
  address: string;
}

/** What registration learns of a host from its agent. */
export interface HostDescription {
  host: pb.Host__Output;
  guests: pb.GuestOs__Output[];
}

/** A host as a brief lease answer gives it: its id and usage (GrantLeaseRequest.brief). */
export interface LeasedHost {
  id: string;
  usage: pb.HostUsage__Output | null;
}

/**
 * What the runner reads of a GrantLease answer (GrantLeaseResponse): a whole answer is one too.
 * `more`, `siblingHostIds` and `network` are absent from ports that cannot carry them.
 */
export interface LeaseAnswer {
  expiresAtMs: number;
  host: LeasedHost | null;
  more?: {
    hostId: string;
    expiresAtMs: number;
    host: LeasedHost | null;
    error: string;
    network?: AppliedNetwork;
  }[];
  siblingHostIds?: string[];
  network?: AppliedNetwork;
}

type AppliedNetwork = pb.AppliedNetwork__Output | null;

export interface AgentEventSink {
  /** An event from the agent's WatchEvents stream. */
  event(e: pb.AgentEvent__Output): void;
  /** The stream ended or failed: what the agent said since is unknown until it reconnects. */
  closed(err?: unknown): void;
}

/**
 * Everything the daemon asks of agents, in one narrow interface: the leader's controllers and
 * RegisterHost go through it. `GrpcAgentPort` speaks AgentService over gRPC; the farm simulator
 * (issue 14) puts real engines behind it on a virtual clock. Failures are thrown as errors with
 * a gRPC status `code` (an ApiError or a grpc-js ServiceError).
 */
export interface AgentPort {
  describe(address: string): Promise<HostDescription>;
  /**
   * Grants the host its lease; with `more`, also those of other hosts of the same agent process
   * (answered in `more`, whose `siblingHostIds` name them). A port that cannot carry them answers
   * without `more` and `siblingHostIds`, and the runner grants each host on its own. Without
   * `network`, the network pusher asks the host for its configuration (an older agent).
   */
  grantLease(
    host: HostRef,
    req: {
      daemonId: string;
      term: number;
      durationMs: number;
      more?: { hostId: string; durationMs: number }[];
      /** Answer each host with its id and usage only (GrantLeaseRequest.brief). */
      brief?: boolean;
    },
  ): Promise<LeaseAnswer>;
  listVms(host: HostRef): Promise<pb.Vm__Output[]>;
  watchEvents(host: HostRef, sink: AgentEventSink): { cancel(): void };
  /** `start`: start the VM once created, under the same generation (AgentCreateVmRequest.start). */
  createVm(
    host: HostRef,
    vmId: string,
    config: VmConfig,
    generation: number,
    start?: boolean,
  ): Promise<pb.Vm__Output>;
  changeVmState(
    host: HostRef,
    vmId: string,
    action: VmActionName,
    generation: number,
  ): Promise<pb.Vm__Output>;
  updateVm(
    host: HostRef,
    vmId: string,
    config: VmConfig,
    paths: string[],
    generation: number,
  ): Promise<pb.Vm__Output>;
  deleteVm(host: HostRef, vmId: string, generation: number): Promise<void>;
  /** Removes a stale copy of a VM the farm placed elsewhere under `generation` (never started). */
  dropStaleVm(host: HostRef, vmId: string, generation: number): Promise<void>;
  getVm(host: HostRef, vmId: string): Promise<pb.Vm__Output>;
  createCheckpoint(
    host: HostRef,
    vmId: string,
    checkpointId: string,
    name: string,
    generation: number,
  ): Promise<void>;
  applyCheckpoint(
    host: HostRef,
    checkpointId: string,
    opts: { turnOffFirst: boolean; saveCurrentFirst: boolean },
    generation: number,
  ): Promise<pb.Vm__Output>;
  deleteCheckpoint(host: HostRef, checkpointId: string, subtree: boolean, generation: number): Promise<void>;
  renameCheckpoint(host: HostRef, checkpointId: string, name: string, generation: number): Promise<void>;
  listCheckpoints(host: HostRef, vmId: string): Promise<pb.AgentListCheckpointsResponse__Output>;
  /**
   * The target's side of a migration (MigrateIn): it pulls the VM from its source and holds it.
   * `done` resolves with the PREPARED report, or rejects with the target's status.
   */
  migrateIn(
    host: HostRef,
    req: pb.MigrateInRequest,
    progress: (p: pb.MigrationProgress__Output) => void,
  ): { done: Promise<pb.MigrationProgress__Output>; cancel(): void };
  commitMigration(host: HostRef, req: pb.ResolveMigrationRequest): Promise<pb.MigrationStatus__Output>;
  abortMigration(host: HostRef, req: pb.ResolveMigrationRequest): Promise<pb.MigrationStatus__Output>;
  getMigrationStatus(host: HostRef, migrationId: string): Promise<pb.MigrationStatus__Output>;
  close(): void;
}
