/**
 * Runs the farm simulator (packages/sim) over many seeds: the real daemons (RaftNode, farm
 * state machine, controllers) and the real hypervisor engines on a virtual clock, with faults,
 * and the safety invariants checked after every step. See docs/simulation.md.
 *
 *   npm run sim:farm -- --seeds 100 [--start 1] [--hosts 5] [--vms 24] [--daemons 3|5]
 *   npm run sim:farm -- --seed 1234 --trace        replays one seed and prints its trace
 *   npm run sim:farm -- --scale large [--hours 24] [--settle 15] [--compare]
 *                                                  1,000 hosts, 50,000 VMs, 24 h, with a report
 *
 * The last line printed is one JSON object. The exit code is non-zero if any seed failed.
 */
import { Command, InvalidArgumentError } from 'commander';
import { LARGE, runFarm, SMALL, type FarmOptions, type FarmResult } from '../packages/sim/src/index.js';

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a whole number`);
  return n;
};

const num = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a number above 0`);
  return n;
};

const program = new Command()
  .name('sim:farm')
  .option('--seeds <n>', 'how many seeds to run', int('--seeds'), 20)
  .option('--start <n>', 'first seed', int('--start'), 1)
  .option('--seed <n>', 'run this one seed', int('--seed'))
  .option('--trace', 'print the trace of the run (with --seed)', false)
  .option('--scale <s>', 'small (many short seeds) or large (one farm of 1,000 hosts for 24 h)', 'small')
  .option('--hours <n>', 'farm hours with workload and faults (--scale large)', num('--hours'))
  .option('--settle <minutes>', 'farm minutes of calm after the faults stop', num('--settle'))
  .option('--compare', 'run binpack and spread on the same seed and compare (--scale large)', false)
  .option('--daemons <n>', 'daemons (3 or 5)', int('--daemons'))
  .option('--hosts <n>', 'hosts', int('--hosts'))
  .option('--vms <n>', 'VMs the workload keeps', int('--vms'))
  .option('--policy <p>', 'placement: binpack or spread', 'binpack')
  .option('--no-faults', 'no faults (the workload alone)')
  .option(
    '--step-guests',
    "step the engines' guests rather than the large profile's lazy model (to compare)",
    false,
  )
  .option('--no-converge', 'check safety only, not convergence after the faults stop')
  .option(
    '--network',
    "the hosts' virtual networks: a switch, an NLB cluster of the first VMs, clients",
    false,
  )
  .parse();

const opts = program.opts<{
  seeds: number;
  start: number;
  seed?: number;
  trace: boolean;
  scale: string;
  hours?: number;
  settle?: number;
  compare: boolean;
  daemons?: number;
  hosts?: number;
  vms?: number;
  policy: string;
  faults: boolean;
  converge: boolean;
  network: boolean;
  stepGuests: boolean;
}>();
if (opts.policy !== 'binpack' && opts.policy !== 'spread') program.error('--policy: binpack or spread');
if (opts.scale !== 'small' && opts.scale !== 'large') program.error('--scale: small or large');
if (opts.daemons !== undefined && opts.daemons !== 3 && opts.daemons !== 5)
  program.error('--daemons: 3 or 5');

const base = opts.scale === 'large' ? LARGE : SMALL;
const farm = (seed: number, policy = opts.policy as FarmOptions['policy']): FarmOptions => ({
  ...base,
  seed,
  daemons: opts.daemons ?? base.daemons,
  hosts: opts.hosts ?? base.hosts,
  vms: opts.vms ?? base.vms,
  ...(opts.hours !== undefined ? { chaosMs: opts.hours * 3_600_000 } : {}),
  ...(opts.settle !== undefined ? { settleMs: opts.settle * 60_000 } : {}),
  policy,
  faults: opts.faults,
  converge: opts.converge,
  network: opts.network,
  trace: opts.trace,
  ...(opts.stepGuests ? { timing: { ...base.timing, lazyGuests: false } } : {}),
});

const started = performance.now();
const wallS = () => Math.round((performance.now() - started) / 100) / 10;

function printViolations(r: FarmResult): void {
  for (const v of r.violations.slice(0, 5))
    console.log(`seed ${r.seed}: ${v.property} at t=${v.time} ms: ${v.detail}`);
  console.log(`replay: npm run sim:farm -- --seed ${r.seed}${opts.network ? ' --network' : ''} --trace`);
}

const pct = (xs: number[], p: number) =>
  xs.length === 0 ? 0 : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

