/**
 * Migration figures between two agent processes on loopback: quick and live migration of VMs of
 * 1, 4 and 16 GiB whose memory holds real page contents (written pages, each carrying its 4 KiB),
 * idle or dirtying 20 MB/s: total time, downtime, rounds and bytes moved; and, in the same run,
 * iperf3's loopback TCP throughput, the ceiling a transfer could reach.
 *
 *   npm run bench:migration [-- --sizes 1,4,16] [--dirty-mb-s 20] [--data-channel off]
 *
 * The handover is decided here, as the daemon does: MigrateIn on the target (it pulls and holds
 * the VM whole), then CommitMigration on the target and on the source. Through the daemon the
 * decision is also written to the Raft log first, which adds one commit to the downtime.
 * Guest memory is held as page versions and its bytes made where they travel (docs/agent.md,
 * "Memory"), so the 16 GiB runs fit beside each other: each agent held under 300 MiB (RSS) while
 * a 16 GiB VM moved, on a 24 GiB machine.
 * Memory moves over the agents' TCP data connection; `--data-channel off` keeps it on the gRPC
 * stream, for comparison. HF_AGENT_NODE_ARGS passes node flags to both agents (for example "--cpu-prof").
 * The last line is one JSON object.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, freePorts, hyperfarmProto, promiseClient, type pb } from '@hyperfarm/api';

const BIN = fileURLToPath(new URL('../../packages/agent/dist/bin/hyperfarm-agent.js', import.meta.url));
const GIB = 1024 ** 3;
const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const sizes = arg('sizes', '1,4,16').split(',').map(Number);
const kinds = arg('kinds', 'quick,live').split(',') as ('quick' | 'live')[];
const loads = arg('loads', 'idle,dirty')
  .split(',')
  .map((l) => l === 'dirty');
const dirtyPagesPerSecond = Math.round((Number(arg('dirty-mb-s', '20')) * 1e6) / 4096);

type Agent = {
  child: ChildProcess;
  address: string;
  c: ReturnType<typeof promiseClient<pb.AgentServiceClient>>;
  raw: pb.AgentServiceClient;
};

async function startAgent(dir: string, id: string): Promise<Agent> {
  const ready = join(dir, `${id}.ready.json`);
  const child = spawn(
    process.execPath,
    [
      ...(process.env['HF_AGENT_NODE_ARGS'] ?? '').split(' ').filter(Boolean),
      BIN,
      ...['--id', id, '--grpc-address', '127.0.0.1:0', '--metrics-address', '127.0.0.1:0'],
      ...['--data-dir', join(dir, id), '--ready-file', ready, '--log-level', 'error'],
      ...['--memory-mib', String(40 * 1024), '--logical-processors', '16'],
      ...['--migration-data-channel', String(arg('data-channel', 'on') === 'on')],
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  while (!existsSync(ready)) await new Promise((r) => setTimeout(r, 50));
  const address = (JSON.parse(readFileSync(ready, 'utf8')) as { grpcAddress: string }).grpcAddress;
  const raw = createClient(hyperfarmProto().hyperfarm.v1.AgentService, address);
  return { child, address, raw, c: promiseClient(raw) };
}

/** iperf3 over loopback for 3 s: the bytes per second TCP moves on this machine now. */
async function iperf3(): Promise<number> {
  const [port] = await freePorts('127.0.0.1', 1);
  const server = spawn('iperf3', ['-s', '-1', '-p', String(port), '-B', '127.0.0.1'], { stdio: 'ignore' });
  try {
    for (let i = 0; ; i++) {
      const r = spawnSync('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', '3', '-J'], {
        encoding: 'utf8',
      });
      // On a busy machine iperf3 sometimes exits 0 with an error in its JSON: asked again.
      const out =
        r.status === 0
          ? (JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number } } })
          : {};
      if (out.end?.sum_received) return out.end.sum_received.bits_per_second / 8;
      if (i > 20) throw new Error(`iperf3 failed: ${r.stderr || r.error?.message}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  } finally {
    server.kill();
  }
}

interface Run {
  label: string;
  gib: number;
  kind: 'quick' | 'live';
  dirty: boolean;
  totalMs: number;
  transferMs: number;
  downtimeMs: number;
  rounds: number;
  bytes: number;
  throttle: number;
}

let sequence = 0;

/**
 * A control call, asked again if the connection dropped: on a machine loaded past 20 an agent
 * busy with a large VM sometimes answers a keepalive ping late and grpc-js drops the connection
 * under the call in flight. Every call retried here is idempotent (the same update, a status, a
 * commit the agent answers again). The migration itself is never retried.
 */
async function again<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if ((err as { code?: number }).code !== 14 || attempt === 5) throw err;
      console.error(`(connection dropped, asking again: ${(err as Error).message})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

async function migrate(
  src: Agent,
  dst: Agent,
  gib: number,
  kind: 'quick' | 'live',
  dirty: boolean,
): Promise<Run> {
  const vmId = `bench-${++sequence}`;
  const memoryBytes = gib * GIB;
  const config: pb.VmConfig = {
    name: vmId,
    processor: { count: 2 },
    memoryBytes,
    guestOs: 'windows-server-2008-x64',
    integrationServices: true,
    // Writes every page of memory (95% of them take 3 passes of random writes), then settles to
    // the dirty rate measured. At most 300,000 writes a second: the simulated guest writes for
    // the time since its last step, so on a loaded machine a faster rate fed on itself (a slow
    // step, a longer next one) until the agent missed gRPC keepalives ("Connection dropped").
    workload: {
      bootMs: 10,
      workingSetBytes: memoryBytes,
      dirtyPagesPerSecond: Math.min(300_000, memoryBytes / 4096),
      cpuDemandPercent: 50,
    },
  };
  await src.c.createVm({ vmId, config, generation: 1 });
  await src.c.changeVmState({ vmId, action: 'VM_ACTION_START', generation: 1 });
  for (;;) {
    const h = await src.c.getVmStateHash({ vmId }).catch(() => undefined);
    if (h && h.residentPages >= 0.95 * (memoryBytes / 4096)) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  await again(() =>
    src.c.updateVm({
      vmId,
      generation: 1,
      config: {
        ...config,
        workload: {
          ...config.workload,
          dirtyPagesPerSecond: dirty ? dirtyPagesPerSecond : 0,
          workingSetBytes: Math.min(memoryBytes, GIB),
        },
      },
      updateMask: { paths: ['workload'] },
    }),
  );
  const id = `m-${vmId}`;
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const call = dst.raw.migrateIn({
      migrationId: id,
      vmId,
      sourceAddress: src.address,
      sourceGeneration: 1,
      targetGeneration: 2,
      kind: kind === 'live' ? 'MIGRATION_KIND_LIVE' : 'MIGRATION_KIND_QUICK',
      deadlineMs: 600_000,
    });
    call.on('data', () => undefined);
    call.on('error', reject);
    call.on('end', () => resolve());
  });
  const transferMs = performance.now() - started;
  const req = { migrationId: id, vmId, targetGeneration: 2, reason: '' };
  const done = await again(() => dst.c.commitMigration({ ...req, role: 'MIGRATION_ROLE_TARGET' }));
  const source = await again(() => src.c.getMigrationStatus({ migrationId: id }));
  await again(() => src.c.commitMigration({ ...req, role: 'MIGRATION_ROLE_SOURCE' }));
  const totalMs = performance.now() - started;
  await again(() => dst.c.changeVmState({ vmId, action: 'VM_ACTION_TURN_OFF', generation: 2 }));
  await again(() => dst.c.deleteVm({ vmId, generation: 2 }));
  return {
    label: `${kind} ${gib} GiB ${dirty ? `dirtying ${arg('dirty-mb-s', '20')} MB/s` : 'idle'}`,
    gib,
    kind,
    dirty,
    totalMs,
    transferMs,
    downtimeMs: done.downtimeMs,
    rounds: done.rounds,
    bytes: done.bytesTransferred,
    throttle: source.throttlePercent,
  };
}

