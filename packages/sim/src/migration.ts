import {
  ApiError,
  failedPrecondition,
  invalidArgument,
  status,
  type pb,
  type VmStateName,
} from '@hyperfarm/api';
import {
  Convergence,
  decodeDeviceState,
  GuestMemory,
  MigrationTracker,
  type IncomingMigration,
  type OutgoingMigration,
} from '@hyperfarm/agent';
import type { Scope } from './clock.js';
import type { SimHost } from './host.js';
import type { SimNetwork } from './network.js';
import type { SimAgentNetwork } from './sim-network.js';

const PAGE_BYTES = 4096;
/** The migration network: 1 GiB/s (a 10 Gb/s link, well used). */
const BYTES_PER_MS = 1024 ** 3 / 1000;
/** Each pull of pages from the source is a call with this deadline (the stream's idle limit). */
const CALL_MS = 10_000;
/** The source gives a migration up when the target asked for nothing this long (MAX_IDLE_MS). */
const IDLE_MS = 10_000;
/** Defaults of MigrateInRequest and of a live copy (the agent's). */
const DEFAULT_DEADLINE_MS = 30_000;
const DEFAULT_HOLD_MS = 120_000;
const DEFAULT_MAX_ROUNDS = 30;
const DEFAULT_DOWNTIME_LIMIT_MS = 30;

/** The steps of a migration, as the hosts reach them: the fault that interrupts one hooks here. */
export type MigrationStep =
  | 'source-out'
  | 'target-reserved'
  | 'round'
  | 'handed-over'
  | 'prepared'
  | 'target-committed'
  | 'source-committed'
  | 'source-aborted'
  | 'target-aborted';

export const MIGRATION_STEPS: readonly MigrationStep[] = [
  'source-out',
  'target-reserved',
  'round',
  'handed-over',
  'prepared',
  'target-committed',
  'source-committed',
  'source-aborted',
  'target-aborted',
];

/** What a host's migrations reach beyond the host: the network, the other hosts, the fault hook. */
export interface MigrationLinks {
  net: SimNetwork;
  byAddress(address: string): SimHost | undefined;
  step(host: SimHost, migrationId: string, step: MigrationStep): void;
  /** The other hosts' virtual networks, when the farm's hosts have one (their tunnels' far ends). */
  networks?: ((hostId: string) => SimAgentNetwork | undefined) | undefined;
}

/** A batch of pages from the source: page number and version, as the wire's records carry. */
interface Pages {
  pages: [number, number][];
  /** The last batch: the device state and the hash of the whole state; the copy here is frozen. */
  final?: { device: Buffer; sha256: string; stoppedAtMs: number; network?: Buffer | undefined };
}

interface Export {
  m: OutgoingMigration;
  memory: GuestMemory;
  saved: boolean;
  live: boolean;
  conv: Convergence;
  round: number;
  roundStarted: number;
  roundBytes: number;
  idle: unknown;
}

interface Held {
  incoming: IncomingMigration;
  memory: GuestMemory;
  device: Buffer;
  targetState: VmStateName;
  generation: number;
  stoppedAtMs: number;
  timer: unknown;
  bytes: number;
  rounds: number;
  sha256: string;
}

/**
 * One host incarnation's part in migrations, with the agent's semantics (migration.ts,
 * migration-source.ts and migration-target.ts in packages/agent): the target pulls the VM from
 * the source across the simulated network, page by page in rounds (a live copy runs its guest
 * between rounds and stops it for the last one, as the engine's Convergence decides), holds it
 * whole until the decision and installs it on commit. The engine does what it does for the agent
 * (`migration.out`, `freeze`, `handOver`, `abandon`, `abort`, `in`, `install`, `dropStale`);
 * only the bytes' trip is simulated, taking their time at the migration network's bandwidth.
 * Held in memory: a host that restarts knows nothing of its migrations (role NONE).
 */
export class SimMigrations {
  readonly tracker = new MigrationTracker();
  /** VMs frozen here for a handover, until the decision: their copy never executes again unless it is aborted. */
  readonly frozen = new Set<string>();
  private readonly exports = new Map<string, Export>();
  private readonly pulls = new Map<
    string,
    { done: Promise<pb.MigrationProgress__Output>; cancel(why: string): void }
  >();
  private readonly held = new Map<string, Held>();
  private readonly committing = new Map<string, Promise<pb.MigrationStatus__Output>>();

  constructor(
    private readonly host: SimHost,
    private readonly scope: Scope,
    private readonly links: MigrationLinks,
  ) {}

