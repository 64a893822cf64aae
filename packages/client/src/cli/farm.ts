import {
  checkHealth,
  createClient,
  hyperfarmProto,
  processAlive,
  promiseClient,
  readFarmFile,
  type FarmFile,
  type pb,
} from '@hyperfarm/api';
import { Command, Option } from 'commander';
import { resolve } from 'node:path';
import { UsageError, type CliIo } from './vhd.js';
import { farmAction, farmOptions } from './context.js';
import { fields } from './output.js';

/**
 * Commands that talk to a running farm. The daemon to ask is `--daemon host:port`, else
 * HYPERFARM_DAEMON, else the first daemon in the local farm's farm.json (`--data`, default
 * .hyperfarm) as `npm start` writes it.
 */

const v1 = () => hyperfarmProto().hyperfarm.v1;
const CALL = { timeoutMs: 3_000 };

interface Target {
  daemon?: string;
  data: string;
}

function localFarm(data: string): FarmFile {
  const farm = readFarmFile(resolve(data));
  if (!farm) {
    throw new UsageError(
      `no farm running from ${data}/ (no farm.json): start one with \`npm start\`, or pass --daemon host:port`,
    );
  }
  return farm;
}

function daemonAddress(t: Target): string {
  const given = t.daemon ?? process.env.HYPERFARM_DAEMON;
  if (given) {
    if (!/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(given))
      throw new UsageError(`--daemon: '${given}' is not host:port`);
    return given;
  }
  const daemon = localFarm(t.data).processes.find((p) => p.role === 'daemon');
  if (!daemon) throw new UsageError(`the farm in ${t.data}/ lists no daemon`);
  return daemon.grpcAddress;
}

const cluster = (address: string) => promiseClient(createClient(v1().ClusterService, address));
const agent = (address: string) => promiseClient(createClient(v1().AgentService, address));

const targetOptions = (cmd: Command): Command =>
  cmd
    .option('--daemon <host:port>', 'a control daemon to ask (env HYPERFARM_DAEMON)')
    .option('--data <dir>', "the local farm's data folder, to find a daemon", '.hyperfarm')
    .addOption(
      new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'),
    );

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

