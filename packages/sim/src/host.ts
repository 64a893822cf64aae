import {
  failedPrecondition,
  invalidArgument,
  notFound,
  MEMORY_ASSIGNED,
  type pb,
  type VmStateName,
} from '@hyperfarm/api';
import {
  decodeDeviceState,
  guestOsList,
  HypervisorEngine,
  LIMITS_PROFILES,
  type Effect,
  type VmRecord,
} from '@hyperfarm/agent';
import type { Scope } from './clock.js';
import { SimCheckpoints, type ClusterCheckpoints } from './checkpoints.js';
import { SimMigrations, type MigrationLinks } from './migration.js';
import { startHostNetwork, type SimAgentNetwork } from './sim-network.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

export interface HostShape {
  logicalProcessors: number;
  memoryBytes: number;
  rootReserveBytes: number;
  perVmOverheadBytes: number;
}

export const DEFAULT_SHAPE: HostShape = {
  logicalProcessors: 16,
  memoryBytes: 64 * GIB,
  rootReserveBytes: 2 * GIB,
  perVmOverheadBytes: 32 * MIB,
};

export interface HostTimings {
  /** Lease the agent holds when a grant does not say. */
  leaseMs: number;
  saveMs: number;
  restoreMs: number;
  /** Longest step of the engine's guest model (its default when absent). */
  engineStepMs?: number;
  /** Disk writes each VM issues per step at most, the rest counted only (the engine's default when absent). */
  engineWritesPerStep?: number;
  /** The engine's guest model runs lazily (EngineOptions.lazyGuests). */
  lazyGuests?: boolean;
}

type Listener = (e: pb.AgentEvent__Output) => void;

/**
 * One host: the real hypervisor engine, with what the agent's edge does around it done in
 * memory: records (the agent's LevelDB) and saved-state files survive a crash, effects complete
 * after simulated I/O time, events go to watchers. The calls are AgentService's, with its
 * semantics (fencing by generation, idempotent repeats), answered by the engine itself.
 */
export class SimHost {
  engine: HypervisorEngine | undefined;
  scope: Scope | undefined;
  /** What the agent's store holds: survives a crash. */
  readonly records = new Map<string, VmRecord>();
  /** Saved-state files, by VM: on the farm's cluster storage once the farm gives one (useClusterStorage). */
  savedStates = new Map<string, { memory: Extract<Effect, { kind: 'save' }>['memory']; device: Buffer }>();
  private readonly listeners = new Set<Listener>();
  /** Watch streams to close when the process dies. */
  private readonly streams = new Set<() => void>();
  /** Each VM's state as the engine last said, for the invariants (kept from its events). */
  readonly states = new Map<string, VmStateName>();
  diskFull = false;
  boots = 0;
  /** Told of each VM whose state may have changed (the invariants watch starts). */
  onStates: ((vmId: string) => void) | undefined;
  /** Told of each VM whose state here, or whose frozen mark, may have changed: the incremental checks. */
  onTouched: ((host: SimHost, vmId: string) => void) | undefined;

  /** Every VM here may have changed (a boot, a crash). */
  private touchAll(): void {
    if (this.onTouched) for (const id of this.states.keys()) this.onTouched(this, id);
  }
  private saves = 0;
  /** The migrations of this incarnation (lost with it), once `links` are set. */
  migrations: SimMigrations | undefined;
  links: MigrationLinks | undefined;
  /** The farm's cluster storage for snapshots (set by the farm), and the snapshot calls on it. */
  private cluster: ClusterCheckpoints | undefined;
  checkpoints: SimCheckpoints | undefined;
  /** VMs frozen here for a handover when the host crashed: those copies could not have run on. */
  frozenAtCrash = new Set<string>();
  /**
   * The host's network (switches, NLB members, traffic), once the farm gives hosts one: the
   * agent's AgentNetwork on this incarnation's timers. It dies with the process.
   */
  network: SimAgentNetwork | undefined;
  private networkCall: ((method: string, req: unknown) => Promise<unknown>) | undefined;

  constructor(
    readonly id: string,
    readonly address: string,
    readonly shape: HostShape,
    private readonly timings: HostTimings,
    private readonly seed: number,
  ) {}

  useClusterStorage(store: ClusterCheckpoints): void {
    this.cluster = store;
    this.savedStates = store.savedStates;
    this.checkpoints = new SimCheckpoints(this, store);
  }

  get alive(): boolean {
    return this.engine !== undefined;
  }