  private get current(): boolean {
    return this.host.migrations === this;
  }

  private alive(): void {
    if (!this.current) throw new ApiError(status.UNAVAILABLE, `host ${this.host.id} restarted`);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((wake) => this.scope.set(wake, ms));
  }

  private step(id: string, step: MigrationStep): void {
    this.links.step(this.host, id, step);
  }

  // --- the source ---

  /** ExportVm's start: the VM is marked leaving (a quick one stops at once); its header. */
  exportStart(req: {
    migrationId: string;
    vmId: string;
    generation: number;
    targetGeneration: number;
    kind: pb.MigrationKind__Output;
    downtimeLimitMs: number;
    maxRounds: number;
  }): { config: pb.VmConfig__Output; totalPages: number; targetState: VmStateName } {
    const id = req.migrationId;
    const kind = req.kind === 'MIGRATION_KIND_UNSPECIFIED' ? 'MIGRATION_KIND_QUICK' : req.kind;
    const m = this.host.mutate((e) =>
      e.migration.out(req.vmId, req.generation, kind, { snapshots: 0 }, id, true),
    );
    if (req.targetGeneration <= m.generation) {
      this.host.mutate(() => m.abandon('bad target generation'));
      throw invalidArgument(
        'target_generation',
        `must be above the VM's generation ${m.generation}, not ${req.targetGeneration}`,
      );
    }
    const saved = !m.memory;
    const memory = m.memory ?? this.host.savedStates.get(m.vmId)?.memory;
    if (!memory) {
      this.host.mutate(() => m.abandon('the saved state file is missing'));
      throw failedPrecondition(`VM '${m.name}' has no saved state to send`);
    }
    this.tracker.start(id, m.vmId, 'MIGRATION_ROLE_SOURCE', m.generation);
    const x: Export = {
      m,
      memory,
      saved,
      live: kind === 'MIGRATION_KIND_LIVE' && !saved,
      conv: new Convergence({
        downtimeLimitMs: req.downtimeLimitMs || DEFAULT_DOWNTIME_LIMIT_MS,
        maxRounds: req.maxRounds || DEFAULT_MAX_ROUNDS,
        autoConverge: true,
        thresholdPages: 0,
      }),
      round: -1,
      roundStarted: this.scope.now(),
      roundBytes: 0,
      idle: undefined,
    };
    this.exports.set(id, x);
    this.armIdle(id, x);
    this.step(id, 'source-out');
    return {
      config: m.config,
      totalPages: memory.totalPages,
      targetState: saved ? 'VM_STATE_SAVED' : m.state,
    };
  }

  /** A stream the reader stopped taking: before the handover the VM goes on here. */
  private armIdle(id: string, x: Export): void {
    this.scope.clear(x.idle);
    x.idle = this.scope.set(() => this.giveUp(id, `the target took nothing for ${IDLE_MS} ms`), IDLE_MS);
  }

  private giveUp(id: string, reason: string): void {
    const x = this.exports.get(id);
    if (!x || !this.current) return;
    this.exports.delete(id);
    this.scope.clear(x.idle);
    if (x.m.handedOver) {
      this.tracker.update(id, {
        stage: 'MIGRATION_STAGE_FROZEN',
        message: `stream failed after the hand-over: ${reason}`,
      });
      return;
    }
    this.host.mutate(() => x.m.abandon(reason));
    this.host.network?.migrationEnded(x.m.vmId, false);
    this.tracker.update(id, { stage: 'MIGRATION_STAGE_ABORTED', message: reason });
  }

