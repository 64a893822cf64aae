import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkHealth, freePorts, type FarmProcess } from '@hyperfarm/api';
import { LoopbackNetwork, type FarmNetwork } from './network.js';

/**
 * A farm of real processes, the one launcher behind `npm start`, the drills and the tests:
 * daemons on fixed ports (so peers can name each other) and agents, each with its own data
 * folder and log, started, killed with SIGKILL and restarted at will. It starts the daemon and
 * agent programs by path and never imports their code. Where they listen, and how a link
 * between two of them is cut, is the network's business: loopback, or a network namespace per
 * process (network.ts).
 */

const packages = fileURLToPath(new URL('../../../', import.meta.url));
export const PROGRAMS = {
  daemon: join(packages, 'daemon/dist/bin/hyperfarm-daemon.js'),
  agent: join(packages, 'agent/dist/bin/hyperfarm-agent.js'),
};

interface Proc {
  role: FarmProcess['role'];
  child: ChildProcess;
  args: string[];
  /** Resolves with how it ended: 'code 0', 'SIGKILL'... */
  exited: Promise<string>;
  /** What the process wrote to its ready file once it served. */
  ready?: Ready;
}

interface Ready {
  pid: number;
  grpcAddress: string;
  metricsAddress: string;
  consoleAddress?: string;
  hosts?: { id: string; grpcAddress: string }[];
}

export interface ProcessFarmOptions {
  daemons: number;
  /** Extra flags for every daemon, e.g. ['--raft-profile', 'fast']. */
  daemonArgs?: string[];
  /** Parent of the farm's folder, a fresh one inside it (default: the system's temporary folder). */
  dir?: string;
  /** Exactly this folder instead (the launcher's .hyperfarm/), kept when the farm stops. */
  dataDir?: string;
  logLevel?: string;
  /** Serve FaultService and carry the fault interceptors (default: true, as drills need them). */
  faults?: boolean;
  /**
   * Start each process in its own process group, so a terminal's Ctrl-C reaches only the
   * launcher, which alone decides how its children stop (npm start).
   */
  ownProcessGroups?: boolean;
  /** Where the processes listen and how links are cut (default: loopback, 127.0.0.1). */
  network?: FarmNetwork;
}

export class ProcessFarm {
  readonly daemonAddresses = new Map<string, string>();
  private readonly procs = new Map<string, Proc>();

  private constructor(
    readonly dir: string,
    private readonly opts: ProcessFarmOptions,
    readonly network: FarmNetwork,
  ) {}

