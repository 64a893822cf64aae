/**
 * Runs the deterministic Raft simulator over many seeds.
 *
 *   npm run sim:raft -- --seeds 500 [--start 1] [--nodes 3|5] [--membership] [--jobs 2]
 *   npm run sim:raft -- --seed 1234 --trace        replays one seed and prints its trace
 *
 * Every seed runs a cluster through drops, delays, duplicates, reorders, partitions (symmetric,
 * asymmetric, one-way), crashes that lose unsynced writes and clock pauses, checks Raft's safety
 * properties after every step, then heals the network and checks liveness and linearizability.
 * The last line printed is one JSON object. The exit code is non-zero if any seed failed.
 */
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Command, InvalidArgumentError } from 'commander';
import {
  rawNodeFactory,
  runSimulation,
  type SimRaftConfig,
  type SimResult,
} from '../packages/raft/src/sim/index.js';

/** Lines of trace printed for the first failing seed of a batch. */
const TRACE_TAIL = 80;

interface RunSpec {
  seeds: number[];
  nodes: number;
  membership: boolean;
  chaosTicks: number;
  /** Core tunables for every node (preVote, checkQuorum, readOnly...). */
  raft: SimRaftConfig;
  /** Run a deliberately broken edge, to see the checks fail the run. */
  ackBeforeSync: boolean;
}

/** What a worker reports per seed: small, so 100,000 seeds stay cheap to collect. */
interface SeedSummary {
  seed: number;
  ok: boolean;
  linearizable: SimResult['linearizable'];
  violations: string[];
  ops: number;
  unknownOps: number;
  elections: number;
  crashes: number;
  ticksToLeader: number;
  confChanges: number;
  snapshots: number;
  transfers: number;
  forwarded: number;
}

function runSeed(seed: number, spec: Omit<RunSpec, 'seeds'>): SeedSummary {
  const r = runSimulation({
    seed,
    nodes: spec.nodes,
    membership: spec.membership,
    chaosTicks: spec.chaosTicks,
    factory: rawNodeFactory(spec.raft),
    discipline: { syncBeforeSend: !spec.ackBeforeSync },
  });
  return {
    seed,
    ok: r.violations.length === 0,
    linearizable: r.linearizable,
    violations: r.violations
      .slice(0, 5)
      .map((v) => `${v.property} at t=${v.time}: ${v.detail.split('\n')[0]}`),
    ops: r.ops.total - r.ops.failed,
    unknownOps: r.ops.unknown,
    elections: r.elections,
    crashes: r.crashes,
    ticksToLeader: r.ticksToLeader,
    confChanges: r.confChanges,
    snapshots: r.snapshotsInstalled,
    transfers: r.transfers,
    forwarded: r.forwarded,
  };
}

function positiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0)
      throw new InvalidArgumentError(`${name} must be a non-negative integer, got '${v}'`);
    return n;
  };
}

function parseRaftConfig(v: string): SimRaftConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch {
    throw new InvalidArgumentError(`--raft must be a JSON object, got '${v}'`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new InvalidArgumentError(`--raft must be a JSON object, got '${v}'`);
  }
  return parsed as SimRaftConfig;
}

async function runParallel(spec: RunSpec, jobs: number, onResult: (s: SeedSummary) => void): Promise<void> {
  if (jobs <= 1 || spec.seeds.length < 2 * jobs) {
    for (const seed of spec.seeds) onResult(runSeed(seed, spec));
    return;
  }
  const shares = Array.from({ length: jobs }, (_, j) => spec.seeds.filter((_, i) => i % jobs === j));
  await Promise.all(
    shares.map(
      (seeds) =>
        new Promise<void>((resolve, reject) => {
          // Workers do not inherit the tsx loader: register it, then load this file.
          const boot = `import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(import.meta.url)}); })`;
          const w = new Worker(boot, { eval: true, workerData: { ...spec, seeds } });
          w.on('message', (s: SeedSummary) => onResult(s));
          w.on('error', reject);
          w.on('exit', (code) =>
            code === 0 ? resolve() : reject(new Error(`simulation worker exited with ${code}`)),
          );
        }),
    ),
  );
}

