/**
 * The local farm launcher, run by `npm start` (scripts/farm/main.ts): daemons and agents as
 * separate processes (a ProcessFarm, the same one the drills and tests use), data under one
 * folder, healthy before it says so, and all of it stopped on Ctrl-C. See docs/operations.md.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import {
  createClient,
  hyperfarmProto,
  promiseClient,
  type pb,
  DataDirLockedError,
  farmFilePath,
  lockDataDir,
  processAlive,
  readFarmFile,
  writeJsonAtomic,
  type FarmFile,
} from '@hyperfarm/api';
import { ProcessFarm } from './process-farm.js';
import { LoopbackNetwork, NetnsNetwork, type FarmNetwork } from './network.js';

const count = (max: number) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new InvalidArgumentError(`expected a whole number from 1 to ${max}`);
  return n;
};

interface LauncherOptions {
  daemons: number;
  agents: number;
  data: string;
  host: string;
  logLevel: string;
  readyTimeout: number;
  netns: boolean;
}

const say = (line = '') => process.stdout.write(`${line}\n`);
// Atomics.wait on this blocks briefly without a busy loop, before anything async has started.
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/** Runs the launcher with command-line arguments (`npm start -- ...`) until Ctrl-C. */
export async function runLauncher(argv: string[]): Promise<void> {
  const program = new Command('npm start --')
    .description('Start a local hyperfarm: daemons and agents on loopback, stopped by Ctrl-C.')
    .option('--daemons <n>', 'control daemon replicas (3 or 5 for fault tolerance)', count(7), 3)
    .option('--agents <n>', 'host agents', count(250), 3)
    .option('--data <dir>', 'data folder', '.hyperfarm')
    .option('--host <ip>', 'loopback address to listen on', '127.0.0.1')
    .option('--log-level <level>', 'children log level', 'info')
    .option(
      '--ready-timeout <ms>',
      'how long to wait for every process to be healthy',
      count(600_000),
      60_000,
    )
    .option(
      '--netns',
      'root only: each process in its own network namespace on a bridge, so links are cut for real (docs/drills.md)',
      false,
    )
    .showHelpAfterError()
    .parse(argv, { from: 'user' });
  const opts = program.opts<LauncherOptions>();
  const dataDir = resolve(opts.data);
  const shown = relative(process.cwd(), dataDir) || '.';

  mkdirSync(dataDir, { recursive: true });
  const releaseLock = takeFarmLock(dataDir, shown);
  let network: FarmNetwork;
  try {
    network = opts.netns ? new NetnsNetwork() : new LoopbackNetwork(opts.host);
  } catch (err) {
    releaseLock();
    fail((err as Error).message);
  }
  say(`hyperfarm: starting ${opts.daemons} daemons and ${opts.agents} agents in ${shown}/ ...`);
  const started = Date.now();
  const deadline = started + opts.readyTimeout;
  let farm: ProcessFarm | undefined;
  let stopping = false;
  const shutdown = async (reason: string, exitCode: number): Promise<never> => {
    if (stopping) process.exit(exitCode);
    stopping = true;
    const running = farm ? farm.describe().filter((p) => farm!.running(p.id)).length : 0;
    say(`\nhyperfarm: ${reason}; stopping ${running} processes...`);
    await farm?.stop(true, 10_000);
    await network.close();
    rmSync(farmFilePath(dataDir), { force: true });
    releaseLock();
    say('hyperfarm: stopped.');
    process.exit(exitCode);
  };
  process.on('SIGINT', () => void shutdown('Ctrl-C', 0));
  process.on('SIGTERM', () => void shutdown('SIGTERM', 0));
  process.on('SIGHUP', () => void shutdown('SIGHUP', 0));

  let hosts: pb.Host__Output[] = [];
  try {
    farm = await ProcessFarm.start({
      daemons: opts.daemons,
      dataDir,
      logLevel: opts.logLevel,
      // A local farm is for rehearsals: FaultService is on (drills use it); a production farm
      // never passes this.
      faults: true,
      ownProcessGroups: true,
      network,
      // Where `hyperfarm drill run` writes its reports by default: the console lists them.
      daemonArgs: ['--drill-reports', join(dataDir, 'drills')],
    });
    const f = farm;
    // Agents register their hosts with the daemons, which give each host its own MAC range, and
    // share one cluster storage folder: HA VMs' files live there, so failover and moves reopen
    // them.
    await Promise.all([
      f.whenHealthy(deadline),
      ...Array.from({ length: opts.agents }, (_, i) =>
        f.startAgent(`agent-${i + 1}`, 1, ['--cluster-storage-path', join(dataDir, 'cluster')]),
      ),
    ]);
    await f.whenHealthy(deadline);
    for (const p of f.describe())
      void f.exited(p.id).then((how) => {
        if (!stopping)
          say(`hyperfarm: ${p.id} (pid ${p.pid}) exited with ${how}; see ${relative(process.cwd(), p.log)}`);
      });
    hosts = await waitHostsUp(f.endpoints[0]!, opts.agents, deadline, opts.readyTimeout);
  } catch (err) {
    say(`hyperfarm: ${(err as Error).message}`);
    await shutdown('start-up failed', 1);
  }
  const description: FarmFile = {
    version: 1,
    dataDir,
    launcherPid: process.pid,
    startedAt: new Date().toISOString(),
    processes: farm!.describe().map(({ consoleAddress: _, ...p }) => p),
  };
  writeJsonAtomic(farmFilePath(dataDir), description);
  printSummary(farm!, opts, shown, dataDir, hosts, Date.now() - started);
}

