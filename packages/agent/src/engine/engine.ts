import { failedPrecondition, type pb } from '@hyperfarm/api';
import { captureForCheckpoint, checkCommand, revertToCheckpoint, setDiskPaths } from './checkpoint-hooks.js';
import { advance } from './clock.js';
import { EngineCore } from './core.js';
import { reportStorage, setGuestResponsive, setMergeBlocked } from './health.js';
import { checkMemoryFor, hostUsage, memoryUsedBytes } from './host-resources.js';
import { grantLease } from './lease.js';
import type { GuestMemory } from './memory.js';
import {
  abortMigrationOut,
  beginMigrationOut,
  completeMigrationOut,
  freezeForMigration,
  importVm,
  releaseImport,
  reserveImport,
} from './migration-hooks.js';
import type { CpuReport, Effect, EngineEvent, EngineOptions, Storage, VmEntry, VmRecord } from './model.js';
import type { DeviceStateModel, VmbusChannel } from './partition.js';
import { recover, takeChanges, type TurnedOff } from './persistence.js';
import { changeState, completeRestore, completeSave, failRestore, failSave, turnOffSaying } from './power.js';
import { stateName, type VmAction, type VmState } from './states.js';
import type { VmConfig } from './validate.js';
import { createVm, deleteVm, updateVm } from './vms.js';

export {
  DEFAULT_TIMINGS,
  type CpuReport,
  type Effect,
  type EngineEvent,
  type EngineOptions,
  type Timings,
  type VmRecord,
} from './model.js';

/**
 * The hypervisor engine of one host: a deterministic state machine. Time moves only through
 * `advance()`/`tick()`; randomness comes from the seed; effects (saves, restores, disk writes)
 * are queued for the caller, who reports back with `complete*`/`report*`. This class is the
 * engine's public face: the state lives in `EngineCore`, and each job is a module of its own
 * (clock, guest, vms, power, health, host-resources, lease, migration-hooks, checkpoint-hooks,
 * persistence).
 */
export class HypervisorEngine {
  private readonly core: EngineCore;

  constructor(readonly options: EngineOptions) {
    this.core = new EngineCore(options);
  }

  now(): number {
    return this.core.nowMs;
  }

  tick(dtMs: number): void {
    advance(this.core, this.core.nowMs + dtMs);
  }

  /**
   * Moves the clock to `toMs`, firing every deadline on the way in time order. Steps are at
   * most MAX_STEP_MS long, so what a step itself sets off (a starved guest's heartbeat timer)
   * is noticed within one step.
   */
  advance(toMs: number): void {
    advance(this.core, toMs);
  }

  cpuReport(): CpuReport {
    return this.core.lastCpu;
  }

  createVm(vmId: string, input: pb.VmConfig | pb.VmConfig__Output, generation = 0): pb.Vm__Output {
    return createVm(this.core, vmId, input, generation);
  }

  getVm(idOrName: string): pb.Vm__Output {
    return this.core.view(this.core.find(idOrName));
  }

  listVms(): pb.Vm__Output[] {
    return [...this.core.vms.values()]
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((vm) => this.core.view(vm));
  }

  hasVm(id: string): boolean {
    return this.core.vms.has(id);
  }

  /**
   * Applies the fields named by `paths` (proto field-mask paths, snake_case, dotted) from `input`;
   * no paths means the whole configuration.
   */
  updateVm(
    idOrName: string,
    input: pb.VmConfig | pb.VmConfig__Output,
    paths: readonly string[],
    generation = 0,
  ): pb.Vm__Output {
    return updateVm(this.core, idOrName, input, paths, generation);
  }

  deleteVm(idOrName: string, generation = 0): void {
    deleteVm(this.core, idOrName, generation);
  }

  changeState(idOrName: string, action: VmAction, generation = 0): pb.Vm__Output {
    return changeState(this.core, idOrName, action, generation);
  }

  /** Memory a start (or an import) needs, against what is free; RESOURCE_EXHAUSTED otherwise. */
  checkMemoryFor(memoryBytes: number, what: string): void {
    checkMemoryFor(this.core, memoryBytes, what);
  }

