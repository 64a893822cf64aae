import { stateName } from '@hyperfarm/api';
import { z } from 'zod';
import { FILTERS, refusals } from '../scheduler/feasible.js';
import { antiAffinityClasses, hostLoad } from './capacity.js';
import type { Changes } from './changes.js';
import { defineCommand } from './command.js';
import { alreadyExists, failedPrecondition, FsmError, notFound } from './errors.js';
import type {
  HostRecord,
  MigrationKindName,
  MigrationPhaseName,
  MigrationRecord,
  OperationRecord,
  VmRecord,
  VmStateName,
} from './model.js';
import { failOperation, progressOperation, startOperation } from './operations.js';
import { reportSchema, str, u32, u64 } from './schemas.js';
import { migrationFinal, type FarmState } from './state.js';
import { applyReport } from './vms.js';

/**
 * Migrations as records in the log. The leader's orchestrator (edge/migration-orchestrator.ts)
 * drives each one through the agents; every step that matters is a command here, so a new
 * leader finds where the last one stopped. The handover is decided by `migration.decide`: the
 * decision is in the log before either host hears of it, and a decision never changes.
 *
 *   PENDING ─start─▶ TRANSFERRING ─(progress)─▶ STOP_AND_COPY
 *      │                  │ decide commit (the target holds the VM whole: PREPARED)
 *      │                  ├────────────▶ RESTORING (the VM is the target's, generation + 1)
 *      │                  │                 └─finish─▶ COMPLETED
 *      │                  │ decide abort (a failure, a cancel, the deadline)
 *      │                  └────────────▶ ROLLING_BACK ─finish─▶ FAILED (the VM stays on its source)
 *      └─ a host gone before the start, an undrain ─▶ FAILED
 */

/** Where a VM can be moved from: a state the agents migrate, or hand over as a configuration. */
const MOVABLE = new Set<VmStateName>([
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSED',
  'VM_STATE_SAVED',
  'VM_STATE_OFF',
]);
/** Filters a target must pass: the safety ones, and the switches the VM's adapters need. */
const TARGET_FILTERS = FILTERS.filter((f) => f.safety || f.name === 'switches');

export interface MoveAsk {
  vmId: string;
  targetHostId: string;
  kind: MigrationKindName;
}

/**
 * How a VM moves, or why it cannot: every check a migration's request passes, on the committed
 * state. Running and Paused VMs move their memory; Off VMs, and Saved ones between hosts that
 * both reach cluster storage, hand over their configuration (the files stay where they are).
 */
export function moveRefusal(
  s: FarmState,
  vm: VmRecord,
  targetHostId: string,
): { mode: MigrationRecord['mode'] } | { reason: string } {
  const refused = leaveRefusal(s, vm);
  if (refused) return { reason: refused };
  const source = s.hosts.get(vm.hostId)!;
  const state = vm.observed.state;
  if (targetHostId === source.id) return { reason: `it is on host '${source.id}' already` };
  const target = s.hosts.get(targetHostId);
  if (!target) return { reason: `host '${targetHostId}' not found` };
  const both = source.clusterStorage && target.clusterStorage;
  const mode = state === 'VM_STATE_OFF' || (state === 'VM_STATE_SAVED' && both) ? 'config' : 'memory';
  if (mode === 'config' && !both) {
    return {
      reason: `an Off VM moves by handing its configuration over, which needs cluster storage on both hosts (${[
        source,
        target,
      ]
        .filter((h) => !h.clusterStorage)
        .map((h) => `'${h.id}'`)
        .join(' and ')} ${source.clusterStorage || target.clusterStorage ? 'has' : 'have'} none)`,
    };
  }
  const reasons = targetRefusals(s, target, vm);
  if (reasons.length > 0) return { reason: `host '${target.id}': ${reasons.join(', ')}` };
  return { mode };
}

