import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  resourceExhausted,
  type pb,
} from '@hyperfarm/api';
import { findGuestOs } from './catalog.js';
import { MacPool } from './mac-pool.js';
import { GuestMemory, PAGE_SIZE } from './memory.js';
import {
  devicePaths,
  encodeDeviceState,
  IO_COST_LP_SECONDS,
  offeredChannels,
  type DeviceStateModel,
  type VmbusChannel,
} from './partition.js';
import { seededRng, type Rng } from './rng.js';
import { shareCpu, type CpuClaim } from './scheduler.js';
import {
  ACTION_RULES,
  actionName,
  MEMORY_ASSIGNED,
  stateName,
  VCPUS_RUN,
  type VmAction,
  type VmState,
} from './states.js';
import {
  normalizeConfig,
  revalidateForStart,
  validateConfig,
  type LimitsProfile,
  type VmConfig,
} from './validate.js';

const MIB = 1024 * 1024;
/** The longest stretch of time the engine simulates at once. */
const MAX_STEP_MS = 1_000;
/** A guest that gets less than this share of the CPU it asks for misses its heartbeats. */
const STARVED_FRACTION = 0.05;
const mibText = (bytes: number): string => `${Math.round((bytes / MIB) * 100) / 100} MiB`;

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
}

/** What the engine asks its surroundings to do. It never does I/O itself. */
export type Effect =
  | { kind: 'save'; vmId: string; token: number; memory: GuestMemory; deviceState: Buffer }
  | { kind: 'restore'; vmId: string; token: number; totalPages: number }
  | { kind: 'delete-saved-state'; vmId: string }
  | { kind: 'delete-vm-files'; vmId: string; config: VmConfig }
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

type Storage = 'ok' | 'failed' | 'full';

interface VmEntry {
  id: string;
  config: VmConfig;
  generation: number;
  state: VmState;
  desiredState: VmState;
  createdAtMs: number;
  message: string;
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
  savedHash: string;
  savedPages: number;
  migration: { kind: pb.MigrationKind__Output; before: VmState } | undefined;
  stats: { diskIos: number; emulatedIos: number; packets: number };
}

export interface CpuReport {
  hostPercent: number;
  rootLp: number;
  vms: Map<string, { lp: number; percent: number }>;
}

/**
 * The hypervisor engine of one host: a deterministic state machine. Time moves only through
 * `advance()`/`tick()`; randomness comes from the seed; effects (saves, restores, disk writes)
 * are queued for the caller, who reports back with `complete*`/`report*`.
 */
export class HypervisorEngine {
  private nowMs: number;
  private readonly rng: Rng;
  private readonly vms = new Map<string, VmEntry>();
  private readonly macs: MacPool;
  private readonly timings: Timings;
  private readonly maxWritesPerStep: number;
  private events: EngineEvent[] = [];
  private effects: Effect[] = [];
  private changed = new Set<string>();
  private deleted = new Set<string>();
  private sequence = 0;
  private ioTokens = 0;
  private reservedImports = new Map<string, number>();
  private lease: { daemonId: string; term: number; expiresAtMs: number; expired: boolean } | undefined;
  private lastCpu: CpuReport = { hostPercent: 0, rootLp: 0, vms: new Map() };

  constructor(readonly options: EngineOptions) {
    this.nowMs = options.startMs;
    this.rng = seededRng(options.seed);
    this.macs = new MacPool(options.macPoolStart, options.macPoolSize);
    this.timings = { ...DEFAULT_TIMINGS, ...options.timings };
    this.maxWritesPerStep = options.maxDiskWritesPerStep ?? 64;
  }

  // ---- time ---------------------------------------------------------------------------------

  now(): number {
    return this.nowMs;
  }

  tick(dtMs: number): void {
    this.advance(this.nowMs + dtMs);
  }

  /**
   * Moves the clock to `toMs`, firing every deadline on the way in time order. Steps are at
   * most MAX_STEP_MS long, so what a step itself sets off (a starved guest's heartbeat timer)
   * is noticed within one step.
   */
  advance(toMs: number): void {
    if (!(toMs > this.nowMs)) return;
    while (this.nowMs < toMs) {
      const next = this.nextDeadline();
      const end = Math.min(toMs, this.nowMs + MAX_STEP_MS, next ?? Infinity);
      if (end > this.nowMs) {
        this.step(end - this.nowMs);
        this.nowMs = end;
      }
      if (next !== undefined && next <= this.nowMs) this.fireDeadlines();
    }
  }

  private nextDeadline(): number | undefined {
    let next: number | undefined;
    const consider = (t: number | undefined) => {
      if (t !== undefined && (next === undefined || t < next)) next = t;
    };
    for (const vm of this.vms.values()) {
      consider(vm.deadlineMs);
      if (vm.unresponsiveSinceMs !== undefined && vm.heartbeat === 'HEARTBEAT_STATUS_OK') {
        consider(vm.unresponsiveSinceMs + this.timings.heartbeatLostAfterMs);
      }
    }
    if (this.lease && !this.lease.expired) consider(this.lease.expiresAtMs);
    return next;
  }

  private fireDeadlines(): void {
    const now = this.nowMs;
    if (this.lease && !this.lease.expired && this.lease.expiresAtMs <= now) this.expireLease();
    for (const vm of [...this.vms.values()].sort((a, b) => a.id.localeCompare(b.id))) {
      if (vm.deadlineMs !== undefined && vm.deadlineMs <= now) {
        const next = vm.next!;
        vm.deadlineMs = undefined;
        vm.next = undefined;
        this.finishTransition(vm, next);
      }
      if (
        vm.unresponsiveSinceMs !== undefined &&
        vm.heartbeat === 'HEARTBEAT_STATUS_OK' &&
        vm.unresponsiveSinceMs + this.timings.heartbeatLostAfterMs <= now
      ) {
        vm.heartbeat = 'HEARTBEAT_STATUS_LOST_COMMUNICATION';
        this.emit(vm, 'heartbeat_lost', `VM '${vm.config.name}': heartbeat Lost communication`);
      }
    }
  }