/** Waits until every agent's host is registered and Up, as the farm (any daemon) reports it. */
async function waitHostsUp(
  endpoint: string,
  agents: number,
  deadline: number,
  timeoutMs: number,
): Promise<pb.Host__Output[]> {
  const raw = createClient(hyperfarmProto().hyperfarm.v1.ClusterService, endpoint);
  const daemon = promiseClient(raw);
  let seen = 'no answer yet';
  try {
    while (Date.now() < deadline) {
      try {
        const { hosts } = await daemon.listHosts({ pageSize: 1000 }, { timeoutMs: 1_000 });
        const up = hosts.filter((h) => h.state === 'HOST_STATE_UP');
        if (up.length >= agents) return hosts;
        seen = `${up.length} of ${agents} hosts Up`;
      } catch (err) {
        seen = (err as Error).message;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    raw.close();
  }
  throw new Error(`the hosts were not all registered and Up within ${timeoutMs} ms (${seen})`);
}

function printSummary(
  farm: ProcessFarm,
  opts: LauncherOptions,
  shown: string,
  dataDir: string,
  hosts: pb.Host__Output[],
  ms: number,
): void {
  const processes = farm.describe();
  say(`hyperfarm is up in ${(ms / 1000).toFixed(1)} s: ${opts.daemons} daemons, ${opts.agents} agents.`);
  if (opts.netns) say('Each process runs in its own network namespace (--netns): docs/drills.md.');
  say();
  for (const p of processes) {
    say(
      `  ${p.id.padEnd(10)} gRPC ${p.grpcAddress.padEnd(16)} metrics http://${p.metricsAddress}/metrics  pid ${p.pid}`,
    );
  }
  say();
  say(`Web console (docs/console.md), served by every daemon:`);
  for (const p of processes)
    if (p.role === 'daemon' && p.consoleAddress) say(`  ${p.id.padEnd(10)} ${p.consoleAddress}`);
  say();
  say(`Hosts (${hosts.length}):`);
  for (const h of hosts) {
    const gib = (h.capacity!.memoryBytes / 1024 ** 3).toFixed(0);
    say(
      `  ${h.id.padEnd(10)} ${h.state.replace('HOST_STATE_', '').padEnd(8)} ${h.capacity!.logicalProcessors} LPs, ${gib} GiB, MACs from ${h.macPoolStart}`,
    );
  }
  const d = processes.find((p) => p.role === 'daemon')!;
  const a = processes.find((p) => p.role === 'agent');
  say();
  say('Try (docs/cli.md; --data picks this farm when it is not in .hyperfarm/):');
  const data = shown === '.hyperfarm' ? '' : ` --data ${shown}`;
  say(`  npx hyperfarm host ls${data}`);
  say(`  npx hyperfarm vm new web-1 --memory 1G --start${data}`);
  say(`  npx hyperfarm vm ls${data}`);
  say(`  npx hyperfarm cluster status${data}                       # the Raft leader and members`);
  // A rehearsal that leaves the farm as it found it (it heals its partition), for 3 daemons.
  if (opts.daemons === 3 && opts.agents >= 2)
    say(
      `  npx hyperfarm drill run drills/partition-minority.yaml --quick --attach ${shown}   # docs/drills.md`,
    );
  say(`  grpcurl -plaintext ${d.grpcAddress} list                       # reflection on any process`);
  if (a) say(`  grpcurl -plaintext ${a.grpcAddress} hyperfarm.v1.AgentService/GetHostInfo`);
  say(`  curl -s http://${d.metricsAddress}/metrics | head`);
  say();
  say(
    `Farm description: ${relative(process.cwd(), farmFilePath(dataDir))}; logs: ${shown}/logs/. Press Ctrl-C to stop.`,
  );
}

/**
 * One launcher per data folder. A live launcher means the farm is running: say where to reach
 * it and refuse, touching nothing. A dead one left a stale lock, which is taken over; the
 * children it left running still hold their data folders, so they are stopped first.
 */
function takeFarmLock(dataDir: string, shown: string): () => void {
  const previous = readFarmFile(dataDir);
  let release: () => void;
  try {
    release = lockDataDir(dataDir, 'farm.lock');
  } catch (err) {
    if (!(err instanceof DataDirLockedError)) throw err;
    say(`hyperfarm: a farm is already running from ${shown}/ (launcher pid ${err.pid}).`);
    for (const p of previous?.processes ?? [])
      say(`  ${p.id.padEnd(10)} gRPC ${p.grpcAddress}  pid ${p.pid}`);
    say(
      `Use it as it is (see ${relative(process.cwd(), farmFilePath(dataDir))}), or stop it with Ctrl-C in its terminal or \`kill -INT ${err.pid}\`,`,
    );
    say('or start another farm in another folder with `npm start -- --data <dir>`.');
    process.exit(1);
  }
  const orphans = (previous?.processes ?? []).filter((p) => processAlive(p.pid) && isFarmProcess(p.pid));
  for (const p of orphans) {
    say(`hyperfarm: stopping ${p.id} (pid ${p.pid}), left running by a launcher that died`);
    process.kill(p.pid, 'SIGTERM');
  }
  const deadline = Date.now() + 10_000;
  while (orphans.some((p) => processAlive(p.pid)) && Date.now() < deadline) Atomics.wait(SLEEPER, 0, 0, 50);
  return release;
}

function isFarmProcess(pid: number): boolean {
  try {
    return /hyperfarm-(daemon|agent)/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}

function fail(message: string): never {
  process.stderr.write(`hyperfarm: ${message}\n`);
  process.exit(1);
}