const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hf-bench-mig-'));
  const [src, dst] = await Promise.all([startAgent(dir, 'src'), startAgent(dir, 'dst')]);
  const runs: Run[] = [];
  try {
    const tcp = await iperf3();
    console.log(`iperf3 loopback TCP: ${round(tcp / 1e6)} MB/s`);
    for (const gib of sizes) {
      for (const kind of kinds) {
        for (const dirty of loads) {
          const r = await migrate(src, dst, gib, kind, dirty);
          runs.push(r);
          console.log(
            `${r.label.padEnd(32)} total ${round(r.totalMs / 1000, 2)} s, downtime ${r.downtimeMs} ms, ${r.rounds + 1} round(s), ${round(r.bytes / 1e6)} MB at ${round(r.bytes / 1e3 / r.transferMs)} MB/s${r.throttle ? `, throttled ${r.throttle}%` : ''}`,
          );
        }
      }
    }
    // The 4 GiB figures, or those of the largest size measured when 4 was not.
    const pick = (kind: 'quick' | 'live', dirty: boolean) =>
      runs.find((r) => r.kind === kind && r.gib === 4 && r.dirty === dirty) ??
      runs.filter((r) => r.kind === kind && r.dirty === dirty).pop();
    const quick = pick('quick', false) ?? runs[0]!;
    const live = pick('live', true);
    const transfer = quick.bytes / 1e3 / quick.transferMs;
    console.log(
      `details: ${JSON.stringify({
        data_channel: arg('data-channel', 'on'),
        load_average: loadavg().map((l) => round(l, 2)),
        ratio_from: quick.label,
      })}`,
    );
    console.log(
      JSON.stringify({
        live_downtime_ms_4g: live?.downtimeMs ?? null,
        quick_total_ms_4g: Math.round(quick.totalMs),
        transfer_mb_s: round(transfer),
        iperf3_mb_s: round(tcp / 1e6),
        transfer_ratio: round(transfer / (tcp / 1e6), 3),
      }),
    );
  } finally {
    src.raw.close();
    dst.raw.close();
    await Promise.all([src, dst].map((a) => new Promise((r) => a.child.once('exit', r).kill('SIGTERM'))));
    rmSync(dir, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
