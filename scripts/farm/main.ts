/**
 * The local farm launcher, run by `npm start`: daemons and agents as separate processes on free
 * loopback ports, data under one folder, healthy before it says so, and all of it stopped on
 * Ctrl-C. See docs/operations.md.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { startChild, stopChildren, tail, type Child } from './children.js';
import {
  checkHealth,
  createClient,
  hyperfarmProto,
  promiseClient,
  type pb,
  DataDirLockedError,
  farmFilePath,
  freePorts,
  lockDataDir,
  processAlive,
  readFarmFile,
  writeJsonAtomic,
  type FarmFile,
  type FarmProcess,
} from '@hyperfarm/api';

const root = fileURLToPath(new URL('../..', import.meta.url));
const BINARIES = {
  daemon: join(root, 'packages/daemon/dist/bin/hyperfarm-daemon.js'),
  agent: join(root, 'packages/agent/dist/bin/hyperfarm-agent.js'),
};

const count = (max: number) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new InvalidArgumentError(`expected a whole number from 1 to ${max}`);
  return n;
};

const program = new Command('npm start --')
  .description('Start a local hyperfarm: daemons and agents on loopback, stopped by Ctrl-C.')
  .option('--daemons <n>', 'control daemon replicas (3 or 5 for fault tolerance)', count(7), 3)
  .option('--agents <n>', 'host agents', count(255), 3)
  .option('--data <dir>', 'data folder', '.hyperfarm')
  .option('--host <ip>', 'loopback address to listen on', '127.0.0.1')
  .option('--log-level <level>', 'children log level', 'info')
  .option('--ready-timeout <ms>', 'how long to wait for every process to be healthy', count(600_000), 60_000)
  .showHelpAfterError()
  .parse();

const opts = program.opts<{
  daemons: number;
  agents: number;
  data: string;
  host: string;
  logLevel: string;
  readyTimeout: number;
}>();
const dataDir = resolve(opts.data);
const shown = relative(process.cwd(), dataDir) || '.';
const say = (line = '') => process.stdout.write(`${line}\n`);
// Atomics.wait on this blocks briefly without a busy loop, before anything async has started.
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

mkdirSync(dataDir, { recursive: true });
for (const bin of Object.values(BINARIES)) {
  if (!existsSync(bin)) fail(`${bin} is missing: run \`npm run build\` first`);
}
const releaseLock = takeFarmLock();

const total = opts.daemons + opts.agents;
const ports = await freePorts(opts.host, total * 2 + opts.daemons);
const addr = (i: number) => `${opts.host}:${ports[i]}`;
const daemonIds = Array.from({ length: opts.daemons }, (_, i) => `daemon-${i + 1}`);
const peers = daemonIds.map((id, i) => `${id}=${addr(2 * i)}`).join(',');

/** Starts the process in port slot `slot` with the flags every program shares, plus its own. */
function launch(role: FarmProcess['role'], id: string, slot: number, extra: string[]): Child {
  const spec = {
    role,
    id,
    grpcAddress: addr(2 * slot),
    metricsAddress: addr(2 * slot + 1),
    dataDir: join(dataDir, id),
    log: join(dataDir, 'logs', `${id}.log`),
  };
  const common = ['--id', id, '--grpc-address', spec.grpcAddress, '--metrics-address', spec.metricsAddress];
  return startChild(spec, BINARIES[role], [
    ...common,
    '--data-dir',
    spec.dataDir,
    '--log-level',
    opts.logLevel,
    // A local farm is for rehearsals: FaultService is on (drills use it); a production farm never
    // passes this.
    '--faults',
    'true',
    ...extra,
  ]);
}

const daemonAddresses = daemonIds.map((_, i) => addr(2 * i)).join(',');
const children: Child[] = [
  ...daemonIds.map((id, i) =>
    launch('daemon', id, i, [
      '--peers',
      peers,
      '--console-address',
      addr(2 * total + i),
      // Where `hyperfarm drill run` writes its reports by default: the console lists them.
      '--drill-reports',
      join(dataDir, 'drills'),
    ]),
  ),
  // Agents register their hosts with the daemons, which give each host its own MAC range, and
  // share one cluster storage folder: HA VMs' files live there, so failover and moves reopen them.
  ...Array.from({ length: opts.agents }, (_, i) =>
    launch('agent', `agent-${i + 1}`, opts.daemons + i, [
      '--daemons',
      daemonAddresses,
      '--cluster-storage-path',
      join(dataDir, 'cluster'),
    ]),
  ),
];

