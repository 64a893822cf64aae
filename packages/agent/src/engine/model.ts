import type { pb } from '@hyperfarm/api';
import type { GuestMemory } from './memory.js';
import type { DeviceStateModel, VmbusChannel } from './partition.js';
import type { VmState } from './states.js';
import type { LimitsProfile, VmConfig } from './validate.js';

// The engine's vocabulary: its options, the VMs it holds, what it asks of its surroundings
// (effects) and what it tells them (events).

const MIB = 1024 * 1024;
/** The longest stretch of time the engine simulates at once. */
export const MAX_STEP_MS = 1_000;
/** A guest that gets less than this share of the CPU it asks for misses its heartbeats. */
export const STARVED_FRACTION = 0.05;
export const mibText = (bytes: number): string => `${Math.round((bytes / MIB) * 100) / 100} MiB`;

export interface Timings {
  pauseMs: number;
  resumeMs: number;
  shutdownMs: number;
  resetMs: number;
  /** How long the host waits for a heartbeat before it shows Lost communication. */
  heartbeatLostAfterMs: number;
}

export const DEFAULT_TIMINGS: Timings = {
  pauseMs: 100,
  resumeMs: 100,
  shutdownMs: 2_000,
  resetMs: 200,
  heartbeatLostAfterMs: 3_000,
};

export interface EngineOptions {
  hostId: string;
  logicalProcessors: number;
  memoryBytes: number;
  rootReserveBytes: number;
  perVmOverheadBytes: number;
  limits: LimitsProfile;
  macPoolStart: string;
  macPoolSize: number;
  /** Lease length used when a grant does not say. */
  leaseMs: number;
  /** The clock's reading when the engine is made (Unix ms, or 0 on a virtual clock). */
  startMs: number;
  seed: number;
  timings?: Partial<Timings>;
  /** Real disk writes issued per VM per step at most; the rest are accounted but not issued. */
  maxDiskWritesPerStep?: number;
  /**
   * Longest step of the guests' model (default MAX_STEP_MS). The farm simulator's 24-hour runs
   * take minutes: a starved guest's heartbeat is then noticed within that step.
   */
  maxStepMs?: number;
  /**
   * The guests' model runs lazily: while no VM on the host changes state, CPU shares stay put and
   * what each guest does (dirtied pages, disk I/Os, packets) grows linearly with time, so the
   * engine moves its clock without stepping the guests and works a guest's account out when
   * something reads it (its memory, its I/O figures) or before any change to the shares. The
   * states, events, shares, heartbeats and counts are those of the stepping engine (counts up to
   * rounding); what differs is when disk writes are issued (at most `maxDiskWritesPerStep` per
   * account closed, not per step) and which pages the random writes pick. A caller whose storage
   * can fail calls `settleGuests()` to have the guests meet it. For the farm simulator, whose
   * 1,000 hosts would otherwise step 50,000 guests every interval.
   */
  lazyGuests?: boolean;
}

/**
 * What the engine asks its surroundings to do. It never does I/O itself. A save or a restore
 * carries its own completions: the caller reports how it ended through them, and a completion
 * that comes after the VM moved on (turned off meanwhile) changes nothing.
 */
export type Effect =
  | {
      kind: 'save';
      vmId: string;
      memory: GuestMemory;
      deviceState: Buffer;
      /** The file is on disk (fsynced), with this state hash. */
      saved(sha256: string): void;
      failed(reason: string): void;
    }
  | {
      kind: 'restore';
      vmId: string;
      totalPages: number;
      /** The saved state was read back (and checked) into `memory`. */
      restored(memory: GuestMemory, device: DeviceStateModel): void;
      failed(reason: string): void;
    }
  | { kind: 'delete-saved-state'; vmId: string }
  | {
      kind: 'delete-vm-files';
      vmId: string;
      config: VmConfig;
      /** The VM lives on elsewhere: on cluster storage its files are its, and stay. */
      keepShared?: boolean;
    }
  | { kind: 'disk-writes'; vmId: string; writes: { disk: number; seed: number }[]; writeBytes: number };

export interface EngineEvent {
  sequence: number;
  timeMs: number;
  /** "state_changed", "heartbeat_lost", "heartbeat_ok", "critical", "deleted", "lease_expired". */
  type: string;
  vmId: string;
  message: string;
}

/** What survives a restart of the agent. */
export interface VmRecord {
  id: string;
  config: VmConfig;
  generation: number;
  state: VmState;
  desiredState: VmState;
  createdAtMs: number;
  message: string;
  /** Hash of the saved state, when Saved. */
  savedHash: string;
  /** Written pages in the saved state, when Saved. */
  savedPages?: number;
}

export type Storage = 'ok' | 'failed' | 'full';

/** A VM as the engine holds it while the agent runs: its record, and what lives only in memory. */
export interface VmEntry extends Omit<VmRecord, 'savedPages'> {
  updatedAtMs: number;
  revision: number;
  /** When a transitional state ends, and what follows it. */
  deadlineMs: number | undefined;
  next: VmState | undefined;
  startedAtMs: number;
  memory: GuestMemory | undefined;
  channels: VmbusChannel[];
  boots: number;
  heartbeat: pb.HeartbeatStatus__Output;
  guestResponsive: boolean;
  unresponsiveSinceMs: number | undefined;
  /** Getting too little CPU to answer its integration services in time. */
  starving: boolean;
  cpuLp: number;
  rootCpuLp: number;
  /** Packets per second the guest's requests make at its current share. */
  packetsPerSecond: number;
  /** A lazy engine's guest has been accounted for up to here (see settleGuest in guest.ts). */
  guestAtMs: number;
  dirtyCarry: number;
  ioCarry: number;
  diskCursor: number;
  storage: Storage;
  /** Why a snapshot merge of this VM waits for space, if it does (keeps it RunningCritical). */
  mergeBlocked?: string;
  /** Matches an outstanding save or restore effect; a stale completion is ignored. */
  ioToken: number;
  /** The state to go back to if an in-flight save fails. */
  beforeSave: VmState | undefined;
  savedPages: number;
  /** Set while the VM leaves this host (see migration.ts). */
  migration: { id: string; kind: pb.MigrationKind__Output; before: VmState; handedOver: boolean } | undefined;
  /** Auto-converge: the share of its virtual processors' time the guest is denied, 0 to 99. */
  throttlePercent: number;
  stats: { diskIos: number; emulatedIos: number; packets: number };
}

export interface CpuReport {
  hostPercent: number;
  rootLp: number;
  vms: Map<string, { lp: number; percent: number }>;
}
