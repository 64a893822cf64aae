import { ApiError, invalidArgument, notFound, status, unary, type pb } from '@hyperfarm/api';
import { pickTarget } from '../controllers/index.js';
import { migrationView, type MigrationKindName, type VmRecord } from '../fsm/index.js';
import { readState, type FarmContext } from './farm-context.js';
import { page, requireHostId, requireRef } from './requests.js';
import { newId, requireVm, startedOperation } from './vms-api.js';

export interface MigrationApiConfig {
  /** A migration's transfer deadline; 0: 30 s plus 1 s per 64 MiB of the VM's memory. */
  deadlineMs: number;
}

const MIB64 = 64 * 1024 * 1024;

/** The pull's deadline for a VM: the configured one, or 30 s plus 1 s per 64 MiB (the agent's rule). */
export function migrationDeadline(cfg: MigrationApiConfig, vm: VmRecord): number {
  return cfg.deadlineMs || 30_000 + Math.ceil(vm.config.memoryBytes / MIB64) * 1_000;
}

const KINDS: Record<string, MigrationKindName | undefined> = {
  MIGRATION_KIND_UNSPECIFIED: 'MIGRATION_KIND_LIVE',
  MIGRATION_KIND_QUICK: 'MIGRATION_KIND_QUICK',
  MIGRATION_KIND_LIVE: 'MIGRATION_KIND_LIVE',
};

/** ClusterService: MigrateVm, GetMigration, ListMigrations, CancelMigration. */
export function migrationHandlers(
  ctx: FarmContext,
  cfg: MigrationApiConfig,
): Partial<pb.ClusterServiceHandlers> {
  return {
    MigrateVm: unary<pb.MigrateVmRequest__Output, pb.Operation>(async (req) => {
      const kind = KINDS[String(req.kind)];
      if (!kind) throw invalidArgument('kind', 'must be QUICK or LIVE (unset means LIVE)');
      const target = req.targetHostId === '' ? '' : requireHostId('target_host_id', req.targetHostId);
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const vm = requireVm(s, 'vm_id', req.vmId);
      let targetHostId = target;
      if (!targetHostId) {
        const picked = pickTarget(s, vm, ctx.scheduler);
        if ('reason' in picked) throw new ApiError(status.RESOURCE_EXHAUSTED, picked.reason);
        targetHostId = picked.hostId;
      } else if (!s.hosts.has(targetHostId)) throw notFound('host', targetHostId);
      const result = await ctx.proposer.submit({
        type: 'migration.request',
        migrationId: newId('mig'),
        opId: newId('op'),
        vmId: vm.id,
        targetHostId,
        kind,
        deadlineMs: migrationDeadline(cfg, vm),
      });
      return startedOperation(ctx.machine.state, result);
    }),

    GetMigration: unary<pb.GetMigrationRequest__Output, pb.Migration>(async (req) => {
      requireRef('id', req.id);
      const m = (await readState(ctx, req.consistency)).migrations.get(req.id);
      if (!m) throw notFound('migration', req.id);
      return migrationView(m);
    }),

    ListMigrations: unary<pb.ListMigrationsRequest__Output, pb.ListMigrationsResponse>(async (req) => {
      const vmId = req.vmId === '' ? undefined : requireRef('vm_id', req.vmId);
      const s = await readState(ctx, req.consistency);
      const all = [...s.migrations.values()].filter((m) => vmId === undefined || m.vmId === vmId);
      const p = page('migrations', all, (m) => m.id, req);
      return { migrations: p.items.map(migrationView), nextPageToken: p.nextPageToken };
    }),

    CancelMigration: unary<pb.CancelMigrationRequest__Output, pb.Migration>(async (req) => {
      requireRef('id', req.id);
      await ctx.proposer.submit({ type: 'migration.cancel', migrationId: req.id });
      return migrationView(ctx.machine.state.migrations.get(req.id)!);
    }),
  };
}
