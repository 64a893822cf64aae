import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { setTimeout as realSleep } from 'node:timers/promises';
import { join } from 'node:path';
import { invalidArgument, type Logger, type pb } from '@hyperfarm/api';
import type { StorageProvider, VhdDisk } from '@hyperfarm/vhd';
import { HypervisorEngine, type EngineOptions, type SnapshotFacts } from '../engine/engine.js';
import { normalizeConfig } from '../engine/validate.js';
import { hashString32 } from '../engine/rng.js';
import { vhdLibraryFactory, type DiskBackend, type DiskFactory } from './disk.js';
import { checkpointKey, currentKey } from './checkpoints.js';
import { ClusterStorage, type VmManifest } from './cluster-storage.js';
import { checkDiskFiles, createDiskFiles, prepareMigratedDisks } from './disk-files.js';
import { DiskPool } from './disk-pool.js';
import { EffectRunner } from './effect-runner.js';
import { RecordWriter } from './record-writer.js';
import { applyStopActions, DEFAULT_SHUTDOWN_TIMEOUT_MS } from './stop-actions.js';
import { VmStore } from './store.js';
import { VmFolders } from './vm-folders.js';
import { EarliestTimer, realNetworkTimers, type NetworkTimers } from '../network/edge/agent-network.js';

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
  /**
   * Folders outside the data folder that requests may name (absolute disk paths, export and
   * import folders): the cluster storage path and what the configuration allows. None by default.
   */
  allowedRoots?: readonly string[];
  /**
   * The farm's cluster storage (a folder every host reaches): VM folders live there, under
   * ownership records (cluster-storage.ts). None: VM folders stay in the data folder.
   */
  clusterStoragePath?: string;
}

export interface AgentHostOptions {
  settings: HostSettings;
  logger: Logger;
  /** Unix ms; the engine's clock. */
  clock?: () => number;
  /**
   * How often the real timer advances the engine while a guest runs (100 ms; 0: never, the
   * caller moves time). With no guest running it waits for the engine's next deadline.
   */
  tickMs?: number;
  /**
   * The timer background jobs wait on (a snapshot merge's retry on a full volume and its
   * throttle): real time by default. Tests pass one driven by their virtual clock, so a merge
   * moves only when the test moves time.
   */
  sleep?: (ms: number) => Promise<void>;
  /** The timer that pumps the engine (real by default; tests pass their virtual clock's). */
  timers?: Pick<NetworkTimers, 'set' | 'clear'>;
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

/** How often the engine is advanced while a guest runs (AgentHostOptions.tickMs). */
const TICK_MS = 100;
/**
 * The longest an idle host's engine waits between pumps: nothing should need one sooner than its
 * next deadline, but anything that changes the engine outside a pump is seen within this.
 */
const IDLE_PUMP_MS = 5_000;

/** Manifests written at once after a batch of record changes. */
const MANIFEST_WRITERS = 16;

/** What a migration tells the host's network (network/edge/agent-network.ts). */
export interface MigrationNetworkHooks {
  /** The VM is frozen for its last copy: its network state, to travel with it. */
  handOff(vmId: string): Buffer | undefined;
  /** A VM migrating in brought its network state; it is used when the VM is installed. */
  adopt(vmId: string, state: Buffer): void;
  /** The migration ended; on failure the VM gets its network state back here. */
  migrationEnded(vmId: string, succeeded: boolean): void;
}

/**
 * One host agent: its engine, and the I/O around it. A real timer advances the engine, and every
 * call from outside goes through `read()` or `mutate()`, which bring it to the current time first
 * and afterwards hand what it asked for to the effect runner, its record changes to the record
 * writer (group commit) and its events to the watchers.
 */
export class AgentHost {
  readonly engine: HypervisorEngine;
  readonly folders: VmFolders;
  readonly disks: DiskPool;
  readonly diskFactory: DiskFactory;
  /** The ownership records and manifests on cluster storage, when there is one. */
  readonly cluster: ClusterStorage | undefined;
  /**
   * Disks held closed while a migrated-out VM waits for the handover decision, by VM: the
   * decision releases them (abort: the guest's I/O goes on; commit: the VM is gone).
   */
  readonly frozenDisks = new Map<string, () => void>();
  private readonly manifests = new Map<string, string>();
  private readonly manifestWrites = new Map<string, Promise<void>>();
  private readonly clock: () => number;
  private readonly records: RecordWriter;
  private readonly effects: EffectRunner;
  private readonly stopHooks: (() => Promise<void>)[] = [];
  private readonly listeners = new Set<Listener>();
  /** The engine's next pump by the timer (`arm`). */
  private readonly timer: EarliestTimer;
  /** Whether the host's own timer advances the engine (not in tests that move time themselves). */
  private ticking = false;
  private closed = false;
  /**
   * The host's network, once the server has made it: migrations hand its state over, and lease
   * answers say which configuration it applied last (GrantLeaseResponse.network).
   */
  network: (MigrationNetworkHooks & { config(): { revision: number } }) | undefined;