/** Why the VM cannot leave its host now, whatever the target; undefined when it can. */
export function leaveRefusal(s: FarmState, vm: VmRecord): string | undefined {
  const source = s.hosts.get(vm.hostId);
  if (!source) return `VM '${vm.config.name}' is not placed on a host yet`;
  if (source.state !== 'HOST_STATE_UP')
    return `its host '${source.id}' is ${source.state === 'HOST_STATE_DOWN' ? 'Down' : 'Suspect'}`;
  if (vm.busyOpId) {
    const op = s.operations.get(vm.busyOpId);
    return `operation ${vm.busyOpId}${op ? ` (${op.kind})` : ''} is in progress`;
  }
  if (!vm.observed.present) return `it is not created on host '${source.id}' yet`;
  if (!MOVABLE.has(vm.observed.state)) return `it is ${stateName(vm.observed.state)}`;
  return undefined;
}

function targetRefusals(s: FarmState, target: HostRecord, vm: VmRecord): string[] {
  const ctx = { guests: s.guests, switches: s.switches, vcpuRatio: Infinity };
  const ask = { config: vm.config, classes: antiAffinityClasses(vm.config) };
  return refusals(TARGET_FILTERS, ctx, target, hostLoad(s, target, vm.id), ask);
}

/** Records a migration (PENDING): the VM is the migration's until it ends, its room held on the target. */
export function recordMigration(
  s: FarmState,
  changes: Changes,
  p: MoveAsk & { migrationId: string; opId: string; deadlineMs: number; drainOpId: string },
  vm: VmRecord,
  mode: MigrationRecord['mode'],
): MigrationRecord {
  if (s.migrations.has(p.migrationId)) throw alreadyExists('migration', p.migrationId);
  if (s.operations.has(p.opId)) throw alreadyExists('operation', p.opId);
  const m = changes.migration({
    id: p.migrationId,
    vmId: vm.id,
    sourceHostId: vm.hostId,
    targetHostId: p.targetHostId,
    kind: p.kind,
    mode,
    phase: 'MIGRATION_PHASE_PENDING',
    progress: 0,
    bytesTransferred: 0,
    rounds: 0,
    throttlePercent: 0,
    downtimeMs: 0,
    error: '',
    startedAtMs: changes.timeMs,
    finishedAtMs: 0,
    fromGeneration: vm.generation,
    reason: p.drainOpId ? 'drain' : 'user',
    opId: p.opId,
    drainOpId: p.drainOpId,
    decision: '',
    deadlineMs: p.deadlineMs,
    transferStartedAtMs: 0,
    sha256: '',
  });
  changes.vm({ ...vm, busyOpId: p.opId });
  startOperation(changes, {
    id: p.opId,
    targetId: vm.id,
    params: { kind: 'vm.migrate', migrationId: m.id },
    message: `waiting to move to host '${p.targetHostId}' (${describe(m)})`,
  });
  return m;
}

const describe = (m: MigrationRecord): string =>
  m.mode === 'config' ? 'configuration handover' : m.kind === 'MIGRATION_KIND_LIVE' ? 'live' : 'quick';

const kindSchema = z.enum(['MIGRATION_KIND_QUICK', 'MIGRATION_KIND_LIVE']);
const idSchema = str(128).min(1);

export function requireMigration(s: FarmState, id: string): MigrationRecord {
  const m = s.migrations.get(id);
  if (!m) throw notFound('migration', id);
  return m;
}

const request = defineCommand(
  'migration.request',
  z.object({
    migrationId: idSchema,
    opId: idSchema,
    vmId: idSchema,
    targetHostId: str(63).min(1),
    kind: kindSchema,
    deadlineMs: u32,
  }),
  (s, p, changes) => {
    const vm = s.vms.get(p.vmId);
    if (!vm) throw notFound('VM', p.vmId);
    if (!s.hosts.has(p.targetHostId)) throw notFound('host', p.targetHostId);
    const verdict = moveRefusal(s, vm, p.targetHostId);
    if ('reason' in verdict) {
      const code = /free|needed|holds \d+ VM/.test(verdict.reason)
        ? 'RESOURCE_EXHAUSTED'
        : 'FAILED_PRECONDITION';
      throw new FsmError(code, `cannot migrate VM '${vm.config.name}': ${verdict.reason}`);
    }
    const m = recordMigration(s, changes, { ...p, drainOpId: '' }, vm, verdict.mode);
    return { migrationId: m.id, opId: p.opId };
  },
  { compiled: true },
);