  /** Turns a VM off for a reason of the host's (a clean shutdown's stop action), saying why. */
  turnOffSaying(idOrName: string, message: string): pb.Vm__Output {
    return turnOffSaying(this.core, idOrName, message);
  }

  /** The saved state is on disk (fsynced). The memory is released. */
  completeSave(vmId: string, token: number, hash: string): void {
    completeSave(this.core, vmId, token, hash);
  }

  failSave(vmId: string, token: number, reason: string): void {
    failSave(this.core, vmId, token, reason);
  }

  /** The saved state was read back into `memory`; the VM runs again. */
  completeRestore(vmId: string, token: number, memory: GuestMemory, device: DeviceStateModel): void {
    completeRestore(this.core, vmId, token, memory, device);
  }

  failRestore(vmId: string, token: number, reason: string): void {
    failRestore(this.core, vmId, token, reason);
  }

  /** A sequence number for an event raised outside the engine (snapshot merges). */
  nextEventSequence(): number {
    return this.core.nextEventSequence();
  }

  /**
   * The storage VSP reports how a guest write ended. A failed disk leaves the VM running with its
   * I/O suspended (RunningCritical); a full one pauses it (PausedCritical), as Hyper-V does when
   * a VHD's volume runs out of space.
   */
  reportStorage(vmId: string, result: Storage, detail = ''): void {
    reportStorage(this.core, vmId, result, detail);
  }

  /**
   * A snapshot merge of this VM ran out of space (`why`), or has space again (undefined). A
   * Running VM turns RunningCritical while its merge waits, as Hyper-V flags a VM whose merge
   * cannot go on, and Running again once the merge goes on and its own storage is fine.
   */
  setMergeBlocked(idOrName: string, why: string | undefined): void {
    setMergeBlocked(this.core, idOrName, why);
  }

  /** A model hook: the guest stops answering its integration services (hang, or back again). */
  setGuestResponsive(idOrName: string, responsive: boolean): void {
    setGuestResponsive(this.core, idOrName, responsive);
  }

  channelsOf(idOrName: string): VmbusChannel[] {
    return this.core.find(idOrName).channels.map((c) => ({ ...c }));
  }

  ioStats(idOrName: string): { diskIos: number; emulatedIos: number; packets: number; rootCpuLp: number } {
    const vm = this.core.find(idOrName);
    return { ...vm.stats, rootCpuLp: vm.rootCpuLp };
  }

  deviceStateOf(vm: VmEntry): Buffer {
    return this.core.deviceStateOf(vm);
  }

  /** Hash and resident pages of a VM's memory and device state (Saved: as saved). */
  stateHash(idOrName: string): { sha256: string; residentPages: number } {
    const vm = this.core.find(idOrName);
    if (vm.memory)
      return {
        sha256: vm.memory.stateHash(this.core.deviceStateOf(vm)),
        residentPages: vm.memory.residentPages,
      };
    if (vm.state === 'VM_STATE_SAVED' && vm.savedHash) {
      return { sha256: vm.savedHash, residentPages: vm.savedPages };
    }
    throw failedPrecondition(`VM '${vm.config.name}' is ${stateName(vm.state)}: it has no memory state`);
  }

  /** The live memory of a VM, for savers and migrations. */
  memoryOf(idOrName: string): GuestMemory | undefined {
    return this.core.find(idOrName).memory;
  }

  memoryUsedBytes(): number {
    return memoryUsedBytes(this.core);
  }

  hostUsage(): pb.HostUsage__Output {
    return hostUsage(this.core);
  }

  /**
   * Grants or renews the host lease. A grant from an older term than the one held is ignored.
   * Once a lease is held, letting it run out turns every VM off (the daemon will restart them
   * elsewhere after waiting out the same lease, so no VM ever runs twice).
   */
  grantLease(daemonId: string, term: number, durationMs: number): { expiresAtMs: number; accepted: boolean } {
    return grantLease(this.core, daemonId, term, durationMs);
  }

  leaseState(): { daemonId: string; term: number; expiresAtMs: number; expired: boolean } | undefined {
    return this.core.lease ? { ...this.core.lease } : undefined;
  }