  /** The next batch of pages: a round of the copy, or (when the copy may stop) the last one. */
  exportNext(id: string): Pages {
    const x = this.exports.get(id);
    if (!x) throw new ApiError(status.ABORTED, `migration ${id}: this host is not sending it`);
    this.armIdle(id, x);
    this.host.pump();
    const page = (p: number): [number, number] => [p, x.memory.versionOf(p)];
    try {
      if (!x.m.active) throw failedPrecondition(`VM '${x.m.name}' stopped migrating: ${x.m.message}`);
      const now = this.scope.now();
      if (x.round < 0) {
        x.round = 0;
        x.roundStarted = now;
        const pages = x.memory.residentPageNumbers().map(page);
        x.roundBytes = pages.length * PAGE_BYTES;
        this.tracker.update(id, { bytesTransferred: x.roundBytes, rounds: 0 });
        return { pages };
      }
      if (x.live) {
        const { stop } = x.conv.afterRound(x.round, {
          bytes: x.roundBytes,
          ms: now - x.roundStarted,
          dirtyPages: x.memory.dirtyPages,
        });
        if (x.conv.throttle > 0) this.host.mutate(() => x.m.throttle(x.conv.throttle));
        if (!stop) {
          x.round++;
          x.roundStarted = now;
          const pages = x.memory.takeDirty().map(page);
          x.roundBytes = pages.length * PAGE_BYTES;
          this.tracker.update(id, { rounds: x.round, throttlePercent: x.conv.throttle });
          this.step(id, 'round');
          return { pages };
        }
      }
      const device = x.saved
        ? this.host.savedStates.get(x.m.vmId)!.device
        : this.host.mutate(() => x.m.freeze());
      const pages = x.live ? x.memory.takeDirty().map(page) : [];
      // The guest's network state (connections, NLB member) travels with it, as the agent's
      // stop-and-copy sends it; the network here keeps it until the decision.
      const network = x.saved ? undefined : this.host.network?.handOff(x.m.vmId);
      const sha256 = x.memory.stateHash(device);
      if (!this.host.mutate(() => x.m.handOver()))
        throw failedPrecondition(`VM '${x.m.name}' stopped migrating: ${x.m.message}`);
      this.exports.delete(id);
      this.scope.clear(x.idle);
      this.frozen.add(x.m.vmId);
      this.host.onTouched?.(this.host, x.m.vmId);
      this.tracker.update(id, { stage: 'MIGRATION_STAGE_FROZEN', rounds: x.round, sha256 });
      this.step(id, 'handed-over');
      return { pages, final: { device, sha256, stoppedAtMs: x.saved ? 0 : now, network } };
    } catch (err) {
      this.giveUp(id, (err as Error).message);
      throw err;
    }
  }

  // --- the target ---

  /** MigrateIn: pulls the VM and holds it; resolves with PREPARED. A repeat joins the pull under way. */
  migrateIn(
    req: pb.MigrateInRequest,
    progress: (p: pb.MigrationProgress__Output) => void,
  ): Promise<pb.MigrationProgress__Output> {
    const id = req.migrationId ?? '';
    if (!id) return Promise.reject(invalidArgument('migration_id', 'is required'));
    const held = this.held.get(id);
    if (held) return Promise.resolve(prepared(held));
    let pull = this.pulls.get(id);
    if (!pull) {
      let cancelled: string | undefined;
      const done = this.pull(id, req, progress, () => cancelled).then(
        (h) => prepared(h),
        (err: unknown) => {
          if (this.current)
            this.tracker.update(id, { stage: 'MIGRATION_STAGE_ABORTED', message: (err as Error).message });
          throw cancelled ? new ApiError(status.ABORTED, `migration ${id}: ${cancelled}`) : err;
        },
      );
      pull = { done, cancel: (why) => (cancelled ??= why) };
      this.pulls.set(id, pull);
      const forget = () => this.pulls.delete(id);
      done.then(forget, forget);
    }
    return pull.done;
  }