let stopping = false;
async function shutdown(reason: string, exitCode: number): Promise<never> {
  if (stopping) process.exit(exitCode);
  stopping = true;
  say(`\nhyperfarm: ${reason}; stopping ${children.filter((c) => c.running).length} processes...`);
  await stopChildren(children, 10_000);
  rmSync(farmFilePath(dataDir), { force: true });
  releaseLock();
  say('hyperfarm: stopped.');
  process.exit(exitCode);
}
process.on('SIGINT', () => void shutdown('Ctrl-C', 0));
process.on('SIGTERM', () => void shutdown('SIGTERM', 0));
process.on('SIGHUP', () => void shutdown('SIGHUP', 0));

for (const c of children) {
  void c.exited.then(({ code, signal }) => {
    if (!stopping)
      say(
        `hyperfarm: ${c.spec.id} (pid ${c.spec.pid}) exited with ${signal ?? `code ${code}`}; see ${relative(process.cwd(), c.spec.log)}`,
      );
  });
}

say(`hyperfarm: starting ${opts.daemons} daemons and ${opts.agents} agents in ${shown}/ ...`);
const started = Date.now();
let hosts: pb.Host__Output[] = [];
try {
  await Promise.all(children.map((c) => waitHealthy(c, started + opts.readyTimeout)));
  hosts = await waitHostsUp(started + opts.readyTimeout);
} catch (err) {
  say(`hyperfarm: ${(err as Error).message}`);
  await shutdown('start-up failed', 1);
}

const farm: FarmFile = {
  version: 1,
  dataDir,
  launcherPid: process.pid,
  startedAt: new Date().toISOString(),
  processes: children.map((c) => c.spec),
};
writeJsonAtomic(farmFilePath(dataDir), farm);
printSummary(farm, hosts, Date.now() - started);

/** Waits until every agent's host is registered and Up, as the farm (any daemon) reports it. */
async function waitHostsUp(deadline: number): Promise<pb.Host__Output[]> {
  const daemon = promiseClient(
    createClient(hyperfarmProto().hyperfarm.v1.ClusterService, children[0]!.spec.grpcAddress),
  );
  let seen = 'no answer yet';
  while (Date.now() < deadline) {
    try {
      const { hosts } = await daemon.listHosts({ pageSize: 1000 }, { timeoutMs: 1_000 });
      const up = hosts.filter((h) => h.state === 'HOST_STATE_UP');
      if (up.length >= opts.agents) return hosts;
      seen = `${up.length} of ${opts.agents} hosts Up`;
    } catch (err) {
      seen = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the hosts were not all registered and Up within ${opts.readyTimeout} ms (${seen})`);
}

async function waitHealthy(child: Child, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    if (!child.running)
      throw new Error(`${child.spec.id} exited during start-up. Its log ends with:\n${tail(child.spec.log)}`);
    try {
      if ((await checkHealth(child.spec.grpcAddress, '', 500)) === 'SERVING') return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${child.spec.id} was not healthy within ${opts.readyTimeout} ms; see ${child.spec.log}`);
}

function printSummary(f: FarmFile, hosts: pb.Host__Output[], ms: number): void {
  say(`hyperfarm is up in ${(ms / 1000).toFixed(1)} s: ${opts.daemons} daemons, ${opts.agents} agents.`);
  say();
  for (const p of f.processes) {
    say(
      `  ${p.id.padEnd(10)} gRPC ${p.grpcAddress.padEnd(16)} metrics http://${p.metricsAddress}/metrics  pid ${p.pid}`,
    );
  }
  say();
  say(`Web console (docs/console.md), served by every daemon:`);
  daemonIds.forEach((id, i) => say(`  ${id.padEnd(10)} http://${addr(2 * total + i)}/`));
  say();
  say(`Hosts (${hosts.length}):`);
  for (const h of hosts) {
    const gib = (h.capacity!.memoryBytes / 1024 ** 3).toFixed(0);
    say(
      `  ${h.id.padEnd(10)} ${h.state.replace('HOST_STATE_', '').padEnd(8)} ${h.capacity!.logicalProcessors} LPs, ${gib} GiB, MACs from ${h.macPoolStart}`,
    );
  }
  const d = f.processes.find((p) => p.role === 'daemon')!;
  const a = f.processes.find((p) => p.role === 'agent');
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
function takeFarmLock(): () => void {
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