  private constructor(
    private readonly opts: AgentHostOptions,
    readonly store: VmStore,
  ) {
    const s = opts.settings;
    this.clock = opts.clock ?? (() => Date.now());
    this.timer = new EarliestTimer(opts.timers ?? realNetworkTimers, this.clock, () => this.pump());
    this.cluster = s.clusterStoragePath
      ? new ClusterStorage(join(s.clusterStoragePath, 'vms'), s.id)
      : undefined;
    this.folders = new VmFolders(s.dataDir, s.allowedRoots ?? [], this.cluster?.vmsRoot);
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
    this.disks = new DiskPool(
      this.diskFactory,
      (vmId, index) => {
        const att = this.engine.vms.get(vmId).config!.disks[index];
        if (!att) throw new Error(`VM ${vmId} has no disk ${index}`);
        return this.folders.diskPath(vmId, att.path);
      },
      opts.wrapDisk,
      (vmId) => this.claimFiles(vmId, 'open the disks of'),
    );
    this.records = new RecordWriter(store, opts.logger);
    this.effects = new EffectRunner({
      engine: this.engine,
      folders: this.folders,
      disks: this.disks,
      logger: opts.logger,
      clock: this.clock,
      pump: () => this.pump(),
      persisted: () => this.persisted(),
      savedStateChanged: (vmId, saved) => this.publishManifest(vmId, saved),
    });
  }

  static async open(opts: AgentHostOptions): Promise<AgentHost> {
    await mkdir(join(opts.settings.dataDir, 'vms'), { recursive: true });
    const store = await VmStore.open(join(opts.settings.dataDir, 'state.db'));
    const host = new AgentHost(opts, store);
    if (host.cluster) store.afterWrite = (ids) => host.publishManifests(ids);
    for (const record of await store.loadAll()) {
      const savedState = existsSync(host.folders.savedStatePath(record.id));
      const turnedOff = host.engine.recover(record, savedState);
      if (turnedOff) opts.logger.warn({ vmId: record.id, name: record.config.name }, turnedOff.message);
    }
    host.ticking = (opts.tickMs ?? TICK_MS) > 0;
    host.pump();
    await host.persisted();
    return host;
  }

  get settings(): HostSettings {
    return this.opts.settings;
  }

  get logger(): Logger {
    return this.opts.logger;
  }

  get storageProvider(): StorageProvider | undefined {
    return this.opts.storageProvider;
  }

  now(): number {
    return this.clock();
  }

  /** Waits `ms` on the host's timer (real, or the tests' virtual clock). */
  sleep(ms: number): Promise<void> {
    return this.opts.sleep ? this.opts.sleep(ms) : realSleep(ms).then(() => undefined);
  }

  vmDir(vmId: string): string {
    return this.folders.vmDir(vmId);
  }

  savedStatePath(vmId: string): string {
    return this.folders.savedStatePath(vmId);
  }

  /** Brings the engine to now and answers from it. */
  read<T>(fn: (engine: HypervisorEngine) => T): T {
    this.pump();
    const result = fn(this.engine);
    // A reader that changed the engine left its output for the timer: the next pump, at once.
    if (this.engine.hasOutput()) this.armAt(this.clock());
    return result;
  }

  /**
   * Brings the engine to now and changes it, without waiting for the change to reach disk (the
   * next group commit writes it): for the steps inside a live migration's downtime, where waiting
   * for a disk sync would keep the guest stopped that much longer. Only for changes whose record
   * a crash may lose: after a restart every VM is Off or Saved anyway.
   */
  change<T>(fn: (engine: HypervisorEngine) => T): T {
    this.pump();
    const result = fn(this.engine);
    this.pump();
    return result;
  }

