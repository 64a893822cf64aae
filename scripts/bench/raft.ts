/**
 * The Raft benchmark: hyperfarm's kv-server (3 replicas, LevelDB synced, gRPC on loopback) and
 * etcd 3.4 (3 members on loopback) driven by the same closed-loop load generator with 1 and 64
 * concurrent clients writing 256-byte values, then the time from kill -9 of hyperfarm's leader
 * to the next committed write over 20 kills, at the default timing profile and, on a fresh
 * cluster, at the fast one (`raftProfile: fast`). The last line is one JSON object.
 *
 *   npm run bench:raft -- [--seconds 10] [--rounds 4] [--kills 20] [--etcd /usr/bin/etcd] [--no-etcd]
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type EtcdCluster, startEtcd } from './raft/etcd.js';
import { measureFailover } from './raft/failover.js';
import { assertKvServerBuilt, fsyncFigures, KvCluster, leaderPut, runBench } from './raft/hyperfarm.js';
import { type LoadResult, merge, runLoad } from './raft/load.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    kills: { type: 'string', default: '20' },
    etcd: { type: 'string', default: '/usr/bin/etcd' },
    rounds: { type: 'string', default: '4' },
    'no-etcd': { type: 'boolean', default: false },
  },
});
const seconds = Number(args.seconds);
const kills = Number(args.kills);
const rounds = Number(args.rounds);
const VALUE_BYTES = 256;
const log = (line: string): void => console.log(line);

const fmt = (r: LoadResult): string =>
  `${r.clients.toString().padStart(3)} clients: ${r.writesPerSecond.toFixed(0).padStart(6)} writes/s  ` +
  `p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms  max ${r.maxMs.toFixed(2)} ms  (${r.writes} writes, ${r.errors} errors)`;

type Put = (key: string, value: Buffer) => Promise<void>;

interface System {
  name: string;
  put(clients: number): Put;
}

/**
 * Runs the load on every system in alternating slices (hyperfarm, etcd, hyperfarm, etcd...),
 * so a change in the machine's load during the run weighs on both alike.
 */
async function interleaved(systems: System[], clients: number, rounds: number): Promise<LoadResult[]> {
  const slices: LoadResult[][] = systems.map(() => []);
  for (const s of systems) {
    await runLoad({
      clients,
      durationMs: 1_000,
      valueBytes: VALUE_BYTES,
      put: s.put(clients),
      keyPrefix: `${s.name}-warm`,
    });
  }
  for (let r = 0; r < rounds; r++) {
    for (const [i, s] of systems.entries()) {
      slices[i]!.push(
        await runLoad({
          clients,
          durationMs: (seconds * 1_000) / rounds,
          valueBytes: VALUE_BYTES,
          put: s.put(clients),
          keyPrefix: `${s.name}-${r}`,
        }),
      );
    }
  }
  return slices.map(merge);
}