  /**
   * Marks a VM as leaving; live migration starts tracking dirty pages from here, a quick one
   * stops the VM at once. A Saved VM has no memory here: the caller reads its saved state.
   */
  beginMigrationOut(
    idOrName: string,
    generation: number,
    kind: pb.MigrationKind__Output,
  ): { vmId: string; memory: GuestMemory | undefined; config: VmConfig; state: VmState } {
    return beginMigrationOut(this.core, idOrName, generation, kind);
  }

  /** Stops the virtual processors for the final copy; returns the device state to send. */
  freezeForMigration(vmId: string): Buffer {
    return freezeForMigration(this.core, vmId);
  }

  /** Whether a migration of this VM is still under way (a lease expiry or turn-off ends it). */
  isMigrating(vmId: string): boolean {
    return this.core.vms.get(vmId)?.migration !== undefined;
  }

  /** The target confirmed: the VM now lives there. */
  completeMigrationOut(vmId: string, targetHost: string): void {
    completeMigrationOut(this.core, vmId, targetHost);
  }

  /** The migration failed: the VM goes on where it was. */
  abortMigrationOut(vmId: string, reason: string): void {
    abortMigrationOut(this.core, vmId, reason);
  }

  /** Holds memory for an incoming VM while its pages arrive. */
  reserveImport(vmId: string, config: VmConfig, generation: number): void {
    reserveImport(this.core, vmId, config, generation);
  }

  releaseImport(vmId: string): void {
    releaseImport(this.core, vmId);
  }

  /** Installs a VM whose state arrived whole and verified; it runs (or stays paused) at once. */
  importVm(
    vmId: string,
    config: VmConfig,
    generation: number,
    memory: GuestMemory,
    device: DeviceStateModel,
    targetState: VmState,
  ): pb.Vm__Output {
    return importVm(this.core, vmId, config, generation, memory, device, targetState);
  }

  /** Fencing and migration checks for an operation the caller carries out on the VM's files. */
  checkCommand(idOrName: string, generation: number, what: string): pb.Vm__Output {
    return checkCommand(this.core, idOrName, generation, what);
  }

  /**
   * What a checkpoint keeps of a VM at this instant: its configuration, its state, and for a
   * Running or Paused VM a copy of its memory and device state (the guest goes on running).
   */
  captureForCheckpoint(idOrName: string): {
    config: VmConfig;
    state: VmState;
    memory: GuestMemory | undefined;
    deviceState: Buffer | undefined;
  } {
    return captureForCheckpoint(this.core, idOrName);
  }

  /** Points the VM's disks at new files (a checkpoint's differencing disks); any state. */
  setDiskPaths(idOrName: string, paths: readonly string[]): void {
    setDiskPaths(this.core, idOrName, paths);
  }

  /**
   * Reverts an Off or Saved VM to a checkpoint: its configuration, and Saved with the
   * checkpoint's memory (already copied to the VM's saved-state file) or Off without.
   */
  revertToCheckpoint(
    idOrName: string,
    config: VmConfig,
    savedHash: string | undefined,
    savedPages: number,
    label: string,
  ): pb.Vm__Output {
    return revertToCheckpoint(this.core, idOrName, config, savedHash, savedPages, label);
  }

  /** Records changed and ids deleted since the last call, for the caller to persist. */
  takeChanges(): { records: VmRecord[]; deleted: string[] } {
    return takeChanges(this.core);
  }

  /**
   * Loads a VM persisted by an earlier run. A VM that was Saved stays Saved (if its file is
   * there); anything that had a partition comes back Off, as after a host crash.
   */
  recover(record: VmRecord, savedStatePresent: boolean): TurnedOff | undefined {
    return recover(this.core, record, savedStatePresent);
  }

  takeEvents(): EngineEvent[] {
    const e = this.core.events;
    this.core.events = [];
    return e;
  }

  takeEffects(): Effect[] {
    const e = this.core.effects;
    this.core.effects = [];
    return e;
  }

  view(vm: VmEntry): pb.Vm__Output {
    return this.core.view(vm);
  }
}
