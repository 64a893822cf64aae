import { Argument, Command, Option } from 'commander';
import type { pb } from '@hyperfarm/api';
import { farmAction, farmOptions, waitOption, type Ctx } from './context.js';
import { enumName, fields, table, tableOf, time, type Columns } from './output.js';
import { UsageError, type CliIo } from './vhd.js';

// `hyperfarm switch|nlb|traffic`: virtual switches (Get/New/Remove-VMSwitch,
// Add-VMNetworkAdapter), NLB clusters (nlb.exe and the NetworkLoadBalancingClusters cmdlets)
// and the traffic generator, all through ClusterService.

const SWITCH_TYPES = ['external', 'internal', 'private'];
const MODES = ['unicast', 'multicast', 'igmp-multicast'];
const PHASES = ['before', 'during', 'after'];

// --- arguments ---

function whole(text: string, option: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isInteger(n) || n < min || n > max)
    throw new UsageError(`${option}: '${text}' is not a whole number from ${min} to ${max}`);
  return n;
}

function positive(text: string, option: string): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n <= 0)
    throw new UsageError(`${option}: '${text}' is not a number above 0`);
  return n;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** "1500", "1500ms", "30s", "10m", "1h" in ms. */
function durationMs(text: string, option: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`${option}: '${text}' is not a duration such as 500ms, 30s, 10m or 1h`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 'ms']!);
}

const FILTERING: Record<string, pb.NlbFilteringMode> = {
  multiple: 'NLB_FILTERING_MODE_MULTIPLE_HOST',
  single: 'NLB_FILTERING_MODE_SINGLE_HOST',
  disabled: 'NLB_FILTERING_MODE_DISABLED',
};
const AFFINITY: Record<string, pb.NlbAffinity> = {
  none: 'NLB_AFFINITY_NONE',
  single: 'NLB_AFFINITY_SINGLE',
  network: 'NLB_AFFINITY_NETWORK',
};

/**
 * A port rule as `START[-END][/tcp|udp|both][:multiple|single|disabled[:none|single|network]]`,
 * Add-NlbClusterPortRule's -StartPort -EndPort -Protocol -Mode -Affinity in one word. What is left
 * out takes Windows NLB's defaults (both protocols, multiple host, single affinity).
 */
export function parsePortRule(text: string): pb.NlbPortRule {
  const m =
    /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|both))?(?::(multiple|single|disabled)(?::(none|single|network))?)?$/.exec(
      text.trim().toLowerCase(),
    );
  if (!m)
    throw new UsageError(
      `--rule: '${text}' is not START[-END][/tcp|udp|both][:multiple|single|disabled[:none|single|network]]`,
    );
  const start = whole(m[1]!, '--rule start port', 0, 65535);
  const end = m[2] === undefined ? start : whole(m[2], '--rule end port', 0, 65535);
  if (end < start) throw new UsageError(`--rule: '${text}' ends (${end}) before it starts (${start})`);
  return {
    startPort: start,
    endPort: end,
    protocol: m[3] ?? 'both',
    ...(m[4] ? { filteringMode: FILTERING[m[4]] } : {}),
    ...(m[5] ? { affinity: AFFINITY[m[5]] } : {}),
  };
}

// --- how things read ---

const switchColumns: Columns<pb.VirtualSwitch__Output> = [
  ['NAME', (w) => w.name],
  ['TYPE', (w) => enumName(w.type, 'SWITCH_TYPE_')],
  ['HOST', (w) => w.hostId || '(every host)'],
  ['MAC AGING', (w) => `${w.macAgingSeconds}s`],
  ['HOST ADDRESS', (w) => w.hostAddress],
  ['ID', (w) => w.id],
];

const counterCells = (c: pb.SwitchCounters__Output | null): string[] => [
  String(c?.framesReceived ?? 0),
  String(c?.framesSent ?? 0),
  String(c?.framesFlooded ?? 0),
  String(c?.framesDropped ?? 0),
];