  boot(scope: Scope): void {
    this.boots++;
    this.scope = scope;
    const e = new HypervisorEngine({
      hostId: this.id,
      ...this.shape,
      limits: LIMITS_PROFILES['2008'],
      macPoolStart: '00-15-5D-00-00-00',
      macPoolSize: 4096,
      leaseMs: this.timings.leaseMs,
      startMs: scope.now(),
      seed: this.seed * 7919 + this.boots,
      maxStepMs: this.timings.engineStepMs,
      ...(this.timings.engineWritesPerStep ? { maxDiskWritesPerStep: this.timings.engineWritesPerStep } : {}),
      ...(this.timings.lazyGuests ? { lazyGuests: true } : {}),
    });
    // Anything that had a partition comes back Off, as after a host crash.
    for (const r of [...this.records.values()].sort((a, b) => a.id.localeCompare(b.id)))
      e.recover(r, this.savedStates.has(r.id));
    this.engine = e;
    this.migrations = this.links ? new SimMigrations(this, scope, this.links) : undefined;
    for (const vm of e.vms.list()) this.states.set(vm.id, vm.status!.state);
    this.touchAll();
    this.pump();
    if (this.links?.networks) {
      const networks = this.links.networks;
      const { network, call } = startHostNetwork({
        hostId: this.id,
        scope,
        net: this.links.net,
        read: (fn) => this.mutate(fn),
        onEvent: (l) => {
          this.listeners.add(l);
          return () => this.listeners.delete(l);
        },
        peerNetwork: (id) => networks(id),
      });
      this.network = network;
      this.networkCall = call;
    }
  }

  /** A NetworkService call (the daemon's pusher, the network API), answered by the agent's handlers. */
  networkRequest(method: string, req: unknown): Promise<unknown> {
    if (!this.networkCall)
      return Promise.reject(failedPrecondition(`simulated host ${this.id} has no network`));
    return this.networkCall(method, req);
  }

  /** The lease this host holds ran out by `now`: the engine turns every VM off at that instant. */
  leaseExpired(now: number): boolean {
    const lease = this.engine?.lease.state();
    return lease !== undefined && (lease.expired || lease.expiresAtMs <= now);
  }

  /** When the lease it holds runs out (undefined: it holds none). */
  leaseUntil(): number | undefined {
    const lease = this.engine?.lease.state();
    return lease && !lease.expired ? lease.expiresAtMs : undefined;
  }

  /** Memory the VMs with a partition use, with their overhead. */
  memoryInUse(): number {
    let used = 0;
    for (const [id, state] of this.states) {
      if (!MEMORY_ASSIGNED.has(state)) continue;
      const r = this.records.get(id);
      if (r) used += r.config.memoryBytes + this.shape.perVmOverheadBytes;
    }
    return used;
  }

  /** When the lease it held as it crashed would have run out (0: it held none, or it runs). */
  leaseAtCrash = 0;

  /** Power lost: the VMs die with the host; its records and files stay. */
  crash(): void {
    this.leaseAtCrash = this.leaseUntil() ?? 0;
    this.frozenAtCrash = new Set(this.migrations?.frozen);
    this.migrations = undefined;
    void this.network?.stop();
    this.network = undefined;
    this.networkCall = undefined;
    this.scope?.kill();
    this.scope = undefined;
    this.engine = undefined;
    this.touchAll();
    this.states.clear();
    this.listeners.clear();
    const streams = [...this.streams];
    this.streams.clear();
    for (const close of streams) close();
  }

  private get e(): HypervisorEngine {
    if (!this.engine) throw new Error(`host ${this.id} is down`);
    return this.engine;
  }

  /** Brings the engine to now and carries out what it asked for. */
  pump(): void {
    const e = this.engine;
    if (!e || !this.scope) return;
    e.advance(this.scope.now());
    // A lazy engine's guests issue their writes when worked out: while the disk is full they
    // are, at every pump, so they meet it as a stepping engine's guests do at every step.
    if (this.diskFull) e.settleGuests();
    // Every call pumps before and after (mutate), and most leave nothing to carry out: the lease
    // grants alone are 66 calls a second at 1,000 hosts.
    else if (!e.hasOutput()) return;
    for (const effect of e.takeEffects()) this.run(effect);
    const { records, deleted } = e.takeChanges();
    for (const r of records) {
      this.records.set(r.id, r);
      this.cluster?.wrote(this.id, r);
    }
    for (const id of deleted) this.records.delete(id);
    const events = e.takeEvents();
    for (const ev of events) {
      if (!ev.vmId) continue;
      if (e.vms.has(ev.vmId)) this.states.set(ev.vmId, e.vms.get(ev.vmId).status!.state);
      else this.states.delete(ev.vmId);
      this.onTouched?.(this, ev.vmId);
    }
    if (this.onStates) for (const ev of events) if (ev.vmId) this.onStates(ev.vmId);
    if (events.length > 0 && this.listeners.size > 0) {
      for (const ev of events) {
        const vm = ev.vmId && e.vms.has(ev.vmId) ? e.vms.get(ev.vmId) : null;
        for (const l of this.listeners) l({ ...ev, vm, merge: null });
      }
    }
  }

