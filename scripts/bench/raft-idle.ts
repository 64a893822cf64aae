/**
 * Elections when nothing fails: two idle 3-replica kv-server clusters side by side, one at the
 * default timing profile and one at the fast one, for `--minutes`. An election bumps the term,
 * so the elections are the rise of the highest term any member reports. A profile whose
 * timeouts are too tight for the machine shows up here as elections nobody asked for. The last
 * line is one JSON object.
 *
 *   npm run bench:raft-idle -- [--minutes 10]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { assertKvServerBuilt, KvCluster, runBench } from './raft/hyperfarm.js';

const { values: args } = parseArgs({ options: { minutes: { type: 'string', default: '10' } } });
const minutes = Number(args.minutes);
const PROFILES = ['default', 'fast'] as const;

async function highestTerm(cluster: KvCluster): Promise<number> {
  const terms = await Promise.all(
    cluster.members.map((m) =>
      cluster.call(m, 'GET', '/status', undefined, 2_000).then(
        (r) => r.body.term as number,
        () => 0,
      ),
    ),
  );
  return Math.max(...terms);
}

async function main(): Promise<void> {
  assertKvServerBuilt();
  console.log(
    `raft idle  ${new Date().toISOString()}  ${cpus().length} cores  ${minutes} min, profiles ${PROFILES.join(' and ')} side by side`,
  );
  const root = mkdtempSync(join(tmpdir(), 'bench-raft-idle-'));
  const clusters = await Promise.all(
    PROFILES.map((p) =>
      KvCluster.start({ size: 3, root: join(root, p), entry: 'dist', args: ['--raft-profile', p] }),
    ),
  );
  try {
    await Promise.all(clusters.map((c) => c.leader()));
    const start = await Promise.all(clusters.map(highestTerm));
    const end = performance.now() + minutes * 60_000;
    // The measurement is the passing of time itself: check in every minute.
    while (performance.now() < end) {
      await new Promise((r) => setTimeout(r, Math.min(60_000, Math.max(0, end - performance.now()))));
      const now = await Promise.all(clusters.map(highestTerm));
      console.log(PROFILES.map((p, i) => `  ${p}: ${now[i]! - start[i]!} elections`).join(','));
    }
    const finish = await Promise.all(clusters.map(highestTerm));
    const elections = PROFILES.map((_, i) => finish[i]! - start[i]!);
    console.log(
      JSON.stringify({
        bench: 'raft-idle',
        date: new Date().toISOString(),
        cores: cpus().length,
        minutes,
        elections_default: elections[0],
        elections_fast: elections[1],
      }),
    );
  } finally {
    await Promise.all(clusters.map((c) => c.close()));
    rmSync(root, { recursive: true, force: true });
  }
}

runBench(main);
