import { alreadyExists, failedPrecondition, invalidArgument, type pb } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import { checkMemoryFor } from './host-resources.js';
import type { GuestMemory } from './memory.js';
import type { VmEntry } from './model.js';
import type { DeviceStateModel } from './partition.js';
import { powerOff } from './power.js';
import { beginSave } from './save.js';
import { stateName, type VmState } from './states.js';
import { checkId, validateConfig, type VmConfig } from './validate.js';
import { assignMacs, checkNameFree, newEntry, noMerge, remove, type SnapshotFacts } from './vms.js';

/**
 * The engine's side of a migration. The handover is decided elsewhere (the daemon's log, or the
 * agent that drives a manual migration): neither side acts on its own once the other may hold a
 * whole copy of the VM.
 *
 * Source (`out()` to `commit()` or `abort()`): the VM is marked leaving; live migration tracks
 * dirty pages from here, a quick one stops the VM at once; `freeze()` stops it for the final
 * copy. Until the final state is handed to the target (`handedOver()`), a failure lets the VM go
 * on here (`abandon()`): the target cannot have it whole. After, the copy stays frozen until the
 * decision: commit drops it, abort resumes it. Only a lease expiry (self-fencing) turns it off.
 *
 * Target (`in()` to `install()` or `release()`): memory is reserved from the header on; the VM
 * is installed, and runs, only when the decision to commit arrives.
 */
export class Migrations {
  constructor(private readonly s: EngineCore) {}

  out(
    idOrName: string,
    generation: number,
    kind: pb.MigrationKind__Output,
    facts: SnapshotFacts,
    migrationId: string,
    /** VM folders are on cluster storage: snapshot chains stay where they are. */
    sharedStorage: boolean,
  ): OutgoingMigration {
    return new OutgoingMigration(
      this.s,
      this.check(idOrName, generation, facts, sharedStorage),
      kind,
      migrationId,
    );
  }

  /** Whether the VM may leave this host now (the checks of `out()`, without marking it). */
  check(idOrName: string, generation: number, facts: SnapshotFacts, sharedStorage: boolean): VmEntry {
    const s = this.s;
    const vm = s.command(idOrName, generation, 'migrate');
    noMerge(vm, facts, 'migrate');
    if (facts.snapshots > 0 && !sharedStorage) {
      throw failedPrecondition(
        `cannot migrate VM '${vm.config.name}': it has snapshots, which travel only on cluster storage (this host has none); delete them first`,
      );
    }
    s.leaseHeld(`migrate VM '${vm.config.name}'`);
    const state = vm.state;
    if (state !== 'VM_STATE_RUNNING' && state !== 'VM_STATE_PAUSED' && state !== 'VM_STATE_SAVED') {
      throw failedPrecondition(`cannot migrate VM '${vm.config.name}': it is ${stateName(state)}`);
    }
    return vm;
  }

  /** Holds memory for an incoming VM while its pages arrive (RESOURCE_EXHAUSTED if there is none). */
  in(vmId: string, config: VmConfig, generation: number): IncomingMigration {
    return new IncomingMigration(this.s, vmId, config, generation);
  }

  /** A Saved VM whose state is copied out (ExportVm without a migration); it stays as it is. */
  exportSaved(idOrName: string, generation: number): pb.Vm__Output {
    const vm = this.s.command(idOrName, generation, 'export');
    if (vm.state !== 'VM_STATE_SAVED') {
      throw failedPrecondition(
        `cannot export VM '${vm.config.name}': it is ${stateName(vm.state)}; export needs it Saved`,
      );
    }
    return this.s.view(vm);
  }

  /**
   * The source's side of an abort decision: a VM still frozen for this migration resumes as it
   * was. Anything else (already resumed, turned off by a lease expiry, gone) is left as it is.
   */
  abort(vmId: string, migrationId: string, reason: string): boolean {
    const vm = this.s.vms.get(vmId);
    if (!vm || vm.migration?.id !== migrationId) return false;
    resume(this.s, vm, `migration aborted: ${reason}`);
    return true;
  }

  /**
   * The farm placed the VM elsewhere under `generation` (a handover committed, a failover, a
   * move): this host's copy is stale. It is turned off if it runs (it must not, but it would be
   * the second copy) and forgotten, its files left (on cluster storage they are the VM's).
   * Returns the state it was in, or undefined if this host has no copy.
   */
  dropStale(vmId: string, generation: number, why: string): VmState | undefined {
    const s = this.s;
    const vm = s.vms.get(vmId);
    if (!vm) return undefined;
    if (generation <= vm.generation) {
      throw failedPrecondition(
        `cannot drop VM '${vm.config.name}' as stale: this host holds generation ${vm.generation}, not older than ${generation}`,
      );
    }
    const was = vm.state;
    // A copy frozen for a handover has stopped already; anything else that runs is turned off.
    const frozen = vm.migration?.handedOver === true;
    vm.migration = undefined;
    if (!frozen && vm.state !== 'VM_STATE_OFF' && vm.state !== 'VM_STATE_SAVED') powerOff(s, vm, why);
    remove(s, vm, `VM '${vm.config.name}' ${why}`);
    s.effects.push({ kind: 'delete-vm-files', vmId: vm.id, config: vm.config, keepShared: true });
    return was;
  }
}

function resume(s: EngineCore, vm: VmEntry, message: string): void {
  const before = vm.migration!.before;
  s.guestsChange();
  vm.migration = undefined;
  vm.throttlePercent = 0;
  if (vm.memory) s.setState(vm, before, message);
  else vm.message = message;
}

