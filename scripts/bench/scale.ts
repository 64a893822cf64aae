/**
 * bench:scale (issue 14) — the live farm at scale: 3 real daemons and 1,000 real hosts (4 agent
 * processes in multi-host mode, 250 hosts each) on this machine, filled to 50,000 VMs.
 *
 * - The fill, the load: CreateVm `--concurrency` calls in flight (256), paced at `--fill-rate`
 *   creates a second if given (by default as fast as the calls in flight allow: about 600/s on
 *   2 cores), small VMs (64 MiB, 1 vCPU, created Off: placed and created on their hosts, not run),
 *   until every VM has its host. Its calls' own latency is reported, but it measures mostly the
 *   queue the bench keeps (Little's law: 256 in flight at 600/s is 430 ms), not the API.
 * - The probe, the API as a user sees it while the farm is loaded: on a thread of its own
 *   (`probe-thread.ts`), paced, each kind one call at a time: GetVm every `--probe-ms` (20 ms),
 *   ListVms (one page of 100) every 5 times that, CreateVm every 10 times that, linearizable, on
 *   the leader, through the fill, the hosts' creating and the full farm.
 * - A Watch stream (VMs and hosts) records its lag: when we receive an event against the time
 *   its change committed (one machine, one clock).
 * - The resident memory (VmRSS) of every daemon and agent process, sampled every 2 s, and each
 *   daemon's CPU time per phase (this shared machine's load moves the latencies, less the CPU).
 * - Failover: a single-host agent with HA VMs running, and another to take them (both on one
 *   cluster storage), joined once the farm is full; kill -9 of the first, timed until its host is
 *   Down and until every one of its VMs is Running on the other (from the Watch stream). The
 *   probe stops creating VMs as they join, so the farm no longer grows meanwhile.
 *
 * Phases: the fill (until every VM is acknowledged and placed), the hosts creating the VMs placed
 * on them (until every create operation has ended), the farm full (`--settle` seconds). The probe's
 * figures are given per phase; `api_p99_ms` is the probe's worst p99 under load (the fill and the
 * hosts creating), never the fill's own calls. HF_BENCH_LOGS=DIR also writes the probe's calls over 100 ms to DIR/slow-calls.txt.
 *
 * Goals (issue 14): API p99 under 100 ms, daemon memory under 2 GB.
 * Last line: {"hosts", "vms", "api_p99_ms", "daemon_rss_mb", "watch_lag_ms", ...}.
 */
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import type { pb } from '@hyperfarm/api';
import { BenchFarm, cluster, cpuSeconds, rssMb, say, summary, until } from './farm-harness.js';
import { probeInThread } from './probe-thread.js';
import { watchInThread } from './watch-thread.js';

const opts = new Command('bench:scale')
  .option('--hosts <n>', 'hosts in the farm', Number, 1000)
  .option('--agents <n>', 'agent processes the hosts are shared among', Number, 4)
  .option('--vms <n>', 'VMs to fill the farm with', Number, 50_000)
  .option('--concurrency <n>', 'CreateVm calls in flight during the fill', Number, 256)
  .option(
    '--fill-rate <n>',
    'creates a second the fill sends at most (0: as many as the calls in flight allow)',
    Number,
    0,
  )
  .option(
    '--probe-ms <n>',
    'the probe sends a GetVm every n ms, a ListVms every 5n, a CreateVm every 10n',
    Number,
    20,
  )
  .option('--ha-vms <n>', 'HA VMs on the host that is killed', Number, 20)
  .option('--settle <s>', 'seconds the probe goes on once the farm is full', Number, 20)
  .option('--profile <dir>', 'write a CPU profile of every daemon and agent process into this folder')
  .parse()
  .opts<{
    hosts: number;
    agents: number;
    vms: number;
    concurrency: number;
    fillRate: number;
    probeMs: number;
    haVms: number;
    settle: number;
    profile?: string;
  }>();

const MIB = 1024 * 1024;
const small = (name: string): pb.VmConfig => ({
  name,
  processor: { count: 1 },
  memoryBytes: 64 * MIB,
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
  workload: { bootMs: 200 },
});
const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