  /** Brings the engine to now, changes it, and returns once the change is on disk. */
  async mutate<T>(fn: (engine: HypervisorEngine) => T): Promise<T> {
    this.pump();
    const result = fn(this.engine);
    this.pump();
    await this.persisted();
    return result;
  }

  /**
   * Grants or renews the host lease (GrantLease). The lease lives in memory only, so its answer
   * does not wait for the record writer: behind a batch of hundreds of VM records (a failover's
   * creates) it waited seconds, the daemon's next grants shrank to what was left of the last
   * answered one, and a busy but healthy host fenced itself.
   */
  renewLease(daemonId: string, term: number, durationMs: number): { expiresAtMs: number; accepted: boolean } {
    this.pump();
    const result = this.engine.lease.grant(daemonId, term, durationMs);
    this.pump();
    return result;
  }

  /** Resolves once every change made so far is synced to LevelDB. */
  persisted(): Promise<void> {
    return this.records.persisted();
  }

  onEvent(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Advances the engine to the clock and carries out its effects, events and record changes. */
  pump(): void {
    if (this.closed) return;
    this.engine.advance(this.clock());
    for (const effect of this.engine.takeEffects()) this.effects.run(effect);
    const { records, deleted } = this.engine.takeChanges();
    this.records.enqueue(records, deleted);
    const events = this.engine.takeEvents();
    if (events.length > 0 && this.listeners.size > 0) {
      for (const e of events) {
        const vm = e.vmId && this.engine.vms.has(e.vmId) ? this.engine.vms.get(e.vmId) : null;
        const event: pb.AgentEvent = { ...e, vm };
        for (const l of this.listeners) l(event);
      }
    }
    this.arm();
  }

  /**
   * The engine's next pump by the timer: every tick while a guest runs (it works at every step),
   * else at the engine's next deadline (a transition's end, a heartbeat given up, the lease's
   * expiry), and at least every IDLE_PUMP_MS. An idle host (no VM, or only VMs that are Off or
   * Saved) was pumped every 100 ms for nothing: 2,500 pumps a second in a 250-host process.
   */
  private arm(): void {
    if (!this.ticking) return;
    const now = this.clock();
    const tickMs = this.opts.tickMs ?? TICK_MS;
    // Armed within a tick: whatever is due after it is looked at by that pump.
    if (this.timer.at <= now + tickMs) return;
    if (this.engine.guestsRun()) return this.armAt(now + tickMs);
    this.armAt(Math.min(this.engine.nextDeadline() ?? Infinity, now + IDLE_PUMP_MS));
  }

  private armAt(at: number): void {
    if (this.ticking) this.timer.armAt(at);
  }

  /** Holds a VM's guest I/O and closes its files (see DiskPool.hold); returns the release. */
  quiesceDisks(vmId: string): Promise<() => void> {
    return this.disks.hold(vmId);
  }

  /** The open VhdDisk of a VM's disk (see DiskPool.vhd). */
  openVhd(vmId: string, index: number): Promise<VhdDisk | undefined> {
    return this.disks.vhd(vmId, index);
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

  /**
   * On cluster storage: whether this host may use the VM's files at the generation it holds
   * (FAILED_PRECONDITION if another host owns them under a newer one), taking them if the record
   * is older. Without cluster storage every file is this host's own.
   */
  async claimFiles(vmId: string, what: string): Promise<void> {
    if (!this.cluster || !this.engine.vms.has(vmId)) return;
    await this.cluster.claim(vmId, this.engine.vms.get(vmId).status!.generation, what);
  }

  /**
   * The manifest of each VM on cluster storage whose record changed, if it changed. The VMs go
   * several at a time (each write is ordered per VM anyway): one at a time, a batch of 200
   * creates or starts (a failover) held every call of the batch for 200 rounds of file I/O.
   */
  private async publishManifests(ids: Set<string>): Promise<void> {
    const queue = [...ids];
    const worker = async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) await this.publishManifest(id);
    };
    await Promise.all(Array.from({ length: Math.min(MANIFEST_WRITERS, queue.length) }, worker));
  }