  static async start(opts: ProcessFarmOptions): Promise<ProcessFarm> {
    for (const bin of Object.values(PROGRAMS))
      if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`npm run build\` first`);
    let dir: string;
    if (opts.dataDir) {
      dir = opts.dataDir;
      mkdirSync(dir, { recursive: true });
    } else dir = mkdtempSync(join(opts.dir ?? tmpdir(), 'hyperfarm-'));
    const network: FarmNetwork = opts.network ?? new LoopbackNetwork();
    const farm = new ProcessFarm(dir, opts, network);
    const ids = Array.from({ length: opts.daemons }, (_, i) => `daemon-${i + 1}`);
    try {
      for (const id of ids) await network.add(id);
      const ports = network.fixedPort ? [] : await freePorts(network.ip(ids[0] ?? ''), opts.daemons);
      ids.forEach((id, i) =>
        farm.daemonAddresses.set(id, `${network.ip(id)}:${network.fixedPort ?? ports[i]!}`),
      );
      for (const id of ids) farm.startDaemon(id);
    } catch (err) {
      await farm.stop(opts.dataDir !== undefined);
      throw err;
    }
    return farm;
  }

  get endpoints(): string[] {
    return [...this.daemonAddresses.values()];
  }

  get daemonIds(): string[] {
    return [...this.daemonAddresses.keys()];
  }

  /** Starts (or starts again, with the same folder and port) daemon `id`. */
  startDaemon(id: string): void {
    const ip = this.network.ip(id);
    const peers = [...this.daemonAddresses].map(([d, a]) => `${d}=${a}`).join(',');
    const args = [
      '--id',
      id,
      '--grpc-address',
      this.daemonAddresses.get(id)!,
      '--metrics-address',
      `${ip}:0`,
      '--console-address',
      `${ip}:0`,
      '--data-dir',
      join(this.dir, id),
      '--ready-file',
      this.readyFile(id),
      '--peers',
      peers,
      ...(this.opts.daemonArgs ?? []),
    ];
    rmSync(this.readyFile(id), { force: true });
    this.spawn('daemon', id, PROGRAMS.daemon, args);
  }

  /** Starts an agent registered with every daemon; resolves with its hosts once it serves. */
  async startAgent(
    id: string,
    hosts = 1,
    extra: string[] = [],
  ): Promise<{ id: string; grpcAddress: string }[]> {
    await this.network.add(id);
    const ip = this.network.ip(id);
    const args = [
      '--id',
      id,
      '--id-prefix',
      id,
      '--hosts',
      String(hosts),
      '--grpc-address',
      `${ip}:0`,
      '--metrics-address',
      `${ip}:0`,
      '--data-dir',
      join(this.dir, id),
      '--ready-file',
      this.readyFile(id),
      '--daemons',
      this.endpoints.join(','),
      ...extra,
    ];
    return this.startAgentWith(id, args);
  }

  /** Starts a killed agent again, as it was (same folder, a new port). */
  restartAgent(id: string): Promise<{ id: string; grpcAddress: string }[]> {
    return this.startAgentWith(id, this.procs.get(id)!.args);
  }

  private async startAgentWith(id: string, args: string[]): Promise<{ id: string; grpcAddress: string }[]> {
    rmSync(this.readyFile(id), { force: true });
    this.spawn('agent', id, PROGRAMS.agent, args);
    return (await this.whenReady(id, Date.now() + 60_000)).hosts!;
  }

  /**
   * Waits until `id` has written its ready file (it serves), reading its addresses from it.
   * Polls: the file appears from another process, and no event says so.
   */
  async whenReady(id: string, deadline: number): Promise<Ready> {
    const proc = this.procs.get(id)!;
    const file = this.readyFile(id);
    while (!proc.ready) {
      if (!this.running(id))
        throw new Error(`${id} exited during start-up. Its log ends with:\n${this.tail(id)}`);
      if (Date.now() > deadline) throw new Error(`${id} was not ready in time; see ${this.log(id)}`);
      if (existsSync(file)) proc.ready = JSON.parse(readFileSync(file, 'utf8')) as Ready;
      else await new Promise((r) => setTimeout(r, 50));
    }
    return proc.ready;
  }

  /** Waits until every process is ready and answers health checks with SERVING. */
  async whenHealthy(deadline: number): Promise<void> {
    await Promise.all(
      [...this.procs.keys()].map(async (id) => {
        const { grpcAddress } = await this.whenReady(id, deadline);
        while ((await checkHealth(grpcAddress, '', 500).catch(() => 'DOWN')) !== 'SERVING') {
          if (!this.running(id)) throw new Error(`${id} exited. Its log ends with:\n${this.tail(id)}`);
          if (Date.now() > deadline) throw new Error(`${id} was not healthy in time; see ${this.log(id)}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }),
    );
  }

  /** Every process as farm.json describes it (those that are ready). */
  describe(): (FarmProcess & { consoleAddress?: string })[] {
    return [...this.procs].map(([id, p]) => ({
      role: p.role,
      id,
      grpcAddress: p.ready?.grpcAddress ?? '',
      metricsAddress: p.ready?.metricsAddress ?? '',
      ...(p.ready?.consoleAddress ? { consoleAddress: p.ready.consoleAddress } : {}),
      pid: p.child.pid ?? -1,
      dataDir: join(this.dir, id),
      log: this.log(id),
    }));
  }

  /** Resolves with how process `id` (as started last) ends: 'code 1', 'SIGKILL'... */
  exited(id: string): Promise<string> {
    return this.procs.get(id)!.exited;
  }

  /** kill -9 of a daemon or agent; resolves once it has exited. */
  async kill(id: string): Promise<void> {
    const p = this.procs.get(id);
    if (!p || !this.running(id)) return;
    p.child.kill('SIGKILL');
    await p.exited;
  }

  running(id: string): boolean {
    const c = this.procs.get(id)?.child;
    return c !== undefined && c.exitCode === null && c.signalCode === null;
  }

  liveDaemons(): string[] {
    return this.daemonIds.filter((id) => this.running(id));
  }

  pid(id: string): number | undefined {
    return this.procs.get(id)?.child.pid;
  }

  log(id: string): string {
    return join(this.dir, 'logs', `${id}.log`);
  }

  /** The last lines of a process's log, to show why it failed. */
  tail(id: string, lines = 15): string {
    try {
      return readFileSync(this.log(id), 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /**
   * Stops every process, removes the network's namespaces and, unless `keep`, the farm's folder.
   * `graceMs`: SIGTERM first (a clean stop: agents save their VMs), SIGKILL for what is still
   * running after it; without, SIGKILL at once.
   */
  async stop(keep = false, graceMs = 0): Promise<void> {
    try {
      if (graceMs > 0) {
        for (const id of this.procs.keys()) if (this.running(id)) this.procs.get(id)!.child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const all = Promise.all([...this.procs.values()].map((p) => p.exited));
        await Promise.race([all, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
      }
      await Promise.all([...this.procs.keys()].map((id) => this.kill(id)));
    } finally {
      await this.network.close();
    }
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }

  private readyFile(id: string): string {
    return join(this.dir, 'run', `${id}.ready.json`);
  }

  private spawn(role: FarmProcess['role'], id: string, bin: string, args: string[]): Proc {
    mkdirSync(join(this.dir, 'logs'), { recursive: true });
    mkdirSync(join(this.dir, 'run'), { recursive: true });
    const fd = openSync(this.log(id), 'a');
    const faults = this.opts.faults === false ? [] : ['--faults', 'true'];
    const [command, ...prefix] = [...this.network.command(id), process.execPath];
    const child = spawn(
      command!,
      [...prefix, bin, ...args, ...faults, '--log-level', this.opts.logLevel ?? 'warn'],
      {
        stdio: ['ignore', fd, fd],
        detached: this.opts.ownProcessGroups === true,
      },
    );
    closeSync(fd);
    const exited = new Promise<string>((r) =>
      child.once('exit', (code, signal) => r(signal ?? `code ${String(code)}`)),
    );
    const proc: Proc = { role, child, args, exited };
    this.procs.set(id, proc);
    return proc;
  }
}
