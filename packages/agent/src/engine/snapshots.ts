import { failedPrecondition, resourceExhausted, type pb } from '@hyperfarm/api';
import type { EngineCore } from './core.js';
import { GuestMemory } from './memory.js';
import { stateName, type VmState } from './states.js';
import type { VmConfig } from './validate.js';
import { NO_SNAPSHOTS, noMerge, releaseMacs, type SnapshotFacts } from './vms.js';

/** Hyper-V's limit: 50 snapshots per VM. */
export const MAX_SNAPSHOTS_PER_VM = 50;

/** States in which a VM's files can change under it: no partition uses them. */
const OFFLINE: readonly VmState[] = ['VM_STATE_OFF', 'VM_STATE_SAVED'];
/** States a snapshot can be taken in. */
const CAPTURABLE: readonly VmState[] = [
  'VM_STATE_OFF',
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSED',
  'VM_STATE_SAVED',
];

/** What a snapshot keeps of a VM at its instant. */
export interface Capture {
  config: VmConfig;
  state: VmState;
  /** A copy of the memory of a Running or Paused VM (the guest goes on running). */
  memory: GuestMemory | undefined;
  deviceState: Buffer | undefined;
}

/**
 * The engine's side of snapshots: the rules, and what changes in the VM. The files and the
 * snapshot tree are the caller's (edge/checkpoints.ts, with the pure tree in snapshot-tree.ts).
 */
export class Snapshots {
  constructor(private readonly s: EngineCore) {}

  /** The fencing check every snapshot operation starts with; none while a merge runs. */
  check(
    idOrName: string,
    generation: number,
    what: string,
    facts: SnapshotFacts = NO_SNAPSHOTS,
  ): pb.Vm__Output {
    const vm = this.s.command(idOrName, generation, what);
    noMerge(vm, facts, what);
    return this.s.view(vm);
  }

  /** Off or Saved: its disk files may change at once (a running VM's merge goes on online). */
  isOffline(idOrName: string): boolean {
    return OFFLINE.includes(this.s.find(idOrName).state);
  }

  /** The checks before a snapshot is taken: as `check`, and the limit per VM. */
  checkTake(idOrName: string, generation: number, facts: SnapshotFacts): pb.Vm__Output {
    const vm = this.check(idOrName, generation, 'take a snapshot of', facts);
    if (facts.snapshots >= MAX_SNAPSHOTS_PER_VM) {
      throw resourceExhausted(
        `cannot take a snapshot of VM '${vm.config!.name}': it has ${facts.snapshots} snapshots, the most a VM may have (${MAX_SNAPSHOTS_PER_VM}); delete one first`,
      );
    }
    return vm;
  }

  /** What a snapshot keeps of the VM as it is now; refused in a passing state. */
  capture(idOrName: string): Capture {
    const vm = this.s.find(idOrName);
    if (!CAPTURABLE.includes(vm.state)) {
      throw failedPrecondition(`cannot checkpoint VM '${vm.config.name}': it is ${stateName(vm.state)}`);
    }
    let memory: GuestMemory | undefined;
    if (vm.memory) {
      memory = new GuestMemory(vm.id, vm.memory.totalPages);
      for (const p of vm.memory.residentPageNumbers()) memory.install(p, vm.memory.versionOf(p));
    }
    return {
      config: structuredClone(vm.config),
      state: vm.state,
      memory,
      deviceState: vm.memory ? this.s.deviceStateOf(vm) : undefined,
    };
  }

  /** Points the VM's disks at other files (a snapshot's differencing disks); any state. */
  setDiskPaths(idOrName: string, paths: readonly string[]): void {
    const vm = this.s.find(idOrName);
    if (paths.length !== vm.config.disks.length) throw new Error('one path per disk');
    vm.config.disks.forEach((d, i) => (d.path = paths[i]!));
    this.s.touch(vm);
  }

  /**
   * Whether applying snapshot `label` needs the VM turned off first: refused when it does and
   * the caller did not ask for it.
   */
  applyNeedsTurnOff(idOrName: string, label: string, turnOffFirst: boolean): boolean {
    const vm = this.s.find(idOrName);
    if (OFFLINE.includes(vm.state)) return false;
    if (!turnOffFirst) {
      throw failedPrecondition(
        `cannot apply snapshot '${label}' to VM '${vm.config.name}': it is ${stateName(vm.state)}; turn it off first, or set turn_off_first`,
      );
    }
    return true;
  }

  /**
   * Reverts an Off or Saved VM to a snapshot: its configuration, and Saved with the snapshot's
   * memory (already copied to the VM's saved-state file) or Off without.
   */
  revert(
    idOrName: string,
    config: VmConfig,
    savedHash: string | undefined,
    savedPages: number,
    label: string,
  ): pb.Vm__Output {
    const s = this.s;
    const vm = s.find(idOrName);
    if (!OFFLINE.includes(vm.state)) {
      throw failedPrecondition(
        `cannot apply a checkpoint to VM '${vm.config.name}': it is ${stateName(vm.state)}`,
      );
    }
    releaseMacs(s, vm.config);
    for (const n of config.networkAdapters) if (n.macAddress) s.macs.claim(n.macAddress);
    vm.config = structuredClone(config);
    vm.savedHash = savedHash ?? '';
    vm.savedPages = savedHash ? savedPages : 0;
    vm.ioToken = ++s.ioTokens;
    vm.desiredState = savedHash ? 'VM_STATE_SAVED' : 'VM_STATE_OFF';
    s.setState(vm, savedHash ? 'VM_STATE_SAVED' : 'VM_STATE_OFF', `checkpoint '${label}' applied`);
    return s.view(vm);
  }
}
