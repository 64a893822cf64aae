import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { invalidArgument, type Logger, type pb } from '@hyperfarm/api';
import { VhdDisk, type StorageProvider } from '@hyperfarm/vhd';
import { HypervisorEngine, type Effect, type EngineOptions, type VmRecord } from '../engine/engine.js';
import { normalizeConfig, type VmConfig } from '../engine/validate.js';
import { hashString32 } from '../engine/rng.js';
import { storageFailureKind, vhdLibraryFactory, type DiskBackend, type DiskFactory } from './disk.js';
import { readSavedState, writeSavedState } from './saved-state.js';
import { applyStopActions, DEFAULT_SHUTDOWN_TIMEOUT_MS } from './stop-actions.js';
import { VmStore } from './store.js';

export interface HostSettings {
  id: string;
  dataDir: string;
  logicalProcessors: number;
  memoryBytes: number;
  rootReserveBytes: number;
  perVmOverheadBytes: number;
  limits: pb.LimitsProfile__Output;
  macPoolStart: string;
  macPoolSize: number;
  leaseMs: number;
  /** A pause between two blocks of a background snapshot merge, leaving I/O to guests (0: none). */
  mergeThrottleMs?: number;
  /**
   * At a clean shutdown, how long guests whose automatic stop action is Shut down get to stop
   * before they are turned off (DEFAULT_SHUTDOWN_TIMEOUT_MS when not given).
   */
  shutdownTimeoutMs?: number;
}

export interface AgentHostOptions {
  settings: HostSettings;
  logger: Logger;
  /** Unix ms; the engine's clock. */
  clock?: () => number;
  /** How often the real timer advances the engine. */
  tickMs?: number;
  seed?: number;
  diskFactory?: DiskFactory;
  /** Wraps each disk as it is opened: how tests inject a failing backend. */
  wrapDisk?: (vmId: string, index: number, disk: DiskBackend) => DiskBackend;
  engineOverrides?: Partial<EngineOptions>;
  /**
   * Where VHD files are read and written (the real file system by default): how tests inject a
   * volume that runs out of space under disks and snapshot merges.
   */
  storageProvider?: StorageProvider;
}

type Listener = (event: pb.AgentEvent) => void;

const kindOf = (t: pb.DiskType__Output): 'fixed' | 'dynamic' =>
  t === 'DISK_TYPE_DYNAMIC' ? 'dynamic' : 'fixed';

/**
 * One host agent's engine with its I/O around it: the timer that advances the engine, LevelDB
 * for VM records, the VM folders with their disks and saved states, and event fan-out. Every
 * call from outside goes through `read()` or `mutate()`, which bring the engine to the current
 * time first and carry out whatever it asked for afterwards.
 */
export class AgentHost {
  readonly engine: HypervisorEngine;
  private readonly clock: () => number;
  private readonly disks = new Map<string, Map<number, DiskBackend>>();
  /** The VhdDisk under each open disk (before any test wrapper), for live snapshot merges. */
  private readonly rawDisks = new Map<string, Map<number, VhdDisk>>();
  private readonly stopHooks: (() => Promise<void>)[] = [];
  private readonly opening = new Map<string, Promise<DiskBackend>>();
  private readonly busyIo = new Set<string>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly listeners = new Set<Listener>();
  // Group commit: changes wait in `pending`; one LevelDB batch at a time takes all of them.
  private readonly pending = { records: new Map<string, VmRecord>(), deleted: new Set<string>() };
  private enqueued = 0;
  private written = 0;
  private writer: Promise<void> | undefined;
  private waiters: { seq: number; resolve: () => void }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly diskFactory: DiskFactory;
  private closed = false;

  /** VMs whose guest I/O is held back while their disk files change (a checkpoint). */
  private readonly ioPaused = new Set<string>();

  private constructor(
    private readonly opts: AgentHostOptions,
    readonly store: VmStore,
  ) {
    const s = opts.settings;
    this.clock = opts.clock ?? (() => Date.now());
    this.diskFactory = opts.diskFactory ?? vhdLibraryFactory(this.clock, opts.storageProvider);
    this.engine = new HypervisorEngine({
      hostId: s.id,
      logicalProcessors: s.logicalProcessors,
      memoryBytes: s.memoryBytes,
      rootReserveBytes: s.rootReserveBytes,
      perVmOverheadBytes: s.perVmOverheadBytes,
      limits: s.limits,
      macPoolStart: s.macPoolStart,
      macPoolSize: s.macPoolSize,
      leaseMs: s.leaseMs,
      startMs: this.clock(),
      seed: opts.seed ?? hashString32(s.id),
      ...opts.engineOverrides,
    });
  }

