import { z } from 'zod';
import { defineCommand } from './command.js';
import { failedPrecondition, notFound } from './errors.js';
import type { HostRecord, OperationRecord } from './model.js';
import { end, finishDrain, moveRefusal, recordMigration } from './migrations.js';
import { failOperation, startOperation } from './operations.js';
import { str, u32 } from './schemas.js';
import type { FarmState } from './state.js';

/**
 * Drain, as Windows Server 2012's: the host goes into maintenance (placement leaves it alone)
 * and every VM on it gets a migration, in priority order, to a target the leader's plan chose;
 * the orchestrator runs them a few at a time. VMs that cannot move are listed with the reason.
 * The drain's operation ends with its last migration.
 */

const idSchema = str(128).min(1);

/** The drain under way on a host, if one is. */
export function drainOf(s: FarmState, hostId: string): OperationRecord | undefined {
  const id = s.drains.get(hostId);
  const op = id === undefined ? undefined : s.operations.get(id);
  return op && !op.done ? op : undefined;
}

const drain = defineCommand(
  'host.drain',
  z.object({
    hostId: str(63).min(1),
    opId: idSchema,
    moves: z
      .array(
        z.object({
          migrationId: idSchema,
          opId: idSchema,
          vmId: idSchema,
          targetHostId: str(63).min(1),
          kind: z.enum(['MIGRATION_KIND_QUICK', 'MIGRATION_KIND_LIVE']),
        }),
      )
      .max(2_000),
    stranded: z.array(z.object({ vmId: idSchema, reason: str(1024) })).max(2_000),
    deadlineMs: u32,
  }),
  (s, p, changes) => {
    const host = s.hosts.get(p.hostId);
    if (!host) throw notFound('host', p.hostId);
    const under = drainOf(s, host.id);
    if (under) return { opId: under.id };
    if (host.state !== 'HOST_STATE_UP')
      throw failedPrecondition(
        `cannot drain host '${host.id}': it is ${host.state === 'HOST_STATE_DOWN' ? 'Down' : 'Suspect'}`,
      );
    if (s.operations.has(p.opId)) throw failedPrecondition(`operation ${p.opId} exists already`);
    const drained: Omit<HostRecord, 'revision'> = { ...host, maintenance: true };
    if (!host.maintenance) changes.host(drained);
    const stranded = [...p.stranded];
    const migrationIds: string[] = [];
    const planned = new Set(p.moves.map((m) => m.vmId));
    // A VM the plan left out (it came since) cannot move now: it is listed.
    for (const vmId of s.vmsByHost.get(host.id) ?? [])
      if (!planned.has(vmId) && !stranded.some((x) => x.vmId === vmId))
        stranded.push({ vmId, reason: 'placed on the host after the drain was planned' });
    for (const move of p.moves) {
      const vm = s.vms.get(move.vmId);
      if (!vm || vm.hostId !== host.id) continue;
      const verdict = moveRefusal(s, vm, move.targetHostId);
      if ('reason' in verdict) {
        stranded.push({ vmId: vm.id, reason: verdict.reason });
        continue;
      }
      recordMigration(s, changes, { ...move, deadlineMs: p.deadlineMs, drainOpId: p.opId }, vm, verdict.mode);
      migrationIds.push(move.migrationId);
    }
    const op = startOperation(changes, {
      id: p.opId,
      targetId: host.id,
      params: { kind: 'host.drain', hostId: host.id, migrationIds, stranded },
      message: `draining host '${host.id}': ${migrationIds.length} VM${migrationIds.length === 1 ? '' : 's'} to move`,
    });
    if (migrationIds.length === 0) finishDrain(s, changes, op);
    return { opId: p.opId };
  },
);

/**
 * Out of maintenance: placement may use the host again. A drain under way stops: its migrations
 * not started yet are dropped, those under way finish; VMs do not move back by themselves.
 */
const undrain = defineCommand('host.undrain', z.object({ hostId: str(63).min(1) }), (s, p, changes) => {
  const host = s.hosts.get(p.hostId);
  if (!host) throw notFound('host', p.hostId);
  if (host.maintenance) changes.host({ ...host, maintenance: false });
  const op = drainOf(s, host.id);
  if (!op || op.params.kind !== 'host.drain') return { hostId: host.id };
  const ids = op.params.migrationIds;
  failOperation(changes, op, {
    code: 'CANCELLED',
    message: `drain of host '${host.id}' stopped by UndrainHost; migrations under way finish`,
  });
  for (const id of ids) {
    const m = s.migrations.get(id);
    if (m?.phase === 'MIGRATION_PHASE_PENDING')
      end(s, changes, { ...m, decision: 'abort' }, 'the drain was stopped (UndrainHost)');
  }
  return { hostId: host.id };
});

export const drainCommands = [drain, undrain];
