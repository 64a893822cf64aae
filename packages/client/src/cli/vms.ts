import { Command, Option } from 'commander';
import type { pb } from '@hyperfarm/api';
import { parseSize } from '@hyperfarm/vhd';
import { farmAction, farmOptions, waitOption, type Ctx } from './context.js';
import { checkpointCommand } from './checkpoints.js';
import { bytes, duration, enumName, fields, tableOf, time, type Columns } from './output.js';
import { UsageError, type CliIo } from './vhd.js';

export const vmColumns: Columns<pb.Vm__Output> = [
  ['NAME', (v) => v.config?.name ?? ''],
  ['ID', (v) => v.id],
  ['STATE', (v) => enumName(v.status?.state, 'VM_STATE_')],
  ['DESIRED', (v) => enumName(v.desiredState, 'VM_STATE_')],
  ['HOST', (v) => v.status?.hostId ?? ''],
  ['CPUS', (v) => String(v.config?.processor?.count ?? 0)],
  ['MEMORY', (v) => bytes(v.config?.memoryBytes)],
  ['UPTIME', (v) => duration(v.status?.uptimeMs)],
  ['GUEST', (v) => v.config?.guestOs ?? ''],
];

export function vmDetails(v: pb.Vm__Output): string {
  const c = v.config;
  const s = v.status;
  return fields([
    ['Name', c?.name],
    ['ID', v.id],
    ['State', enumName(s?.state, 'VM_STATE_')],
    ['Desired state', enumName(v.desiredState, 'VM_STATE_')],
    ['Host', s?.hostId],
    ['Generation', s?.generation],
    ['Guest OS', c?.guestOs],
    ['Processors', c?.processor?.count],
    ['Memory', bytes(c?.memoryBytes)],
    ['Memory assigned', s?.memoryAssignedBytes ? bytes(s.memoryAssignedBytes) : undefined],
    ['CPU', s?.cpuPercent ? `${s.cpuPercent.toFixed(1)}%` : undefined],
    ['Heartbeat', enumName(s?.heartbeat, 'HEARTBEAT_STATUS_')],
    ['Uptime', duration(s?.uptimeMs)],
    ['Integration services', c?.integrationServices],
    ['HA priority', enumName(c?.haPriority, 'HA_PRIORITY_')],
    ['Disks', c?.disks.length || undefined],
    [
      'Network adapters',
      c?.networkAdapters.map((n) => `${n.switchName || '(none)'} ${n.macAddress}`).join(', '),
    ],
    [
      'Labels',
      Object.entries(c?.labels ?? {})
        .map(([k, val]) => `${k}=${val}`)
        .join(', '),
    ],
    ['Message', s?.message],
    ['Placement', s?.placementNote],
    ['Created', time(v.createdAtMs)],
  ]);
}

const vmLine = (op: pb.Operation__Output, verb: string): string => {
  const v = op.vm;
  if (!v) return `${op.kind} ${op.targetId}: done\n`;
  return `VM ${v.config?.name} (${v.id}) ${verb}: ${enumName(v.status?.state, 'VM_STATE_') || 'done'}${v.status?.hostId ? ` on ${v.status.hostId}` : ''}\n`;
};

const HA = ['high', 'medium', 'low', 'none'];

/** Options that describe a VM's shape, for `vm new`, `vm set` and `vm explain`. */
function shapeOptions(cmd: Command, defaults: boolean): Command {
  return cmd
    .option('--cpus <n>', 'virtual processors', defaults ? '1' : undefined)
    .option('--memory <size>', 'memory, e.g. 512M or 2G', defaults ? '512M' : undefined)
    .option(
      '--guest <os>',
      'guest OS id, e.g. windows-server-2008-x64',
      defaults ? 'windows-server-2008-x64' : undefined,
    )
    .addOption(new Option('--ha-priority <priority>', 'restart order after a host failure').choices(HA))
    .option('--label <key=value...>', 'labels (repeat the option)')
    .option('--boot-ms <ms>', "the guest's boot time (default: the catalog's)");
}