async function main(): Promise<void> {
  assertKvServerBuilt();
  log(
    `raft benchmark  ${new Date().toISOString()}  ${cpus().length} cores (${cpus()[0]?.model ?? '?'})  node ${process.version}`,
  );
  log(
    `${VALUE_BYTES}-byte values, ${seconds} s per system and client count in ${rounds} alternating slices, closed loop, writes to the leader`,
  );

  const root = mkdtempSync(join(tmpdir(), 'bench-raft-'));
  const cluster = await KvCluster.start({ size: 3, root, entry: 'dist' });
  let etcd: EtcdCluster | undefined;
  try {
    const leader = await cluster.leader();
    const systems: System[] = [{ name: 'hyperfarm', put: () => leaderPut(cluster, leader) }];
    log(
      `hyperfarm: kv-server, 3 replicas, leader ${leader.id}, default timeouts (tick 100 ms, election 10 ticks)`,
    );
    if (!args['no-etcd']) {
      if (existsSync(args.etcd)) {
        etcd = await startEtcd({ basePort: 23790, binary: args.etcd });
        const e = etcd;
        systems.push({ name: 'etcd', put: (clients) => e.putFn(Math.max(1, Math.ceil(clients / 8))) });
        log(`etcd: 3.4, 3 members, leader ${e.leader}, gRPC KV.Put`);
      } else {
        log(`etcd: ${args.etcd} not found (apt-get install -y etcd-server); no comparison`);
      }
    }

    const byClients = new Map<number, LoadResult[]>();
    for (const clients of [1, 64]) {
      const results = await interleaved(systems, clients, rounds);
      byClients.set(clients, results);
      for (const [i, r] of results.entries()) log(`  ${systems[i]!.name.padEnd(9)} ${fmt(r)}`);
    }
    const figures = await fsyncFigures(cluster, leader);
    log(
      `hyperfarm leader: ${figures.entriesPerFsync.toFixed(1)} entries per fsync over ${figures.fsyncs} fsyncs, ` +
        `mean fsync ${figures.fsyncMeanMs.toFixed(2)} ms`,
    );
    await etcd?.stop();
    etcd = undefined;

    log(`failover: kill -9 of the hyperfarm leader, ${kills} times, under 8 writing clients`);
    const failover = await measureFailover(cluster, { kills, clients: 8, log });
    log(`  median ${failover.medianMs.toFixed(0)} ms, max ${failover.maxMs.toFixed(0)} ms`);
    await cluster.close();

    log(`failover, fast profile (tick 10 ms, election after 150-300 ms), ${kills} kills, 8 clients`);
    const fastCluster = await KvCluster.start({
      size: 3,
      root: join(root, 'fast'),
      entry: 'dist',
      args: ['--raft-profile', 'fast'],
    });
    let fast: Awaited<ReturnType<typeof measureFailover>>;
    try {
      fast = await measureFailover(fastCluster, { kills, clients: 8, log });
    } finally {
      await fastCluster.close();
    }
    log(`  median ${fast.medianMs.toFixed(0)} ms, max ${fast.maxMs.toFixed(0)} ms`);

    const [hf1, e1] = byClients.get(1)!;
    const [hf64, e64] = byClients.get(64)!;
    if (e1 && e64) {
      log('hyperfarm / etcd:');
      log(
        `  1 client:   throughput x${(hf1!.writesPerSecond / e1.writesPerSecond).toFixed(2)}, p99 x${(hf1!.p99Ms / e1.p99Ms).toFixed(2)}`,
      );
      log(
        `  64 clients: throughput x${(hf64!.writesPerSecond / e64.writesPerSecond).toFixed(2)}, p99 x${(hf64!.p99Ms / e64.p99Ms).toFixed(2)}`,
      );
    }
    const round = (n: number | undefined, d = 2): number | null =>
      n === undefined || Number.isNaN(n) ? null : Number(n.toFixed(d));
    console.log(
      JSON.stringify({
        bench: 'raft',
        date: new Date().toISOString(),
        cores: cpus().length,
        value_bytes: VALUE_BYTES,
        seconds_per_phase: seconds,
        writes_per_s_1: round(hf1!.writesPerSecond, 0),
        p50_ms_1: round(hf1!.p50Ms),
        p99_ms_1: round(hf1!.p99Ms),
        max_ms_1: round(hf1!.maxMs),
        writes_per_s_64: round(hf64!.writesPerSecond, 0),
        p50_ms_64: round(hf64!.p50Ms),
        p99_ms_64: round(hf64!.p99Ms),
        max_ms_64: round(hf64!.maxMs),
        entries_per_fsync: round(figures.entriesPerFsync),
        fsync_mean_ms: round(figures.fsyncMeanMs, 3),
        failover_median_ms: round(failover.medianMs, 0),
        failover_max_ms: round(failover.maxMs, 0),
        failover_kills: failover.samplesMs.length,
        failover_median_ms_fast: round(fast.medianMs, 0),
        failover_max_ms_fast: round(fast.maxMs, 0),
        etcd_writes_per_s_1: round(e1?.writesPerSecond, 0),
        etcd_p50_ms_1: round(e1?.p50Ms),
        etcd_p99_ms_1: round(e1?.p99Ms),
        etcd_writes_per_s_64: round(e64?.writesPerSecond, 0),
        etcd_p50_ms_64: round(e64?.p50Ms),
        etcd_p99_ms_64: round(e64?.p99Ms),
        etcd_max_ms_64: round(e64?.maxMs),
        throughput_ratio_64: e64 ? round(hf64!.writesPerSecond / e64.writesPerSecond) : null,
        p99_ratio_64: e64 ? round(hf64!.p99Ms / e64.p99Ms) : null,
      }),
    );
  } finally {
    await etcd?.stop();
    await cluster.close();
    rmSync(root, { recursive: true, force: true });
  }
}

runBench(main);