  private run(effect: Effect): void {
    const scope = this.scope!;
    switch (effect.kind) {
      case 'save':
        scope.set(() => {
          this.savedStates.set(effect.vmId, { memory: effect.memory, device: effect.deviceState });
          effect.saved(`sim-${this.id}-${++this.saves}`);
          this.pump();
        }, this.timings.saveMs);
        return;
      case 'restore':
        scope.set(() => {
          const s = this.savedStates.get(effect.vmId);
          if (!s) effect.failed('the saved state file is missing');
          else effect.restored(s.memory, decodeDeviceState(s.device));
          this.pump();
          this.savedStates.delete(effect.vmId);
        }, this.timings.restoreMs);
        return;
      case 'delete-saved-state':
        this.savedStates.delete(effect.vmId);
        return;
      case 'delete-vm-files':
        // A VM deleted for good takes its files with it; a stale copy dropped leaves them (on
        // cluster storage they are the VM's, wherever it runs now).
        if (effect.keepShared && this.cluster) return;
        this.savedStates.delete(effect.vmId);
        this.cluster?.forget(effect.vmId);
        return;
      case 'disk-writes':
        // A full volume fails the guest's writes (PausedCritical); otherwise they land.
        if (this.diskFull) this.e.health.reportStorage(effect.vmId, 'full', 'the volume is full');
        return;
    }
  }

  /** A change from outside: the engine at now, the change, then its consequences carried out. */
  mutate<T>(fn: (e: HypervisorEngine) => T): T {
    this.pump();
    const r = fn(this.e);
    this.pump();
    return r;
  }

  // --- AgentService ---

  describe(): { host: pb.Host__Output; guests: pb.GuestOs__Output[] } {
    return { host: this.hostInfo(this.mutate((x) => x)), guests: guestOsList() as pb.GuestOs__Output[] };
  }

  /** The host as the agent's hostInfo reports it, read from the engine as it is (no pump). */
  private hostInfo(e: HypervisorEngine): pb.Host__Output {
    const lease = e.lease.state();
    const macs = e.macRange();
    return {
      id: this.id,
      name: this.id,
      address: this.address,
      state: lease?.expired ? 'HOST_STATE_DOWN' : 'HOST_STATE_UP',
      capacity: { ...this.shape },
      usage: e.usage(),
      limits: LIMITS_PROFILES['2008'],
      macPoolStart: macs.start,
      macPoolSize: macs.size,
      // Every simulated host reaches the farm's cluster storage, so HA VMs can fail over.
      clusterStorage: true,
      labels: {},
      maintenance: false,
      lastHeartbeatMs: 0,
      stateReason: '',
      guestOsIds: [],
    };
  }

  /**
   * The other hosts this host's agent process serves (a multi-host agent, as bench:scale runs
   * them): a grant to this host may carry theirs. Empty: an agent of its own.
   */
  siblings: SimHost[] = [];

  /**
   * GrantLease, as the agent's: this host's lease, and those of the siblings in `more`, each as
   * if called on its own. A sibling down, paused or cut off from the daemon answers an error
   * (in a real multi-host agent they share a process and its network: the simulation lets them
   * fail apart).
   */
  grantLease(req: {
    daemonId: string;
    term: number;
    durationMs: number;
    more?: { hostId: string; durationMs: number }[];
  }): pb.GrantLeaseResponse__Output {
    if (!req.daemonId) throw invalidArgument('daemon_id', 'is required');
    const r = this.renewLease(req.daemonId, req.term, req.durationMs);
    const more = (req.more ?? []).map((m): pb.HostLeaseResult__Output => {
      const sib = this.siblings.find((h) => h.id === m.hostId);
      const fail = (error: string) => ({
        hostId: m.hostId,
        expiresAtMs: 0,
        host: null,
        error,
        network: null,
      });
      if (!sib) return fail(`host '${m.hostId}' is not served by this agent process`);
      if (!sib.engine || !sib.scope || sib.scope.pausedUntil > sib.scope.now())
        return fail(`host '${m.hostId}' does not answer`);
      if (this.links && !this.links.net.connected(req.daemonId, sib.id))
        return fail(`host '${m.hostId}' is cut off from ${req.daemonId}`);
      try {
        const g = sib.renewLease(req.daemonId, req.term, m.durationMs);
        return {
          hostId: m.hostId,
          expiresAtMs: g.expiresAtMs,
          host: sib.hostInfo(sib.e),
          error: '',
          network: sib.appliedNetwork(),
        };
      } catch (err) {
        return fail((err as Error).message);
      }
    });
    return {
      expiresAtMs: r.expiresAtMs,
      host: this.hostInfo(this.e),
      more,
      siblingHostIds: this.siblings.map((h) => h.id),
      network: this.appliedNetwork(),
    };
  }

