import { Command } from 'commander';
import { farmAction, farmOptions } from './context.js';
import { fields, tableOf } from './output.js';
import type { CliIo } from './vhd.js';

/** `hyperfarm cluster status`: the control plane as a daemon sees it. */
export function clusterCommand(io: CliIo): Command {
  const cluster = new Command('cluster').description('the control plane: its status');
  cluster.addCommand(
    farmOptions(
      new Command('status').description('members, leader, term, commit and applied index, revisions'),
    ).action(
      farmAction(io, async (ctx) => {
        const s = await ctx.client.call('getClusterStatus', {});
        ctx.print(
          s,
          () =>
            fields([
              ['Leader', s.leaderId ? `${s.leaderId} (${s.leaderAddress})` : '(none yet)'],
              ['Term', s.term],
              ['Commit index', s.commitIndex],
              ['Applied index', s.appliedIndex],
              ['Revision', s.revision],
              ['Oldest revision', s.oldestRevision],
              ['Answered by', s.answeredBy],
            ]) +
            '\n' +
            tableOf(
              s.members,
              [
                ['ID', (m) => m.id],
                ['ADDRESS', (m) => m.address],
                ['ROLE', (m) => m.role],
                ['LEADER', (m) => (m.isLeader ? 'yes' : '')],
                ['REACHABLE', (m) => (m.reachable ? 'yes' : 'no')],
                ['MATCH', (m) => String(m.matchIndex)],
              ],
              ctx.width,
            ),
        );
      }),
    ),
  );
  return cluster;
}