  static async open(opts: AgentHostOptions): Promise<AgentHost> {
    await mkdir(join(opts.settings.dataDir, 'vms'), { recursive: true });
    const store = await VmStore.open(join(opts.settings.dataDir, 'state.db'));
    const host = new AgentHost(opts, store);
    for (const record of await store.loadAll()) {
      host.engine.recover(record, existsSync(host.savedStatePath(record.id)));
    }
    const recovered = host.engine.listVms().filter((v) => /turned off:/.test(v.status!.message));
    for (const vm of recovered) opts.logger.warn({ vmId: vm.id, name: vm.config!.name }, vm.status!.message);
    host.pump();
    await host.persisted();
    const tickMs = opts.tickMs ?? 100;
    if (tickMs > 0) {
      host.timer = setInterval(() => host.pump(), tickMs);
      host.timer.unref();
    }
    return host;
  }

  get settings(): HostSettings {
    return this.opts.settings;
  }

  get logger(): Logger {
    return this.opts.logger;
  }

  now(): number {
    return this.clock();
  }

  vmDir(vmId: string): string {
    return join(this.opts.settings.dataDir, 'vms', vmId);
  }

  savedStatePath(vmId: string): string {
    return join(this.vmDir(vmId), 'saved.state');
  }

  diskPath(vmId: string, path: string): string {
    return isAbsolute(path) ? path : join(this.vmDir(vmId), path);
  }

  /** Brings the engine to now and answers from it. */
  read<T>(fn: (engine: HypervisorEngine) => T): T {
    this.pump();
    return fn(this.engine);
  }

  /** Brings the engine to now, changes it, and returns once the change is on disk. */
  async mutate<T>(fn: (engine: HypervisorEngine) => T): Promise<T> {
    this.pump();
    const result = fn(this.engine);
    this.pump();
    await this.persisted();
    return result;
  }

  /** Resolves once every change made so far is synced to LevelDB. */
  persisted(): Promise<void> {
    const seq = this.enqueued;
    if (this.written >= seq) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }

  private enqueue(records: readonly VmRecord[], deleted: readonly string[]): void {
    for (const r of records) {
      this.pending.records.set(r.id, r);
      this.pending.deleted.delete(r.id);
    }
    for (const id of deleted) {
      this.pending.records.delete(id);
      this.pending.deleted.add(id);
    }
    this.enqueued++;
    this.writer ??= this.writeLoop();
  }

  private async writeLoop(): Promise<void> {
    while (this.pending.records.size > 0 || this.pending.deleted.size > 0) {
      const target = this.enqueued;
      const records = [...this.pending.records.values()];
      const deleted = [...this.pending.deleted];
      this.pending.records.clear();
      this.pending.deleted.clear();
      try {
        await this.store.write(records, deleted);
      } catch (err) {
        this.opts.logger.error({ err }, 'could not persist VM records');
      }
      this.written = target;
      this.waiters = this.waiters.filter((w) => {
        if (w.seq > target) return true;
        w.resolve();
        return false;
      });
    }
    this.writer = undefined;
  }