function switchStateText(st: pb.SwitchState__Output, width?: number): string {
  const head = ['PORT', 'KIND', 'VLAN', 'VM', 'RECEIVED', 'SENT', 'FLOODED', 'DROPPED'];
  const ports = table(
    [
      head,
      ['(switch)', '', '', '', ...counterCells(st.counters)],
      ...st.ports.map((p) => [p.id, p.kind, String(p.vlanId), p.vmId, ...counterCells(p.counters)]),
    ],
    width,
  );
  const macs = tableOf(
    st.macTable,
    [
      ['VLAN', (e) => String(e.vlanId)],
      ['MAC', (e) => e.macAddress],
      ['PORT', (e) => e.port],
      ['AGE', (e) => `${(e.ageMs / 1000).toFixed(1)}s`],
    ],
    width,
  );
  return `on host ${st.hostId}:\n${ports}${st.macTable.length ? `\n${macs}` : '(MAC table empty)\n'}`;
}

const modeName = (m: string | undefined) => enumName(m, 'NLB_MODE_');

function ruleText(r: pb.NlbPortRule__Output): string {
  const ports = r.startPort === r.endPort ? `${r.startPort}` : `${r.startPort}-${r.endPort}`;
  const filter = enumName(r.filteringMode, 'NLB_FILTERING_MODE_');
  const affinity =
    r.filteringMode === 'NLB_FILTERING_MODE_MULTIPLE_HOST'
      ? ` affinity ${enumName(r.affinity, 'NLB_AFFINITY_')}`
      : '';
  return `${ports}/${r.protocol} ${filter}${affinity}`;
}

const nlbColumns: Columns<pb.NlbCluster__Output> = [
  ['NAME', (c) => c.name],
  ['VIP', (c) => c.virtualIp],
  ['MODE', (c) => modeName(c.mode)],
  ['SWITCH', (c) => c.switchName],
  ['MEMBERS', (c) => String(c.members.length)],
  ['HEARTBEAT', (c) => `${c.heartbeatPeriodMs} ms x ${c.heartbeatThreshold}`],
  ['ID', (c) => c.id],
];

/** Prints `value`; a table names VMs as people do, so it looks their names up first. */
async function printNamed<T>(
  ctx: Ctx,
  value: T,
  text: (names: Map<string, string>) => string,
): Promise<void> {
  const names = new Map<string, string>();
  if (ctx.opts.output === 'table')
    for (const v of await ctx.client.list('listVms', {}, (r) => r.vms))
      names.set(v.id, v.config?.name ?? v.id);
  ctx.print(value, () => text(names));
}

function nlbDetails(c: pb.NlbCluster__Output, names: Map<string, string>): string {
  const head = fields([
    ['Name', c.name],
    ['ID', c.id],
    ['Virtual IP', c.virtualIp],
    ['Mode', modeName(c.mode)],
    ['Cluster MAC', c.clusterMac],
    ['Switch', c.switchName],
    ['Heartbeat', `every ${c.heartbeatPeriodMs} ms, lost after ${c.heartbeatThreshold} missed`],
    [
      'Port rules',
      c.portRules.length ? c.portRules.map(ruleText).join('; ') : "(none: Windows' default rule)",
    ],
  ]);
  const members = tableOf(c.members, [
    ['VM', (m) => names.get(m.vmId) ?? m.vmId],
    ['PRIORITY', (m) => String(m.hostPriority)],
    ['WEIGHT', (m) => (m.loadWeight ? String(m.loadWeight) : 'equal')],
    ['STATE', (m) => m.state],
  ]);
  return `${head}\n${c.members.length ? members : '(no members: nlb add-member)\n'}`;
}

const bucketsOf = (m: pb.NlbMemberState__Output): string =>
  m.bucketMaps.map((b) => `${b.startPort}:${b.owners.filter((o) => o === m.hostPriority).length}`).join(' ');

function convergenceText(c: pb.NlbConvergence__Output | null): string | undefined {
  if (!c || !c.finishedAtMs) return undefined;
  return `${time(c.finishedAtMs)}, took ${c.durationMs} ms, members ${c.members.join(',')}`;
}