const gib = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(1)} GiB`;

export function membersCommand(io: CliIo): Command {
  const members = new Command('members').description('the control daemons: list them, hand leadership over');
  const list = targetOptions(
    new Command('list').description('the daemons, their roles and the leader (the default)'),
  ).action(async (o: Target & { output: string }) => {
    const res = await cluster(daemonAddress(o)).listMembers({}, CALL);
    if (o.output === 'json') return io.stdout(`${JSON.stringify(res, null, 2)}\n`);
    io.stdout(`term ${res.term}, leader ${res.leaderId || '(none yet)'}, answered by ${res.answeredBy}\n`);
    io.stdout(
      table([
        ['ID', 'ADDRESS', 'ROLE', 'LEADER', 'REACHABLE'],
        ...res.members.map((m: pb.Member__Output) => [
          m.id,
          m.address,
          m.role,
          m.isLeader ? 'yes' : '',
          m.reachable ? 'yes' : 'no',
        ]),
      ]),
    );
  });
  const transfer = targetOptions(new Command('transfer').description('hand leadership to another daemon'))
    .option('--to <id>', 'the daemon to lead next (default: the most up-to-date voter)')
    .action(async (o: Target & { to?: string }) => {
      const res = await cluster(daemonAddress(o)).transferLeadership(
        { toId: o.to ?? '' },
        { timeoutMs: 15_000 },
      );
      io.stdout(`leader is now ${res.leaderId}\n`);
    });
  return members
    .addCommand(list.alias('ls'), { isDefault: true })
    .addCommand(transfer)
    .addCommand(memberChange(io, 'add'))
    .addCommand(memberChange(io, 'promote'))
    .addCommand(memberChange(io, 'rm'));
}

const memberRow = (m: pb.Member__Output): string =>
  fields([
    ['ID', m.id],
    ['Address', m.address],
    ['Role', m.role],
    ['Leader', m.isLeader],
    ['Reachable', m.reachable],
  ]);

/** `members add|promote|rm`: Raft membership changes, one at a time, as the leader commits them. */
function memberChange(io: CliIo, what: 'add' | 'promote' | 'rm'): Command {
  const cmd = new Command(what).argument('<id>', 'daemon id');
  if (what === 'add')
    cmd
      .description(
        'add a daemon to the control plane (as a learner first with --learner, then `members promote`)',
      )
      .argument('<address>', "the new daemon's host:port")
      .option('--learner', 'join as a non-voting learner that catches up before it votes');
  else if (what === 'promote') cmd.description('make a caught-up learner a voter');
  else cmd.alias('remove').description('remove a daemon from the control plane');
  return farmOptions(cmd).action(
    farmAction(io, async (ctx, id, address) => {
      if (what === 'rm') {
        await ctx.client.call('removeMember', { id: id! });
        return ctx.print({ removed: id }, () => `daemon ${id} removed from the control plane\n`);
      }
      const m =
        what === 'add'
          ? await ctx.client.call('addMember', {
              id: id!,
              address: address!,
              learner: ctx.opts.learner === true,
            })
          : await ctx.client.call('promoteMember', { id: id! });
      ctx.print(m, () => memberRow(m));
    }),
  );
}

interface ProcessStatus {
  id: string;
  role: string;
  grpcAddress: string;
  pid: number;
  running: boolean;
  health: string;
  detail: string;
}

export function farmCommand(io: CliIo): Command {
  const farm = new Command('farm').description('the local farm started by `npm start`');
  farm.addCommand(
    new Command('status')
      .description('every process of the local farm: alive, healthy, and what it reports')
      .option('--data <dir>', "the local farm's data folder", '.hyperfarm')
      .addOption(
        new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'),
      )
      .action(async (o: { data: string; output: string }) => {
        const f = localFarm(o.data);
        const statuses = await Promise.all(f.processes.map(processStatus));
        if (o.output === 'json')
          return io.stdout(
            `${JSON.stringify({ launcherPid: f.launcherPid, startedAt: f.startedAt, processes: statuses }, null, 2)}\n`,
          );
        io.stdout(
          `farm in ${f.dataDir}, started ${f.startedAt} by launcher pid ${f.launcherPid}${processAlive(f.launcherPid) ? '' : ' (not running)'}\n`,
        );
        io.stdout(
          table([
            ['ID', 'ROLE', 'GRPC', 'PID', 'HEALTH', 'DETAIL'],
            ...statuses.map((s) => [
              s.id,
              s.role,
              s.grpcAddress,
              `${s.pid}${s.running ? '' : ' (exited)'}`,
              s.health,
              s.detail,
            ]),
          ]),
        );
      }),
  );
  return farm;
}

async function processStatus(p: FarmFile['processes'][number]): Promise<ProcessStatus> {
  const base = {
    id: p.id,
    role: p.role,
    grpcAddress: p.grpcAddress,
    pid: p.pid,
    running: processAlive(p.pid),
  };
  const health = await checkHealth(p.grpcAddress, '', 1_000).catch(() => 'UNREACHABLE');
  if (health !== 'SERVING') return { ...base, health, detail: '' };
  try {
    if (p.role === 'daemon') {
      const m = await cluster(p.grpcAddress).listMembers({}, CALL);
      return { ...base, health, detail: `${m.leaderId === p.id ? 'leader' : 'follower'}, term ${m.term}` };
    }
    const a = agent(p.grpcAddress);
    const [host, vms] = await Promise.all([a.getHostInfo({}, CALL), a.listVms({ pageSize: 1000 }, CALL)]);
    const cap = host.capacity;
    return {
      ...base,
      health,
      detail: `${cap?.logicalProcessors ?? 0} LPs, ${gib(cap?.memoryBytes ?? 0)}, ${vms.vms.length} VMs${vms.nextPageToken ? '+' : ''}, profile ${host.limits?.name ?? '?'}`,
    };
  } catch (err) {
    return { ...base, health, detail: `error: ${(err as Error).message}` };
  }
}