  onEvent(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Advances the engine to the clock and carries out its effects, events and record changes. */
  pump(): void {
    if (this.closed) return;
    this.engine.advance(this.clock());
    for (const effect of this.engine.takeEffects()) this.perform(effect);
    const { records, deleted } = this.engine.takeChanges();
    if (records.length > 0 || deleted.length > 0) this.enqueue(records, deleted);
    const events = this.engine.takeEvents();
    if (events.length > 0 && this.listeners.size > 0) {
      for (const e of events) {
        const vm = e.vmId && this.engine.hasVm(e.vmId) ? this.engine.getVm(e.vmId) : null;
        const event: pb.AgentEvent = { ...e, vm };
        for (const l of this.listeners) l(event);
      }
    }
  }

  private track<T>(p: Promise<T>): void {
    const tracked = p.finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }

  private perform(effect: Effect): void {
    const log = this.opts.logger;
    switch (effect.kind) {
      case 'save': {
        const started = this.clock();
        this.track(
          this.flushDisks(effect.vmId)
            .then(() => mkdir(this.vmDir(effect.vmId), { recursive: true }))
            .then(() => writeSavedState(this.savedStatePath(effect.vmId), effect.memory, effect.deviceState))
            .then(
              (r) => {
                log.info(
                  { vmId: effect.vmId, bytes: r.bytes, pages: r.pages, ms: this.clock() - started },
                  'saved',
                );
                this.engine.completeSave(effect.vmId, effect.token, r.sha256);
                this.pump();
              },
              (err: unknown) => {
                log.error({ err, vmId: effect.vmId }, 'save failed');
                this.engine.failSave(effect.vmId, effect.token, (err as Error).message);
                this.pump();
              },
            ),
        );
        break;
      }
      case 'restore': {
        const path = this.savedStatePath(effect.vmId);
        this.track(
          readSavedState(path, effect.vmId).then(
            async (r) => {
              this.engine.completeRestore(effect.vmId, effect.token, r.memory, r.device);
              this.pump();
              await this.persisted();
              // Hyper-V discards the saved state once the VM runs from it.
              await rm(path, { force: true });
            },
            (err: unknown) => {
              log.error({ err, vmId: effect.vmId }, 'restore failed');
              this.engine.failRestore(effect.vmId, effect.token, (err as Error).message);
              this.pump();
            },
          ),
        );
        break;
      }
      case 'delete-saved-state':
        this.track(rm(this.savedStatePath(effect.vmId), { force: true }));
        break;
      case 'delete-vm-files':
        this.track(
          this.closeDisks(effect.vmId).then(() =>
            rm(this.vmDir(effect.vmId), { recursive: true, force: true }),
          ),
        );
        break;
      case 'disk-writes':
        this.diskWrites(effect);
        break;
    }
  }

  /** Guest writes through the storage VSP into the VM's disk files. One batch per VM at a time. */
  private diskWrites(effect: Extract<Effect, { kind: 'disk-writes' }>): void {
    // The model accounts them either way; the files see the next batch.
    if (this.busyIo.has(effect.vmId) || this.ioPaused.has(effect.vmId)) return;
    this.busyIo.add(effect.vmId);
    const run = async () => {
      try {
        for (const w of effect.writes) {
          const disk = await this.disk(effect.vmId, w.disk);
          const blocks = Math.max(1, Math.floor(disk.sizeBytes / effect.writeBytes));
          const offset = (w.seed % blocks) * effect.writeBytes;
          await disk.write(offset, Buffer.alloc(Math.min(effect.writeBytes, disk.sizeBytes), w.seed & 0xff));
        }
        this.engine.reportStorage(effect.vmId, 'ok');
      } catch (err) {
        this.engine.reportStorage(effect.vmId, storageFailureKind(err), (err as Error).message);
      } finally {
        this.busyIo.delete(effect.vmId);
        this.pump();
      }
    };
    this.track(run());
  }

  private disk(vmId: string, index: number): Promise<DiskBackend> {
    // Callers at the same time share one open: two instances of one file would not see each
    // other's metadata, and the second would leak.
    const key = `${vmId}\u0000${index}`;
    const cached = this.disks.get(vmId)?.get(index);
    if (cached) return Promise.resolve(cached);
    let pending = this.opening.get(key);
    if (!pending) {
      pending = this.openDisk(vmId, index).finally(() => this.opening.delete(key));
      this.opening.set(key, pending);
    }
    return pending;
  }

  private async openDisk(vmId: string, index: number): Promise<DiskBackend> {
    const config = this.engine.getVm(vmId).config!;
    const att = config.disks[index];
    if (!att) throw new Error(`VM ${vmId} has no disk ${index}`);
    let disk = await this.diskFactory.open(this.diskPath(vmId, att.path));
    if (disk instanceof VhdDisk) {
      let raw = this.rawDisks.get(vmId);
      if (!raw) this.rawDisks.set(vmId, (raw = new Map()));
      raw.set(index, disk);
    }
    if (this.opts.wrapDisk) disk = this.opts.wrapDisk(vmId, index, disk);
    let open = this.disks.get(vmId);
    if (!open) this.disks.set(vmId, (open = new Map()));
    open.set(index, disk);
    return disk;
  }

  /**
   * Holds a VM's guest writes back and closes its disk files, so they can be swapped (a
   * checkpoint's differencing disks). Returns the function that lets I/O go on.
   */
  async quiesceDisks(vmId: string): Promise<() => void> {
    this.ioPaused.add(vmId);
    while (this.busyIo.has(vmId)) await Promise.allSettled([...this.inflight]);
    await this.closeDisks(vmId);
    return () => {
      this.ioPaused.delete(vmId);
    };
  }

  /**
   * The open VhdDisk of a VM's disk, opening it as the guest's I/O would: a snapshot merge of a
   * running VM works through this instance, so guest reads and writes go on during it.
   */
  async openVhd(vmId: string, index: number): Promise<VhdDisk | undefined> {
    await this.disk(vmId, index);
    return this.rawDisks.get(vmId)?.get(index);
  }

  get storageProvider(): StorageProvider | undefined {
    return this.opts.storageProvider;
  }

  /** Runs before the VMs get their stop actions at a clean shutdown (background merges pause). */
  beforeStop(hook: () => Promise<void>): void {
    this.stopHooks.push(hook);
  }

  /** Sends an event that does not come from the engine (snapshot merges) to every watcher. */
  publish(event: Omit<pb.AgentEvent, 'sequence' | 'timeMs'>): void {
    const full: pb.AgentEvent = { ...event, sequence: this.engine.nextEventSequence(), timeMs: this.clock() };
    for (const l of this.listeners) l(full);
  }

  get disksFactory(): DiskFactory {
    return this.diskFactory;
  }

  /** Makes the guest's writes durable (a save must not outlive the data it describes). */
  private async flushDisks(vmId: string): Promise<void> {
    const open = this.disks.get(vmId);
    if (open) await Promise.all([...open.values()].map((d) => d.flush()));
  }

  private async closeDisks(vmId: string): Promise<void> {
    const open = this.disks.get(vmId);
    this.disks.delete(vmId);
    this.rawDisks.delete(vmId);
    if (open) await Promise.allSettled([...open.values()].map((d) => d.close()));
  }

  /** Disk files a configuration needs: each must exist, or say how big to create it. */
  private checkDiskFiles(vmId: string, config: VmConfig): void {
    config.disks.forEach((d, i) => {
      if (d.createSizeBytes === 0 && !existsSync(this.diskPath(vmId, d.path))) {
        throw invalidArgument(
          `config.disks[${i}].path`,
          `${d.path} does not exist and create_size_bytes is 0`,
        );
      }
    });
  }

  private async createDiskFiles(vmId: string, config: VmConfig): Promise<void> {
    await mkdir(this.vmDir(vmId), { recursive: true });
    for (const d of config.disks) {
      const path = this.diskPath(vmId, d.path);
      if (existsSync(path)) {
        await (await this.diskFactory.open(path)).close();
      } else {
        await (await this.diskFactory.create(path, d.createSizeBytes, kindOf(d.createType))).close();
      }
    }
  }

  /**
   * Disks of a VM that arrived by migration. Disk contents do not travel with a migration (Hyper-V
   * relies on shared storage for that): absolute paths are expected to be shared; a missing
   * relative disk is created empty at its size, or left missing (the VM's first write then makes
   * it RunningCritical, which says so).
   */
  async prepareMigratedDisks(vmId: string): Promise<void> {
    const config = this.engine.getVm(vmId).config!;
    await mkdir(this.vmDir(vmId), { recursive: true });
    for (const d of config.disks) {
      const path = this.diskPath(vmId, d.path);
      if (existsSync(path)) continue;
      if (d.createSizeBytes > 0)
        await (await this.diskFactory.create(path, d.createSizeBytes, kindOf(d.createType))).close();
      else this.opts.logger.warn({ vmId, path }, 'migrated VM refers to a disk this host does not have');
    }
  }

  async createVm(
    vmId: string,
    input: pb.VmConfig__Output | pb.VmConfig,
    generation: number,
  ): Promise<pb.Vm__Output> {
    this.checkDiskFiles(vmId, normalizeConfig(input));
    const existed = this.engine.hasVm(vmId);
    const vm = await this.mutate((e) => e.createVm(vmId, input, generation));
    if (!existed) {
      try {
        await this.createDiskFiles(vmId, vm.config!);
      } catch (err) {
        await this.mutate((e) => e.deleteVm(vmId));
        throw invalidArgument('config.disks', `could not create the VM's disks: ${(err as Error).message}`);
      }
    }
    return vm;
  }

  async updateVm(
    vmId: string,
    input: pb.VmConfig__Output,
    paths: string[],
    generation: number,
  ): Promise<pb.Vm__Output> {
    const vm = await this.mutate((e) => e.updateVm(vmId, input, paths, generation));
    if (paths.length === 0 || paths.some((p) => p.startsWith('disks'))) {
      this.checkDiskFiles(vm.id, vm.config!);
      await this.closeDisks(vm.id);
      await this.createDiskFiles(vm.id, vm.config!);
    }
    return vm;
  }

  /** Waits for every save, restore and write in flight. */
  async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    this.pump();
    await this.persisted();
  }

  /**
   * A clean shutdown: each VM with a partition gets its automatic stop action (Save, Shut down
   * through the guest's shutdown service with a bounded wait, or Turn off: stop-actions.ts),
   * then saves finish and files close.
   */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const hook of this.stopHooks) await hook();
    await applyStopActions(this, {
      timeoutMs: this.opts.settings.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS,
    });
    this.pump();
    await this.settle();
    this.closed = true;
    for (const id of [...this.disks.keys()]) await this.closeDisks(id);
    await this.store.close();
  }
}