function nlbStateText(st: pb.NlbClusterState__Output, names: Map<string, string>, width?: number): string {
  const members = tableOf(
    st.members,
    [
      ['VM', (m) => names.get(m.vmId) ?? m.vmId],
      ['PRIORITY', (m) => String(m.hostPriority)],
      ['HOST', (m) => m.hostId],
      ['STATE', (m) => m.state],
      ['VIEW', (m) => m.view.join(',')],
      ['BUCKETS', bucketsOf],
      ['CONNECTIONS', (m) => String(m.connections)],
      ['WARNINGS', (m) => m.warnings.join('; ')],
    ],
    width,
  );
  return (
    fields([
      ['Cluster', st.clusterId],
      ['Converged', st.converged ? 'yes' : 'no'],
      ['Last convergence', convergenceText(st.lastConvergence)],
      ['Missing', st.missing.join('; ')],
    ]) + `\n${members}`
  );
}

const latency = (l: pb.LatencySummary__Output | null): string =>
  l ? `${l.p50.toFixed(1)}/${l.p90.toFixed(1)}/${l.p99.toFixed(1)}` : '';

function trafficText(r: pb.TrafficReport__Output, names: Map<string, string>, width?: number): string {
  const rows: string[][] = [['PHASE', 'MEMBER', 'REQUESTS', 'SHARE', 'P50/P90/P99 MS', 'LOST', 'RESET']];
  for (const phase of PHASES) {
    const p = r[phase as 'before' | 'during' | 'after'];
    if (!p || p.started === 0) continue;
    rows.push([
      phase,
      `(all: ${p.started} started, ${p.completed} completed)`,
      String(p.requests),
      '',
      latency(p.latencyMs),
      String(p.lost),
      String(p.reset),
    ]);
    for (const m of p.members)
      rows.push([
        '',
        m.vmId ? (names.get(m.vmId) ?? m.vmId) : '(no member)',
        String(m.requests),
        `${(m.share * 100).toFixed(1)}%`,
        latency(m.latencyMs),
        String(m.lostConnections),
        String(m.resetConnections),
      ]);
  }
  const head = `run ${r.id} on host ${r.hostId}: phase ${r.phase}, ${r.generating ? 'generating' : 'not generating'}, ${r.inFlight} in flight\n`;
  return rows.length > 1 ? `${head}${table(rows, width)}` : `${head}(no connections yet)\n`;
}

// --- switch ---