  private async pull(
    id: string,
    req: pb.MigrateInRequest,
    progress: (p: pb.MigrationProgress__Output) => void,
    cancelled: () => string | undefined,
  ): Promise<Held> {
    const vmId = req.vmId ?? '';
    const targetGeneration = Number(req.targetGeneration ?? 0);
    const sourceGeneration = Number(req.sourceGeneration ?? 0);
    if (!vmId) throw invalidArgument('vm_id', 'is required');
    if (targetGeneration <= sourceGeneration)
      throw invalidArgument('target_generation', `must be above source_generation (${sourceGeneration})`);
    const source = this.links.byAddress(req.sourceAddress ?? '');
    if (!source) throw new ApiError(status.UNAVAILABLE, `no host listens at ${req.sourceAddress}`);
    this.tracker.start(id, vmId, 'MIGRATION_ROLE_TARGET', targetGeneration);
    const deadline = this.scope.now() + (req.deadlineMs || DEFAULT_DEADLINE_MS);
    const ask = <T>(fn: (m: SimMigrations) => T): Promise<T> =>
      this.links.net.call(this.scope, this.host.id, source.id, CALL_MS, () => {
        const m = source.migrations;
        if (!m) throw new ApiError(status.UNAVAILABLE, `host ${source.id} is down`);
        return fn(m);
      });
    const kind = (req.kind ?? 'MIGRATION_KIND_QUICK') as pb.MigrationKind__Output;
    const header = await ask((m) =>
      m.exportStart({
        migrationId: id,
        vmId,
        generation: sourceGeneration,
        targetGeneration,
        kind,
        downtimeLimitMs: req.downtimeLimitMs ?? 0,
        maxRounds: req.maxRounds ?? 0,
      }),
    );
    this.alive();
    const incoming = this.host.mutate((e) => e.migration.in(vmId, header.config, targetGeneration));
    this.step(id, 'target-reserved');
    try {
      const memory = new GuestMemory(vmId, header.totalPages);
      let bytes = 0;
      let round = 0;
      for (;;) {
        const why = cancelled();
        if (why) throw new ApiError(status.ABORTED, `migration ${id}: ${why}`);
        if (this.scope.now() > deadline)
          throw new ApiError(
            status.ABORTED,
            `migration ${id}: the transfer did not finish within its deadline`,
          );
        const batch = await ask((m) => m.exportNext(id));
        this.alive();
        for (const [p, v] of batch.pages) memory.install(p, v);
        const batchBytes = batch.pages.length * PAGE_BYTES;
        bytes += batchBytes;
        // The pages take their time on the wire.
        await this.sleep(Math.max(1, batchBytes / BYTES_PER_MS));
        this.alive();
        if (batch.final) {
          if (memory.stateHash(batch.final.device) !== batch.final.sha256)
            throw new ApiError(
              status.DATA_LOSS,
              `migration ${id}: the state received does not match its hash`,
            );
          // Kept by the network until the VM appears here (or for a minute, if it never does).
          if (batch.final.network) this.host.network?.adopt(vmId, batch.final.network);
          const h: Held = {
            incoming,
            memory,
            device: batch.final.device,
            targetState: header.targetState,
            generation: targetGeneration,
            stoppedAtMs: batch.final.stoppedAtMs,
            bytes,
            rounds: round,
            sha256: batch.final.sha256,
            timer: this.scope.set(
              () => this.discard(id, 'no decision in time'),
              req.holdMs || DEFAULT_HOLD_MS,
            ),
          };
          this.held.set(id, h);
          this.tracker.update(id, {
            stage: 'MIGRATION_STAGE_PREPARED',
            sha256: h.sha256,
            bytesTransferred: bytes,
            rounds: round,
          });
          this.step(id, 'prepared');
          return h;
        }
        round++;
        this.tracker.update(id, { bytesTransferred: bytes, rounds: round });
        progress({
          phase: 'MIGRATION_PHASE_TRANSFERRING',
          round,
          bytesTransferred: bytes,
          pagesRemaining: 0,
          progressPercent: Math.min(99, (100 * bytes) / Math.max(1, header.config.memoryBytes as number)),
          downtimeMs: 0,
          verifiedSha256: '',
          throttlePercent: 0,
        } as pb.MigrationProgress__Output);
      }
    } catch (err) {
      if (this.current) this.host.mutate(() => incoming.release());
      throw err;
    }
  }

  private discard(id: string, reason: string): void {
    const h = this.held.get(id);
    if (!h || !this.current) return;
    this.held.delete(id);
    this.scope.clear(h.timer);
    this.host.mutate(() => h.incoming.release());
    this.tracker.update(id, { stage: 'MIGRATION_STAGE_ABORTED', message: reason });
  }

  // --- the decision ---

  commit(req: pb.ResolveMigrationRequest): Promise<pb.MigrationStatus__Output> {
    const id = req.migrationId ?? '';
    if (!id) return Promise.reject(invalidArgument('migration_id', 'is required'));
    if (req.role === 'MIGRATION_ROLE_TARGET') {
      let pending = this.committing.get(id);
      if (!pending) {
        pending = this.commitTarget(id, req).finally(() => this.committing.delete(id));
        this.committing.set(id, pending);
      }
      return pending;
    }
    requireSource(req);
    const vmId = req.vmId ?? '';
    const gen = Number(req.targetGeneration ?? 0);
    this.host.mutate((e) => e.migration.dropStale(vmId, gen, `migrated away (${id}): it runs on its target`));
    this.host.network?.migrationEnded(vmId, true);
    this.frozen.delete(vmId);
    this.host.onTouched?.(this.host, vmId);
    this.settle(id, vmId, gen, 'MIGRATION_STAGE_COMMITTED', 'the copy here was dropped');
    this.step(id, 'source-committed');
    return Promise.resolve(this.tracker.status(id));
  }