/**
 * Migrations under way (started, not finished) that one host takes part in, as source or
 * target: kept in the state as migrations change (`activeMigrations`), since counting a host's
 * own (a drain queues every VM of its host) at each start and each run of the leader's
 * controllers was 6.3 s of a 50,000-VM fill.
 */
export function activeCount(s: FarmState, hostId: string): number {
  return s.activeMigrations.get(hostId) ?? 0;
}

/**
 * The leader begins a pending migration: at most `limit` migrations under way per host, as
 * source or target (Hyper-V's MaximumVirtualMachineMigrations). A migration whose hosts are
 * no longer Up fails here, before any host was asked anything.
 */
const start = defineCommand(
  'migration.start',
  z.object({ migrationId: idSchema, limit: z.number().int().min(1).max(64) }),
  (s, p, changes) => {
    const m = requireMigration(s, p.migrationId);
    if (m.phase !== 'MIGRATION_PHASE_PENDING') return { started: false };
    const down = [m.sourceHostId, m.targetHostId].find((h) => s.hosts.get(h)?.state !== 'HOST_STATE_UP');
    if (down) {
      end(s, changes, { ...m, decision: 'abort' }, `host '${down}' is not Up`);
      return { started: false };
    }
    const busy = [m.sourceHostId, m.targetHostId].find((h) => activeCount(s, h) >= p.limit);
    if (busy)
      throw failedPrecondition(
        `host '${busy}' takes part in ${p.limit} migrations already; the migration waits`,
      );
    const next = changes.migration({
      ...m,
      phase: 'MIGRATION_PHASE_TRANSFERRING',
      transferStartedAtMs: changes.timeMs,
    });
    progressOp(s, changes, next, 5, `moving to host '${m.targetHostId}' (${describe(m)})`);
    return { started: true };
  },
  { compiled: true },
);

function progressOp(s: FarmState, changes: Changes, m: MigrationRecord, progress: number, message: string) {
  const op = s.operations.get(m.opId);
  if (op) progressOperation(changes, op, progress, message);
}

const progress = defineCommand(
  'migration.progress',
  z.object({
    migrationId: idSchema,
    phase: z.enum(['MIGRATION_PHASE_TRANSFERRING', 'MIGRATION_PHASE_STOP_AND_COPY']),
    progress: z.number().min(0).max(100),
    bytesTransferred: u64,
    rounds: u32,
    throttlePercent: u32,
  }),
  (s, p, changes) => {
    const m = requireMigration(s, p.migrationId);
    if (
      m.decision ||
      (m.phase !== 'MIGRATION_PHASE_TRANSFERRING' && m.phase !== 'MIGRATION_PHASE_STOP_AND_COPY')
    )
      return { changed: false };
    const next = changes.migration({
      ...m,
      phase: p.phase,
      progress: p.progress,
      bytesTransferred: p.bytesTransferred,
      rounds: p.rounds,
      throttlePercent: Math.min(99, p.throttlePercent),
    });
    const what = p.phase === 'MIGRATION_PHASE_STOP_AND_COPY' ? 'stop-and-copy' : `round ${p.rounds}`;
    progressOp(
      s,
      changes,
      next,
      5 + Math.round(p.progress * 0.8),
      `moving to host '${m.targetHostId}': ${what}`,
    );
    return { changed: true };
  },
  { compiled: true },
);

/**
 * The handover decision. Commit only once the target holds the VM whole (it said PREPARED), or
 * for a configuration handover; the VM then belongs to the target under the next generation, so
 * every older command to the source is stale. Abort leaves it on its source. Once recorded, a
 * decision never changes: a second decide is refused, and says which one stands.
 */
