/**
 * bench:idle — what a settled farm costs when nothing happens: each process's CPU a second.
 *
 * bench:placement's farm (3 daemons, 1,000 hosts in 4 multi-host agent processes) started, every
 * host Up, then `--settle` s more (the registration's tail: followers applying, agents' first
 * syncs), then each process's CPU (user + system, /proc/PID/stat) over `--window` s, no calls
 * made but the first wait for hosts Up. `--hosts 3 --agents 3` is `npm start`'s shape.
 * `--profile DIR` writes a V8 CPU profile of every process and the window as window.json (for
 * scripts/bench/cpuprofile.ts --window).
 *
 * Last line: {"hosts", "window_s", "cpu_s_per_s": {process: s}, "all"}.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { BenchFarm, cpuSeconds, round, say } from './farm-harness.js';

const opts = new Command('bench:idle')
  .option('--hosts <n>', 'hosts in the farm', Number, 1000)
  .option('--agents <n>', 'agent processes the hosts are shared among', Number, 4)
  .option('--settle <s>', 'seconds after every host is Up before the window', Number, 15)
  .option('--window <s>', 'seconds the CPU is measured over', Number, 30)
  .option('--profile <dir>', 'write a CPU profile of every process into this folder')
  .parse()
  .opts<{ hosts: number; agents: number; settle: number; window: number; profile?: string }>();

const load = () =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
const farm = new BenchFarm('idle', opts.profile);
try {
  await farm.startDaemons(3);
  const started = Date.now();
  farm.startRacks(opts.hosts, opts.agents);
  await farm.hostsUp(opts.hosts);
  say(`${opts.hosts} hosts Up in ${((Date.now() - started) / 1000).toFixed(1)} s; settling ${opts.settle} s`);
  await farm.leader();
  await new Promise((r) => setTimeout(r, opts.settle * 1000));
  const procs = farm.processes();
  say(`load average before: ${load()}`);
  const fromUs = Number(process.hrtime.bigint() / 1000n);
  const cpu0 = procs.map((p) => cpuSeconds(p.pid));
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, opts.window * 1000));
  const s = (performance.now() - t0) / 1000;
  const perS = procs.map((p, i) => ({ name: p.name, s: round((cpuSeconds(p.pid) - cpu0[i]!) / s) }));
  if (opts.profile) {
    mkdirSync(opts.profile, { recursive: true });
    const toUs = Number(process.hrtime.bigint() / 1000n);
    writeFileSync(join(opts.profile, 'window.json'), JSON.stringify({ fromUs, toUs, procs }));
  }
  const all = round(perS.reduce((a, p) => a + p.s, 0));
  say(`CPU s a second over ${s.toFixed(1)} s: ${perS.map((p) => `${p.name} ${p.s}`).join(', ')}; all ${all}`);
  say(`load average after: ${load()}`);
  say(
    JSON.stringify({
      hosts: opts.hosts,
      window_s: round(s),
      cpu_s_per_s: Object.fromEntries(perS.map((p) => [p.name, p.s])),
      all,
    }),
  );
} finally {
  await farm.stop();
}
process.exit(0);
