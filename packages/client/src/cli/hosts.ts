import { Command, Option } from 'commander';
import { status, statusOf, type pb } from '@hyperfarm/api';
import { farmAction, farmOptions, waitOption } from './context.js';
import { bytes, enumName, fields, tableOf, time, type Columns } from './output.js';
import type { CliIo } from './vhd.js';

const HOST_STATES = ['up', 'suspect', 'down'];

export const hostColumns: Columns<pb.Host__Output> = [
  ['ID', (h) => h.id],
  ['NAME', (h) => h.name],
  ['STATE', (h) => enumName(h.state, 'HOST_STATE_') + (h.maintenance ? ' (maintenance)' : '')],
  ['LPS', (h) => String(h.capacity?.logicalProcessors ?? 0)],
  ['MEMORY', (h) => `${bytes(h.usage?.memoryUsedBytes)} / ${bytes(h.capacity?.memoryBytes)}`],
  ['VMS', (h) => `${h.usage?.runningVms ?? 0}/${h.usage?.vms ?? 0}`],
  ['ADDRESS', (h) => h.address],
];

export function hostDetails(h: pb.Host__Output): string {
  return fields([
    ['ID', h.id],
    ['Name', h.name],
    ['Address', h.address],
    ['State', enumName(h.state, 'HOST_STATE_')],
    ['Reason', h.stateReason],
    ['Maintenance', h.maintenance],
    ['Processors', h.capacity?.logicalProcessors],
    ['Memory', bytes(h.capacity?.memoryBytes)],
    ['Memory used', bytes(h.usage?.memoryUsedBytes)],
    ['Root reserve', bytes(h.capacity?.rootReserveBytes)],
    ['VMs', `${h.usage?.runningVms ?? 0} running of ${h.usage?.vms ?? 0}`],
    ['Limits', h.limits?.name],
    ['MAC pool', h.macPoolStart ? `${h.macPoolStart} (+${h.macPoolSize})` : undefined],
    [
      'Labels',
      Object.entries(h.labels ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(', '),
    ],
    ['Last heartbeat', time(h.lastHeartbeatMs)],
  ]);
}

/** `hyperfarm host ...`: the farm's hosts (Get-VMHost, Get-ClusterNode, Suspend/Resume-ClusterNode). */
export function hostCommand(io: CliIo): Command {
  const host = new Command('host').description('the hosts of the farm: list, show, drain, undrain, remove');
  host.addCommand(
    farmOptions(new Command('ls').alias('list').description('list the hosts (Get-VMHost, Get-ClusterNode)'))
      .addOption(new Option('--state <state>', 'only hosts in this state').choices(HOST_STATES))
      .action(
        farmAction(io, async (ctx) => {
          const state = ctx.opts.state as string | undefined;
          const hosts = await ctx.client.list(
            'listHosts',
            state ? { state: `HOST_STATE_${state.toUpperCase()}` as pb.HostState } : {},
            (r) => r.hosts,
          );
          ctx.print(hosts, () => tableOf(hosts, hostColumns, ctx.width));
        }),
      ),
  );
  host.addCommand(
    farmOptions(new Command('show').description('one host in full').argument('<host>', 'host id')).action(
      farmAction(io, async (ctx, id) => {
        const h = await ctx.client.call('getHost', { id: id! });
        ctx.print(h, () => hostDetails(h));
      }),
    ),
  );
  host.addCommand(
    waitOption(
      farmOptions(
        new Command('drain')
          .description(
            'maintenance mode: move every VM off the host, by priority and fit (Suspend-ClusterNode -Drain)',
          )
          .argument('<host>', 'host id'),
      ),
    ).action(
      farmAction(io, async (ctx, id) => {
        const op = await ctx.client.call('drainHost', { id: id! });
        await ctx.finish(op, (done) => `host ${id} drained${done.message ? `: ${done.message}` : ''}\n`);
      }),
    ),
  );
  host.addCommand(
    farmOptions(
      new Command('undrain')
        .description('end maintenance mode: placement may use the host again (Resume-ClusterNode)')
        .argument('<host>', 'host id'),
    ).action(
      farmAction(io, async (ctx, id) => {
        const h = await ctx.client.call('undrainHost', { id: id! }).catch((err: unknown) => {
          // A farm without UndrainHost (before the drain controller) ends maintenance by the field.
          if (statusOf(err) !== status.UNIMPLEMENTED) throw err;
          ctx.verbose('UndrainHost is not offered; clearing the maintenance field instead');
          return ctx.client.call('updateHost', {
            host: { id: id!, maintenance: false },
            updateMask: { paths: ['maintenance'] },
          });
        });
        ctx.print(h, () => `host ${h.id} is out of maintenance\n`);
      }),
    ),
  );
  host.addCommand(
    farmOptions(
      new Command('rm')
        .alias('remove')
        .description('remove a host that has no VMs')
        .argument('<host>', 'host id'),
    ).action(
      farmAction(io, async (ctx, id) => {
        await ctx.client.call('removeHost', { id: id! });
        ctx.print({ removed: id }, () => `host ${id} removed\n`);
      }),
    ),
  );
  host.addCommand(
    farmOptions(
      new Command('add')
        .description("register a host by its agent's address")
        .argument('<address>', "the agent's host:port")
        .option('--name <name>', "display name (default: the agent's own)"),
    ).action(
      farmAction(io, async (ctx, address) => {
        const name = (ctx.opts.name as string | undefined) ?? '';
        const h = await ctx.client.call('registerHost', { address: address!, name });
        ctx.print(h, () => hostDetails(h));
      }),
    ),
  );
  return host;
}