  private async commitTarget(
    id: string,
    req: pb.ResolveMigrationRequest,
  ): Promise<pb.MigrationStatus__Output> {
    const held = this.held.get(id);
    const gen = Number(req.targetGeneration ?? 0);
    if (!held) {
      if (this.committedHere(req.vmId ?? '', gen)) return this.tracker.status(id);
      const known = this.tracker.get(id);
      throw failedPrecondition(
        `cannot commit migration ${id} here: ${
          this.pulls.has(id)
            ? 'the VM is still arriving'
            : known
              ? `nothing is held (${known.message || 'discarded'})`
              : 'nothing is held (this agent knows nothing of it: it restarted, or never took part)'
        }`,
      );
    }
    if (gen !== held.generation)
      throw invalidArgument(
        'target_generation',
        `is ${gen}, but the VM held here comes with generation ${held.generation}`,
      );
    this.scope.clear(held.timer);
    this.held.delete(id);
    const target = held.targetState === 'VM_STATE_UNSPECIFIED' ? 'VM_STATE_RUNNING' : held.targetState;
    try {
      this.host.mutate(() => held.incoming.install(held.memory, decodeDeviceState(held.device), target));
    } catch (err) {
      this.host.mutate(() => held.incoming.release());
      this.tracker.update(id, { stage: 'MIGRATION_STAGE_ABORTED', message: (err as Error).message });
      throw err;
    }
    const downtimeMs = held.stoppedAtMs > 0 ? Math.max(0, this.scope.now() - held.stoppedAtMs) : 0;
    this.tracker.update(id, { stage: 'MIGRATION_STAGE_COMMITTED', downtimeMs, generation: held.generation });
    this.step(id, 'target-committed');
    return this.tracker.status(id);
  }

  private committedHere(vmId: string, generation: number): boolean {
    const e = this.host.engine;
    return !!e && e.vms.has(vmId) && e.vms.get(vmId).status!.generation >= generation;
  }

  async abort(req: pb.ResolveMigrationRequest): Promise<pb.MigrationStatus__Output> {
    const id = req.migrationId ?? '';
    if (!id) throw invalidArgument('migration_id', 'is required');
    const reason = req.reason || 'aborted';
    const vmId = req.vmId ?? '';
    const gen = Number(req.targetGeneration ?? 0);
    if (req.role === 'MIGRATION_ROLE_TARGET') {
      await this.committing.get(id)?.catch(() => undefined);
      const pull = this.pulls.get(id);
      if (pull) {
        pull.cancel(`aborted: ${reason}`);
        await pull.done.catch(() => undefined);
      }
      if (this.held.has(id)) this.discard(id, `aborted: ${reason}`);
      else if (this.tracker.get(id)?.stage === 'MIGRATION_STAGE_COMMITTED' || this.committedHere(vmId, gen))
        throw failedPrecondition(`cannot abort migration ${id} here: it was committed and the VM runs here`);
      this.step(id, 'target-aborted');
      return this.tracker.status(id);
    }
    requireSource(req);
    const x = this.exports.get(id);
    if (x) {
      this.exports.delete(id);
      this.scope.clear(x.idle);
    }
    const resumed = this.host.mutate((e) => e.migration.abort(vmId, id, reason));
    this.host.network?.migrationEnded(vmId, false);
    this.frozen.delete(vmId);
    this.host.onTouched?.(this.host, vmId);
    this.settle(id, vmId, gen, 'MIGRATION_STAGE_ABORTED', resumed ? `resumed: ${reason}` : reason);
    this.step(id, 'source-aborted');
    return this.tracker.status(id);
  }

  private settle(
    id: string,
    vmId: string,
    gen: number,
    stage: pb.MigrationStage__Output,
    message: string,
  ): void {
    if (!this.tracker.get(id)) this.tracker.start(id, vmId, 'MIGRATION_ROLE_SOURCE', gen);
    this.tracker.update(id, { stage, message });
  }

  status(id: string): pb.MigrationStatus__Output {
    return this.tracker.status(id);
  }
}

function requireSource(req: pb.ResolveMigrationRequest): void {
  if (req.role !== 'MIGRATION_ROLE_SOURCE')
    throw invalidArgument('role', 'must be MIGRATION_ROLE_SOURCE or MIGRATION_ROLE_TARGET');
}

function prepared(h: Held): pb.MigrationProgress__Output {
  return {
    phase: 'MIGRATION_PHASE_PREPARED',
    round: h.rounds,
    bytesTransferred: h.bytes,
    pagesRemaining: 0,
    progressPercent: 100,
    downtimeMs: 0,
    verifiedSha256: h.sha256,
    throttlePercent: 0,
  } as pb.MigrationProgress__Output;
}
