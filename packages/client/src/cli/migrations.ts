import { Command } from 'commander';
import type { pb } from '@hyperfarm/api';
import { farmAction, farmOptions } from './context.js';
import { bytes, enumName, fields, tableOf, time, type Columns } from './output.js';
import type { CliIo } from './vhd.js';

const columns: Columns<pb.Migration__Output> = [
  ['ID', (m) => m.id],
  ['VM', (m) => m.vmId],
  ['KIND', (m) => enumName(m.kind, 'MIGRATION_KIND_')],
  ['FROM', (m) => m.sourceHostId],
  ['TO', (m) => m.targetHostId],
  ['PHASE', (m) => enumName(m.phase, 'MIGRATION_PHASE_')],
  ['PROGRESS', (m) => `${Math.round(m.progressPercent)}%`],
  ['DOWNTIME', (m) => (m.downtimeMs ? `${m.downtimeMs} ms` : '')],
  ['ERROR', (m) => m.error],
];

const details = (m: pb.Migration__Output): string =>
  fields([
    ['ID', m.id],
    ['VM', m.vmId],
    ['Kind', enumName(m.kind, 'MIGRATION_KIND_')],
    ['Source', m.sourceHostId],
    ['Target', m.targetHostId],
    ['Phase', enumName(m.phase, 'MIGRATION_PHASE_')],
    ['Progress', `${Math.round(m.progressPercent)}%`],
    ['Transferred', bytes(m.bytesTransferred)],
    ['Rounds', m.rounds],
    ['Downtime', m.downtimeMs ? `${m.downtimeMs} ms` : undefined],
    ['Throttle', m.throttlePercent ? `${m.throttlePercent}%` : undefined],
    ['Reason', m.reason],
    ['Decision', m.decision],
    ['Error', m.error],
    ['Operation', m.operationId],
    ['Started', time(m.startedAtMs)],
    ['Finished', time(m.finishedAtMs)],
  ]);

/** `hyperfarm migration ...`: migrations the farm runs or ran (Move-VM's progress). */
export function migrationCommand(io: CliIo): Command {
  const migration = new Command('migration').description('VM migrations: list, show, cancel');
  migration.addCommand(
    farmOptions(new Command('ls').alias('list').description('list migrations'))
      .option('--vm <vm>', "only this VM's migrations (its id)")
      .action(
        farmAction(io, async (ctx) => {
          const vmId = (ctx.opts.vm as string | undefined) ?? '';
          const list = await ctx.client.list('listMigrations', { vmId }, (r) => r.migrations);
          ctx.print(list, () => tableOf(list, columns, ctx.width));
        }),
      ),
  );
  migration.addCommand(
    farmOptions(
      new Command('show').description('one migration in full').argument('<id>', 'migration id'),
    ).action(
      farmAction(io, async (ctx, id) => {
        const m = await ctx.client.call('getMigration', { id: id! });
        ctx.print(m, () => details(m));
      }),
    ),
  );
  migration.addCommand(
    farmOptions(
      new Command('cancel')
        .description('stop a migration before its switch-over; the VM stays on its source')
        .argument('<id>', 'migration id'),
    ).action(
      farmAction(io, async (ctx, id) => {
        const m = await ctx.client.call('cancelMigration', { id: id! });
        ctx.print(m, () => `migration ${m.id}: ${enumName(m.phase, 'MIGRATION_PHASE_')}\n`);
      }),
    ),
  );
  return migration;
}