async function main(): Promise<void> {
  const program = new Command()
    .name('sim-raft')
    .description('Run the deterministic Raft simulator over many seeds')
    .option('--seeds <n>', 'how many seeds to run', positiveInt('--seeds'), 100)
    .option('--start <s>', 'the first seed', positiveInt('--start'), 1)
    .option('--seed <s>', 'run this one seed (with --trace to print its trace)', positiveInt('--seed'))
    .option('--nodes <n>', 'founding voters: 3 or 5', positiveInt('--nodes'), 3)
    .option('--membership', 'add learners, promote them and remove voters during the run', false)
    .option(
      '--chaos-ticks <n>',
      'ticks of faults before the network heals',
      positiveInt('--chaos-ticks'),
      300,
    )
    .option(
      '--raft <json>',
      'core tunables for every node, as JSON, e.g. \'{"preVote":false}\'',
      parseRaftConfig,
      {},
    )
    .option(
      '--unsafe-ack-before-sync',
      'break the edge on purpose: send before syncing (the run must fail)',
      false,
    )
    .option('--jobs <n>', 'worker threads', positiveInt('--jobs'), Math.max(1, availableParallelism()))
    .option('--trace', 'print the full trace of a single seed', false)
    .parse();
  const o = program.opts<{
    seeds: number;
    start: number;
    seed?: number;
    nodes: number;
    membership: boolean;
    chaosTicks: number;
    jobs: number;
    trace: boolean;
    raft: SimRaftConfig;
    unsafeAckBeforeSync: boolean;
  }>();
  if (o.nodes !== 3 && o.nodes !== 5)
    throw new InvalidArgumentError(`--nodes must be 3 or 5, got ${o.nodes}`);
  const common = {
    nodes: o.nodes,
    membership: o.membership,
    chaosTicks: o.chaosTicks,
    raft: o.raft,
    ackBeforeSync: o.unsafeAckBeforeSync,
  };
  const discipline = { syncBeforeSend: !o.unsafeAckBeforeSync };
  const replay = (seed: number): string =>
    [
      `npm run sim:raft -- --seed ${seed} --nodes ${o.nodes}`,
      o.membership ? ' --membership' : '',
      o.chaosTicks !== 300 ? ` --chaos-ticks ${o.chaosTicks}` : '',
      Object.keys(o.raft).length > 0 ? ` --raft '${JSON.stringify(o.raft)}'` : '',
      o.unsafeAckBeforeSync ? ' --unsafe-ack-before-sync' : '',
      ' --trace',
    ].join('');

  if (o.seed !== undefined && o.trace) {
    const r = runSimulation({
      seed: o.seed,
      ...common,
      factory: rawNodeFactory(o.raft),
      discipline,
      trace: true,
    });
    for (const line of r.trace) console.log(line);
    for (const v of r.violations) console.log(`VIOLATION ${v.property} at t=${v.time}: ${v.detail}`);
    console.log(
      JSON.stringify({
        seed: o.seed,
        violations: r.violations.length,
        linearizable: r.linearizable,
        ops: r.ops,
        elections: r.elections,
        crashes: r.crashes,
        ticks_to_leader: r.ticksToLeader,
        committed: r.committed,
        conf_changes: r.confChanges,
        snapshots_installed: r.snapshotsInstalled,
        leader_transfers: r.transfers,
        forwarded_writes: r.forwarded,
        network: r.network,
      }),
    );
    process.exitCode = r.violations.length > 0 ? 1 : 0;
    return;
  }

  const seeds = o.seed !== undefined ? [o.seed] : Array.from({ length: o.seeds }, (_, i) => o.start + i);
  const started = performance.now();
  const failed: SeedSummary[] = [];
  let linearizable = 0;
  let unknownChecks = 0;
  let ops = 0;
  let unknownOps = 0;
  let elections = 0;
  let crashes = 0;
  let maxTicksToLeader = 0;
  let confChanges = 0;
  let snapshots = 0;
  let transfers = 0;
  let forwarded = 0;
  let done = 0;
  await runParallel({ seeds, ...common }, o.jobs, (s) => {
    done++;
    if (s.linearizable === 'ok') linearizable++;
    if (s.linearizable === 'unknown') unknownChecks++;
    ops += s.ops;
    unknownOps += s.unknownOps;
    elections += s.elections;
    crashes += s.crashes;
    maxTicksToLeader = Math.max(maxTicksToLeader, s.ticksToLeader);
    confChanges += s.confChanges;
    snapshots += s.snapshots;
    transfers += s.transfers;
    forwarded += s.forwarded;
    if (!s.ok) {
      failed.push(s);
      console.log(`seed ${s.seed} FAILED:\n  ${s.violations.join('\n  ')}\n  replay: ${replay(s.seed)}`);
    }
    if (seeds.length >= 1000 && done % 1000 === 0) {
      console.error(
        `${done}/${seeds.length} seeds, ${failed.length} failed, ${Math.round((performance.now() - started) / 1000)} s`,
      );
    }
  });
  const seconds = (performance.now() - started) / 1000;
  failed.sort((a, b) => a.seed - b.seed);
  if (failed.length > 0) {
    // The end of the first failing seed's trace, replayed here; the full one comes from --trace.
    const first = failed[0]!.seed;
    const r = runSimulation({
      seed: first,
      ...common,
      factory: rawNodeFactory(o.raft),
      discipline,
      trace: true,
    });
    console.log(`--- seed ${first}: last ${TRACE_TAIL} lines of its trace (full: ${replay(first)})`);
    for (const line of r.trace.slice(-TRACE_TAIL)) console.log(line);
    for (const v of r.violations) console.log(`VIOLATION ${v.property} at t=${v.time}: ${v.detail}`);
  }
  console.log(
    JSON.stringify({
      seeds: seeds.length,
      violations: failed.length,
      linearizable,
      linearizability_unknown: unknownChecks,
      failed_seeds: failed.slice(0, 20).map((f) => f.seed),
      nodes: o.nodes,
      membership: o.membership,
      raft: o.raft,
      start: seeds[0],
      ops,
      unknown_ops: unknownOps,
      elections,
      crashes,
      max_ticks_to_leader: maxTicksToLeader,
      conf_changes: confChanges,
      snapshots_installed: snapshots,
      leader_transfers: transfers,
      forwarded_writes: forwarded,
      jobs: o.jobs,
      seconds: Math.round(seconds * 10) / 10,
      seeds_per_s: Math.round((seeds.length / seconds) * 10) / 10,
    }),
  );
  process.exitCode = failed.length > 0 ? 1 : 0;
}

if (isMainThread) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exitCode = 2;
  });
} else {
  const spec = workerData as RunSpec;
  for (const seed of spec.seeds) parentPort!.postMessage(runSeed(seed, spec));
}