  /**
   * Writes a VM's manifest on cluster storage if it changed. `saved` overrides what the engine
   * says of its saved state: a save records it here before the VM is reported Saved, so a host
   * that adopts the VM never finds it Saved without its saved state in the manifest.
   */
  publishManifest(id: string, saved?: VmManifest['saved']): Promise<void> {
    if (!this.cluster) return Promise.resolve();
    // One write at a time per VM, in order: the last one written is the newest.
    const prev = this.manifestWrites.get(id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(() => this.writeManifest(id, saved));
    this.manifestWrites.set(id, next);
    void next
      .finally(() => {
        if (this.manifestWrites.get(id) === next) this.manifestWrites.delete(id);
      })
      .catch(() => undefined);
    return next;
  }

  private async writeManifest(id: string, saved: VmManifest['saved'] | undefined): Promise<void> {
    if (!this.cluster) return;
    if (!this.engine.vms.has(id)) {
      this.manifests.delete(id);
      return;
    }
    const vm = this.engine.vms.get(id);
    const hash = vm.status!.state === 'VM_STATE_SAVED' ? this.engine.vms.stateHash(id) : undefined;
    const manifest: VmManifest = {
      format: 1,
      vmId: id,
      generation: vm.status!.generation,
      hostId: this.settings.id,
      config: vm.config!,
      createdAtMs: vm.createdAtMs,
      saved: saved !== undefined ? saved : hash ? { sha256: hash.sha256, pages: hash.residentPages } : null,
      checkpoints: await this.store.list(checkpointKey(id, '')),
      currentId: (await this.store.get<{ id: string }>(currentKey(id)))?.id ?? '',
    };
    const text = JSON.stringify(manifest);
    if (this.manifests.get(id) === text) return;
    if (await this.cluster.writeManifest(manifest)) this.manifests.set(id, text);
  }

  /** Disks of a VM that arrived by migration (see prepareMigratedDisks). */
  async prepareMigratedDisks(vmId: string): Promise<void> {
    const config = this.engine.vms.get(vmId).config!;
    await prepareMigratedDisks(this.folders, this.diskFactory, vmId, config, this.logger);
  }

  async createVm(
    vmId: string,
    input: pb.VmConfig__Output | pb.VmConfig,
    generation: number,
  ): Promise<pb.Vm__Output> {
    checkDiskFiles(this.folders, vmId, normalizeConfig(input));
    const existed = this.engine.vms.has(vmId);
    const vm = await this.mutate((e) => e.vms.create(vmId, input, generation));
    if (!existed) {
      try {
        await createDiskFiles(this.folders, this.diskFactory, vmId, vm.config!);
      } catch (err) {
        await this.mutate((e) => e.vms.delete(vmId));
        throw invalidArgument('config.disks', `could not create the VM's disks: ${(err as Error).message}`);
      }
    }
    return vm;
  }

  /**
   * Applies an update: checked first (the engine plans it), then the disk files it needs made,
   * then committed, so a refused update changes no file and no record.
   */
  async updateVm(
    vmId: string,
    input: pb.VmConfig__Output,
    paths: readonly string[],
    generation: number,
    facts: SnapshotFacts,
  ): Promise<pb.Vm__Output> {
    const plan = this.read((e) => e.vms.planUpdate(vmId, input, paths, generation, facts));
    if (plan.touched.includes('disks')) {
      checkDiskFiles(this.folders, plan.vmId, plan.config);
      await this.disks.close(plan.vmId);
      await createDiskFiles(this.folders, this.diskFactory, plan.vmId, plan.config);
    }
    return this.mutate((e) => e.vms.update(vmId, input, paths, generation, facts));
  }

  /** Waits for every save, restore and write in flight. */
  async settle(): Promise<void> {
    await this.effects.settle();
    this.pump();
    await this.persisted();
  }

  /**
   * A clean shutdown: each VM with a partition gets its automatic stop action (Save, Shut down
   * through the guest's shutdown service with a bounded wait, or Turn off: stop-actions.ts),
   * then saves finish and files close.
   */
  async stop(): Promise<void> {
    this.ticking = false;
    this.timer.clear();
    for (const hook of this.stopHooks) await hook();
    await applyStopActions(this, {
      timeoutMs: this.opts.settings.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS,
    });
    this.pump();
    await this.settle();
    this.closed = true;
    await this.disks.closeAll();
    await this.store.close();
  }
}