/** `hyperfarm switch ...`: virtual switches, their counters and MAC tables, and VM adapters. */
export function switchCommand(io: CliIo): Command {
  const sw = new Command('switch').description(
    'virtual switches: list, create, show (counters, MAC table), remove, connect a VM',
  );
  sw.addCommand(
    farmOptions(
      new Command('ls').alias('list').description('list the virtual switches (Get-VMSwitch)'),
    ).action(
      farmAction(io, async (ctx) => {
        const list = await ctx.client.list('listSwitches', {}, (r) => r.switches);
        ctx.print(list, () => tableOf(list, switchColumns, ctx.width));
      }),
    ),
  );
  sw.addCommand(
    farmOptions(
      new Command('new')
        .alias('create')
        .description('create a virtual switch (New-VMSwitch)')
        .argument('<name>', 'unique switch name, what adapters connect to')
        .addOption(
          new Option('--type <type>', 'External spans every host; Internal and Private stay on one')
            .choices(SWITCH_TYPES)
            .makeOptionMandatory(),
        )
        .option('--host <host>', 'the host of an Internal or Private switch')
        .option('--mac-aging <seconds>', 'seconds a learned MAC stays without traffic (default 300)')
        .option('--host-address <cidr>', "Internal switches: the host's own address, e.g. 172.20.0.1/24"),
    ).action(
      farmAction(io, async (ctx, name) => {
        const o = ctx.opts;
        const w = await ctx.client.call('createSwitch', {
          name: name!,
          type: `SWITCH_TYPE_${(o.type as string).toUpperCase()}` as pb.SwitchType,
          hostId: (o.host as string | undefined) ?? '',
          macAgingSeconds:
            o.macAging === undefined ? 0 : whole(o.macAging as string, '--mac-aging', 1, 1_000_000),
          hostAddress: (o.hostAddress as string | undefined) ?? '',
        });
        ctx.print(w, () => `switch ${w.name} (${enumName(w.type, 'SWITCH_TYPE_')}) created: ${w.id}\n`);
      }),
    ),
  );
  sw.addCommand(
    farmOptions(
      new Command('show')
        .description('a switch, and as each host runs it: counters per switch and port, the MAC table')
        .argument('<switch>', 'switch name or id')
        .option('--host <host>', 'only this host (default: every Up host the switch is on)'),
    ).action(
      farmAction(io, async (ctx, ref) => {
        const w = await ctx.client.call('getSwitch', { id: ref! });
        const only = ctx.opts.host as string | undefined;
        const hostIds = only
          ? [only]
          : w.hostId
            ? [w.hostId]
            : (await ctx.client.list('listHosts', { state: 'HOST_STATE_UP' }, (r) => r.hosts)).map(
                (h) => h.id,
              );
        const hosts = await Promise.all(
          hostIds.map((hostId) => ctx.client.call('getSwitchState', { id: w.id, hostId })),
        );
        ctx.print(
          { switch: w, hosts },
          () =>
            fields([
              ['Name', w.name],
              ['ID', w.id],
              ['Type', enumName(w.type, 'SWITCH_TYPE_')],
              ['Host', w.hostId || '(every host)'],
              ['MAC aging', `${w.macAgingSeconds}s`],
              ['Host address', w.hostAddress],
            ]) + hosts.map((st) => `\n${switchStateText(st, ctx.width)}`).join(''),
        );
      }),
    ),
  );
  sw.addCommand(
    farmOptions(
      new Command('rm')
        .alias('remove')
        .description('remove a switch no adapter is connected to (Remove-VMSwitch)')
        .argument('<switch>', 'switch name or id'),
    ).action(
      farmAction(io, async (ctx, ref) => {
        await ctx.client.call('deleteSwitch', { id: ref! });
        ctx.print({ removed: ref }, () => `switch ${ref} removed\n`);
      }),
    ),
  );
  sw.addCommand(
    farmOptions(
      new Command('connect')
        .description(
          'add a synthetic adapter on a switch to a VM that is Off (Add-VMNetworkAdapter -SwitchName)',
        )
        .argument('<vm>', 'VM name or id')
        .argument('<switch>', 'switch name')
        .option('--ip <cidr>', "the guest's IPv4 address with its prefix, e.g. 10.0.0.11/24")
        .option('--vlan <id>', 'access VLAN, 1 to 4094 (default: untagged)')
        .option('--mac <mac>', 'a static MAC, 00-15-5D-xx-xx-xx (default: from the host pool)'),
    ).action(
      farmAction(io, async (ctx, vmRef, switchName) => {
        const o = ctx.opts;
        const vm = await ctx.client.call('getVm', { id: vmRef! });
        const adapter: pb.NetworkAdapter = {
          kind: 'NIC_KIND_SYNTHETIC',
          switchName: switchName!,
          vlanId: o.vlan === undefined ? 0 : whole(o.vlan as string, '--vlan', 1, 4094),
          ipv4Address: (o.ip as string | undefined) ?? '',
          macAddress: (o.mac as string | undefined) ?? '',
          staticMac: o.mac !== undefined,
        };
        const v = await ctx.client.call('updateVm', {
          id: vm.id,
          config: { networkAdapters: [...(vm.config?.networkAdapters ?? []), adapter] },
          updateMask: { paths: ['config.network_adapters'] },
        });
        ctx.print(v, () => {
          const n = v.config!.networkAdapters.at(-1)!;
          return `VM ${v.config?.name} connected to ${n.switchName}: ${n.macAddress || '(MAC at start)'} ${n.ipv4Address}\n`;
        });
      }),
    ),
  );
  return sw;
}

// --- nlb ---

/** nlb.exe's member commands, through ControlNlbMember on the member's host. */
const CONTROLS: [name: string, action: pb.NlbControl, help: string][] = [
  ['start', 'NLB_CONTROL_START', 'the member joins the cluster (Start-NlbClusterNode)'],
  ['stop', 'NLB_CONTROL_STOP', 'the member leaves at once; its connections are lost (Stop-NlbClusterNode)'],
  ['suspend', 'NLB_CONTROL_SUSPEND', 'the member leaves and ignores all but resume (Suspend-NlbClusterNode)'],
  ['resume', 'NLB_CONTROL_RESUME', 'undo suspend; the member joins again (Resume-NlbClusterNode)'],
];
const RULE_CONTROLS: [name: string, action: pb.NlbControl, help: string][] = [
  [
    'drain-rule',
    'NLB_CONTROL_DRAIN_RULE',
    'no new connections of the rule covering PORT on the member (Disable-NlbClusterPortRule -Drain)',
  ],
  ['disable-rule', 'NLB_CONTROL_DISABLE_RULE', "drop the member's traffic of the rule covering PORT at once"],
  ['enable-rule', 'NLB_CONTROL_ENABLE_RULE', 'undo drain-rule or disable-rule (Enable-NlbClusterPortRule)'],
];

