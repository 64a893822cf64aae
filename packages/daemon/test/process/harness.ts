import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, freePorts, hyperfarmProto, promiseClient, type pb } from '@hyperfarm/api';

const DAEMON = fileURLToPath(new URL('../../dist/bin/hyperfarm-daemon.js', import.meta.url));
const AGENT = fileURLToPath(new URL('../../../agent/dist/bin/hyperfarm-agent.js', import.meta.url));

export type Cluster = ReturnType<typeof promiseClient<pb.ClusterServiceClient>>;

/** Polls `check` until it returns a value: waiting on a condition, failing with the last error. */
export async function until<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Proc {
  child: ChildProcess;
  exited: Promise<void>;
}

/**
 * Starts a program. With HYPERFARM_TEST_LOGS=<folder>, each process logs at info level to
 * <folder>/<id>.log (appended across restarts), to see what a failed run did; with
 * HYPERFARM_CPU_PROF=<folder>, each writes a CPU profile there when it exits (a benchmark's
 * processes, where --cpu-prof is not allowed in NODE_OPTIONS).
 */
function run(bin: string, args: string[]): Proc {
  const logDir = process.env['HYPERFARM_TEST_LOGS'];
  const profDir = process.env['HYPERFARM_CPU_PROF'];
  const id = args[args.indexOf('--id') + 1] ?? 'process';
  const out = logDir ? openSync(join(logDir, `${id}.log`), 'a') : 'ignore';
  const prof = profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${id}.cpuprofile`] : [];
  const child = spawn(process.execPath, [...prof, bin, ...args, '--log-level', logDir ? 'info' : 'warn'], {
    stdio: ['ignore', out, out],
  });
  return { child, exited: new Promise((r) => child.once('exit', () => r())) };
}

/**
 * A farm of real processes on loopback: daemons (fixed ports, so peers can be named) and agents
 * (multi-host when asked), each with its own data folder, started and killed at will.
 */
export class ProcessFarm {
  readonly dir = mkdtempSync(join(tmpdir(), 'hf-farm-'));
  readonly daemonAddresses = new Map<string, string>();
  private readonly daemons = new Map<string, Proc>();
  private readonly agents = new Map<string, { proc: Proc; args: string[] }>();
  private readonly clients = new Map<string, Cluster>();

  private constructor(private readonly daemonArgs: string[]) {}

  static async start(opts: { daemons: number; daemonArgs?: string[] }): Promise<ProcessFarm> {
    const farm = new ProcessFarm(opts.daemonArgs ?? []);
    const ports = await freePorts('127.0.0.1', opts.daemons);
    ports.forEach((p, i) => farm.daemonAddresses.set(`daemon-${i + 1}`, `127.0.0.1:${p}`));
    for (const id of farm.daemonAddresses.keys()) farm.startDaemon(id);
    try {
      await until('a leader', 60_000, () => farm.leader());
    } catch (err) {
      // The caller never gets the farm to stop: its processes would outlive the test run.
      await farm.stop();
      throw err;
    }
    return farm;
  }

  get daemonIds(): string[] {
    return [...this.daemonAddresses.keys()];
  }

  startDaemon(id: string): void {
    const peers = [...this.daemonAddresses].map(([d, a]) => `${d}=${a}`).join(',');
    this.daemons.set(
      id,
      run(DAEMON, [
        '--id',
        id,
        '--grpc-address',
        this.daemonAddresses.get(id)!,
        '--metrics-address',
        '127.0.0.1:0',
        '--data-dir',
        join(this.dir, id),
        '--peers',
        peers,
        ...this.daemonArgs,
      ]),
    );
  }

  /** The process id of a daemon or an agent (a benchmark reads its CPU time). */
  pidOf(id: string): number | undefined {
    return (this.daemons.get(id) ?? this.agents.get(id)?.proc)?.child.pid;
  }

  /** kill -9. */
  async killDaemon(id: string): Promise<void> {
    const p = this.daemons.get(id)!;
    p.child.kill('SIGKILL');
    await p.exited;
  }

  /** Starts an agent process registered with every daemon; resolves with its hosts' addresses. */
  async startAgent(
    id: string,
    hosts = 1,
    extra: string[] = [],
  ): Promise<{ id: string; grpcAddress: string }[]> {
    const ready = join(this.dir, `${id}.ready.json`);
    rmSync(ready, { force: true });
    const args = [
      '--id',
      id,
      '--id-prefix',
      id,
      '--hosts',
      String(hosts),
      '--grpc-address',
      '127.0.0.1:0',
      '--metrics-address',
      '127.0.0.1:0',
      '--data-dir',
      join(this.dir, id),
      '--ready-file',
      ready,
      '--daemons',
      [...this.daemonAddresses.values()].join(','),
      // Every agent reaches the same cluster storage, as the local farm's do.
      '--cluster-storage-path',
      join(this.dir, 'cluster'),
      ...extra,
    ];
    const proc = run(AGENT, args);
    this.agents.set(id, { proc, args });
    await until(`${id} ready`, 60_000, () => (existsSync(ready) ? true : undefined));
    const info = JSON.parse(readFileSync(ready, 'utf8')) as { hosts: { id: string; grpcAddress: string }[] };
    return info.hosts;
  }

  /** Starts a killed agent again, as it was (same folder, a new port). */
  async restartAgent(id: string): Promise<{ id: string; grpcAddress: string }[]> {
    const a = this.agents.get(id)!;
    const ready = a.args[a.args.indexOf('--ready-file') + 1]!;
    rmSync(ready, { force: true });
    this.agents.set(id, { proc: run(AGENT, a.args), args: a.args });
    await until(`${id} ready again`, 60_000, () => (existsSync(ready) ? true : undefined));
    return (JSON.parse(readFileSync(ready, 'utf8')) as { hosts: { id: string; grpcAddress: string }[] })
      .hosts;
  }

  async killAgent(id: string): Promise<void> {
    const a = this.agents.get(id)!;
    a.proc.child.kill('SIGKILL');
    await a.proc.exited;
  }

  /** SIGSTOP freezes an agent (alive, silent: a partition), SIGCONT lets it go on. */
  signalAgent(id: string, signal: 'SIGSTOP' | 'SIGCONT'): void {
    this.agents.get(id)!.proc.child.kill(signal);
  }

  /** SIGSTOP: the agent is frozen, its sockets open (a partition), until `thawAgent`. */
  freezeAgent(id: string): void {
    this.signalAgent(id, 'SIGSTOP');
  }

  thawAgent(id: string): void {
    this.signalAgent(id, 'SIGCONT');
  }

  client(daemonId: string): Cluster {
    let c = this.clients.get(daemonId);
    if (!c) {
      c = promiseClient(
        createClient(hyperfarmProto().hyperfarm.v1.ClusterService, this.daemonAddresses.get(daemonId)!),
      );
      this.clients.set(daemonId, c);
    }
    return c;
  }

  watch(daemonId: string, req: pb.WatchRequest) {
    const raw = createClient(
      hyperfarmProto().hyperfarm.v1.ClusterService,
      this.daemonAddresses.get(daemonId)!,
    );
    const stream = raw.watch(req);
    stream.on('close', () => raw.close());
    return stream;
  }

  /** The leader every live daemon agrees on, if they agree. */
  async leader(live = this.liveDaemons()): Promise<string | undefined> {
    const views = await Promise.all(live.map((id) => this.client(id).listMembers({}, { timeoutMs: 1_000 })));
    const leaders = new Set(views.map((v) => v.leaderId));
    const [leader] = leaders;
    return leaders.size === 1 && leader && live.includes(leader) ? leader : undefined;
  }

  liveDaemons(): string[] {
    return [...this.daemons]
      .filter(([, p]) => p.child.exitCode === null && p.child.signalCode === null)
      .map(([id]) => id);
  }

  async follower(): Promise<string> {
    const leader = await until('a leader', 20_000, () => this.leader());
    return this.liveDaemons().find((id) => id !== leader)!;
  }

  async stop(): Promise<void> {
    for (const a of this.agents.values()) a.proc.child.kill('SIGCONT');
    // A profiled process must exit on its own to write its profile.
    const signal = process.env['HYPERFARM_CPU_PROF'] ? 'SIGTERM' : 'SIGKILL';
    for (const p of [...this.daemons.values(), ...[...this.agents.values()].map((a) => a.proc)])
      p.child.kill(signal);
    await Promise.all(
      [...this.daemons.values(), ...[...this.agents.values()].map((a) => a.proc)].map((p) => p.exited),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A small VM configuration as a client sends it. */
export const vmSpec = (name: string, memoryMiB = 256): pb.VmConfig => ({
  name,
  processor: { count: 1 },
  memoryBytes: memoryMiB * 1024 * 1024,
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
  // A quick boot keeps the tests short (the catalog's default for this guest is 30 s).
  workload: { bootMs: 200 },
});
