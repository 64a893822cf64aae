/**
 * bench:placement — VMs created and placed through real daemons on a farm of real hosts.
 *
 * 3 daemons and 1,000 hosts (4 agent processes in multi-host mode, 250 hosts each, registered
 * by themselves), then 10,000 CreateVm calls to the leader, 256 at a time. A placement counts
 * once the VM's host is committed (seen on the leader's Watch stream). Meanwhile a probe calls
 * GetVm and ListVms (one page of 100), linearizable, and records their latency. The agents
 * create the VMs on their hosts as they are placed, so that load is part of the run.
 *
 * Last line: {"placements_per_s", "hosts", "vms", "get_p99_ms", ...}.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { createClient, freePorts, hyperfarmProto, promiseClient, type pb } from '@hyperfarm/api';

const root = fileURLToPath(new URL('../..', import.meta.url));
const DAEMON = join(root, 'packages/daemon/dist/bin/hyperfarm-daemon.js');
const AGENT = join(root, 'packages/agent/dist/bin/hyperfarm-agent.js');

const opts = new Command('bench:placement')
  .option('--hosts <n>', 'hosts in the farm', Number, 1000)
  .option('--agents <n>', 'agent processes the hosts are shared among', Number, 4)
  .option('--vms <n>', 'VMs to create and place', Number, 10_000)
  .option('--concurrency <n>', 'CreateVm calls in flight', Number, 256)
  .option('--profile <dir>', 'write a CPU profile of every daemon and agent process into this folder')
  .parse()
  .opts<{ hosts: number; agents: number; vms: number; concurrency: number; profile?: string }>();

const dir = mkdtempSync(join(tmpdir(), 'hf-bench-placement-'));
const procs: ChildProcess[] = [];
const say = (line: string) => process.stdout.write(`${line}\n`);
const cluster = (address: string) =>
  promiseClient(createClient(hyperfarmProto().hyperfarm.v1.ClusterService, address));

function run(bin: string, args: string[]): void {
  const prof = opts.profile ? ['--cpu-prof', '--cpu-prof-dir', opts.profile] : [];
  const p = spawn(process.execPath, [...prof, bin, ...args, '--log-level', 'warn'], { stdio: 'ignore' });
  procs.push(p);
}

async function until<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const round = (x: number) => Math.round(x * 100) / 100;

try {
  for (const bin of [DAEMON, AGENT])
    if (!existsSync(bin)) throw new Error(`${bin} is missing: npm run build`);
  const ports = await freePorts('127.0.0.1', 3);
  const daemons = ports.map((p, i) => ({ id: `daemon-${i + 1}`, address: `127.0.0.1:${p}` }));
  const peers = daemons.map((d) => `${d.id}=${d.address}`).join(',');
  for (const d of daemons) {
    run(
      DAEMON,
      ['--id', d.id, '--grpc-address', d.address, '--metrics-address', '127.0.0.1:0'].concat([
        '--data-dir',
        join(dir, d.id),
        '--peers',
        peers,
      ]),
    );
  }
  const any = cluster(daemons[0]!.address);
  const leaderId = await until(
    'a leader',
    90_000,
    async () => (await any.listMembers({})).leaderId || undefined,
  );
  const leaderAddress = daemons.find((d) => d.id === leaderId)!.address;
  const leader = cluster(leaderAddress);

  const started = Date.now();
  const per = Math.ceil(opts.hosts / opts.agents);
  for (let a = 0; a < opts.agents; a++) {
    const n = Math.min(per, opts.hosts - a * per);
    run(
      AGENT,
      ['--id', `rack${a + 1}`, '--id-prefix', `rack${a + 1}`, '--hosts', String(n)]
        .concat([
          '--grpc-address',
          '127.0.0.1:0',
          '--metrics-address',
          '127.0.0.1:0',
          '--data-dir',
          join(dir, `rack${a + 1}`),
        ])
        .concat(['--daemons', daemons.map((d) => d.address).join(',')]),
    );
  }
  let shown = 0;
  await until(`${opts.hosts} hosts Up`, 600_000, async () => {
    // Stale: what this daemon has applied, so the wait goes on when the leadership moves.
    const { hosts } = await leader.listHosts({ pageSize: 1000, consistency: 'CONSISTENCY_STALE' });
    const up = hosts.filter((h) => h.state === 'HOST_STATE_UP').length;
    if (Date.now() - shown > 10_000) {
      shown = Date.now();
      say(`  ${hosts.length} hosts registered, ${up} Up`);
    }
    return up >= opts.hosts ? true : undefined;
  });
  say(
    `${opts.hosts} hosts registered and Up in ${((Date.now() - started) / 1000).toFixed(1)} s (${opts.agents} agent processes)`,
  );

  // Placements, as the leader commits them.
  const from = await until('the revision', 30_000, async () => (await any.getClusterStatus({})).revision);
  const placedAt = new Map<string, number>();
  let allPlaced!: () => void;
  const placed = new Promise<void>((r) => (allPlaced = r));
  // A stream that ends (a leader change, a daemon that fell behind) is opened again from the
  // last revision seen, on the next daemon: a lost stream would stop the count, not the farm.
  let revision = Number(from) - 1;
  let watch: ReturnType<ReturnType<typeof createClient<pb.ClusterServiceClient>>['watch']>;
  let watching = true;
  const follow = (n: number, resync = false): void => {
    const raw = createClient(
      hyperfarmProto().hyperfarm.v1.ClusterService,
      n === 0 ? leaderAddress : daemons[n % daemons.length]!.address,
    );
    // Fallen out of the kept window (this reader was too slow): from 0, the current state of
    // every VM, whose placements count from when they are seen (later than they happened).
    watch = raw.watch({ fromRevision: resync ? 0 : revision + 1, kinds: ['RESOURCE_KIND_VM'] });
    watch.on('data', (e: pb.Event__Output) => {
      revision = Math.max(revision, Number(e.revision));
      if (e.vm?.status?.hostId && !placedAt.has(e.id)) {
        placedAt.set(e.id, Date.now());
        if (placedAt.size >= opts.vms) allPlaced();
      }
    });
    let again = false;
    const reopen = (err?: Error) => {
      if (again || !watching) return;
      again = true;
      raw.close();
      say(
        `  the Watch stream ended (${err?.message ?? 'closed'}); following again from revision ${revision + 1}`,
      );
      setTimeout(() => follow(n + 1, (err as { code?: number } | undefined)?.code === 11), 200);
    };
    watch.on('error', reopen);
    watch.on('end', () => reopen());
  };
  follow(0);

  // The latency probe: GetVm of a VM created so far, and one page of ListVms.
  const ids: string[] = [];
  const latency = { get: [] as number[], list: [] as number[] };
  let probing = true;
  const probeErrors: string[] = [];
  const probe = (async () => {
    for (let i = 0; probing; i++) {
      if (ids.length === 0) {
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      let t = performance.now();
      await leader.getVm({ id: ids[i % ids.length]! }).catch((err: Error) => probeErrors.push(err.message));
      latency.get.push(performance.now() - t);
      if (i % 4 === 0) {
        t = performance.now();
        await leader.listVms({ pageSize: 100 }).catch((err: Error) => probeErrors.push(err.message));
        latency.list.push(performance.now() - t);
      }
    }
  })();

  const findLeader = async () => {
    const id = (await any.listMembers({})).leaderId;
    const d = daemons.find((x) => x.id === id);
    if (!d) throw new Error('no leader');
    return cluster(d.address);
  };
  let creates = leader;
  let retried = 0;
  const t0 = Date.now();
  let next = 0;
  const refused: string[] = [];
  const creator = async () => {
    while (next < opts.vms) {
      const i = next++;
      const config: pb.VmConfig = {
        name: `vm-${i}`,
        processor: { count: 1 },
        memoryBytes: 512 * 1024 * 1024,
        guestOs: 'windows-server-2008-x64',
        integrationServices: true,
      };
      // A leader change on this loaded machine answers UNAVAILABLE: the create is sent again
      // under the same request id (so it is applied once), to whichever daemon leads then.
      for (let attempt = 0; ; attempt++) {
        try {
          const op = await creates.createVm({ config, requestId: `bench-${i}` }, { timeoutMs: 60_000 });
          ids.push(op.targetId);
          break;
        } catch (err) {
          if (attempt >= 20) {
            refused.push((err as Error).message);
            break;
          }
          retried++;
          await new Promise((r) => setTimeout(r, 250));
          creates = await findLeader().catch(() => creates);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, creator));
  const acknowledged = Date.now();
  if (refused.length > 0) throw new Error(`${refused.length} creates refused, first: ${refused[0]}`);
  await Promise.race([
    placed,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${placedAt.size} placed`)), 300_000)),
  ]);
  const last = Math.max(...placedAt.values());
  probing = false;
  await probe;
  watching = false;
  watch!.cancel();

  // A read that failed (a leader change under way) is reported, and its time counted.
  if (probeErrors.length > 0)
    say(`${probeErrors.length} GetVm/ListVms calls failed, first: ${probeErrors[0]}`);
  const seconds = (last - t0) / 1000;
  const placementsPerS = Math.round(opts.vms / seconds);
  const used = new Set(
    (await leader.listVms({ pageSize: 1000, consistency: 'CONSISTENCY_STALE' })).vms.map(
      (v) => v.status!.hostId,
    ),
  );
  say(
    `${opts.vms} CreateVm acknowledged in ${((acknowledged - t0) / 1000).toFixed(2)} s; all placed (committed) after ${seconds.toFixed(2)} s`,
  );
  if (retried > 0) say(`${retried} creates sent again after an error (a leader change)`);
  say(`placements: ${placementsPerS}/s (Nomad's C1M published run: about 3,750/s on 5 servers)`);
  say(
    `GetVm under load: p50 ${round(percentile(latency.get, 50))} ms, p99 ${round(percentile(latency.get, 99))} ms (${latency.get.length} calls)`,
  );
  say(
    `ListVms (100) under load: p50 ${round(percentile(latency.list, 50))} ms, p99 ${round(percentile(latency.list, 99))} ms (${latency.list.length} calls)`,
  );
  say(`binpack: the first 1000 VMs sit on ${used.size} hosts`);
  say(
    JSON.stringify({
      placements_per_s: placementsPerS,
      hosts: opts.hosts,
      vms: opts.vms,
      get_p99_ms: round(percentile(latency.get, 99)),
      get_p50_ms: round(percentile(latency.get, 50)),
      list_p50_ms: round(percentile(latency.list, 50)),
      list_p99_ms: round(percentile(latency.list, 99)),
      placed_s: round(seconds),
    }),
  );
} finally {
  // A profiled process writes its profile as it exits: it is asked to stop, and killed only if
  // it does not within 20 s.
  for (const p of procs) p.kill(opts.profile ? 'SIGTERM' : 'SIGKILL');
  const kill = setTimeout(() => procs.forEach((p) => p.kill('SIGKILL')), opts.profile ? 20_000 : 0);
  await Promise.all(
    procs.map((p) =>
      p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : null,
    ),
  );
  clearTimeout(kill);
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
