import { status, statusOf, type Logger, type pb } from '@hyperfarm/api';
import { agentView, migrationsToStart, reportOf, unfinishedMigrations } from '../controllers/index.js';
import {
  migrationFinal,
  type CommandBody,
  type FarmState,
  type FarmStateMachine,
  type MigrationRecord,
} from '../fsm/index.js';
import type { AgentPort, HostRef } from './agent-port.js';
import type { Ok } from './proposer.js';
import type { Timers } from './timers.js';

export interface OrchestratorConfig {
  /** Migrations a host takes part in at once at most (Hyper-V's MaximumVirtualMachineMigrations). */
  maxPerHost: number;
  /** An agent's answer describing a VM, for the leader's inventory of that host. */
  observe?: (hostId: string, vm: pb.Vm__Output) => void;
}

/** How long a target holds a prepared VM for the decision (the agent's default). */
const HOLD_MS = 120_000;
/** A leader that took over waits this much past the pull's deadline before deciding abort. */
const GRACE_MS = 2_000;
/** Progress reaches the log at most this often per migration. */
const PROGRESS_MS = 500;
/** How long an abort is told to a target that does not answer: it discards by itself after its hold. */
const TARGET_ABORT_MS = 15_000;
/** Refusals a host repeats: asking again cannot change them. */
const REFUSED = new Set<number>([status.FAILED_PRECONDITION, status.INVALID_ARGUMENT, status.NOT_FOUND]);

class Closed extends Error {}

type Told<T> = { ok: T } | { refused: string } | { down: true } | { gaveUp: true };
type Prepared = { bytesTransferred: number; rounds: number; sha256: string };

/**
 * Drives the farm's migrations while this daemon leads: begins pending ones within the per-host
 * limit, has the target pull the VM, records the handover decision in the log, and only then
 * tells the hosts, until each acknowledged it. Every step that matters is a command first, so a
 * new leader picks up where this one stopped: an undecided migration is decided from what the
 * target says (PREPARED: commit; otherwise, once the pull's deadline passed: abort), a decided
 * one is told again (every call is idempotent).
 */
