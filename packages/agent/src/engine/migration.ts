import { alreadyExists, failedPrecondition, invalidArgument, type pb } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import { checkMemoryFor } from './host-resources.js';
import type { GuestMemory } from './memory.js';
import type { VmEntry } from './model.js';
import type { DeviceStateModel } from './partition.js';
import { beginSave } from './save.js';
import { stateName, type VmState } from './states.js';
import { checkId, validateConfig, type VmConfig } from './validate.js';
import { assignMacs, checkNameFree, newEntry, noMerge, remove, type SnapshotFacts } from './vms.js';

/**
 * The engine's side of a migration, start to end. The transfer itself is the caller's
 * (edge/migration.ts): on the source it holds an `OutgoingMigration` from `out()` to `complete()`
 * or `abort()`; on the target an `IncomingMigration` from `in()` to `install()` or `release()`.
 */
export class Migrations {
  constructor(private readonly s: EngineCore) {}

  /**
   * Marks a VM as leaving: live migration tracks dirty pages from here, a quick one stops the
   * VM at once. A Saved VM has no memory here: the caller reads its saved state.
   */
  out(
    idOrName: string,
    generation: number,
    kind: pb.MigrationKind__Output,
    facts: SnapshotFacts,
  ): OutgoingMigration {
    const s = this.s;
    const vm = s.command(idOrName, generation, 'migrate');
    noMerge(vm, facts, 'migrate');
    if (facts.snapshots > 0) {
      throw failedPrecondition(
        `cannot migrate VM '${vm.config.name}': it has snapshots, which do not travel; delete them first`,
      );
    }
    s.leaseHeld(`migrate VM '${vm.config.name}'`);
    const state = vm.state;
    if (state !== 'VM_STATE_RUNNING' && state !== 'VM_STATE_PAUSED' && state !== 'VM_STATE_SAVED') {
      throw failedPrecondition(`cannot migrate VM '${vm.config.name}': it is ${stateName(state)}`);
    }
    return new OutgoingMigration(s, vm, kind);
  }

  /** Holds memory for an incoming VM while its pages arrive (RESOURCE_EXHAUSTED if there is none). */
  in(vmId: string, config: VmConfig, generation: number): IncomingMigration {
    return new IncomingMigration(this.s, vmId, config, generation);
  }

  /** A Saved VM whose state is pulled (ExportVm), after the fencing check; it stays as it is. */
  exportSaved(idOrName: string, generation: number): pb.Vm__Output {
    const vm = this.s.command(idOrName, generation, 'export');
    if (vm.state !== 'VM_STATE_SAVED') {
      throw failedPrecondition(
        `cannot export VM '${vm.config.name}': it is ${stateName(vm.state)}; export needs it Saved`,
      );
    }
    return this.s.view(vm);
  }
}

/** A VM leaving this host: from the start of the copy to the target's confirmation. */
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
  ) {
    this.vmId = vm.id;
    this.name = vm.config.name;
    this.state = vm.state;
    this.generation = vm.generation;
    this.config = structuredClone(vm.config);
    this.memory = vm.memory;
    this.marker = { kind, before: vm.state };
    vm.migration = this.marker;
    if (vm.memory) {
      vm.memory.clearDirty();
      if (kind !== 'MIGRATION_KIND_LIVE') this.freeze();
    }
  }

  /** Whether the VM is still leaving (a lease expiry or a turn-off meanwhile ends it here). */
  get active(): boolean {
    return this.s.vms.get(this.vmId) === this.vm && this.vm.migration === this.marker;
  }

  /** Why the VM is no longer leaving, as its status says. */
  get message(): string {
    return this.vm.message;
  }

  /** Stops the virtual processors for the final copy; returns the device state to send. */
  freeze(): Buffer {
    const vm = this.vm;
    if (vm.state !== 'VM_STATE_SAVING') {
      vm.deadlineMs = undefined;
      vm.next = undefined;
      this.s.setState(vm, 'VM_STATE_SAVING', 'migrating: final copy');
    }
    return this.s.deviceStateOf(vm);
  }

  /** The target confirmed: the VM now lives there, and goes from here with its files. */
  complete(targetHost: string): void {
    if (!this.active)
      throw failedPrecondition(`VM '${this.name}' is no longer migrating: ${this.vm.message}`);
    this.vm.migration = undefined;
    remove(this.s, this.vm, `VM '${this.name}' migrated to ${targetHost}`);
    this.s.effects.push({ kind: 'delete-vm-files', vmId: this.vmId, config: this.vm.config });
  }

  /** The migration failed: the VM goes on here as it was. */
  abort(reason: string): void {
    if (!this.active) return;
    this.vm.migration = undefined;
    if (this.vm.memory) this.s.setState(this.vm, this.marker.before, `migration failed: ${reason}`);
  }
}

/** A VM arriving: memory held from the header on, installed once its state arrived whole. */
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

  /** Gives the held memory back (the import failed or was installed). */
  release(): void {
    if (!this.held) return;
    this.held = false;
    this.s.reservedImports.delete(this.vmId);
  }

  /** Installs the VM, verified whole: it runs (or stays paused, or is saved) at once. */
  install(memory: GuestMemory, device: DeviceStateModel, targetState: VmState): pb.Vm__Output {
    const s = this.s;
    const { vmId, config } = this;
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