  private finishTransition(vm: VmEntry, next: VmState): void {
    switch (vm.state) {
      case 'VM_STATE_STARTING':
        this.bootCompleted(vm);
        this.setState(vm, 'VM_STATE_RUNNING', 'running');
        break;
      case 'VM_STATE_STOPPING':
        this.release(vm);
        this.setState(vm, 'VM_STATE_OFF', 'shut down by the guest');
        break;
      case 'VM_STATE_RESETTING':
        this.powerOn(vm);
        this.setState(vm, 'VM_STATE_STARTING', 'booting after a reset');
        vm.deadlineMs = this.nowMs + this.bootMs(vm);
        vm.next = 'VM_STATE_RUNNING';
        break;
      default:
        this.setState(vm, next, next === 'VM_STATE_RUNNING' ? 'running' : '');
    }
  }

  // ---- the guest and the host's CPU -----------------------------------------------------------

  private step(dtMs: number): void {
    const dt = dtMs / 1000;
    const claims: CpuClaim[] = [];
    let rootLp = 0;
    for (const vm of this.vms.values()) {
      vm.rootCpuLp = 0;
      if (!VCPUS_RUN.has(vm.state)) {
        vm.cpuLp = 0;
        continue;
      }
      const p = vm.config.processor!;
      const w = vm.config.workload!;
      const demandFraction =
        vm.state === 'VM_STATE_STARTING'
          ? 0.5
          : vm.state === 'VM_STATE_STOPPING'
            ? 0.25
            : w.cpuDemandPercent / 100;
      claims.push({
        id: vm.id,
        demand: p.count * demandFraction,
        reserve: (p.count * p.reservePercent) / 100,
        limit: (p.count * p.limitPercent) / 100,
        weight: p.relativeWeight,
      });
      // The root partition's cost of serving this guest's I/O on its device paths.
      if (vm.state === 'VM_STATE_RUNNING') {
        const paths = devicePaths(vm.config);
        const iops = vm.config.disks.length > 0 ? w.diskIops : 0;
        const requests = w.requestServiceTimeMs > 0 ? (vm.cpuLp * 1000) / w.requestServiceTimeMs : 0;
        const packets = paths.legacyNics + paths.syntheticNics > 0 ? requests * 2 : 0;
        const perPacket =
          paths.syntheticNics > 0 ? IO_COST_LP_SECONDS.syntheticPacket : IO_COST_LP_SECONDS.legacyPacket;
        vm.rootCpuLp =
          iops * (paths.emulatedDisk ? IO_COST_LP_SECONDS.emulatedDisk : IO_COST_LP_SECONDS.syntheticDisk) +
          packets * perPacket;
        vm.stats.packets += packets * dt;
        rootLp += vm.rootCpuLp;
      }
    }
    const lps = this.options.logicalProcessors;
    rootLp = Math.min(rootLp, lps);
    const shares = shareCpu(lps - rootLp, claims);
    let used = rootLp;
    const vmsCpu = new Map<string, { lp: number; percent: number }>();
    for (const vm of this.vms.values()) {
      vm.cpuLp = shares.get(vm.id) ?? 0;
      used += vm.cpuLp;
      vmsCpu.set(vm.id, { lp: vm.cpuLp, percent: (vm.cpuLp / vm.config.processor!.count) * 100 });
      if (vm.state === 'VM_STATE_RUNNING' || vm.state === 'VM_STATE_RUNNING_CRITICAL') {
        const demandLp = (vm.config.processor!.count * vm.config.workload!.cpuDemandPercent) / 100;
        this.updateResponsiveness(vm, demandLp > 0 && vm.cpuLp < STARVED_FRACTION * demandLp);
        this.runGuest(vm, dt);
      }
    }
    this.lastCpu = { hostPercent: (used / lps) * 100, rootLp, vms: vmsCpu };
  }

  private runGuest(vm: VmEntry, dt: number): void {
    const w = vm.config.workload!;
    const memory = vm.memory!;
    // A guest's progress is bounded by the CPU it got: a starved guest dirties fewer pages.
    const demandLp = (vm.config.processor!.count * w.cpuDemandPercent) / 100;
    const progress = demandLp > 0 ? Math.min(1, vm.cpuLp / demandLp) : 1;
    const wsPages = Math.min(memory.totalPages, Math.floor(w.workingSetBytes / PAGE_SIZE));
    if (wsPages > 0 && w.dirtyPagesPerSecond > 0) {
      const exact = w.dirtyPagesPerSecond * dt * progress + vm.dirtyCarry;
      const writes = Math.floor(exact);
      vm.dirtyCarry = exact - writes;
      // Beyond a few passes over the working set, more writes change nothing the model keeps.
      const capped = Math.min(writes, wsPages * 4);
      for (let i = 0; i < capped; i++) memory.write(this.rng.below(wsPages));
    }
    if (vm.config.disks.length > 0 && w.diskIops > 0) {
      if (vm.state === 'VM_STATE_RUNNING_CRITICAL') {
        // Guest I/O is suspended; one probe write per step finds out when storage is back.
        this.effects.push({
          kind: 'disk-writes',
          vmId: vm.id,
          writes: [{ disk: 0, seed: this.rng.nextU32() }],
          writeBytes: w.diskWriteBytes,
        });
        return;
      }
      const exact = w.diskIops * dt * progress + vm.ioCarry;
      const ios = Math.floor(exact);
      vm.ioCarry = exact - ios;
      vm.stats.diskIos += ios;
      if (!vm.config.integrationServices) vm.stats.emulatedIos += ios;
      const issued = Math.min(ios, this.maxWritesPerStep);
      if (issued > 0) {
        const writes: { disk: number; seed: number }[] = [];
        for (let i = 0; i < issued; i++) {
          writes.push({ disk: vm.diskCursor, seed: this.rng.nextU32() });
          vm.diskCursor = (vm.diskCursor + 1) % vm.config.disks.length;
        }
        this.effects.push({ kind: 'disk-writes', vmId: vm.id, writes, writeBytes: w.diskWriteBytes });
      }
    }
  }

  cpuReport(): CpuReport {
    return this.lastCpu;
  }

  // ---- VMs ------------------------------------------------------------------------------------