export class MigrationOrchestrator {
  private readonly driving = new Set<string>();
  private readonly starting = new Set<string>();
  /** Migrations this session began: their pull is started here, not asked after. */
  private readonly startedHere = new Set<string>();
  private readonly pulls = new Map<string, { cancel(): void }>();
  private readonly retryAt = new Map<string, number>();
  private readonly progressTimers = new Map<string, unknown>();
  private readonly sleeps = new Set<{ handle: unknown; wake(): void }>();
  private closed = false;
  /**
   * The unfinished migrations in order, as of one state and count of migration changes: listed
   * and sorted again only once an applied entry changed a migration or a snapshot replaced the
   * state. Each run of the controllers listed and sorted them twice, a drain's whole queue of
   * pending ones included; then once per applied entry, which once full is nearly every run
   * (1.2% of a full 50,000-VM farm's simulation, for lists that had not changed).
   */
  private unfinished: { state: FarmState; changes: number; list: MigrationRecord[] } | undefined;
  /** Applied entries that changed a migration (the only ones that change the list). */
  private migrationChanges = 0;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly machine: FarmStateMachine,
    private readonly submit: (cmd: CommandBody) => Promise<Ok>,
    private readonly port: AgentPort,
    private readonly timers: Timers,
    private readonly logger: Logger,
    private readonly cfg: OrchestratorConfig,
  ) {
    this.unsubscribe = machine.onApplied((applied) => {
      if (applied.events.some((e) => e.kind === 'RESOURCE_KIND_MIGRATION')) this.migrationChanges++;
    });
  }

  private get state() {
    return this.machine.state;
  }

  /** Looks at every unfinished migration: starts what may start, drives what is not driven. */
  tick(): void {
    if (this.closed) return;
    const s = this.state;
    for (const m of migrationsToStart(s, this.cfg.maxPerHost, this.unfinishedNow())) {
      if (this.starting.has(m.id)) continue;
      this.starting.add(m.id);
      // Marked before the start commits: the next tick may see it under way before this answer.
      this.startedHere.add(m.id);
      this.submit({ type: 'migration.start', migrationId: m.id, limit: this.cfg.maxPerHost })
        .then((r) => {
          if (!r['started']) this.startedHere.delete(m.id);
        })
        .catch((err: unknown) => {
          this.startedHere.delete(m.id);
          this.logger.debug({ err, migration: m.id }, 'migration not started yet');
        })
        .finally(() => {
          this.starting.delete(m.id);
          this.tick();
        });
    }
    const now = this.timers.now();
    for (const m of this.unfinishedNow()) {
      if (m.decision === 'abort') this.pulls.get(m.id)?.cancel();
      if (m.phase === 'MIGRATION_PHASE_PENDING' || this.driving.has(m.id)) continue;
      if ((this.retryAt.get(m.id) ?? 0) > now) continue;
      void this.drive(m.id);
    }
  }

  private unfinishedNow(): MigrationRecord[] {
    const state = this.state;
    const changes = this.migrationChanges;
    if (this.unfinished?.state !== state || this.unfinished.changes !== changes)
      this.unfinished = { state, changes, list: unfinishedMigrations(state) };
    return this.unfinished.list;
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    for (const p of this.pulls.values()) p.cancel();
    for (const t of this.progressTimers.values()) this.timers.clear(t);
    for (const s of this.sleeps) {
      this.timers.clear(s.handle);
      s.wake();
    }
  }

  private record(id: string): MigrationRecord | undefined {
    return this.state.migrations.get(id);
  }

  private hostRef(id: string): HostRef {
    const h = this.state.hosts.get(id);
    if (!h) throw new Error(`host '${id}' is no longer in the farm`);
    return { id: h.id, address: h.address };
  }

  private async drive(id: string): Promise<void> {
    this.driving.add(id);
    try {
      await this.decideIfUndecided(id);
      const m = this.record(id);
      if (!m || migrationFinal(m) || this.closed) return;
      if (m.decision === 'commit') await this.carryCommit(m);
      else if (m.decision === 'abort') await this.carryAbort(m);
      this.retryAt.delete(id);
    } catch (err) {
      if (err instanceof Closed || this.closed) return;
      this.logger.error({ err, migration: id }, 'the migration driver failed; trying again shortly');
      this.retryAt.set(id, this.timers.now() + 1_000);
      this.wakeLater(1_000);
    } finally {
      this.driving.delete(id);
    }
  }

  private wakeLater(ms: number): void {
    this.timers.set(() => this.tick(), ms);
  }

  // --- before the decision ---

  private async decideIfUndecided(id: string): Promise<void> {
    const m = this.record(id);
    if (!m || m.decision || migrationFinal(m) || m.phase === 'MIGRATION_PHASE_PENDING') return;
    if (m.mode === 'config') {
      // Nothing runs and nothing travels: the handover is the decision itself.
      await this.decide(m, { prepared: undefined });
      return;
    }
    const began = this.startedHere.delete(id);
    const outcome = began ? await this.pull(m) : await this.askTarget(m);
    if (this.closed) throw new Closed();
    await this.decide(m, outcome);
  }

  /** Records the decision; whatever the answer, the log then says which decision stands. */
  private async decide(m: MigrationRecord, o: { prepared?: Prepared | undefined; reason?: string }) {
    const cmd: CommandBody = o.prepared
      ? { type: 'migration.decide', migrationId: m.id, decision: 'commit', reason: '', prepared: o.prepared }
      : m.mode === 'config'
        ? { type: 'migration.decide', migrationId: m.id, decision: 'commit', reason: '' }
        : { type: 'migration.decide', migrationId: m.id, decision: 'abort', reason: o.reason ?? 'unknown' };
    await this.propose(cmd, true);
  }

  /** MigrateIn on the target: the pull, to PREPARED (the target holds the VM whole) or failure. */
  private async pull(m: MigrationRecord): Promise<{ prepared?: Prepared; reason?: string }> {
    const source = this.hostRef(m.sourceHostId);
    const target = this.hostRef(m.targetHostId);
    const call = this.port.migrateIn(
      target,
      {
        migrationId: m.id,
        vmId: m.vmId,
        sourceAddress: source.address,
        sourceGeneration: m.fromGeneration,
        targetGeneration: m.fromGeneration + 1,
        kind: m.kind,
        deadlineMs: m.deadlineMs,
        holdMs: HOLD_MS,
      },
      (p) => this.progress(m.id, p),
    );
    this.pulls.set(m.id, call);
    try {
      const p = await call.done;
      return {
        prepared: { bytesTransferred: p.bytesTransferred, rounds: p.round, sha256: p.verifiedSha256 },
      };
    } catch (err) {
      const why = (err as { details?: string }).details || (err as Error).message;
      this.logger.warn({ migration: m.id, err: why }, 'migration: the target did not prepare the VM');
      return { reason: `host '${m.targetHostId}' did not take the VM: ${why}` };
    } finally {
      this.pulls.delete(m.id);
      this.timers.clear(this.progressTimers.get(m.id));
      this.progressTimers.delete(m.id);
    }
  }

  /** Progress reports reach the log at most every PROGRESS_MS, the latest one winning. */
  private progress(id: string, p: pb.MigrationProgress__Output): void {
    if (p.phase !== 'MIGRATION_PHASE_TRANSFERRING' && p.phase !== 'MIGRATION_PHASE_STOP_AND_COPY') return;
    const latest = {
      phase: p.phase,
      progress: p.progressPercent,
      bytesTransferred: p.bytesTransferred,
      rounds: p.round,
      throttlePercent: p.throttlePercent,
    };
    this.latestProgress.set(id, latest);
    if (this.progressTimers.has(id)) return;
    this.progressTimers.set(
      id,
      this.timers.set(() => {
        this.progressTimers.delete(id);
        const l = this.latestProgress.get(id);
        this.latestProgress.delete(id);
        if (l && !this.closed)
          void this.submit({ type: 'migration.progress', migrationId: id, ...l }).catch(() => undefined);
      }, PROGRESS_MS),
    );
  }

  private readonly latestProgress = new Map<
    string,
    {
      phase: 'MIGRATION_PHASE_TRANSFERRING' | 'MIGRATION_PHASE_STOP_AND_COPY';
      progress: number;
      bytesTransferred: number;
      rounds: number;
      throttlePercent: number;
    }
  >();

  /**
   * A migration this leader did not begin (it took over): the target says where it stands.
   * PREPARED means it holds the VM whole: commit. Knowing nothing of it, or having given it up,
   * means abort; so does a pull still unfinished once its deadline has passed.
   */
  private async askTarget(m: MigrationRecord): Promise<{ prepared?: Prepared; reason?: string }> {
    const target = this.hostRef(m.targetHostId);
    const until = m.transferStartedAtMs + m.deadlineMs + GRACE_MS;
    for (;;) {
      if (this.closed) throw new Closed();
      if (this.record(m.id)?.decision) return {};
      try {
        const st = await this.port.getMigrationStatus(target, m.id);
        if (st.stage === 'MIGRATION_STAGE_PREPARED')
          return {
            prepared: { bytesTransferred: st.bytesTransferred, rounds: st.rounds, sha256: st.sha256 },
          };
        if (st.role === 'MIGRATION_ROLE_NONE' || st.stage === 'MIGRATION_STAGE_ABORTED')
          return {
            reason: `host '${m.targetHostId}' does not hold the VM (${st.message || 'it knows nothing of the migration'})`,
          };
      } catch (err) {
        this.logger.debug({ err, migration: m.id }, 'migration: the target did not say where it stands');
      }
      if (this.timers.now() > until)
        return { reason: `the transfer did not finish within its deadline (${m.deadlineMs} ms)` };
      await this.sleep(250);
    }
  }

  // --- after the decision ---

  private async carryCommit(m: MigrationRecord): Promise<void> {
    const source = m.sourceHostId;
    const target = m.targetHostId;
    const generation = m.fromGeneration + 1;
    if (m.mode === 'config') return this.handOverConfig(m);
    const req = { migrationId: m.id, vmId: m.vmId, targetGeneration: generation, reason: '' };
    let downtimeMs = 0;
    for (let attempt = 0; ; attempt++) {
      const told = await this.tell(target, (h) =>
        this.port.commitMigration(h, { ...req, role: 'MIGRATION_ROLE_TARGET' }),
      );
      if ('ok' in told) {
        downtimeMs = told.ok.downtimeMs;
        break;
      }
      if ('down' in told || 'gaveUp' in told) break; // the VM is the target's: its return or a failover decides
      // The target cannot take the VM (it restarted, or its hold ran out). Make sure it never
      // will, then the VM stays on its source.
      const why = told.refused;
      const aborted = await this.tell(target, (h) =>
        this.port.abortMigration(h, {
          ...req,
          role: 'MIGRATION_ROLE_TARGET',
          reason: `commit refused: ${why}`,
        }),
      );
      if ('refused' in aborted && attempt < 3) continue; // it runs the VM after all: commit again
      if ('ok' in aborted) {
        this.logger.warn(
          { migration: m.id, why },
          'migration: the target refused the commit; the VM stays on its source',
        );
        await this.propose(
          {
            type: 'migration.fall_back',
            migrationId: m.id,
            reason: `host '${target}' no longer held the VM when the commit reached it: ${why}`,
          },
          true,
        );
        const back = this.record(m.id);
        if (back?.decision === 'abort') return this.carryAbort(back);
        return;
      }
      break;
    }
    const dropped = await this.tell(source, (h) =>
      this.port.commitMigration(h, { ...req, role: 'MIGRATION_ROLE_SOURCE' }),
    );
    if ('refused' in dropped)
      this.logger.warn(
        { migration: m.id, why: dropped.refused },
        'migration: the source refused to drop its copy',
      );
    // The VM as the target runs it now, into the log with the end and into the leader's
    // inventory of the target: that still held the import, and its stream's next event may come
    // after the end, so the VM would be shown as the import was (Off) until then.
    const now = await this.tell(target, (h) => this.port.getVm(h, m.vmId), TARGET_ABORT_MS);
    let report;
    if ('ok' in now && now.ok.status?.generation === generation) {
      this.cfg.observe?.(target, now.ok);
      report = reportOf(m.vmId, target, agentView(now.ok));
    }
    await this.propose(
      { type: 'migration.finish', migrationId: m.id, downtimeMs, ...(report ? { report } : {}) },
      false,
    );
  }

  /** An Off or Saved VM: the source forgets it, the target adopts its files from cluster storage. */
  private async handOverConfig(m: MigrationRecord): Promise<void> {
    const generation = m.fromGeneration + 1;
    const vm = this.state.vms.get(m.vmId);
    await this.tell(m.sourceHostId, (h) => this.port.dropStaleVm(h, m.vmId, generation));
    let report;
    if (vm) {
      const created = await this.tell(m.targetHostId, (h) =>
        this.port.createVm(h, m.vmId, vm.config, generation),
      );
      if ('ok' in created) report = reportOf(m.vmId, m.targetHostId, agentView(created.ok));
      else if ('refused' in created)
        this.logger.error(
          { migration: m.id, why: created.refused },
          'migration: the target refused to adopt the VM',
        );
    }
    await this.propose(
      { type: 'migration.finish', migrationId: m.id, downtimeMs: 0, ...(report ? { report } : {}) },
      false,
    );
  }

  /**
   * Abort: the target never runs an import that was not committed, so the source may resume at
   * once; the target is told too, so it lets go of the memory it holds.
   */
  private async carryAbort(m: MigrationRecord): Promise<void> {
    if (m.mode === 'memory') {
      const req = {
        migrationId: m.id,
        vmId: m.vmId,
        targetGeneration: m.fromGeneration + 1,
        reason: m.error,
      };
      const target = this.tell(
        m.targetHostId,
        (h) => this.port.abortMigration(h, { ...req, role: 'MIGRATION_ROLE_TARGET' }),
        TARGET_ABORT_MS,
      );
      const source = await this.tell(m.sourceHostId, (h) =>
        this.port.abortMigration(h, { ...req, role: 'MIGRATION_ROLE_SOURCE' }),
      );
      if ('refused' in source)
        this.logger.warn({ migration: m.id, why: source.refused }, 'migration: the source refused the abort');
      const t = await target;
      if ('refused' in t)
        this.logger.error({ migration: m.id, why: t.refused }, 'migration: the target refused the abort');
    }
    await this.propose({ type: 'migration.finish', migrationId: m.id, downtimeMs: 0 }, false);
  }

  /**
   * Calls a host until it answers: its answer, or its refusal (a refusal it would repeat). A host
   * the farm declared Down is given up on (its return, or a failover, settles the VM); so is any
   * host after `giveUpMs`, when given.
   */
  private async tell<T>(
    hostId: string,
    call: (h: HostRef) => Promise<T>,
    giveUpMs?: number,
  ): Promise<Told<T>> {
    const until = giveUpMs === undefined ? Infinity : this.timers.now() + giveUpMs;
    let delay = 100;
    for (;;) {
      if (this.closed) throw new Closed();
      try {
        return { ok: await call(this.hostRef(hostId)) };
      } catch (err) {
        const code = statusOf(err);
        const why = (err as { details?: string }).details || (err as Error).message;
        if (code !== undefined && REFUSED.has(code)) return { refused: why };
        if (this.state.hosts.get(hostId)?.state === 'HOST_STATE_DOWN') return { down: true };
        if (this.timers.now() > until) return { gaveUp: true };
        this.logger.warn(
          { host: hostId, err: why, retryInMs: delay },
          'migration: a host did not answer; asking again',
        );
      }
      await this.sleep(delay);
      delay = Math.min(2_000, delay * 2);
    }
  }

  /** Proposes a command; a refusal is expected when `refusalOk` (the log then says what stands). */
  private async propose(cmd: CommandBody, refusalOk: boolean): Promise<void> {
    if (this.closed) throw new Closed();
    try {
      await this.submit(cmd);
    } catch (err) {
      if (this.closed) throw new Closed();
      if (refusalOk && statusOf(err) === status.FAILED_PRECONDITION) return;
      throw err;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((wake) => {
      const entry = { handle: undefined as unknown, wake };
      entry.handle = this.timers.set(() => {
        this.sleeps.delete(entry);
        wake();
      }, ms);
      this.sleeps.add(entry);
    });
  }
}
