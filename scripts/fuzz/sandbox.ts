/**
 * A fresh farm for the fuzzer: one daemon and one agent (the real programs, built) with their
 * data folders deep inside a temporary sandbox, sentinel files at every level around them, and a
 * record of every file in the sandbox outside the data folders, to see what a request changed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkHealth, freePorts } from '@hyperfarm/api';

const root = fileURLToPath(new URL('../..', import.meta.url));
const BINARIES = {
  daemon: join(root, 'packages/daemon/dist/bin/hyperfarm-daemon.js'),
  agent: join(root, 'packages/agent/dist/bin/hyperfarm-agent.js'),
};
/** Folders between the sandbox and the farm: how far a `../` path may climb and stay inside. */
const DEPTH = 10;

export interface FarmProcess {
  id: string;
  address: string;
  dataDir: string;
  log: string;
  child: ChildProcess;
}

export interface Sandbox {
  dir: string;
  /** Absolute paths inside the sandbox but outside every data folder. */
  outside: string[];
  /** `../` a path relative to any folder of the farm may climb and stay in the sandbox. */
  maxUp: number;
  daemon: FarmProcess;
  agent: FarmProcess;
  /** Folders the programs may write: their data folders, cluster storage, logs. */
  owned: string[];
  stop(): Promise<void>;
}

function start(
  id: string,
  binary: string,
  dataDir: string,
  cwd: string,
  log: string,
  args: string[],
): FarmProcess {
  const out = createWriteStream(log);
  const child = spawn(
    process.execPath,
    [binary, '--id', id, '--data-dir', dataDir, '--log-level', 'info', ...args],
    {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  return { id, address: '', dataDir, log, child };
}

async function healthy(p: FarmProcess, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    if (p.child.exitCode !== null) throw new Error(`${p.id} exited during start-up:\n${tail(p.log)}`);
    try {
      if ((await checkHealth(p.address, '', 500)) === 'SERVING') return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${p.id} was not healthy in time:\n${tail(p.log)}`);
}

/** The last lines of a process's log. */
export function tail(log: string, lines = 30): string {
  return existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-lines).join('\n') : '';
}

export async function startSandbox(): Promise<Sandbox> {
  for (const bin of Object.values(BINARIES))
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`npm run build\` first`);
  const dir = mkdtempSync(join(tmpdir(), 'hf-fuzz-'));
  const outside: string[] = [join(dir, 'outside'), join(dir, 'outside', 'victim.txt')];
  let level = dir;
  for (let i = 1; i <= DEPTH; i++) {
    level = join(level, `d${i}`);
    mkdirSync(level);
    writeFileSync(join(level, 'sentinel.txt'), `level ${i}\n`);
    outside.push(level);
  }
  mkdirSync(join(dir, 'outside'));
  writeFileSync(join(dir, 'outside', 'victim.txt'), 'must stay\n');
  const farm = join(level, 'farm');
  const dirs = {
    daemon: join(farm, 'daemon-1'),
    agent: join(farm, 'agent-1'),
    cluster: join(farm, 'cluster'),
    logs: join(farm, 'logs'),
    cwd: join(farm, 'cwd'),
  };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  outside.push(farm, dirs.cwd);

  const [daemonPort, daemonMetrics, agentPort, agentMetrics] = await freePorts('127.0.0.1', 4);
  const daemonAddress = `127.0.0.1:${daemonPort}`;
  const daemon = start('daemon-1', BINARIES.daemon, dirs.daemon, dirs.cwd, join(dirs.logs, 'daemon-1.log'), [
    '--grpc-address',
    daemonAddress,
    '--metrics-address',
    `127.0.0.1:${daemonMetrics}`,
    '--peers',
    `daemon-1=${daemonAddress}`,
  ]);
  daemon.address = daemonAddress;
  const agent = start('agent-1', BINARIES.agent, dirs.agent, dirs.cwd, join(dirs.logs, 'agent-1.log'), [
    '--grpc-address',
    `127.0.0.1:${agentPort}`,
    '--metrics-address',
    `127.0.0.1:${agentMetrics}`,
    '--daemons',
    daemonAddress,
    '--cluster-storage-path',
    dirs.cluster,
  ]);
  agent.address = `127.0.0.1:${agentPort}`;
  // However this process ends (Ctrl-C, a failed assertion), its farm goes with it.
  const killAll = () => {
    for (const p of [agent, daemon]) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  };
  process.once('exit', killAll);
  const stop = async () => {
    process.off('exit', killAll);
    for (const p of [agent, daemon]) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        const exited = new Promise((r) => p.child.once('exit', r));
        p.child.kill('SIGKILL');
        await exited;
      }
    }
  };
  try {
    const deadline = Date.now() + 60_000;
    await Promise.all([healthy(daemon, deadline), healthy(agent, deadline)]);
  } catch (err) {
    await stop();
    throw err;
  }
  // From the shallowest folder a program resolves against (its data folder, its working
  // folder), climbing DEPTH - 2 levels stays inside the sandbox.
  return {
    dir,
    outside,
    maxUp: DEPTH - 2,
    daemon,
    agent,
    owned: [dirs.daemon, dirs.agent, dirs.cluster, dirs.logs],
    stop,
  };
}

/** Every file and folder in the sandbox outside the owned folders, with its size and mtime. */
export function filesOutside(sandbox: Pick<Sandbox, 'dir' | 'owned'>): Map<string, string> {
  const out = new Map<string, string>();
  const skip = new Set(sandbox.owned);
  const walk = (d: string) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (skip.has(p)) continue;
      if (e.isDirectory()) {
        out.set(`${relative(sandbox.dir, p)}/`, '');
        walk(p);
      } else {
        try {
          const s = statSync(p);
          out.set(relative(sandbox.dir, p), `${s.size}:${s.mtimeMs}`);
        } catch {
          out.set(relative(sandbox.dir, p), 'gone');
        }
      }
    }
  };
  walk(sandbox.dir);
  return out;
}

/** What changed between two records: created, removed and modified entries. */
export function changes(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [p, v] of after) {
    if (!before.has(p)) out.push(`created ${p}`);
    else if (before.get(p) !== v) out.push(`modified ${p}`);
  }
  for (const p of before.keys()) if (!after.has(p)) out.push(`removed ${p}`);
  return out;
}

export function removeSandbox(s: Sandbox): void {
  rmSync(s.dir, { recursive: true, force: true });
}
