/**
 * Runs the farm simulator (packages/sim) over many seeds: the real daemons (Raft core, farm
 * state machine, controllers) and the real hypervisor engines on a virtual clock, with faults,
 * and the safety invariants checked after every step. See docs/simulation.md.
 *
 *   npm run sim:farm -- --seeds 100 [--start 1] [--hosts 5] [--vms 24] [--daemons 3|5]
 *   npm run sim:farm -- --seed 1234 --trace        replays one seed and prints its trace
 *
 * The last line printed is one JSON object. The exit code is non-zero if any seed failed.
 */
import { Command, InvalidArgumentError } from 'commander';
import { runFarm, SMALL } from '../packages/sim/src/index.js';

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a whole number`);
  return n;
};

const program = new Command()
  .name('sim:farm')
  .option('--seeds <n>', 'how many seeds to run', int('--seeds'), 20)
  .option('--start <n>', 'first seed', int('--start'), 1)
  .option('--seed <n>', 'run this one seed', int('--seed'))
  .option('--trace', 'print the trace of the run (with --seed)', false)
  .option('--daemons <n>', 'daemons (3 or 5)', int('--daemons'), SMALL.daemons)
  .option('--hosts <n>', 'hosts', int('--hosts'), SMALL.hosts)
  .option('--vms <n>', 'VMs the workload keeps', int('--vms'), SMALL.vms)
  .option('--policy <p>', 'placement: binpack or spread', SMALL.policy)
  .option('--no-faults', 'no faults (the workload alone)')
  .option('--no-converge', 'check safety only, not convergence after the faults stop')
  .parse();

const opts = program.opts<{
  seeds: number;
  start: number;
  seed?: number;
  trace: boolean;
  daemons: number;
  hosts: number;
  vms: number;
  policy: string;
  faults: boolean;
  converge: boolean;
}>();
if (opts.policy !== 'binpack' && opts.policy !== 'spread') program.error('--policy: binpack or spread');

const seeds =
  opts.seed !== undefined ? [opts.seed] : [...Array(opts.seeds).keys()].map((i) => opts.start + i);
const started = performance.now();
const failed: number[] = [];
let steps = 0;
for (const seed of seeds) {
  const r = await runFarm({
    ...SMALL,
    seed,
    daemons: opts.daemons,
    hosts: opts.hosts,
    vms: opts.vms,
    policy: opts.policy as 'binpack' | 'spread',
    faults: opts.faults,
    converge: opts.converge,
    trace: opts.trace,
  });
  steps += r.stats.steps;
  if (opts.trace) for (const line of r.trace) console.log(line);
  if (r.violations.length > 0) {
    failed.push(seed);
    for (const v of r.violations.slice(0, 5))
      console.log(`seed ${seed}: ${v.property} at t=${v.time} ms: ${v.detail}`);
    console.log(`replay: npm run sim:farm -- --seed ${seed} --trace`);
  } else if (seeds.length === 1) console.log(`seed ${seed}: ok ${JSON.stringify(r.stats)}`);
}
const wall = (performance.now() - started) / 1000;
console.log(
  JSON.stringify({
    seeds: seeds.length,
    failed: failed.length,
    failed_seeds: failed.slice(0, 20),
    steps,
    wall_s: Math.round(wall * 10) / 10,
    violations: failed.length,
  }),
);
process.exitCode = failed.length > 0 ? 1 : 0;
