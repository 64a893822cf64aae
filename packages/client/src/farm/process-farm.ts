import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePorts } from '@hyperfarm/api';

/**
 * A farm of real processes on loopback, for tests and drills: daemons on fixed free ports (so
 * peers can name each other) and agents, each with its own data folder and log, started,
 * killed with SIGKILL and restarted at will. It starts the daemon and agent programs by path and
 * never imports their code.
 */

const packages = fileURLToPath(new URL('../../../', import.meta.url));
export const PROGRAMS = {
  daemon: join(packages, 'daemon/dist/bin/hyperfarm-daemon.js'),
  agent: join(packages, 'agent/dist/bin/hyperfarm-agent.js'),
};

interface Proc {
  child: ChildProcess;
  args: string[];
  exited: Promise<void>;
}

export interface ProcessFarmOptions {
  daemons: number;
  /** Extra flags for every daemon, e.g. ['--raft-profile', 'fast']. */
  daemonArgs?: string[];
  /** Parent of the farm's folder (default: the system's temporary folder). */
  dir?: string;
  logLevel?: string;
  /** Serve FaultService and carry the fault interceptors (default: true, as drills need them). */
  faults?: boolean;
}

export class ProcessFarm {
  readonly daemonAddresses = new Map<string, string>();
  private readonly procs = new Map<string, Proc>();

  private constructor(
    readonly dir: string,
    private readonly opts: ProcessFarmOptions,
  ) {}

  static async start(opts: ProcessFarmOptions): Promise<ProcessFarm> {
    for (const bin of Object.values(PROGRAMS))
      if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`npm run build\` first`);
    const farm = new ProcessFarm(mkdtempSync(join(opts.dir ?? tmpdir(), 'hyperfarm-')), opts);
    const ports = await freePorts('127.0.0.1', opts.daemons);
    ports.forEach((p, i) => farm.daemonAddresses.set(`daemon-${i + 1}`, `127.0.0.1:${p}`));
    for (const id of farm.daemonAddresses.keys()) farm.startDaemon(id);
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
    const peers = [...this.daemonAddresses].map(([d, a]) => `${d}=${a}`).join(',');
    const args = [
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
      ...(this.opts.daemonArgs ?? []),
    ];
    this.spawn(id, PROGRAMS.daemon, args);
  }

  /** Starts an agent registered with every daemon; resolves with its hosts once it serves. */
  async startAgent(
    id: string,
    hosts = 1,
    extra: string[] = [],
  ): Promise<{ id: string; grpcAddress: string }[]> {
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
      join(this.dir, `${id}.ready.json`),
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
    const ready = args[args.indexOf('--ready-file') + 1]!;
    rmSync(ready, { force: true });
    const proc = this.spawn(id, PROGRAMS.agent, args);
    const deadline = Date.now() + 60_000;
    while (!existsSync(ready)) {
      if (proc.child.exitCode !== null) throw new Error(`${id} exited during start-up; see ${this.log(id)}`);
      if (Date.now() > deadline) throw new Error(`${id} not ready in 60 s; see ${this.log(id)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return (JSON.parse(readFileSync(ready, 'utf8')) as { hosts: { id: string; grpcAddress: string }[] })
      .hosts;
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

  /** Kills every process and, unless `keep`, removes the farm's folder. */
  async stop(keep = false): Promise<void> {
    await Promise.all([...this.procs.keys()].map((id) => this.kill(id)));
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }

  private spawn(id: string, bin: string, args: string[]): Proc {
    mkdirSync(join(this.dir, 'logs'), { recursive: true });
    const fd = openSync(this.log(id), 'a');
    const faults = this.opts.faults === false ? [] : ['--faults', 'true'];
    const child = spawn(
      process.execPath,
      [bin, ...args, ...faults, '--log-level', this.opts.logLevel ?? 'warn'],
      {
        stdio: ['ignore', fd, fd],
      },
    );
    closeSync(fd);
    const proc = { child, args, exited: new Promise<void>((r) => child.once('exit', () => r())) };
    this.procs.set(id, proc);
    return proc;
  }
}
