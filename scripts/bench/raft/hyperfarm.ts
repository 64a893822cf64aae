import { existsSync } from 'node:fs';
import { KvCluster, type KvMember } from '../../../packages/raft/src/node/kv-cluster.js';
import type { PutFn } from './load.js';

/** A put straight to the member that leads, over a keep-alive HTTP connection per client. */
export function leaderPut(cluster: KvCluster, leader: KvMember): PutFn {
  return async (key, value) => {
    const res = await cluster.call(leader, 'PUT', `/kv/${encodeURIComponent(key)}`, value.toString('latin1'));
    if (res.status !== 200) throw new Error(`PUT answered ${res.status}: ${JSON.stringify(res.body)}`);
  };
}

/** Entries per fsync and fsync time on one member, from its Prometheus histograms. */
export async function fsyncFigures(
  cluster: KvCluster,
  m: KvMember,
): Promise<{ fsyncs: number; entries: number; entriesPerFsync: number; fsyncMeanMs: number }> {
  const res = await fetchText(cluster, m, '/metrics');
  const value = (name: string): number =>
    Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(res)?.[1] ?? NaN);
  const fsyncs = value('raft_entries_per_fsync_count');
  const entries = value('raft_entries_per_fsync_sum');
  return {
    fsyncs,
    entries,
    entriesPerFsync: entries / fsyncs,
    fsyncMeanMs: (value('raft_fsync_seconds_sum') / value('raft_fsync_seconds_count')) * 1000,
  };
}

async function fetchText(_cluster: KvCluster, m: KvMember, path: string): Promise<string> {
  const res = await fetch(`http://${m.http}${path}`);
  return res.text();
}

/** The benchmarks run the built kv-server: refuse to start without it. */
export function assertKvServerBuilt(): void {
  if (!existsSync(new URL('../../../packages/raft/dist/node/kv-server.js', import.meta.url)))
    throw new Error('packages/raft is not built: run `npx tsc -b packages/raft` first');
}

/** Runs a benchmark and exits with its outcome (a cluster left behind would keep Node alive). */
export function runBench(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

export { KvCluster };