const farm = new BenchFarm('scale', opts.profile);
let samplerTimer: NodeJS.Timeout | undefined;
try {
  say(`load average at the start: ${load()}`);
  let leader = await farm.startDaemons(3);
  const started = Date.now();
  farm.startRacks(opts.hosts, opts.agents);
  await farm.hostsUp(opts.hosts);
  const upS = (Date.now() - started) / 1000;
  say(`${opts.hosts} hosts Up in ${upS.toFixed(1)} s (${opts.agents} agent processes)`);

  // Memory: the peak of every process, sampled every 2 s.
  const peak = new Map<string, number>();
  const sample = () => {
    for (const p of [...farm.daemons, ...farm.agents])
      peak.set(p.id, Math.max(peak.get(p.id) ?? 0, rssMb(p.proc.pid)));
  };
  sample();
  samplerTimer = setInterval(sample, 2_000);
  const idleDaemonMb = Math.max(...farm.daemons.map((d) => rssMb(d.proc.pid)));

  // fill: until every VM is acknowledged and placed; hosts: until every VM is created on its host
  // (the reconciler's agent calls and the hosts' reports trail the placements); full: the farm at
  // rest but for the probe.
  // failover: from the end of the full phase on (hosts joining, HA VMs started, one host killed).
  type Phase = 'fill' | 'hosts' | 'full' | 'failover';
  let fullSince = Infinity;
  let failoverSince = Infinity;
  let hostsSince = Infinity;

  // The Watch stream: lag of every event, the VMs placed, and the failover's VMs. Followed on a
  // thread of its own, so that this thread's event loop (256 creates in flight during the fill)
  // does not add to the lag it measures; the times below are taken on that thread.
  const phaseAt = (at: number): Phase =>
    at >= failoverSince ? 'failover' : at >= fullSince ? 'full' : at >= hostsSince ? 'hosts' : 'fill';
  const lag = { fill: [] as number[], hosts: [] as number[], full: [] as number[], failover: [] as number[] };
  const created = new Set<string>();
  const placed = new Set<string>();
  let placedOfCreated = 0;
  let gaps = 0;
  const ha = new Set<string>();
  // Each host's state as the stream last told it (the failover's hosts are waited for by it).
  const hostState = new Map<string, string>();
  const haRunningOn = new Map<string, string>();
  let onHaEvent: (e: pb.Event__Output, receivedAt: number) => void = () => undefined;
  const from = Number((await leader.getClusterStatus({})).revision) + 1;
  const watch = watchInThread({
    ...farm.watchFrom({ fromRevision: from, kinds: ['RESOURCE_KIND_VM', 'RESOURCE_KIND_HOST'] }),
    onEvent: ({ event: e, receivedAt, lagMs }) => {
      lag[phaseAt(receivedAt)].push(lagMs);
      if (e.vm?.status?.hostId && !placed.has(e.id)) {
        placed.add(e.id);
        if (created.has(e.id)) placedOfCreated++;
      }
      if (e.host) hostState.set(e.host.id, e.host.state);
      onHaEvent(e, receivedAt);
    },
    onGap: () => gaps++,
    say,
  });
  const noteCreated = (id: string) => {
    if (created.has(id)) return;
    created.add(id);
    if (placed.has(id)) placedOfCreated++;
  };

  // The probe, on a thread of its own, paced: its calls do not queue behind the fill's in this
  // process. Each sample goes to the phase it was sent in.
  type Call = 'get' | 'list' | 'create';
  const latency = {
    fill: { get: [] as number[], list: [] as number[], create: [] as number[] },
    hosts: { get: [] as number[], list: [] as number[], create: [] as number[] },
    full: { get: [] as number[], list: [] as number[], create: [] as number[] },
    failover: { get: [] as number[], list: [] as number[], create: [] as number[] },
  };
  const probeErrors: string[] = [];
  // Calls over 100 ms, with when they started (wall clock), to set beside a daemon's log.
  const slow: { at: number; call: Call; ms: number; phase: Phase }[] = [];
  const probe = probeInThread({
    address: farm.leaderAddress,
    everyMs: { get: opts.probeMs, list: opts.probeMs * 5, create: opts.probeMs * 10 },
    config: small('probe'),
    prefix: 'probe',
    onSamples: (samples, probeCreated) => {
      for (const x of samples) {
        const ph = phaseAt(x.at);
        latency[ph][x.call].push(x.ms);
        if (x.error) probeErrors.push(x.error);
        if (x.ms > 100) slow.push({ at: x.at, call: x.call, ms: Math.round(x.ms), phase: ph });
      }
      for (const id of probeCreated) noteCreated(id);
    },
  });

  // Each daemon's CPU time (user + system) at each phase's start: wall-clock latencies on this
  // shared machine follow its load, the daemons' CPU per phase much less.
  const cpuMarks: { at: number; cpu: number[] }[] = [];
  const markCpu = () =>
    cpuMarks.push({ at: Date.now(), cpu: farm.daemons.map((d) => cpuSeconds(d.proc.pid)) });

  // The fill.
  const bulk: number[] = [];
  markCpu();
  const t0 = Date.now();
  let shown = t0;
  let idsToProbe: string[] = [];
  const { retried } = await farm.createVms({
    count: opts.vms,
    concurrency: opts.concurrency,
    ratePerS: opts.fillRate,
    config: (i) => small(`vm-${i}`),
    requestId: (i) => `scale-${i}`,
    created: (id, ms) => {
      noteCreated(id);
      idsToProbe.push(id);
      if (idsToProbe.length >= 100 || created.size < 1000) {
        probe.addIds(idsToProbe);
        idsToProbe = [];
      }
      bulk.push(ms);
      if (Date.now() - shown > 15_000) {
        shown = Date.now();
        say(`  ${created.size} created, ${placed.size} placed, load ${load()}`);
      }
    },
  });
  probe.addIds(idsToProbe);
  const ackS = (Date.now() - t0) / 1000;
  say(`${opts.vms} CreateVm acknowledged in ${ackS.toFixed(1)} s (${Math.round(opts.vms / ackS)}/s)`);
  if (retried > 0) say(`${retried} creates sent again after an error (a leader change)`);

  // Every VM has its host: from the stream, or, if it lost events, from a listing (of a follower,
  // so as not to load the leader the probe measures). The probe goes on creating: a listing is
  // held against the VMs created before it began.
  const follower = cluster(farm.daemons.find((d) => d.address !== farm.leaderAddress)!.address);
  const countPlaced = async (): Promise<number> => {
    if (gaps === 0) return placedOfCreated - created.size;
    const target = created.size;
    let n = 0;
    let pageToken = '';
    do {
      const page = await follower.listVms({ pageSize: 1000, pageToken, consistency: 'CONSISTENCY_STALE' });
      n += page.vms.filter((v) => v.status?.hostId).length;
      pageToken = page.nextPageToken;
    } while (pageToken);
    return n - target;
  };
  await until('every VM placed', 600_000, async () => {
    if ((await countPlaced()) >= 0) return true;
    await new Promise((r) => setTimeout(r, gaps === 0 ? 0 : 5_000));
    return undefined;
  });
  const placedS = (Date.now() - t0) / 1000;
  say(`${created.size} VMs placed after ${placedS.toFixed(1)} s; load ${load()}`);

  // The hosts create their VMs (the reconciler's calls, then the hosts' reports).
  hostsSince = Date.now();
  markCpu();
  // A VM's create operation ends when its host reports the VM: the creates still pending, asked
  // of a follower every 2 s (the Watch follows VMs and hosts only, so its lag stays comparable).
  const fillVms = new Set(created);
  const creating = async (): Promise<number> => {
    let n = 0;
    let pageToken = '';
    do {
      const page = await follower.listOperations({
        pageSize: 1000,
        pageToken,
        pendingOnly: true,
        consistency: 'CONSISTENCY_STALE',
      });
      n += page.operations.filter((o) => fillVms.has(o.targetId)).length;
      pageToken = page.nextPageToken;
    } while (pageToken);
    return n;
  };
  const behind = await creating();
  await until('every VM created on its host', 600_000, async () => {
    if ((await creating()) === 0) return true;
    await new Promise((r) => setTimeout(r, 2_000));
    return undefined;
  });
  const onHostS = (Date.now() - t0) / 1000;
  say(
    `${created.size} VMs created on their hosts after ${onHostS.toFixed(1)} s (${behind} still to create when all were placed); load ${load()}`,
  );

  // The full farm, at rest but for the probe.
  fullSince = Date.now();
  markCpu();
  const indexAtFull = Number((await leader.getClusterStatus({})).commitIndex);
  say(`farm full from ${new Date(fullSince).toISOString()} (${fullSince})`);
  await new Promise((r) => setTimeout(r, opts.settle * 1000));
  failoverSince = Date.now();
  markCpu();
  // Raft snapshots the farm every 100,000 entries or 64 MiB of them: whether one fell in the runs
  // above.
  const indexAfter = Number((await leader.getClusterStatus({})).commitIndex);
  say(
    `Raft log: ${indexAtFull} entries when full, ${indexAfter} after ${opts.settle} s (a snapshot every 100,000 entries, or once the log holds a quarter of the last snapshot, 8 to 64 MiB)`,
  );

  // Failover: two single-host agents on one cluster storage. A failure here is reported, and the
  // rest of the figures still are.
  let detectMs: number | undefined;
  let failoverMs: number | undefined;
  try {
    leader = await farm.leader();
    probe.setAddress(farm.leaderAddress);
    probe.setCreates(false);
    const storage = ['--cluster-storage-path', join(farm.dir, 'cluster')];
    const src = farm.startAgent('ha-src', 1, storage);
    farm.startAgent('ha-dst', 1, storage);
    // Told by the Watch stream, not by listing every host: a 1,000-host ListHosts polled on the
    // leader (each host's view counts its VMs) was the bench's own load on the daemon its probe
    // measures, seconds of it at 50,000 VMs (docs/benchmarks.md, 2026-12-03), and a follower
    // fetches the leader's listing for its hosts' live view. Listed (on a follower) only if the
    // stream lost events.
    const joined = () => ['ha-src', 'ha-dst'].every((id) => hostState.get(id) === 'HOST_STATE_UP');
    await until('the failover hosts Up', 600_000, async () => (joined() || gaps > 0 ? true : undefined));
    if (!joined()) {
      const aside = farm.daemons.find((d) => d.address !== farm.leaderAddress)!.address;
      await farm.hostsUp(opts.hosts + 2, aside);
    }
    for (let i = 0; i < opts.haVms; i++) {
      const op = await leader.createVm({ config: small(`ha-${i}`), hostId: 'ha-src', start: true });
      ha.add(op.targetId);
    }
    // A host just Up is granted its lease at once, but a start may still beat the grant (it is
    // refused: 'the host lease expired'): the VMs not Running are started again until they are.
    await until(`${opts.haVms} HA VMs Running on ha-src`, 90_000, async () => {
      const { vms } = await leader.listVms({ hostId: 'ha-src', pageSize: 1000 });
      const off = vms.filter((v) => ha.has(v.id) && v.status?.state === 'VM_STATE_OFF');
      for (const v of off)
        await leader.changeVmState({ id: v.id, action: 'VM_ACTION_START' }).catch(() => undefined);
      const running = vms.filter((v) => ha.has(v.id) && v.status?.state === 'VM_STATE_RUNNING').length;
      if (running >= opts.haVms) return true;
      await new Promise((r) => setTimeout(r, 1_000));
      return undefined;
    });
    let downAt = 0;
    let allRunning!: (t: number) => void;
    const recovered = new Promise<number>((r) => (allRunning = r));
    onHaEvent = (e, receivedAt) => {
      if (e.host?.id === 'ha-src' && e.host.state === 'HOST_STATE_DOWN' && !downAt) downAt = receivedAt;
      if (!ha.has(e.id) || !e.vm?.status) return;
      const st = e.vm.status;
      if (st.hostId === 'ha-dst' && st.state === 'VM_STATE_RUNNING') haRunningOn.set(e.id, st.hostId);
      else haRunningOn.delete(e.id);
      if (haRunningOn.size === ha.size) allRunning(receivedAt);
    };
    const killed = Date.now();
    await farm.killAgent(src);
    // The stream tells; a listing every second stands in if it lost events.
    const recoveredAt = await Promise.race([
      recovered,
      until(`${opts.haVms} HA VMs Running on ha-dst`, 300_000, async () => {
        await new Promise((r) => setTimeout(r, 1_000));
        const { vms } = await leader.listVms({ hostId: 'ha-dst', state: 'VM_STATE_RUNNING', pageSize: 1000 });
        return vms.filter((v) => ha.has(v.id)).length >= opts.haVms ? Date.now() : undefined;
      }),
    ]);
    detectMs = downAt ? downAt - killed : undefined;
    failoverMs = recoveredAt - killed;
    say(
      `kill -9 of a host with ${opts.haVms} HA VMs: Down after ${detectMs ?? '?'} ms, all Running elsewhere after ${failoverMs} ms`,
    );
  } catch (err) {
    say(`failover not measured: ${(err as Error).message}`);
    for (const id of ha) {
      const vm = await leader.getVm({ id }).catch(() => undefined);
      say(`  ${id}: on '${vm?.status?.hostId}', ${vm?.status?.state}: ${vm?.status?.message}`);
    }
  }

  markCpu();
  await probe.stop();
  watch.stop();
  await watch.stopped;
  clearInterval(samplerTimer);
  sample();

  // HF_BENCH_LOGS: the slow probe calls beside the processes' logs, to match with a daemon's.
  const logs = process.env['HF_BENCH_LOGS'];
  if (logs) {
    const leaderId = farm.daemons.find((d) => d.address === farm.leaderAddress)?.id;
    const lines = slow.map((x) => `${x.at} ${new Date(x.at).toISOString()} ${x.phase} ${x.call} ${x.ms}`);
    writeFileSync(join(logs, 'slow-calls.txt'), `leader ${leaderId}\n${lines.join('\n')}\n`);
    say(`${slow.length} probe calls over 100 ms: ${join(logs, 'slow-calls.txt')}`);
  }
  if (probeErrors.length > 0) say(`${probeErrors.length} probe calls failed, first: ${probeErrors[0]}`);
  const phases = ['fill', 'hosts', 'full', 'failover'] as const;
  const s = Object.fromEntries(
    phases.map((ph) => [
      ph,
      {
        get: summary(latency[ph].get),
        list: summary(latency[ph].list),
        create: summary(latency[ph].create),
      },
    ]),
  ) as Record<Phase, Record<'get' | 'list' | 'create', ReturnType<typeof summary>>>;
  const phaseName = {
    fill: 'during the fill',
    hosts: 'hosts creating',
    full: 'farm full     ',
    failover: 'failover      ',
  };
  for (const ph of phases)
    for (const call of ['get', 'list', 'create'] as const)
      say(
        `${phaseName[ph]} ${{ get: 'GetVm', list: 'ListVms(100)', create: 'CreateVm' }[call].padEnd(13)} p50 ${s[ph][call].p50} ms, p99 ${s[ph][call].p99} ms (${s[ph][call].n} calls)`,
      );
  const bulkS = summary(bulk);
  say(
    `the fill's own CreateVm calls (${opts.concurrency} in flight, ${opts.fillRate > 0 ? `paced at ${opts.fillRate}/s` : 'unpaced'}, ${Math.round(opts.vms / ackS)}/s achieved): p50 ${bulkS.p50} ms, p99 ${bulkS.p99} ms`,
  );
  const lagS = summary([...lag.fill, ...lag.hosts, ...lag.full]);
  const lagOf = (ph: Phase) => {
    const l = summary(lag[ph]);
    return `p50 ${l.p50} ms, p99 ${l.p99} ms, max ${l.max} ms (${l.n} events)`;
  };
  say(
    `Watch lag during the fill: ${lagOf('fill')}; hosts creating: ${lagOf('hosts')}; farm full: ${lagOf('full')}; failover: ${lagOf('failover')}; followed again ${watch.restarts()} times, ${gaps} gaps`,
  );
  // The leader is the daemon the probe called at the end (a leader change shows in the others).
  const leaderAt = farm.daemons.findIndex((d) => d.address === farm.leaderAddress);
  const cpuOf = (i: number) => {
    const [a, b] = [cpuMarks[i]!, cpuMarks[i + 1]!];
    const wallS = (b.at - a.at) / 1000;
    const used = b.cpu.map((c, d) => c - a.cpu[d]!);
    const others = used.filter((_, d) => d !== leaderAt).map((c) => c.toFixed(1));
    return `${used[leaderAt]!.toFixed(1)} s in ${wallS.toFixed(1)} s (${Math.round((100 * used[leaderAt]!) / wallS)}%; followers ${others.join(', ')} s)`;
  };
  say(
    `daemon CPU, the leader's: fill ${cpuOf(0)}; hosts creating ${cpuOf(1)}; farm full ${cpuOf(2)}; failover ${cpuOf(3)}`,
  );
  const daemonMb = Math.max(...farm.daemons.map((d) => peak.get(d.id) ?? 0));
  const agentMb = Math.max(
    ...farm.agents.filter((a) => a.id.startsWith('rack')).map((a) => peak.get(a.id) ?? 0),
  );
  say(
    `peak RSS: ${[...peak].map(([id, mb]) => `${id} ${mb} MiB`).join(', ')} (daemons idle: ${idleDaemonMb} MiB)`,
  );
  // Under load: while the farm is filled, until its hosts have created every VM.
  const p99Of = (ph: Phase) => Math.max(s[ph].get.p99, s[ph].list.p99, s[ph].create.p99);
  const apiP99 = Math.max(p99Of('fill'), p99Of('hosts'));
  say(
    `goals: API p99 ${apiP99} ms (< 100 ms: ${apiP99 < 100 ? 'met' : 'missed'}), daemon RSS ${daemonMb} MiB (< 2 GB: ${daemonMb * MIB < 2e9 ? 'met' : 'missed'})`,
  );
  say(`load average at the end: ${load()}`);
  say(
    `details: ${JSON.stringify({
      watch_lag_p50_ms: lagS.p50,
      watch_lag_full_p99_ms: summary(lag.full).p99,
      get_p50_ms: s.fill.get.p50,
      get_p99_ms: s.fill.get.p99,
      list_p50_ms: s.fill.list.p50,
      list_p99_ms: s.fill.list.p99,
      create_p50_ms: s.fill.create.p50,
      create_p99_ms: s.fill.create.p99,
      fill_api_p99_ms: p99Of('fill'),
      hosts_api_p99_ms: p99Of('hosts'),
      full_api_p99_ms: p99Of('full'),
      failover_api_p99_ms: p99Of('failover'),
      agent_rss_mb: agentMb,
      hosts_up_s: Math.round(upS),
      fill_ack_per_s: Math.round(opts.vms / ackS),
      fill_concurrency: opts.concurrency,
      fill_calls_p50_ms: bulkS.p50,
      fill_calls_p99_ms: bulkS.p99,
      placed_s: Math.round(placedS),
      on_hosts_s: Math.round(onHostS),
      leader_cpu_s: [0, 1, 2, 3].map((i) =>
        Number((cpuMarks[i + 1]!.cpu[leaderAt]! - cpuMarks[i]!.cpu[leaderAt]!).toFixed(2)),
      ),
      detect_ms: detectMs ?? null,
      failover_ms: failoverMs ?? null,
    })}`,
  );
  // The last line carries exactly the keys issue 14 names.
  say(
    JSON.stringify({
      hosts: opts.hosts,
      vms: created.size,
      api_p99_ms: apiP99,
      daemon_rss_mb: daemonMb,
      watch_lag_ms: lagS.p99,
    }),
  );
} finally {
  clearInterval(samplerTimer);
  await farm.stop();
}
process.exit(0);