  createVm(vmId: string, input: pb.VmConfig | pb.VmConfig__Output, generation = 0): pb.Vm__Output {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(vmId)) {
      throw invalidArgument('vm_id', `'${vmId}' must be 1 to 128 letters, digits, '-', '_' or '.'`);
    }
    const config = normalizeConfig(input);
    validateConfig(config, this.options.limits);
    const existing = this.vms.get(vmId);
    if (existing) {
      // A repeated create of the same VM is harmless; anything else is a conflict.
      if (
        existing.generation === generation &&
        JSON.stringify(existing.config.name) === JSON.stringify(config.name)
      ) {
        return this.view(existing);
      }
      throw alreadyExists('VM', vmId);
    }
    this.checkNameFree(config.name, vmId);
    this.assignMacs(config, 'config');
    const vm = this.newEntry(vmId, config, generation, this.nowMs);
    this.vms.set(vmId, vm);
    this.emit(vm, 'state_changed', `VM '${config.name}' created`);
    return this.view(vm);
  }

  private newEntry(id: string, config: VmConfig, generation: number, createdAtMs: number): VmEntry {
    return {
      id,
      config,
      generation,
      state: 'VM_STATE_OFF',
      desiredState: 'VM_STATE_OFF',
      createdAtMs,
      message: '',
      updatedAtMs: this.nowMs,
      revision: 0,
      deadlineMs: undefined,
      next: undefined,
      startedAtMs: 0,
      memory: undefined,
      channels: [],
      boots: 0,
      heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
      guestResponsive: true,
      unresponsiveSinceMs: undefined,
      starving: false,
      cpuLp: 0,
      rootCpuLp: 0,
      dirtyCarry: 0,
      ioCarry: 0,
      diskCursor: 0,
      storage: 'ok',
      ioToken: 0,
      beforeSave: undefined,
      savedHash: '',
      savedPages: 0,
      migration: undefined,
      stats: { diskIos: 0, emulatedIos: 0, packets: 0 },
    };
  }

  private checkNameFree(name: string, exceptId: string): void {
    for (const other of this.vms.values()) {
      if (other.id !== exceptId && other.config.name === name) {
        throw invalidArgument(
          'config.name',
          `a VM named '${name}' already exists on this host (id ${other.id})`,
        );
      }
    }
  }

  /** Dynamic adapters without an address get one from the pool; given addresses are claimed. */
  private assignMacs(config: VmConfig, prefix: string): void {
    const claimed: string[] = [];
    try {
      config.networkAdapters.forEach((n, i) => {
        if (n.macAddress !== '') {
          if (!this.macs.claim(n.macAddress)) {
            throw invalidArgument(
              `${prefix}.network_adapters[${i}].mac_address`,
              `${n.macAddress} is in use by another VM`,
            );
          }
          claimed.push(n.macAddress);
        } else {
          n.macAddress = this.macs.allocate();
          claimed.push(n.macAddress);
        }
      });
    } catch (err) {
      for (const m of claimed) this.macs.release(m);
      throw err;
    }
  }

  private releaseMacs(config: VmConfig): void {
    for (const n of config.networkAdapters) if (n.macAddress) this.macs.release(n.macAddress);
  }

  private find(idOrName: string): VmEntry {
    const byId = this.vms.get(idOrName);
    if (byId) return byId;
    for (const vm of this.vms.values()) if (vm.config.name === idOrName) return vm;
    throw notFound('VM', idOrName);
  }

  /** The fencing check: an older generation is refused; a newer one is adopted. */
  private fence(vm: VmEntry, generation: number, what: string): void {
    if (generation !== 0 && generation < vm.generation) {
      throw failedPrecondition(
        `cannot ${what} VM '${vm.config.name}': stale generation ${generation}, this host holds generation ${vm.generation}`,
      );
    }
    if (generation > vm.generation) {
      vm.generation = generation;
      this.touch(vm);
    }
  }

  private notMigrating(vm: VmEntry, what: string): void {
    if (vm.migration) throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': it is migrating`);
  }

  getVm(idOrName: string): pb.Vm__Output {
    return this.view(this.find(idOrName));
  }

  listVms(): pb.Vm__Output[] {
    return [...this.vms.values()].sort((a, b) => a.id.localeCompare(b.id)).map((vm) => this.view(vm));
  }

  hasVm(id: string): boolean {
    return this.vms.has(id);
  }

  /** Fields that may change while the VM runs; everything else needs it Off. */
  private static readonly LIVE_FIELDS = new Set([
    'name',
    'haPriority',
    'automaticStartAction',
    'automaticStopAction',
    'labels',
    'antiAffinityGroup',
    'workload',
    'processor.reservePercent',
    'processor.limitPercent',
    'processor.relativeWeight',
  ]);

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
    const vm = this.find(idOrName);
    this.fence(vm, generation, 'update');
    this.notMigrating(vm, 'update');
    const given = normalizeConfig(input);
    const next = structuredClone(vm.config);
    const camel = (s: string): string => s.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
    const fields = paths.length > 0 ? paths.map((p) => p.split('.').map(camel).join('.')) : Object.keys(next);
    const touched: string[] = [];
    for (const path of fields) {
      const [top, sub, ...rest] = path.split('.');
      if (!top || !(top in next) || rest.length > 0)
        throw invalidArgument('update_mask', `unknown field '${path}'`);
      const src = given as unknown as Record<string, unknown>;
      const dst = next as unknown as Record<string, unknown>;
      let before: unknown;
      let after: unknown;
      if (sub === undefined) {
        before = dst[top];
        after = src[top];
        dst[top] = structuredClone(after);
      } else {
        const s = src[top] as Record<string, unknown> | null;
        const d = dst[top] as Record<string, unknown> | null;
        if (!s || !d || !(sub in d)) throw invalidArgument('update_mask', `unknown field '${path}'`);
        before = d[sub];
        after = s[sub];
        d[sub] = after;
      }
      if (JSON.stringify(before) !== JSON.stringify(after)) touched.push(path);
    }
    if (touched.length === 0) return this.view(vm);
    const needsOff = touched.filter(
      (p) =>
        !HypervisorEngine.LIVE_FIELDS.has(p) &&
        !(p === 'processor' && this.onlyControlsChanged(vm.config, next)),
    );
    if (needsOff.length > 0 && vm.state !== 'VM_STATE_OFF') {
      const snake = needsOff[0]!.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      throw failedPrecondition(
        `cannot change ${snake} of VM '${vm.config.name}': it is ${stateName(vm.state)}; turn it off first`,
      );
    }
    // Keep the MACs the VM has unless the caller changed the adapters.
    if (touched.some((p) => p === 'networkAdapters')) {
      next.networkAdapters.forEach((n, i) => {
        const old = vm.config.networkAdapters[i];
        if (!n.staticMac && n.macAddress === '' && old && !old.staticMac) n.macAddress = old.macAddress;
      });
    }
    validateConfig(next, this.options.limits);
    if (next.name !== vm.config.name) this.checkNameFree(next.name, vm.id);
    if (touched.includes('networkAdapters')) {
      this.releaseMacs(vm.config);
      try {
        this.assignMacs(next, 'config');
      } catch (err) {
        this.assignMacs(vm.config, 'config');
        throw err;
      }
    }
    vm.config = next;
    this.emit(vm, 'state_changed', `VM '${next.name}' configuration changed: ${touched.join(', ')}`);
    return this.view(vm);
  }

  private onlyControlsChanged(a: VmConfig, b: VmConfig): boolean {
    return a.processor!.count === b.processor!.count;
  }

  deleteVm(idOrName: string, generation = 0): void {
    const vm = this.find(idOrName);
    this.fence(vm, generation, 'delete');
    this.notMigrating(vm, 'delete');
    if (vm.state !== 'VM_STATE_OFF' && vm.state !== 'VM_STATE_SAVED') {
      throw failedPrecondition(
        `cannot delete VM '${vm.config.name}': it is ${stateName(vm.state)}; turn it off first`,
      );
    }
    this.remove(vm, `VM '${vm.config.name}' deleted`);
    this.effects.push({ kind: 'delete-vm-files', vmId: vm.id, config: vm.config });
  }

  private remove(vm: VmEntry, message: string): void {
    this.release(vm);
    this.releaseMacs(vm.config);
    this.vms.delete(vm.id);
    this.changed.delete(vm.id);
    this.deleted.add(vm.id);
    this.sequence++;
    this.events.push({ sequence: this.sequence, timeMs: this.nowMs, type: 'deleted', vmId: vm.id, message });
  }

  // ---- state changes --------------------------------------------------------------------------

  changeState(idOrName: string, action: VmAction, generation = 0): pb.Vm__Output {
    const vm = this.find(idOrName);
    if (action === 'VM_ACTION_UNSPECIFIED' || !(action in ACTION_RULES)) {
      throw invalidArgument('action', 'must be one of START, STOP, TURN_OFF, SAVE, PAUSE, RESUME, RESET');
    }
    const what = actionName(action);
    this.fence(vm, generation, what);
    this.notMigrating(vm, what);
    const rule = ACTION_RULES[action];
    if (rule.alreadyThere.includes(vm.state)) return this.view(vm);
    if (!rule.from.includes(vm.state)) {
      throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': it is ${stateName(vm.state)}`);
    }
    switch (action) {
      case 'VM_ACTION_START':
        return this.start(vm);
      case 'VM_ACTION_STOP':
        return this.stop(vm);
      case 'VM_ACTION_TURN_OFF':
        vm.desiredState = 'VM_STATE_OFF';
        this.turnOff(vm, 'turned off');
        return this.view(vm);
      case 'VM_ACTION_SAVE':
        vm.desiredState = 'VM_STATE_SAVED';
        this.beginSave(vm);
        return this.view(vm);
      case 'VM_ACTION_PAUSE':
        vm.desiredState = 'VM_STATE_PAUSED';
        if (vm.state === 'VM_STATE_RUNNING_CRITICAL') {
          this.setState(vm, 'VM_STATE_PAUSED_CRITICAL', vm.message);
        } else {
          this.transition(vm, 'VM_STATE_PAUSING', this.timings.pauseMs, 'VM_STATE_PAUSED', 'pausing');
        }
        return this.view(vm);
      case 'VM_ACTION_RESUME':
        vm.desiredState = 'VM_STATE_RUNNING';
        vm.storage = 'ok'; // retried: the next write tells whether it is really back
        this.transition(vm, 'VM_STATE_RESUMING', this.timings.resumeMs, 'VM_STATE_RUNNING', 'resuming');
        return this.view(vm);
      case 'VM_ACTION_RESET':
        vm.desiredState = 'VM_STATE_RUNNING';
        this.transition(vm, 'VM_STATE_RESETTING', this.timings.resetMs, 'VM_STATE_STARTING', 'resetting');
        return this.view(vm);
      default:
        throw invalidArgument('action', `unknown action ${String(action)}`);
    }
  }

  private start(vm: VmEntry): pb.Vm__Output {
    const name = vm.config.name;
    revalidateForStart(name, vm.config, this.options.limits);
    this.leaseHeld(`start VM '${name}'`);
    const running = [...this.vms.values()].filter((v) => MEMORY_ASSIGNED.has(v.state)).length;
    if (running >= this.options.limits.maxRunningVmsPerHost) {
      throw resourceExhausted(
        `cannot start VM '${name}': ${running} VMs already run, the ${this.options.limits.name} profile's limit per host`,
      );
    }
    this.checkMemoryFor(vm.config.memoryBytes, `start VM '${name}'`);
    vm.desiredState = 'VM_STATE_RUNNING';
    if (vm.state === 'VM_STATE_SAVED') {
      vm.ioToken = ++this.ioTokens;
      this.setState(vm, 'VM_STATE_RESUMING', 'restoring saved state');
      this.effects.push({
        kind: 'restore',
        vmId: vm.id,
        token: vm.ioToken,
        totalPages: vm.config.memoryBytes / PAGE_SIZE,
      });
      return this.view(vm);
    }
    this.powerOn(vm);
    this.transition(vm, 'VM_STATE_STARTING', this.bootMs(vm), 'VM_STATE_RUNNING', 'booting');
    return this.view(vm);
  }

  /** Memory a start (or an import) needs, against what is free; RESOURCE_EXHAUSTED otherwise. */
  checkMemoryFor(memoryBytes: number, what: string): void {
    const need = memoryBytes + this.options.perVmOverheadBytes;
    const used = this.memoryUsedBytes();
    const free = this.options.memoryBytes - this.options.rootReserveBytes - used;
    if (need > free) {
      throw resourceExhausted(
        `cannot ${what}: it needs ${mibText(need)} (${mibText(memoryBytes)} memory + ${mibText(this.options.perVmOverheadBytes)} overhead) but only ${mibText(Math.max(0, free))} is free (${mibText(this.options.memoryBytes)} host memory - ${mibText(this.options.rootReserveBytes)} root reserve - ${mibText(used)} used)`,
      );
    }
  }

  private bootMs(vm: VmEntry): number {
    return vm.config.workload!.bootMs || findGuestOs(vm.config.guestOs)!.defaultBootMs;
  }

  /** Creates the child partition: fresh memory, channels offered, no heartbeat yet. */
  private powerOn(vm: VmEntry): void {
    vm.memory = new GuestMemory(vm.id, vm.config.memoryBytes / PAGE_SIZE);
    vm.channels = offeredChannels(vm.config);
    vm.heartbeat = 'HEARTBEAT_STATUS_NO_CONTACT';
    vm.unresponsiveSinceMs = vm.guestResponsive ? undefined : this.nowMs;
    vm.storage = 'ok';
    vm.dirtyCarry = 0;
    vm.ioCarry = 0;
    vm.boots++;
  }

  /** The guest's kernel is loaded (its first pages written) and it opens its VMBus channels. */
  private bootCompleted(vm: VmEntry): void {
    const memory = vm.memory!;
    const kernelPages = Math.min(256, memory.totalPages);
    for (let p = 0; p < kernelPages; p++) memory.write(p);
    vm.startedAtMs = this.nowMs;
    if (vm.config.integrationServices) {
      for (const ch of vm.channels) ch.open = true;
      vm.heartbeat = vm.guestResponsive ? 'HEARTBEAT_STATUS_OK' : 'HEARTBEAT_STATUS_LOST_COMMUNICATION';
    }
  }

  private stop(vm: VmEntry): pb.Vm__Output {
    const name = vm.config.name;
    if (!vm.config.integrationServices) {
      throw failedPrecondition(
        `cannot stop VM '${name}': its guest has no shutdown integration service; turn it off instead`,
      );
    }
    if (vm.heartbeat !== 'HEARTBEAT_STATUS_OK') {
      throw failedPrecondition(
        `cannot stop VM '${name}': its guest does not answer (heartbeat ${vm.heartbeat === 'HEARTBEAT_STATUS_LOST_COMMUNICATION' ? 'Lost communication' : 'No contact'}); turn it off instead`,
      );
    }
    vm.desiredState = 'VM_STATE_OFF';
    this.transition(vm, 'VM_STATE_STOPPING', this.timings.shutdownMs, 'VM_STATE_OFF', 'shutting down');
    return this.view(vm);
  }

  private turnOff(vm: VmEntry, message: string): void {
    if (vm.state === 'VM_STATE_SAVED') this.effects.push({ kind: 'delete-saved-state', vmId: vm.id });
    vm.savedHash = '';
    vm.ioToken = ++this.ioTokens; // any save or restore in flight no longer counts
    this.release(vm);
    this.setState(vm, 'VM_STATE_OFF', message);
  }

  private beginSave(vm: VmEntry): void {
    vm.beforeSave = vm.state;
    vm.ioToken = ++this.ioTokens;
    vm.deadlineMs = undefined;
    vm.next = undefined;
    vm.savedPages = vm.memory!.residentPages;
    this.setState(vm, 'VM_STATE_SAVING', 'saving memory and device state');
    this.effects.push({
      kind: 'save',
      vmId: vm.id,
      token: vm.ioToken,
      memory: vm.memory!,
      deviceState: this.deviceStateOf(vm),
    });
  }

  /** The saved state is on disk (fsynced). The memory is released. */
  completeSave(vmId: string, token: number, hash: string): void {
    const vm = this.vms.get(vmId);
    if (!vm || vm.ioToken !== token || vm.state !== 'VM_STATE_SAVING') return;
    vm.savedHash = hash;
    this.release(vm);
    this.setState(vm, 'VM_STATE_SAVED', 'saved');
  }

  failSave(vmId: string, token: number, reason: string): void {
    const vm = this.vms.get(vmId);
    if (!vm || vm.ioToken !== token || vm.state !== 'VM_STATE_SAVING') return;
    this.setState(vm, vm.beforeSave ?? 'VM_STATE_PAUSED', `save failed: ${reason}`);
    vm.desiredState = vm.state;
  }

  /** The saved state was read back into `memory`; the VM runs again. */
  completeRestore(vmId: string, token: number, memory: GuestMemory, device: DeviceStateModel): void {
    const vm = this.vms.get(vmId);
    if (!vm || vm.ioToken !== token || vm.state !== 'VM_STATE_RESUMING') return;
    vm.memory = memory;
    vm.channels = device.channels.map((c) => ({ ...c }));
    vm.boots = device.boots;
    vm.heartbeat = vm.config.integrationServices && vm.guestResponsive ? 'HEARTBEAT_STATUS_OK' : vm.heartbeat;
    vm.startedAtMs = this.nowMs;
    vm.savedHash = '';
    this.setState(vm, 'VM_STATE_RUNNING', 'restored from saved state');
  }

  failRestore(vmId: string, token: number, reason: string): void {
    const vm = this.vms.get(vmId);
    if (!vm || vm.ioToken !== token || vm.state !== 'VM_STATE_RESUMING') return;
    vm.desiredState = 'VM_STATE_SAVED';
    this.setState(vm, 'VM_STATE_SAVED', `restore failed: ${reason}`);
  }

  private transition(vm: VmEntry, via: VmState, durationMs: number, next: VmState, message: string): void {
    vm.deadlineMs = this.nowMs + durationMs;
    vm.next = next;
    this.setState(vm, via, message);
  }

  /** The partition is torn down: memory, channels and heartbeat go. */
  private release(vm: VmEntry): void {
    vm.memory = undefined;
    vm.channels = [];
    vm.deadlineMs = undefined;
    vm.next = undefined;
    vm.heartbeat = 'HEARTBEAT_STATUS_NO_CONTACT';
    vm.cpuLp = 0;
    vm.rootCpuLp = 0;
  }

  private setState(vm: VmEntry, state: VmState, message: string): void {
    const from = vm.state;
    vm.state = state;
    vm.message = message;
    this.emit(
      vm,
      'state_changed',
      `VM '${vm.config.name}': ${stateName(from)} -> ${stateName(state)}${message ? ` (${message})` : ''}`,
    );
  }

  /** A sequence number for an event raised outside the engine (snapshot merges). */
  nextEventSequence(): number {
    return ++this.sequence;
  }

  private emit(vm: VmEntry, type: string, message: string): void {
    this.sequence++;
    vm.revision = this.sequence;
    vm.updatedAtMs = this.nowMs;
    this.touch(vm);
    this.events.push({ sequence: this.sequence, timeMs: this.nowMs, type, vmId: vm.id, message });
  }

  private touch(vm: VmEntry): void {
    this.changed.add(vm.id);
  }

  // ---- storage and the guest's health -----------------------------------------------------------

  /**
   * The storage VSP reports how a guest write ended. A failed disk leaves the VM running with its
   * I/O suspended (RunningCritical); a full one pauses it (PausedCritical), as Hyper-V does when
   * a VHD's volume runs out of space.
   */
  reportStorage(vmId: string, result: Storage, detail = ''): void {
    const vm = this.vms.get(vmId);
    if (!vm) return;
    const previous = vm.storage;
    vm.storage = result;
    if (result === 'ok') {
      if (vm.state === 'VM_STATE_RUNNING_CRITICAL' && !vm.mergeBlocked)
        this.setState(vm, 'VM_STATE_RUNNING', 'storage is back');
      return;
    }
    const why = `${result === 'full' ? 'its storage is full' : 'its storage failed'}${detail ? `: ${detail}` : ''}`;
    if (vm.state === 'VM_STATE_RUNNING') {
      if (result === 'full') this.setState(vm, 'VM_STATE_PAUSED_CRITICAL', why);
      else this.setState(vm, 'VM_STATE_RUNNING_CRITICAL', why);
      this.emit(vm, 'critical', `VM '${vm.config.name}' is ${stateName(vm.state)}: ${why}`);
    } else if (vm.state === 'VM_STATE_RUNNING_CRITICAL' && result === 'full' && previous !== 'full') {
      this.setState(vm, 'VM_STATE_PAUSED_CRITICAL', why);
      this.emit(vm, 'critical', `VM '${vm.config.name}' is PausedCritical: ${why}`);
    }
  }

  /**
   * A snapshot merge of this VM ran out of space (`why`), or has space again (undefined). A
   * Running VM turns RunningCritical while its merge waits, as Hyper-V flags a VM whose merge
   * cannot go on, and Running again once the merge goes on and its own storage is fine.
   */
  setMergeBlocked(idOrName: string, why: string | undefined): void {
    const vm = this.find(idOrName);
    if ((vm.mergeBlocked ?? '') === (why ?? '')) return;
    vm.mergeBlocked = why;
    if (why && vm.state === 'VM_STATE_RUNNING') {
      this.setState(vm, 'VM_STATE_RUNNING_CRITICAL', `its snapshot merge is stuck: ${why}`);
      this.emit(
        vm,
        'critical',
        `VM '${vm.config.name}' is RunningCritical: its snapshot merge is stuck: ${why}`,
      );
    } else if (!why && vm.state === 'VM_STATE_RUNNING_CRITICAL' && vm.storage === 'ok') {
      this.setState(vm, 'VM_STATE_RUNNING', 'snapshot merge has space again');
    }
  }

  /** A model hook: the guest stops answering its integration services (hang, or back again). */
  setGuestResponsive(idOrName: string, responsive: boolean): void {
    const vm = this.find(idOrName);
    vm.guestResponsive = responsive;
    this.updateResponsiveness(vm, vm.starving);
  }

  /**
   * A guest answers its heartbeat unless it hangs or is starved of CPU; after
   * `heartbeatLostAfterMs` without an answer the host shows Lost communication.
   */
  private updateResponsiveness(vm: VmEntry, starving: boolean): void {
    vm.starving = starving;
    if (!vm.guestResponsive || starving) {
      vm.unresponsiveSinceMs ??= this.nowMs;
      return;
    }
    if (vm.unresponsiveSinceMs === undefined) return;
    vm.unresponsiveSinceMs = undefined;
    if (vm.heartbeat === 'HEARTBEAT_STATUS_LOST_COMMUNICATION' && vm.state === 'VM_STATE_RUNNING') {
      vm.heartbeat = 'HEARTBEAT_STATUS_OK';
      this.emit(vm, 'heartbeat_ok', `VM '${vm.config.name}': heartbeat OK`);
    }
  }

  channelsOf(idOrName: string): VmbusChannel[] {
    return this.find(idOrName).channels.map((c) => ({ ...c }));
  }

  ioStats(idOrName: string): { diskIos: number; emulatedIos: number; packets: number; rootCpuLp: number } {
    const vm = this.find(idOrName);
    return { ...vm.stats, rootCpuLp: vm.rootCpuLp };
  }

  // ---- state hash -------------------------------------------------------------------------------

  deviceStateOf(vm: VmEntry): Buffer {
    const d: DeviceStateModel = {
      version: 1,
      vcpus: vm.config.processor!.count,
      integrationServices: vm.config.integrationServices,
      channels: vm.channels.map((c) => ({ ...c })),
      nics: vm.config.networkAdapters.map((n) => ({ kind: n.kind, mac: n.macAddress, vlan: n.vlanId })),
      // Where the disks sit on the controllers; their files are host configuration, not device
      // state (a checkpoint or a migration may give them other files).
      disks: vm.config.disks.map((d) => ({
        controller: d.controller,
        number: d.controllerNumber,
        location: d.location,
      })),
      boots: vm.boots,
    };
    return encodeDeviceState(d);
  }

  /** Hash and resident pages of a VM's memory and device state (Saved: as saved). */
  stateHash(idOrName: string): { sha256: string; residentPages: number } {
    const vm = this.find(idOrName);
    if (vm.memory)
      return { sha256: vm.memory.stateHash(this.deviceStateOf(vm)), residentPages: vm.memory.residentPages };
    if (vm.state === 'VM_STATE_SAVED' && vm.savedHash) {
      return { sha256: vm.savedHash, residentPages: vm.savedPages };
    }
    throw failedPrecondition(`VM '${vm.config.name}' is ${stateName(vm.state)}: it has no memory state`);
  }

  /** The live memory of a VM, for savers and migrations. */
  memoryOf(idOrName: string): GuestMemory | undefined {
    return this.find(idOrName).memory;
  }

  // ---- host ---------------------------------------------------------------------------------------

  memoryUsedBytes(): number {
    let used = 0;
    for (const vm of this.vms.values()) {
      if (MEMORY_ASSIGNED.has(vm.state)) used += vm.config.memoryBytes + this.options.perVmOverheadBytes;
    }
    for (const bytes of this.reservedImports.values()) used += bytes;
    return used;
  }

  hostUsage(): pb.HostUsage__Output {
    const vms = [...this.vms.values()];
    return {
      memoryUsedBytes: this.memoryUsedBytes(),
      runningVms: vms.filter((v) => MEMORY_ASSIGNED.has(v.state)).length,
      vms: vms.length,
      cpuPercent: Math.round(this.lastCpu.hostPercent * 100) / 100,
    };
  }

  // ---- lease (self-fencing) ---------------------------------------------------------------------

  /**
   * Grants or renews the host lease. A grant from an older term than the one held is ignored.
   * Once a lease is held, letting it run out turns every VM off (the daemon will restart them
   * elsewhere after waiting out the same lease, so no VM ever runs twice).
   */
  grantLease(daemonId: string, term: number, durationMs: number): { expiresAtMs: number; accepted: boolean } {
    if (this.lease && term < this.lease.term) return { expiresAtMs: this.lease.expiresAtMs, accepted: false };
    const length = durationMs > 0 ? durationMs : this.options.leaseMs;
    this.lease = { daemonId, term, expiresAtMs: this.nowMs + length, expired: false };
    return { expiresAtMs: this.lease.expiresAtMs, accepted: true };
  }

  /** A self-fenced host runs nothing new until the daemon renews its lease. */
  private leaseHeld(what: string): void {
    if (this.lease?.expired) {
      throw failedPrecondition(
        `cannot ${what}: the host lease expired at ${this.lease.expiresAtMs} and has not been renewed`,
      );
    }
  }

  leaseState(): { daemonId: string; term: number; expiresAtMs: number; expired: boolean } | undefined {
    return this.lease ? { ...this.lease } : undefined;
  }

  private expireLease(): void {
    this.lease!.expired = true;
    this.sequence++;
    this.events.push({
      sequence: this.sequence,
      timeMs: this.nowMs,
      type: 'lease_expired',
      vmId: '',
      message: `host lease from ${this.lease!.daemonId} (term ${this.lease!.term}) expired: turning off every VM`,
    });
    for (const vm of [...this.vms.values()].sort((a, b) => a.id.localeCompare(b.id))) {
      if (vm.state === 'VM_STATE_OFF' || vm.state === 'VM_STATE_SAVED') continue;
      vm.migration = undefined;
      this.turnOff(vm, 'self-fenced: the host lease expired');
    }
  }

  // ---- migration ------------------------------------------------------------------------------

  /**
   * Marks a VM as leaving; live migration starts tracking dirty pages from here, a quick one
   * stops the VM at once. A Saved VM has no memory here: the caller reads its saved state.
   */
  beginMigrationOut(
    idOrName: string,
    generation: number,
    kind: pb.MigrationKind__Output,
  ): { vmId: string; memory: GuestMemory | undefined; config: VmConfig; state: VmState } {
    const vm = this.find(idOrName);
    this.fence(vm, generation, 'migrate');
    this.notMigrating(vm, 'migrate');
    this.leaseHeld(`migrate VM '${vm.config.name}'`);
    const state = vm.state;
    if (state !== 'VM_STATE_RUNNING' && state !== 'VM_STATE_PAUSED' && state !== 'VM_STATE_SAVED') {
      throw failedPrecondition(`cannot migrate VM '${vm.config.name}': it is ${stateName(vm.state)}`);
    }
    vm.migration = { kind, before: state };
    if (vm.memory) {
      vm.memory.clearDirty();
      if (kind !== 'MIGRATION_KIND_LIVE') this.freezeForMigration(vm.id);
    }
    return { vmId: vm.id, memory: vm.memory, config: structuredClone(vm.config), state };
  }

  /** Stops the virtual processors for the final copy; returns the device state to send. */
  freezeForMigration(vmId: string): Buffer {
    const vm = this.find(vmId);
    if (vm.state !== 'VM_STATE_SAVING') {
      vm.deadlineMs = undefined;
      vm.next = undefined;
      this.setState(vm, 'VM_STATE_SAVING', 'migrating: final copy');
    }
    return this.deviceStateOf(vm);
  }

  /** Whether a migration of this VM is still under way (a lease expiry or turn-off ends it). */
  isMigrating(vmId: string): boolean {
    return this.vms.get(vmId)?.migration !== undefined;
  }

  /** The target confirmed: the VM now lives there. */
  completeMigrationOut(vmId: string, targetHost: string): void {
    const vm = this.find(vmId);
    if (!vm.migration)
      throw failedPrecondition(`VM '${vm.config.name}' is no longer migrating: ${vm.message}`);
    vm.migration = undefined;
    this.remove(vm, `VM '${vm.config.name}' migrated to ${targetHost}`);
    this.effects.push({ kind: 'delete-vm-files', vmId: vm.id, config: vm.config });
  }

  /** The migration failed: the VM goes on where it was. */
  abortMigrationOut(vmId: string, reason: string): void {
    const vm = this.vms.get(vmId);
    if (!vm || !vm.migration) return;
    const before = vm.migration.before;
    vm.migration = undefined;
    if (vm.memory) this.setState(vm, before, `migration failed: ${reason}`);
  }

  /** Holds memory for an incoming VM while its pages arrive. */
  reserveImport(vmId: string, config: VmConfig, generation: number): void {
    this.leaseHeld(`import VM '${config.name}'`);
    validateConfig(config, this.options.limits);
    if (this.vms.has(vmId)) throw alreadyExists('VM', vmId);
    this.checkNameFree(config.name, vmId);
    this.checkMemoryFor(config.memoryBytes, `import VM '${config.name}'`);
    if (generation < 1)
      throw invalidArgument('header.generation', 'an imported VM needs a generation of 1 or more');
    this.reservedImports.set(vmId, config.memoryBytes + this.options.perVmOverheadBytes);
  }

  releaseImport(vmId: string): void {
    this.reservedImports.delete(vmId);
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
    this.releaseImport(vmId);
    if (this.vms.has(vmId)) throw alreadyExists('VM', vmId);
    this.checkNameFree(config.name, vmId);
    this.checkMemoryFor(config.memoryBytes, `import VM '${config.name}'`);
    this.assignMacs(config, 'header.config');
    const vm = this.newEntry(vmId, config, generation, this.nowMs);
    vm.memory = memory;
    vm.channels = device.channels.map((c) => ({ ...c }));
    vm.boots = device.boots;
    vm.startedAtMs = this.nowMs;
    this.vms.set(vmId, vm);
    const paused = targetState === 'VM_STATE_PAUSED';
    vm.heartbeat =
      config.integrationServices && !paused ? 'HEARTBEAT_STATUS_OK' : 'HEARTBEAT_STATUS_NO_CONTACT';
    vm.desiredState = paused ? 'VM_STATE_PAUSED' : 'VM_STATE_RUNNING';
    this.setState(vm, paused ? 'VM_STATE_PAUSED' : 'VM_STATE_RUNNING', 'migrated in');
    if (targetState === 'VM_STATE_SAVED') {
      vm.desiredState = 'VM_STATE_SAVED';
      this.beginSave(vm);
    }
    return this.view(vm);
  }

  // ---- checkpoints (the engine's side: the files are the caller's) --------------------------------

  /** Fencing and migration checks for an operation the caller carries out on the VM's files. */
  checkCommand(idOrName: string, generation: number, what: string): pb.Vm__Output {
    const vm = this.find(idOrName);
    this.fence(vm, generation, what);
    this.notMigrating(vm, what);
    return this.view(vm);
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
    const vm = this.find(idOrName);
    const ok: VmState[] = ['VM_STATE_OFF', 'VM_STATE_RUNNING', 'VM_STATE_PAUSED', 'VM_STATE_SAVED'];
    if (!ok.includes(vm.state)) {
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
      deviceState: vm.memory ? this.deviceStateOf(vm) : undefined,
    };
  }

  /** Points the VM's disks at new files (a checkpoint's differencing disks); any state. */
  setDiskPaths(idOrName: string, paths: readonly string[]): void {
    const vm = this.find(idOrName);
    if (paths.length !== vm.config.disks.length) throw new Error('one path per disk');
    vm.config.disks.forEach((d, i) => (d.path = paths[i]!));
    this.touch(vm);
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
    const vm = this.find(idOrName);
    if (vm.state !== 'VM_STATE_OFF' && vm.state !== 'VM_STATE_SAVED') {
      throw failedPrecondition(
        `cannot apply a checkpoint to VM '${vm.config.name}': it is ${stateName(vm.state)}`,
      );
    }
    this.releaseMacs(vm.config);
    for (const n of config.networkAdapters) if (n.macAddress) this.macs.claim(n.macAddress);
    vm.config = structuredClone(config);
    vm.savedHash = savedHash ?? '';
    vm.savedPages = savedHash ? savedPages : 0;
    vm.ioToken = ++this.ioTokens;
    vm.desiredState = savedHash ? 'VM_STATE_SAVED' : 'VM_STATE_OFF';
    this.setState(vm, savedHash ? 'VM_STATE_SAVED' : 'VM_STATE_OFF', `checkpoint '${label}' applied`);
    return this.view(vm);
  }

  // ---- persistence ------------------------------------------------------------------------------

  /** Records changed and ids deleted since the last call, for the caller to persist. */
  takeChanges(): { records: VmRecord[]; deleted: string[] } {
    const records = [...this.changed].flatMap((id) => {
      const vm = this.vms.get(id);
      return vm ? [this.recordOf(vm)] : [];
    });
    const deleted = [...this.deleted];
    this.changed.clear();
    this.deleted.clear();
    return { records, deleted };
  }

  private recordOf(vm: VmEntry): VmRecord {
    return {
      id: vm.id,
      config: vm.config,
      generation: vm.generation,
      state: vm.state,
      desiredState: vm.desiredState,
      createdAtMs: vm.createdAtMs,
      message: vm.message,
      savedHash: vm.savedHash,
      savedPages: vm.savedPages,
    };
  }

  /**
   * Loads a VM persisted by an earlier run. A VM that was Saved stays Saved (if its file is
   * there); anything that had a partition comes back Off, as after a host crash.
   */
  recover(record: VmRecord, savedStatePresent: boolean): void {
    const config = normalizeConfig(record.config);
    const vm = this.newEntry(record.id, config, record.generation, record.createdAtMs);
    vm.desiredState = record.desiredState;
    for (const n of config.networkAdapters) if (n.macAddress) this.macs.claim(n.macAddress);
    this.vms.set(vm.id, vm);
    if (record.state === 'VM_STATE_SAVED' && savedStatePresent) {
      vm.state = 'VM_STATE_SAVED';
      vm.savedHash = record.savedHash;
      vm.savedPages = record.savedPages ?? 0;
      vm.message = record.message;
      return;
    }
    if (record.state === 'VM_STATE_OFF') {
      vm.message = record.message;
      return;
    }
    const why =
      record.state === 'VM_STATE_SAVED'
        ? 'its saved state file is missing'
        : `the agent stopped while it was ${stateName(record.state)}, as after a host crash`;
    vm.state = 'VM_STATE_OFF';
    this.emit(vm, 'state_changed', `VM '${config.name}': ${stateName(record.state)} -> Off (${why})`);
    vm.message = `turned off: ${why}`;
  }

  takeEvents(): EngineEvent[] {
    const e = this.events;
    this.events = [];
    return e;
  }

  takeEffects(): Effect[] {
    const e = this.effects;
    this.effects = [];
    return e;
  }

  // ---- views ----------------------------------------------------------------------------------

  view(vm: VmEntry): pb.Vm__Output {
    return {
      id: vm.id,
      config: structuredClone(vm.config),
      desiredState: vm.desiredState,
      status: {
        state: vm.state,
        hostId: this.options.hostId,
        generation: vm.generation,
        heartbeat: vm.heartbeat,
        cpuPercent: Math.round((vm.cpuLp / vm.config.processor!.count) * 100 * 100) / 100,
        memoryAssignedBytes: MEMORY_ASSIGNED.has(vm.state) ? vm.config.memoryBytes : 0,
        uptimeMs:
          vm.state === 'VM_STATE_RUNNING' || vm.state === 'VM_STATE_RUNNING_CRITICAL'
            ? this.nowMs - vm.startedAtMs
            : 0,
        message: vm.message,
        updatedAtMs: vm.updatedAtMs,
      },
      createdAtMs: vm.createdAtMs,
      revision: vm.revision,
    };
  }
}