function memberStateLine(m: pb.NlbMemberState__Output): string {
  return `member ${m.vmId} (priority ${m.hostPriority}) on ${m.hostId}: ${m.state}, ${m.connections} connections\n`;
}

/** `hyperfarm nlb ...`: NLB clusters, their members, and the members' converged state. */
export function nlbCommand(io: CliIo): Command {
  const nlb = new Command('nlb').description(
    'NLB clusters: create, members, converged state, drainstop and the other nlb.exe commands',
  );
  nlb.addCommand(
    farmOptions(new Command('ls').alias('list').description('list the NLB clusters (Get-NlbCluster)')).action(
      farmAction(io, async (ctx) => {
        const list = await ctx.client.list('listNlbClusters', {}, (r) => r.clusters);
        ctx.print(list, () => tableOf(list, nlbColumns, ctx.width));
      }),
    ),
  );
  nlb.addCommand(
    farmOptions(
      new Command('new')
        .alias('create')
        .description('create an NLB cluster with no members (New-NlbCluster)')
        .argument('<name>', 'unique cluster name')
        .requiredOption('--vip <ip>', 'the virtual IPv4 address, e.g. 10.0.0.100')
        .requiredOption('--switch <name>', "the switch the members' adapters are on")
        .addOption(new Option('--mode <mode>', 'operation mode').choices(MODES).default('unicast'))
        .option(
          '--rule <rule...>',
          'port rules, START[-END][/tcp|udp|both][:multiple|single|disabled[:none|single|network]] (default: all ports)',
        )
        .option('--heartbeat-ms <ms>', 'ms between heartbeats, 10 to 60000 (default 1000)')
        .option('--threshold <n>', 'missed heartbeats before a member is lost (default 5)'),
    ).action(
      farmAction(io, async (ctx, name) => {
        const o = ctx.opts;
        const c = await ctx.client.call('createNlbCluster', {
          name: name!,
          virtualIp: o.vip as string,
          mode: `NLB_MODE_${(o.mode as string).toUpperCase().replace(/-/g, '_')}` as pb.NlbMode,
          switchName: o.switch as string,
          portRules: ((o.rule as string[] | undefined) ?? []).map(parsePortRule),
          heartbeatPeriodMs:
            o.heartbeatMs === undefined ? 0 : whole(o.heartbeatMs as string, '--heartbeat-ms', 10, 60_000),
          heartbeatThreshold:
            o.threshold === undefined ? 0 : whole(o.threshold as string, '--threshold', 1, 1000),
        });
        ctx.print(c, () => `NLB cluster ${c.name} created: ${c.virtualIp} (${c.clusterMac}), id ${c.id}\n`);
      }),
    ),
  );
  nlb.addCommand(
    farmOptions(
      new Command('show')
        .description('one NLB cluster: its settings and members')
        .argument('<cluster>', 'name or id'),
    ).action(
      farmAction(io, async (ctx, ref) => {
        const c = await ctx.client.call('getNlbCluster', { id: ref! });
        await printNamed(ctx, c, (names) => nlbDetails(c, names));
      }),
    ),
  );
  nlb.addCommand(
    farmOptions(
      new Command('rm')
        .alias('remove')
        .description('delete an NLB cluster; its VMs stay (Remove-NlbCluster)')
        .argument('<cluster>', 'name or id'),
    ).action(
      farmAction(io, async (ctx, ref) => {
        await ctx.client.call('deleteNlbCluster', { id: ref! });
        ctx.print({ removed: ref }, () => `NLB cluster ${ref} removed\n`);
      }),
    ),
  );
  nlb.addCommand(
    farmOptions(
      new Command('add-member')
        .description('add a VM to the cluster; the members converge on a new map (Add-NlbClusterNode)')
        .argument('<cluster>', 'name or id')
        .argument('<vm>', 'VM name or id')
        .requiredOption('--priority <n>', 'unique host priority, 1 to 32')
        .option('--weight <n>', 'load weight 1 to 100 (default: equal load)'),
    ).action(
      farmAction(io, async (ctx, ref, vm) => {
        const o = ctx.opts;
        const c = await ctx.client.call('addNlbMember', {
          clusterId: ref!,
          member: {
            vmId: vm!,
            hostPriority: whole(o.priority as string, '--priority', 1, 32),
            loadWeight: o.weight === undefined ? 0 : whole(o.weight as string, '--weight', 1, 100),
          },
        });
        ctx.print(c, () => `${vm} joined NLB cluster ${c.name}: ${c.members.length} members\n`);
      }),
    ),
  );
  nlb.addCommand(
    farmOptions(
      new Command('rm-member')
        .description('remove a member at once, without draining (Remove-NlbClusterNode)')
        .argument('<cluster>', 'name or id')
        .argument('<vm>', 'VM name or id'),
    ).action(
      farmAction(io, async (ctx, ref, vm) => {
        const c = await ctx.client.call('removeNlbMember', { clusterId: ref!, vmId: vm! });
        ctx.print(c, () => `${vm} left NLB cluster ${c.name}: ${c.members.length} members\n`);
      }),
    ),
  );
  nlb.addCommand(
    farmOptions(
      new Command('state')
        .description('the cluster as its members see it: views, buckets, connections, last convergence')
        .argument('<cluster>', 'name or id'),
    ).action(
      farmAction(io, async (ctx, ref) => {
        const st = await ctx.client.call('getNlbClusterState', { id: ref! });
        await printNamed(ctx, st, (names) => nlbStateText(st, names, ctx.width));
      }),
    ),
  );
  nlb.addCommand(
    waitOption(
      farmOptions(
        new Command('drainstop')
          .description(
            'no new connections on the member; it stops once its connections end (Stop-NlbClusterNode -Drain)',
          )
          .argument('<cluster>', 'name or id')
          .argument('<vm>', 'VM name or id'),
      ),
    ).action(
      farmAction(io, async (ctx, ref, vm) => {
        const op = await ctx.client.call('drainstopNlbMember', { clusterId: ref!, vmId: vm! });
        await ctx.finish(
          op,
          (done) => `${vm} drained and stopped${done.message ? `: ${done.message}` : ''}\n`,
        );
      }),
    ),
  );
  for (const [name, action, help] of CONTROLS)
    nlb.addCommand(
      farmOptions(
        new Command(name)
          .description(help)
          .argument('<cluster>', 'name or id')
          .argument('<vm>', 'VM name or id'),
      ).action(
        farmAction(io, async (ctx, ref, vm) => {
          const m = await ctx.client.call('controlNlbMember', { clusterId: ref!, vmId: vm!, action });
          ctx.print(m, () => memberStateLine(m));
        }),
      ),
    );
  for (const [name, action, help] of RULE_CONTROLS)
    nlb.addCommand(
      farmOptions(
        new Command(name)
          .description(help)
          .argument('<cluster>', 'name or id')
          .argument('<vm>', 'VM name or id')
          .argument('<port>', 'a port the rule covers'),
      ).action(
        farmAction(io, async (ctx, ref, vm, port) => {
          const m = await ctx.client.call('controlNlbMember', {
            clusterId: ref!,
            vmId: vm!,
            action,
            port: whole(port!, 'port', 0, 65535),
          });
          ctx.print(m, () => memberStateLine(m));
        }),
      ),
    );
  return nlb;
}