function count(text: string, option: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${option}: '${text}' is not a whole number`);
  return n;
}

function size(text: string, option: string): number {
  try {
    return parseSize(text, option);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The VmConfig fields the options set, and their mask paths. */
function shape(o: Record<string, unknown>): { config: pb.VmConfig; paths: string[] } {
  const config: pb.VmConfig = {};
  const paths: string[] = [];
  if (o.cpus !== undefined) {
    config.processor = { count: count(o.cpus as string, '--cpus') };
    paths.push('config.processor.count');
  }
  if (o.memory !== undefined) {
    config.memoryBytes = size(o.memory as string, '--memory');
    paths.push('config.memory_bytes');
  }
  if (o.guest !== undefined) {
    config.guestOs = o.guest as string;
    paths.push('config.guest_os');
  }
  if (o.haPriority !== undefined) {
    config.haPriority = `HA_PRIORITY_${(o.haPriority as string).toUpperCase()}` as pb.HaPriority;
    paths.push('config.ha_priority');
  }
  if (o.label !== undefined) {
    config.labels = Object.fromEntries(
      (o.label as string[]).map((l) => {
        const i = l.indexOf('=');
        if (i < 1) throw new UsageError(`--label: '${l}' is not key=value`);
        return [l.slice(0, i), l.slice(i + 1)];
      }),
    );
    paths.push('config.labels');
  }
  if (o.bootMs !== undefined) {
    config.workload = { bootMs: count(o.bootMs as string, '--boot-ms') };
    paths.push('config.workload.boot_ms');
  }
  return { config, paths };
}

/** The state changes, as Hyper-V's cmdlets name them. */
const ACTIONS: [name: string, action: pb.VmAction, verb: string, help: string][] = [
  ['start', 'VM_ACTION_START', 'started', 'start a VM that is Off, or Saved (Start-VM)'],
  ['stop', 'VM_ACTION_STOP', 'shut down', 'shut the guest down through its integration services (Stop-VM)'],
  [
    'off',
    'VM_ACTION_TURN_OFF',
    'turned off',
    'turn the VM off at once, like pulling the plug (Stop-VM -TurnOff)',
  ],
  ['save', 'VM_ACTION_SAVE', 'saved', 'save memory and device state, then stop (Save-VM)'],
  ['pause', 'VM_ACTION_PAUSE', 'paused', 'pause a running VM (Suspend-VM)'],
  ['resume', 'VM_ACTION_RESUME', 'resumed', 'resume a paused VM (Resume-VM)'],
  ['reset', 'VM_ACTION_RESET', 'reset', 'reset a running VM, like the reset button'],
];

/** `hyperfarm vm ...`: create, list, change and remove VMs, and their checkpoints. */
export function vmCommand(io: CliIo): Command {
  const vm = new Command('vm').description(
    'virtual machines: create, list, change state, move, explain placement',
  );

  vm.addCommand(
    waitOption(
      shapeOptions(
        farmOptions(
          new Command('new').alias('create').description('create a VM; placement picks a host (New-VM)'),
        ),
        true,
      ),
    )
      .argument('<name>', 'unique VM name')
      .option('--host <host>', 'place it on this host instead')
      .option('--start', 'start it once placed')
      .option('--no-integration-services', 'a guest without integration services (emulated devices)')
      .option(
        '--request-id <id>',
        'retry-safe: a repeat with the same id answers the first call (default: a new one)',
      )
      .action(
        farmAction(io, async (ctx, name) => {
          const o = ctx.opts;
          const { config } = shape(o);
          const op = await ctx.client.call('createVm', {
            config: { ...config, name: name!, integrationServices: o.integrationServices as boolean },
            start: o.start === true,
            hostId: (o.host as string | undefined) ?? '',
            requestId: (o.requestId as string | undefined) ?? '',
          });
          await ctx.finish(op, (done) => vmLine(done, 'created'));
        }),
      ),
  );

  vm.addCommand(
    farmOptions(new Command('ls').alias('list').description('list the VMs (Get-VM)'))
      .option('--host <host>', 'only the VMs on this host')
      .option('--state <state>', 'only VMs in this state, e.g. running, off, saved')
      .action(
        farmAction(io, async (ctx) => {
          const state = ctx.opts.state as string | undefined;
          const vms = await ctx.client.list(
            'listVms',
            {
              hostId: (ctx.opts.host as string | undefined) ?? '',
              ...(state ? { state: `VM_STATE_${state.toUpperCase().replace(/-/g, '_')}` as pb.VmState } : {}),
            },
            (r) => r.vms,
          );
          ctx.print(vms, () => tableOf(vms, vmColumns, ctx.width));
        }),
      ),
  );

  vm.addCommand(
    farmOptions(new Command('show').description('one VM in full').argument('<vm>', 'VM name or id')).action(
      farmAction(io, async (ctx, id) => {
        const v = await ctx.client.call('getVm', { id: id! });
        ctx.print(v, () => vmDetails(v));
      }),
    ),
  );

  vm.addCommand(
    shapeOptions(
      farmOptions(
        new Command('set')
          .description("change a VM's settings (Set-VM); memory, processors and guest need it Off")
          .argument('<vm>', 'VM name or id'),
      ),
      false,
    ).action(
      farmAction(io, async (ctx, id) => {
        const { config, paths } = shape(ctx.opts);
        if (paths.length === 0) throw new UsageError('vm set: name something to change, e.g. --memory 2G');
        const v = await ctx.client.call('updateVm', { id: id!, config, updateMask: { paths } });
        ctx.print(v, () => vmDetails(v));
      }),
    ),
  );

  vm.addCommand(
    waitOption(
      farmOptions(
        new Command('rm').alias('remove').description('delete an Off or Saved VM and its files (Remove-VM)'),
      ),
    )
      .argument('<vm>', 'VM name or id')
      .action(
        farmAction(io, async (ctx, id) => {
          const op = await ctx.client.call('deleteVm', { id: id! });
          await ctx.finish(op, () => `VM ${id} deleted\n`);
        }),
      ),
  );

  for (const [name, action, verb, help] of ACTIONS) {
    vm.addCommand(
      waitOption(farmOptions(new Command(name).description(help)))
        .argument('<vm>', 'VM name or id')
        .action(
          farmAction(io, async (ctx, id) => {
            const op = await ctx.client.call('changeVmState', { id: id!, action });
            await ctx.finish(op, (done) => vmLine(done, verb));
          }),
        ),
    );
  }

  vm.addCommand(
    waitOption(
      farmOptions(
        new Command('move')
          .alias('migrate')
          .description('move a VM to another host by quick or live migration (Move-VM)')
          .argument('<vm>', 'VM name or id')
          .option('--to <host>', 'the target host (default: placement chooses)')
          .option('--live', 'live migration (pre-copy while it runs) instead of quick'),
      ),
    ).action(
      farmAction(io, async (ctx, id) => {
        const op = await ctx.client.call('migrateVm', {
          vmId: id!,
          targetHostId: (ctx.opts.to as string | undefined) ?? '',
          kind: ctx.opts.live ? 'MIGRATION_KIND_LIVE' : 'MIGRATION_KIND_QUICK',
        });
        await ctx.finish(op, (done) => vmLine(done, 'moved'));
      }),
    ),
  );

  vm.addCommand(
    shapeOptions(
      farmOptions(
        new Command('explain')
          .description('which hosts could take a VM, and why the others were refused')
          .argument('[vm]', 'an existing VM; without it, the shape the options give'),
      ),
      true,
    ).action(
      farmAction(io, async (ctx, id) => {
        const res = await ctx.client.call(
          'explainPlacement',
          id
            ? { vmId: id }
            : { config: { ...shape(ctx.opts).config, name: 'explain', integrationServices: true } },
        );
        ctx.print(res, () => explanation(ctx, res));
      }),
    ),
  );

  vm.addCommand(checkpointCommand(io));
  return vm;
}

function explanation(ctx: Ctx, res: pb.ExplainPlacementResponse__Output): string {
  const table = tableOf(
    res.verdicts,
    [
      ['HOST', (v) => v.hostId],
      ['FITS', (v) => (v.feasible ? 'yes' : 'no')],
      ['SCORE', (v) => (v.feasible ? v.score.toFixed(3) : '')],
      ['REASONS', (v) => v.reasons.join('; ')],
    ],
    ctx.width,
  );
  return `${table}${res.chosenHostId ? `placement would choose ${res.chosenHostId}` : 'no host fits'}\n`;
}