/** A VM leaving this host: from the start of the copy to the decision. */
export class OutgoingMigration {
  readonly vmId: string;
  readonly name: string;
  /** The state it left from, which the target takes on. */
  readonly state: VmState;
  readonly generation: number;
  readonly config: VmConfig;
  /** The live memory (undefined for a Saved VM: its saved state travels). */
  readonly memory: GuestMemory | undefined;
  private readonly marker: NonNullable<VmEntry['migration']>;

  constructor(
    private readonly s: EngineCore,
    private readonly vm: VmEntry,
    readonly kind: pb.MigrationKind__Output,
    readonly id: string,
  ) {
    this.vmId = vm.id;
    this.name = vm.config.name;
    this.state = vm.state;
    this.generation = vm.generation;
    this.config = structuredClone(vm.config);
    this.memory = vm.memory;
    this.marker = { id, kind, before: vm.state, handedOver: false };
    vm.migration = this.marker;
    if (vm.memory) {
      vm.memory.clearDirty();
      if (kind !== 'MIGRATION_KIND_LIVE') this.freeze();
    }
  }

  /** Whether the VM is still leaving (a lease expiry or a decision meanwhile ends it here). */
  get active(): boolean {
    return this.s.vms.get(this.vmId) === this.vm && this.vm.migration === this.marker;
  }

  /** Whether the final state went to the target: from then on only the decision moves the VM. */
  get handedOver(): boolean {
    return this.marker.handedOver;
  }

  /** Why the VM is no longer leaving, as its status says. */
  get message(): string {
    return this.vm.message;
  }

  /** Auto-converge: slows the guest's virtual processors (0 to 99 percent). */
  throttle(percent: number): void {
    if (!this.active) return;
    this.s.guestsChange();
    this.vm.throttlePercent = Math.max(0, Math.min(99, percent));
  }

  /** Stops the virtual processors for the final copy; returns the device state to send. */
  freeze(): Buffer {
    const vm = this.vm;
    if (!this.active) throw failedPrecondition(`VM '${this.name}' stopped migrating: ${vm.message}`);
    if (vm.state !== 'VM_STATE_SAVING') {
      vm.deadlineMs = undefined;
      vm.next = undefined;
      this.s.setState(vm, 'VM_STATE_SAVING', `migrating (${this.id}): final copy`);
    }
    return this.s.deviceStateOf(vm);
  }

  /**
   * The trailer is about to go to the target, which may then hold the VM whole: from here the
   * copy stays frozen until the decision. False if the VM stopped leaving meanwhile (a lease
   * expiry turned it off): then nothing may be handed over.
   */
  handOver(): boolean {
    if (!this.active) return false;
    this.marker.handedOver = true;
    this.vm.message = `migrating (${this.id}): waiting for the handover decision`;
    return true;
  }

  /** The transfer failed before the hand-over: the target cannot have the VM; it goes on here. */
  abandon(reason: string): void {
    if (!this.active || this.marker.handedOver) return;
    resume(this.s, this.vm, `migration failed: ${reason}`);
  }
}

/** A VM arriving: memory held from the header on, installed once the handover is committed. */
export class IncomingMigration {
  private held = true;

  constructor(
    private readonly s: EngineCore,
    readonly vmId: string,
    readonly config: VmConfig,
    readonly generation: number,
  ) {
    checkId('header.vm_id', vmId);
    s.leaseHeld(`import VM '${config.name}'`);
    validateConfig(config, s.options.limits, 'header.config');
    if (s.vms.has(vmId)) throw alreadyExists('VM', vmId);
    checkNameFree(s, config.name, vmId);
    checkMemoryFor(s, config.memoryBytes, `import VM '${config.name}'`);
    if (generation < 1)
      throw invalidArgument('header.generation', 'an imported VM needs a generation of 1 or more');
    s.reservedImports.set(vmId, config.memoryBytes + s.options.perVmOverheadBytes);
  }

  /** Gives the held memory back (the import was discarded, or installed). */
  release(): void {
    if (!this.held) return;
    this.held = false;
    this.s.reservedImports.delete(this.vmId);
  }

  /**
   * Installs the VM, verified whole, on the decision to commit: it runs (or stays paused, or is
   * saved) at once. The one place a migrated VM appears on this host.
   */
  install(memory: GuestMemory, device: DeviceStateModel, targetState: VmState): pb.Vm__Output {
    const s = this.s;
    const { vmId, config } = this;
    if (!this.held) throw failedPrecondition(`the import of VM '${config.name}' was discarded`);
    this.release();
    if (s.vms.has(vmId)) throw alreadyExists('VM', vmId);
    checkNameFree(s, config.name, vmId);
    checkMemoryFor(s, config.memoryBytes, `import VM '${config.name}'`);
    assignMacs(s, config, 'header.config');
    const vm = newEntry(s, vmId, config, this.generation, s.nowMs);
    vm.memory = memory;
    vm.channels = device.channels.map((c) => ({ ...c }));
    vm.boots = device.boots;
    vm.startedAtMs = s.nowMs;
    s.vms.set(vmId, vm);
    const paused = targetState === 'VM_STATE_PAUSED';
    vm.heartbeat =
      config.integrationServices && !paused ? 'HEARTBEAT_STATUS_OK' : 'HEARTBEAT_STATUS_NO_CONTACT';
    vm.desiredState = paused ? 'VM_STATE_PAUSED' : 'VM_STATE_RUNNING';
    s.setState(vm, paused ? 'VM_STATE_PAUSED' : 'VM_STATE_RUNNING', 'migrated in');
    if (targetState === 'VM_STATE_SAVED') {
      vm.desiredState = 'VM_STATE_SAVED';
      beginSave(s, vm);
    }
    return s.view(vm);
  }
}