  /** As the agent's lease answer: the network configuration applied last, while there is a network. */
  private appliedNetwork(): pb.AppliedNetwork__Output | null {
    return this.network ? { revision: this.network.config().revision } : null;
  }

  private renewLease(daemonId: string, term: number, durationMs: number): { expiresAtMs: number } {
    return this.mutate((e) => e.lease.grant(daemonId, term, durationMs));
  }

  listVms(): pb.Vm__Output[] {
    return this.mutate((e) => e.vms.list());
  }

  getVm(vmId: string): pb.Vm__Output {
    return this.mutate((e) => e.vms.get(vmId));
  }

  /**
   * CreateVm, as the agent's adoptOrCreate: a VM whose folder on cluster storage was left by an
   * older generation (a failover, or a stopped VM moved here) is adopted as it was left, Saved
   * if its saved state is there; otherwise a plain create.
   */
  createVm(vmId: string, config: pb.VmConfig, generation: number, start = false): pb.Vm__Output {
    const vm = this.createOrAdopt(vmId, config, generation);
    if (!start) return vm;
    // As the agent: the create stands whatever the start does, and the VM is answered as it is.
    try {
      return this.changeVmState(vmId, 'VM_ACTION_START', generation);
    } catch {
      return vm;
    }
  }

  private createOrAdopt(vmId: string, config: pb.VmConfig, generation: number): pb.Vm__Output {
    const m = this.cluster?.manifest(vmId);
    if (!m || this.e.vms.has(vmId) || m.record.generation >= generation)
      return this.mutate((e) => e.vms.create(vmId, config, generation));
    const saved = m.record.state === 'VM_STATE_SAVED' && this.savedStates.has(vmId);
    return this.mutate((e) =>
      e.adopt(
        {
          ...m.record,
          generation,
          state: saved ? 'VM_STATE_SAVED' : 'VM_STATE_OFF',
          desiredState: saved ? 'VM_STATE_SAVED' : 'VM_STATE_OFF',
          message: '',
        },
        saved,
        `adopted from cluster storage (left by host '${m.hostId}' at generation ${m.record.generation})`,
      ),
    );
  }

  changeVmState(vmId: string, action: pb.VmAction__Output, generation: number): pb.Vm__Output {
    return this.mutate((e) => e.power.change(vmId, action, generation));
  }

  updateVm(vmId: string, config: pb.VmConfig, paths: string[], generation: number): pb.Vm__Output {
    if (config.disks && config.disks.length > 0 && paths.some((p) => p.startsWith('disks')))
      throw failedPrecondition('the simulated host has no disk files to change');
    return this.mutate((e) => e.vms.update(vmId, config, paths, generation));
  }

  deleteVm(vmId: string, generation: number): void {
    this.mutate((e) => e.vms.delete(vmId, generation));
  }

  /** DropStaleVm: the farm runs this VM elsewhere under `generation`; this copy goes. */
  dropStaleVm(vmId: string, generation: number): void {
    if (generation < 1)
      throw invalidArgument('generation', 'must be the generation the farm gives the VM now');
    const was = this.mutate((e) =>
      e.migration.dropStale(
        vmId,
        generation,
        `dropped as stale: the farm runs it elsewhere under generation ${generation}`,
      ),
    );
    if (was === undefined) throw notFound('VM', vmId);
  }

  /**
   * A WatchEvents stream with initial_state: every VM first, then each event as it happens.
   * `closed` is called if the host dies.
   */
  watch(send: Listener, closed: () => void): () => void {
    const e = this.mutate((x) => x);
    for (const vm of e.vms.list())
      send({
        sequence: 0,
        timeMs: e.now(),
        type: 'state_changed',
        vmId: vm.id,
        vm,
        message: 'initial state',
        merge: null,
      });
    this.listeners.add(send);
    this.streams.add(closed);
    return () => {
      this.listeners.delete(send);
      this.streams.delete(closed);
    };
  }
}