const decide = defineCommand(
  'migration.decide',
  z.object({
    migrationId: idSchema,
    decision: z.enum(['commit', 'abort']),
    reason: str(4096),
    prepared: z.object({ bytesTransferred: u64, rounds: u32, sha256: str(64) }).optional(),
  }),
  (s, p, changes) => {
    const m = requireMigration(s, p.migrationId);
    if (m.decision) throw failedPrecondition(`migration ${m.id} is decided already: ${m.decision}`);
    if (m.phase === 'MIGRATION_PHASE_PENDING' || migrationFinal(m))
      throw failedPrecondition(`migration ${m.id} is ${phaseName(m.phase)}: nothing to decide`);
    if (p.decision === 'abort') {
      const next = changes.migration({
        ...m,
        decision: 'abort',
        phase: 'MIGRATION_PHASE_ROLLING_BACK',
        error: p.reason,
      });
      progressOp(s, changes, next, 90, `rolling back: ${p.reason}`);
      return { decision: 'abort' };
    }
    if (m.mode === 'memory' && !p.prepared)
      throw failedPrecondition(`migration ${m.id}: commit needs the target's PREPARED report`);
    const vm = s.vms.get(m.vmId);
    if (!vm || vm.hostId !== m.sourceHostId || vm.generation !== m.fromGeneration)
      throw failedPrecondition(
        `migration ${m.id}: VM '${m.vmId}' is no longer on host '${m.sourceHostId}' at generation ${m.fromGeneration}`,
      );
    const next = changes.migration({
      ...m,
      decision: 'commit',
      phase: 'MIGRATION_PHASE_RESTORING',
      ...(p.prepared ?? {}),
    });
    changes.vm({
      ...vm,
      hostId: m.targetHostId,
      generation: m.fromGeneration + 1,
      observed: {
        ...vm.observed,
        message: `handed over to host '${m.targetHostId}'`,
        updatedAtMs: changes.timeMs,
      },
    });
    progressOp(s, changes, next, 90, `handover to host '${m.targetHostId}' committed; the VM comes up there`);
    return { decision: 'commit' };
  },
  { compiled: true },
);

/**
 * The target refused a committed handover and then took the abort: it holds nothing and can
 * never run the VM (an import that was discarded never runs). The VM goes back to its source,
 * under the generation the source holds, and the migration rolls back.
 */
const fallBack = defineCommand(
  'migration.fall_back',
  z.object({ migrationId: idSchema, reason: str(4096) }),
  (s, p, changes) => {
    const m = requireMigration(s, p.migrationId);
    if (m.decision !== 'commit' || migrationFinal(m))
      throw failedPrecondition(`migration ${m.id}: only a committed, unfinished migration falls back`);
    const vm = s.vms.get(m.vmId);
    if (vm && vm.hostId === m.targetHostId && vm.generation === m.fromGeneration + 1) {
      changes.vm({ ...vm, hostId: m.sourceHostId, generation: m.fromGeneration });
    }
    const next = changes.migration({
      ...m,
      decision: 'abort',
      phase: 'MIGRATION_PHASE_ROLLING_BACK',
      error: p.reason,
    });
    progressOp(s, changes, next, 90, `rolling back: ${p.reason}`);
    return { decision: 'abort' };
  },
  { compiled: true },
);

/** Both hosts acknowledged the decision: the migration ends, and the VM is free again. */
const finish = defineCommand(
  'migration.finish',
  z.object({
    migrationId: idSchema,
    downtimeMs: u64,
    /** The VM as its new (or old) host answered, when it did. */
    report: reportSchema.optional(),
  }),
  (s, p, changes) => {
    const m = requireMigration(s, p.migrationId);
    if (migrationFinal(m)) return { changed: false };
    if (!m.decision) throw failedPrecondition(`migration ${m.id} is not decided yet`);
    end(s, changes, { ...m, downtimeMs: m.decision === 'commit' ? p.downtimeMs : 0 }, m.error, p.report);
    return { changed: true };
  },
  { compiled: true },
);

const cancel = defineCommand('migration.cancel', z.object({ migrationId: idSchema }), (s, p, changes) => {
  const m = requireMigration(s, p.migrationId);
  if (migrationFinal(m)) throw failedPrecondition(`migration ${m.id} is over: ${phaseName(m.phase)}`);
  if (m.decision === 'commit')
    throw failedPrecondition(
      `migration ${m.id}: the handover is decided (commit); it can no longer be cancelled`,
    );
  if (m.decision === 'abort') return { changed: false };
  if (m.phase === 'MIGRATION_PHASE_PENDING') {
    end(s, changes, { ...m, decision: 'abort' }, 'cancelled (CancelMigration)');
    return { changed: true };
  }
  const next = changes.migration({
    ...m,
    decision: 'abort',
    phase: 'MIGRATION_PHASE_ROLLING_BACK',
    error: 'cancelled (CancelMigration)',
  });
  progressOp(s, changes, next, 90, 'rolling back: cancelled');
  return { changed: true };
});