// --- traffic ---

const hostOption = (cmd: Command) =>
  cmd.option('--host <host>', 'the host running the run (default: whichever Up host has it)');

/** `hyperfarm traffic ...`: the traffic generator: clients on an External switch sending to a VIP. */
export function trafficCommand(io: CliIo): Command {
  const traffic = new Command('traffic').description(
    'the traffic generator: Poisson clients to a virtual IP; per-member share, latency, lost connections',
  );
  traffic.addCommand(
    farmOptions(
      new Command('start')
        .description('start clients on an External switch, sending to a virtual IP')
        .requiredOption('--switch <name>', 'the External switch the clients are on')
        .requiredOption('--vip <ip>', 'the address they send to, e.g. 10.0.0.100')
        .option('--id <id>', 'a name for the run (default: one is picked)')
        .option('--host <host>', 'the host whose generator runs the clients (default: the first Up host)')
        .option('--port <port>', 'the port they send to', '80')
        .addOption(
          new Option('--protocol <protocol>', 'connections or datagrams')
            .choices(['tcp', 'udp'])
            .default('tcp'),
        )
        .option('--rate <n>', 'new connections per second on average', '100')
        .option('--duration <time>', 'how long new connections keep coming, e.g. 30s, 10m', '60s')
        .option('--clients <n>', 'distinct client addresses (default 1000)')
        .option('--requests <n>', 'requests per connection (default 1)')
        .option('--vlan <id>', "the clients' VLAN (default: untagged)")
        .option('--seed <n>', "the run's random seed", '1'),
    ).action(
      farmAction(io, async (ctx) => {
        const o = ctx.opts;
        const opt = (name: string, max: number, min = 0) =>
          o[name] === undefined ? 0 : whole(o[name] as string, `--${name}`, min, max);
        const r = await ctx.client.call('startTraffic', {
          hostId: (o.host as string | undefined) ?? '',
          traffic: {
            id: (o.id as string | undefined) ?? '',
            switchName: o.switch as string,
            virtualIp: o.vip as string,
            port: whole(o.port as string, '--port', 1, 65535),
            protocol: o.protocol as string,
            ratePerSecond: positive(o.rate as string, '--rate'),
            durationMs: durationMs(o.duration as string, '--duration'),
            clients: opt('clients', 1_000_000, 1),
            requestsPerConnection: opt('requests', 1_000_000, 1),
            vlanId: opt('vlan', 4094, 1),
            seed: whole(o.seed as string, '--seed', 0, 0xffffffff),
          },
        });
        ctx.print(r, () => `traffic run ${r.id} started on host ${r.hostId}\n`);
      }),
    ),
  );
  traffic.addCommand(
    hostOption(
      farmOptions(
        new Command('show')
          .description("a run's figures: per phase and member, requests, share, latency, lost and reset")
          .argument('<id>', 'the run'),
      ),
    ).action(
      farmAction(io, async (ctx, id) => {
        const r = await ctx.client.call('getTraffic', {
          hostId: (ctx.opts.host as string | undefined) ?? '',
          id: id!,
        });
        await printNamed(ctx, r, (names) => trafficText(r, names, ctx.width));
      }),
    ),
  );
  traffic.addCommand(
    hostOption(
      farmOptions(
        new Command('mark')
          .description('connections started from now on count in this phase (around a fault)')
          .argument('<id>', 'the run')
          .addArgument(new Argument('<phase>', 'before, during or after').choices(PHASES)),
      ),
    ).action(
      farmAction(io, async (ctx, id, phase) => {
        const r = await ctx.client.call('markTrafficPhase', {
          hostId: (ctx.opts.host as string | undefined) ?? '',
          id: id!,
          phase: phase!,
        });
        ctx.print(r, () => `traffic run ${r.id}: new connections count as '${r.phase}'\n`);
      }),
    ),
  );
  traffic.addCommand(
    hostOption(
      farmOptions(
        new Command('stop')
          .description("stop a run's new connections and print its figures")
          .argument('<id>', 'the run')
          .option('--remove', 'also forget the run and unplug its router port'),
      ),
    ).action(
      farmAction(io, async (ctx, id) => {
        const r = await ctx.client.call('stopTraffic', {
          hostId: (ctx.opts.host as string | undefined) ?? '',
          id: id!,
          remove: ctx.opts.remove === true,
        });
        await printNamed(ctx, r, (names) => trafficText(r, names, ctx.width));
      }),
    ),
  );
  return traffic;
}

/** The network command groups, registered together in the program. */
export const networkCommands = (io: CliIo): Command[] => [
  switchCommand(io),
  nlbCommand(io),
  trafficCommand(io),
];
