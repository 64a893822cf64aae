import { Command } from 'commander';
import type { pb } from '@hyperfarm/api';
import { farmAction, farmOptions, waitOption } from './context.js';
import { enumName, tableOf, time } from './output.js';
import type { CliIo } from './vhd.js';

/** `hyperfarm vm checkpoint ...`: snapshots (Checkpoint-VM, Get-VMSnapshot, Restore-/Remove-VMSnapshot). */
export function checkpointCommand(io: CliIo): Command {
  const cp = new Command('checkpoint')
    .alias('snapshot')
    .description("a VM's snapshots: new, ls, apply, rm, rename");
  cp.addCommand(
    waitOption(farmOptions(new Command('new').description('take a snapshot (Checkpoint-VM)')))
      .argument('<vm>', 'VM name or id')
      .option('--name <name>', 'snapshot name (default: "<vm> - (<date time>)")')
      .action(
        farmAction(io, async (ctx, vm) => {
          const op = await ctx.client.call('createCheckpoint', {
            vmId: vm!,
            name: (ctx.opts.name as string) ?? '',
          });
          await ctx.finish(
            op,
            (d) => `checkpoint ${d.checkpoint?.name ?? ''} (${d.checkpoint?.id ?? d.targetId}) taken\n`,
          );
        }),
      ),
  );
  cp.addCommand(
    farmOptions(new Command('ls').alias('list').description("a VM's snapshot tree (Get-VMSnapshot)"))
      .argument('<vm>', 'VM name or id')
      .action(
        farmAction(io, async (ctx, vm) => {
          const res = await ctx.client.call('listCheckpoints', { vmId: vm! });
          ctx.print(res, () =>
            tableOf<pb.Checkpoint__Output>(
              res.checkpoints,
              [
                ['ID', (c) => c.id + (c.id === res.currentId ? ' (now)' : '')],
                ['NAME', (c) => c.name],
                ['PARENT', (c) => c.parentId],
                ['VM STATE', (c) => enumName(c.vmState, 'VM_STATE_')],
                ['MEMORY', (c) => (c.includesMemory ? 'yes' : 'no')],
                ['CREATED', (c) => time(c.createdAtMs)],
              ],
              ctx.width,
            ),
          );
        }),
      ),
  );
  cp.addCommand(
    waitOption(
      farmOptions(new Command('apply').description('return the VM to a snapshot (Restore-VMSnapshot)')),
    )
      .argument('<checkpoint>', 'snapshot id')
      .option('--turn-off', 'turn the VM off first if it runs')
      .option('--save-current', 'snapshot the current state before discarding it')
      .action(
        farmAction(io, async (ctx, id) => {
          const op = await ctx.client.call('applyCheckpoint', {
            id: id!,
            turnOffFirst: ctx.opts.turnOff === true,
            saveCurrentFirst: ctx.opts.saveCurrent === true,
          });
          await ctx.finish(op, () => `checkpoint ${id} applied\n`);
        }),
      ),
  );
  cp.addCommand(
    waitOption(
      farmOptions(
        new Command('rm')
          .alias('remove')
          .description('delete a snapshot; its disk merges (Remove-VMSnapshot)'),
      ),
    )
      .argument('<checkpoint>', 'snapshot id')
      .option('--subtree', 'and every snapshot below it')
      .action(
        farmAction(io, async (ctx, id) => {
          const op = await ctx.client.call('deleteCheckpoint', {
            id: id!,
            subtree: ctx.opts.subtree === true,
          });
          await ctx.finish(op, () => `checkpoint ${id} deleted\n`);
        }),
      ),
  );
  cp.addCommand(
    farmOptions(new Command('rename').description('rename a snapshot'))
      .argument('<checkpoint>', 'snapshot id')
      .argument('<name>', 'new name')
      .action(
        farmAction(io, async (ctx, id, name) => {
          const c = await ctx.client.call('renameCheckpoint', { id: id!, name: name! });
          ctx.print(c, () => `checkpoint ${c.id} is now '${c.name}'\n`);
        }),
      ),
  );
  return cp;
}