/** What happened in one large run, for people: failures, recoveries, utilisation by hour. */
function report(r: FarmResult, o: FarmOptions, wall: number): Record<string, number | string> {
  const s = r.stats;
  const rec = r.recoveriesMs.map((ms) => ms / 1000);
  console.log(
    `\n${o.policy}: ${o.hosts} hosts, ${o.vms} VMs, ${o.chaosMs / 3_600_000} h of churn and failures ` +
      `then ${o.settleMs / 60_000} min calm, in ${wall} s (${s.steps} steps, ${s.messages} messages)`,
  );
  console.log(
    `  requests ${s.requests} (acknowledged ${s.acknowledged}); host crashes ${s.hostCrashes}, ` +
      `daemon crashes ${s.daemonCrashes}, partitions ${s.partitions}, elections ${s.elections}; ` +
      `failovers ${s.failovers}, migrations ${s.migrations} (aborted ${s.migrationsAborted}, ` +
      `interrupted by a fault ${s.migrationsInterrupted}), drains ${s.drains}`,
  );
  console.log(
    `  time to recover from a host crash (every VM that ran there running again): ${rec.length} recovered, ` +
      `median ${pct(rec, 0.5).toFixed(1)} s, p90 ${pct(rec, 0.9).toFixed(1)} s, max ${pct(rec, 1).toFixed(1)} s`,
  );
  console.log('  hour  VMs running  hosts up  hosts in use  memory used (mean / fullest host)');
  for (const u of r.utilisation)
    console.log(
      `  ${u.hour.toFixed(1).padStart(4)}  ${String(u.vmsRunning).padStart(11)}  ${String(u.hostsUp).padStart(8)}  ` +
        `${String(u.hostsWithVms).padStart(12)}  ${(u.memMean * 100).toFixed(1)}% / ${(u.memMax * 100).toFixed(1)}%`,
    );
  const last = r.utilisation.at(-1);
  return {
    policy: o.policy,
    hosts_in_use: last?.hostsWithVms ?? 0,
    mem_mean: last?.memMean ?? 0,
    failovers: s.failovers,
    migrations: s.migrations,
    recover_p50_s: pct(rec, 0.5),
    recover_max_s: pct(rec, 1),
  };
}

/**
 * The fill (farm time, wall time and CPU time to reach --vms) apart from what follows it: farm
 * hours per wall minute once full is what a 24 h run costs per hour; per CPU minute, the same
 * without the machine's load (the process's share of a core varies on a shared machine).
 */
function fillFigures(
  fill: { farmMs: number; wallMs: number; cpuS: number } | undefined,
  o: FarmOptions,
  wallMs: number,
  cpuS: number,
): Record<string, number> {
  if (!fill) return { filled: 0 };
  const farmHoursAfter = (o.chaosMs + o.settleMs - fill.farmMs) / 3_600_000;
  const wallMinutesAfter = (wallMs - fill.wallMs) / 60_000;
  const cpuMinutesAfter = (cpuS - fill.cpuS) / 60;
  const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;
  console.log(
    `  filled to ${o.vms} VMs at ${round(fill.farmMs / 60_000, 1)} min of farm time, ${round(fill.wallMs / 1000, 1)} s wall; ` +
      `then ${round(farmHoursAfter, 2)} farm h in ${round(wallMinutesAfter, 2)} wall min, ${round(cpuMinutesAfter, 2)} CPU min`,
  );
  return {
    fill_farm_min: round(fill.farmMs / 60_000, 1),
    fill_wall_s: round(fill.wallMs / 1000, 1),
    fill_cpu_s: round(fill.cpuS, 1),
    full_farm_h_per_wall_min: wallMinutesAfter > 0 ? round(farmHoursAfter / wallMinutesAfter, 3) : 0,
    full_farm_h_per_cpu_min: cpuMinutesAfter > 0 ? round(farmHoursAfter / cpuMinutesAfter, 3) : 0,
  };
}

if (opts.scale === 'large') {
  const seed = opts.seed ?? opts.start;
  const policies: FarmOptions['policy'][] = opts.compare ? ['binpack', 'spread'] : [opts.policy as 'binpack'];
  const results: Record<string, number | string>[] = [];
  let violations = 0;
  let o = farm(seed);
  for (const policy of policies) {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    let fill: { farmMs: number; wallMs: number; cpuS: number } | undefined;
    const cpuSeconds = () => {
      const c = process.cpuUsage(cpu0);
      return (c.user + c.system) / 1e6;
    };
    o = {
      ...farm(seed, policy),
      onFilled: (farmMs) => (fill = { farmMs, wallMs: performance.now() - t0, cpuS: cpuSeconds() }),
    };
    const r = await runFarm(o);
    const wallMs = performance.now() - t0;
    const wall = Math.round(wallMs / 100) / 10;
    // CPU time besides wall time: on a shared machine the process gets a varying share of a core.
    const cpu = cpuSeconds();
    const cpuS = Math.round(cpu * 10) / 10;
    results.push({ ...report(r, o, wall), ...fillFigures(fill, o, wallMs, cpu), cpu_s: cpuS, wall_s: wall });
    violations += r.violations.length;
    if (r.violations.length > 0) printViolations(r);
  }
  console.log(`details: ${JSON.stringify(results.length > 1 ? { policies: results } : results[0])}`);
  // The last line carries exactly the keys issue 14 names.
  console.log(
    JSON.stringify({
      sim_hosts: o.hosts,
      sim_vms: o.vms,
      sim_hours: o.chaosMs / 3_600_000,
      wall_s: results.length === 1 ? results[0]!['wall_s'] : wallS(),
      violations,
    }),
  );
  process.exitCode = violations > 0 ? 1 : 0;
} else {
  const seeds =
    opts.seed !== undefined ? [opts.seed] : [...Array(opts.seeds).keys()].map((i) => opts.start + i);
  const failed: number[] = [];
  let steps = 0;
  for (const seed of seeds) {
    const r = await runFarm(farm(seed));
    steps += r.stats.steps;
    if (opts.trace) for (const line of r.trace) console.log(line);
    if (r.violations.length > 0) {
      failed.push(seed);
      printViolations(r);
    } else if (seeds.length === 1) console.log(`seed ${seed}: ok ${JSON.stringify(r.stats)}`);
  }
  console.log(
    JSON.stringify({
      seeds: seeds.length,
      failed: failed.length,
      failed_seeds: failed.slice(0, 20),
      steps,
      wall_s: wallS(),
      violations: failed.length,
    }),
  );
  process.exitCode = failed.length > 0 ? 1 : 0;
}
