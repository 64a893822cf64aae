import { Command } from 'commander';
import type { pb } from '@hyperfarm/api';
import { farmAction, farmOptions } from './context.js';
import { fields, tableOf, time } from './output.js';
import type { CliIo } from './vhd.js';

const opColumns: [string, (o: pb.Operation__Output) => string][] = [
  ['ID', (o) => o.id],
  ['KIND', (o) => o.kind],
  ['TARGET', (o) => o.targetId],
  ['DONE', (o) => (o.done ? (o.error ? 'failed' : 'yes') : `${o.progressPercent}%`)],
  ['MESSAGE', (o) => o.error?.message ?? o.message],
];

const opDetails = (o: pb.Operation__Output): string =>
  fields([
    ['ID', o.id],
    ['Kind', o.kind],
    ['Target', o.targetId],
    ['Done', o.done],
    ['Progress', `${o.progressPercent}%`],
    ['Message', o.message],
    ['Error', o.error?.message],
    ['Created', time(o.createdAtMs)],
    ['Updated', time(o.updatedAtMs)],
  ]);

/** `hyperfarm op ...`: long work the farm is doing or did. */
export function opCommand(io: CliIo): Command {
  const op = new Command('op').description('operations: list, show, wait');
  op.addCommand(
    farmOptions(new Command('ls').alias('list').description('list operations'))
      .option('--pending', 'only those not done yet')
      .action(
        farmAction(io, async (ctx) => {
          const ops = await ctx.client.list(
            'listOperations',
            { pendingOnly: ctx.opts.pending === true },
            (r) => r.operations,
          );
          ctx.print(ops, () => tableOf(ops, opColumns, ctx.width));
        }),
      ),
  );
  op.addCommand(
    farmOptions(new Command('show').description('one operation').argument('<op>', 'operation id')).action(
      farmAction(io, async (ctx, id) => {
        const o = await ctx.client.call('getOperation', { id: id! });
        ctx.print(o, () => opDetails(o));
      }),
    ),
  );
  op.addCommand(
    farmOptions(
      new Command('wait').description('wait until an operation is done').argument('<op>', 'operation id'),
    ).action(
      farmAction(io, async (ctx, id) => {
        const o = await ctx.client.call('getOperation', { id: id! });
        await ctx.finish(o, opDetails);
      }),
    ),
  );
  return op;
}

/** `hyperfarm watch`: the farm's events as they are committed. */
export function watchCommand(io: CliIo): Command {
  return farmOptions(
    new Command('watch').description("the farm's changes as they happen (JSON lines with -o json)"),
  )
    .option('--from <revision>', 'start after this revision (0: the current state first)', '0')
    .option(
      '--kind <kinds...>',
      'only these kinds: host, vm, checkpoint, migration, switch, nlb-cluster, operation',
    )
    .option('--count <n>', 'stop after this many events')
    .action(
      farmAction(io, async (ctx) => {
        const kinds = ((ctx.opts.kind as string[] | undefined) ?? []).map(
          (k) => `RESOURCE_KIND_${k.toUpperCase().replace(/-/g, '_')}` as pb.ResourceKind,
        );
        const limit = ctx.opts.count === undefined ? Infinity : Number(ctx.opts.count);
        let n = 0;
        if (n >= limit) return;
        for await (const e of ctx.client.watch(
          { fromRevision: Number(ctx.opts.from), kinds },
          {
            onReconnect: (r) =>
              ctx.verbose(
                `stream from ${r.endpoint} broke (${r.error.message}); resuming after ${r.fromRevision}`,
              ),
          },
        )) {
          if (ctx.opts.output === 'table') {
            const r =
              e.host ?? e.vm ?? e.operation ?? e.checkpoint ?? e.migration ?? e.switch ?? e.nlbCluster;
            const what = e.vm?.config?.name ?? (r as { name?: string } | null)?.name ?? '';
            io.stdout(
              `${e.revision}  ${e.type.replace('EVENT_TYPE_', '')}  ${e.kind.replace('RESOURCE_KIND_', '').toLowerCase()}  ${e.id}  ${what}\n`,
            );
          } else io.stdout(`${JSON.stringify(e)}\n`);
          if (++n >= limit) break;
        }
      }),
    );
}