/**
 * Ends a migration: COMPLETED after a commit, FAILED otherwise; its operation ends with it, the
 * VM is free for the next one, and a drain that asked for it moves on.
 */
export function end(
  s: FarmState,
  changes: Changes,
  m: Omit<MigrationRecord, 'revision'>,
  error: string,
  report?: z.output<typeof reportSchema>,
): MigrationRecord {
  const committed = m.decision === 'commit';
  const final = changes.migration({
    ...m,
    phase: committed ? 'MIGRATION_PHASE_COMPLETED' : 'MIGRATION_PHASE_FAILED',
    progress: committed ? 100 : m.progress,
    error: committed ? '' : error,
    finishedAtMs: changes.timeMs,
  });
  let vm = s.vms.get(m.vmId);
  if (vm && report) vm = applyReport(s, vm, report, changes);
  if (vm && vm.busyOpId === m.opId) changes.vm({ ...vm, busyOpId: '' });
  const op = s.operations.get(m.opId);
  if (op && !op.done) {
    if (committed) {
      const message = `moved to host '${m.targetHostId}'${m.mode === 'memory' ? `; downtime ${m.downtimeMs} ms` : ''}`;
      finishWith(changes, op, message, { kind: 'migration', record: final });
    } else {
      failOperation(changes, op, {
        code: 'ABORTED',
        message: `VM '${vm?.config.name ?? m.vmId}' stays on host '${m.sourceHostId}': ${error}`,
      });
    }
  }
  if (m.drainOpId) drainMoved(s, changes, m.drainOpId);
  return final;
}

/** A drain's migration ended: the drain progresses, and ends with its last one. */
export function drainMoved(s: FarmState, changes: Changes, drainOpId: string): void {
  const op = s.operations.get(drainOpId);
  if (!op || op.done || op.params.kind !== 'host.drain') return;
  const p = op.params;
  const ms = p.migrationIds.map((id) => s.migrations.get(id));
  const over = ms.filter((m) => !m || migrationFinal(m)).length;
  if (over < ms.length) {
    progressOperation(
      changes,
      op,
      Math.round((100 * over) / ms.length),
      `${over} of ${ms.length} VMs moved or given up`,
    );
    return;
  }
  finishDrain(s, changes, op);
}

export function finishDrain(s: FarmState, changes: Changes, op: OperationRecord): void {
  if (op.params.kind !== 'host.drain') return;
  const p = op.params;
  const failed = [
    ...p.stranded,
    ...p.migrationIds
      .map((id) => s.migrations.get(id))
      .filter((m): m is MigrationRecord => !!m && m.phase === 'MIGRATION_PHASE_FAILED')
      .map((m) => ({ vmId: m.vmId, reason: m.error })),
  ];
  const host = s.hosts.get(p.hostId);
  const moved = p.migrationIds.length - (failed.length - p.stranded.length);
  if (failed.length === 0) {
    const message = `host '${p.hostId}' drained: ${moved} VM${moved === 1 ? '' : 's'} moved`;
    finishWith(changes, op, message, host ? { kind: 'host', record: host } : null);
    return;
  }
  const list = failed
    .slice(0, 20)
    .map((f) => `VM '${s.vms.get(f.vmId)?.config.name ?? f.vmId}': ${f.reason}`)
    .join('; ');
  failOperation(changes, op, {
    code: 'FAILED_PRECONDITION',
    message: `host '${p.hostId}': ${failed.length} VM${failed.length === 1 ? '' : 's'} could not move (${list}${failed.length > 20 ? '; ...' : ''}); ${moved} moved`,
  });
}

/** Ends an operation successfully with a migration or a host as its result. */
function finishWith(
  changes: Changes,
  op: OperationRecord,
  message: string,
  result: OperationRecord['result'],
) {
  changes.op({ ...op, done: true, progress: 100, message, result });
}

const phaseName = (p: MigrationPhaseName): string => p.replace('MIGRATION_PHASE_', '').toLowerCase();

export const migrationCommands = [request, start, progress, decide, fallBack, finish, cancel];
