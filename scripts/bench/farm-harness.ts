/**
 * What bench:placement and bench:scale share: real daemon and agent processes on loopback (agents
 * in multi-host mode), the wait for hosts Up, CreateVm with many calls in flight that survive a
 * leader change, a Watch stream followed again when it ends, latency percentiles and the
 * processes' memory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, freePorts, hyperfarmProto, promiseClient, type pb } from '@hyperfarm/api';
import { followWatch, type Following } from './watch-follow.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const DAEMON = join(root, 'packages/daemon/dist/bin/hyperfarm-daemon.js');
const AGENT = join(root, 'packages/agent/dist/bin/hyperfarm-agent.js');

export type Cluster = ReturnType<typeof promiseClient<pb.ClusterServiceClient>>;
export const say = (line: string) => process.stdout.write(`${line}\n`);
export const cluster = (address: string): Cluster =>
  promiseClient(createClient(hyperfarmProto().hyperfarm.v1.ClusterService, address));

export async function until<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
export const round = (x: number) => Math.round(x * 100) / 100;

/** p50 and p99 of a set of latencies, in ms, rounded. */
export const summary = (xs: number[]) => ({
  p50: round(percentile(xs, 50)),
  p99: round(percentile(xs, 99)),
  // Not Math.max(...xs): a few hundred thousand arguments overflow the stack.
  max: round(xs.reduce((m, x) => Math.max(m, x), 0)),
  n: xs.length,
});

/** Resident memory of a process in MiB (/proc/<pid>/status VmRSS), 0 once it has exited. */
export function rssMb(pid: number | undefined): number {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Math.round(Number(kb) / 1024) : 0;
  } catch {
    return 0;
  }
}

/** CPU time a process has used (user + system, /proc/<pid>/stat), in seconds; 0 once it has exited. */
export function cpuSeconds(pid: number | undefined): number {
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

export interface Daemon {
  id: string;
  address: string;
  proc: ChildProcess;
}

export interface Agent {
  id: string;
  hosts: number;
  proc: ChildProcess;
}

/** Three (or `daemons`) daemons and their agents; `stop` ends every process and removes the folder. */
export class BenchFarm {
  readonly dir: string;
  readonly daemons: Daemon[] = [];
  readonly agents: Agent[] = [];
  private readonly procs: ChildProcess[] = [];
  leaderAddress = '';

  /**
   * V8's young generation for the daemons, MiB a semi-space (0: V8's default, 16 on Node 20).
   * A daemon under creates makes garbage that dies young (requests decoded, answers encoded,
   * entries parsed) beside records that live for good: a larger nursery scavenges less often,
   * and promotes less of the young garbage to the old generation (bench:placement-apply under
   * --trace-gc: scavenges 739/663 -> 665/602 ms, mark-compacts 110/67 -> 23/30 ms).
   */
  semiSpaceMiB = 64;

  constructor(
    name: string,
    private readonly profile?: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), `hf-bench-${name}-`));
    for (const bin of [DAEMON, AGENT])
      if (!existsSync(bin)) throw new Error(`${bin} is missing: npm run build`);
    // A bench that dies (an uncaught error, Ctrl-C, kill) takes its farm with it: left running,
    // a 1,000-host farm's processes load the machine for every later measurement.
    process.once('exit', () => this.killAll());
    for (const signal of ['SIGINT', 'SIGTERM'] as const)
      process.once(signal, () => {
        this.killAll();
        process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
      });
  }

  private killAll(): void {
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }

  private run(bin: string, args: string[]): ChildProcess {
    const flags = this.profile ? ['--cpu-prof', '--cpu-prof-dir', this.profile] : [];
    if (bin === DAEMON && this.semiSpaceMiB > 0) flags.push(`--max-semi-space-size=${this.semiSpaceMiB}`);
    // HF_DAEMON_NODE_ARGS: node flags for the daemons (for example "--trace-gc").
    if (bin === DAEMON) flags.push(...(process.env['HF_DAEMON_NODE_ARGS'] ?? '').split(' ').filter(Boolean));
    // HF_BENCH_LOGS=<folder>: each process's warnings and errors go to <folder>/<id>.log.
    const logs = process.env['HF_BENCH_LOGS'];
    const out = logs ? openSync(join(logs, `${args[args.indexOf('--id') + 1]}.log`), 'a') : 'ignore';
    const p = spawn(process.execPath, [...flags, bin, ...args, '--log-level', 'warn'], {
      stdio: ['ignore', out, out],
    });
    this.procs.push(p);
    return p;
  }

  /** Starts the daemons and resolves once they have a leader. */
  async startDaemons(n = 3): Promise<Cluster> {
    const ports = await freePorts('127.0.0.1', n);
    const ds = ports.map((p, i) => ({ id: `daemon-${i + 1}`, address: `127.0.0.1:${p}` }));
    const peers = ds.map((d) => `${d.id}=${d.address}`).join(',');
    for (const d of ds) {
      const args = ['--id', d.id, '--grpc-address', d.address, '--metrics-address', '127.0.0.1:0'];
      const proc = this.run(DAEMON, [...args, '--data-dir', join(this.dir, d.id), '--peers', peers]);
      this.daemons.push({ ...d, proc });
    }
    const any = cluster(ds[0]!.address);
    const leaderId = await until(
      'a leader',
      90_000,
      async () => (await any.listMembers({})).leaderId || undefined,
    );
    this.leaderAddress = ds.find((d) => d.id === leaderId)!.address;
    return cluster(this.leaderAddress);
  }

  /**
   * Every process of the farm by name (the leader named as such, as last asked), and this one
   * (the bench's own client shares the same cores): what the CPU figures are read of.
   */
  processes(): { name: string; pid: number | undefined }[] {
    return [
      ...this.daemons.map((d) => ({
        name: d.address === this.leaderAddress ? `${d.id} (leader)` : d.id,
        pid: d.proc.pid,
      })),
      ...this.agents.map((a) => ({ name: `agent ${a.id}`, pid: a.proc.pid })),
      { name: 'bench', pid: process.pid },
    ];
  }

  /** The daemon that leads now, asked of any daemon. */
  async leader(): Promise<Cluster> {
    for (const d of this.daemons) {
      const id = await cluster(d.address)
        .listMembers({}, { timeoutMs: 2_000 })
        .then((m) => m.leaderId)
        .catch(() => '');
      const l = this.daemons.find((x) => x.id === id);
      if (l) {
        this.leaderAddress = l.address;
        return cluster(l.address);
      }
    }
    throw new Error('no leader');
  }

  /** An agent process with `hosts` hosts named `<id>-1` ... (or `<id>` alone for one host). */
  startAgent(id: string, hosts: number, extra: string[] = []): Agent {
    const args = ['--id', id, '--id-prefix', id, '--hosts', String(hosts)]
      .concat(['--grpc-address', '127.0.0.1:0', '--metrics-address', '127.0.0.1:0'])
      .concat(['--data-dir', join(this.dir, id)])
      .concat(['--daemons', this.daemons.map((d) => d.address).join(','), ...extra]);
    const agent = { id, hosts, proc: this.run(AGENT, args) };
    this.agents.push(agent);
    return agent;
  }

  /** `hosts` hosts shared among `processes` agent processes named rack1, rack2, ... */
  startRacks(hosts: number, processes: number): void {
    const per = Math.ceil(hosts / processes);
    for (let a = 0; a < processes; a++) {
      const n = Math.min(per, hosts - a * per);
      if (n > 0) this.startAgent(`rack${a + 1}`, n);
    }
  }

  /** Waits until `n` hosts are Up (asked of `address`, by default the leader), saying how many every 10 s. */
  async hostsUp(n: number, address?: string, timeoutMs = 600_000): Promise<void> {
    let shown = 0;
    const asked = address === undefined ? undefined : cluster(address);
    await until(`${n} hosts Up`, timeoutMs, async () => {
      // Stale: what this daemon has applied, so the wait goes on when the leadership moves.
      const c = address === undefined ? cluster(this.leaderAddress) : asked!;
      let up = 0;
      let pageToken = '';
      do {
        const page = await c.listHosts({
          pageSize: 1000,
          pageToken,
          state: 'HOST_STATE_UP',
          consistency: 'CONSISTENCY_STALE',
        });
        up += page.hosts.length;
        pageToken = page.nextPageToken;
      } while (pageToken);
      if (Date.now() - shown > 10_000) {
        shown = Date.now();
        say(`  ${up} hosts Up`);
      }
      return up >= n ? true : undefined;
    });
  }

  /**
   * Follows the farm's events from `fromRevision`. A stream that ends (a leader change, a daemon
   * that cut it for falling behind) is opened again from the last revision seen, on the next
   * daemon; if that revision is no longer kept (OUT_OF_RANGE), from the current one, and
   * `onGap` is told: the events between are lost, and the caller counts what it needs otherwise.
   */
  watch(
    req: { fromRevision: number; kinds: pb.WatchRequest['kinds'] },
    onEvent: (e: pb.Event__Output) => void,
    onGap: () => void = () => undefined,
  ): Following {
    return followWatch({ ...this.watchFrom(req), onEvent, onGap, say });
  }

  /** Where and what a Watch follows: the leader first, then each daemon in turn. */
  watchFrom(req: { fromRevision: number; kinds: pb.WatchRequest['kinds'] }): {
    addresses: string[];
    fromRevision: number;
    kinds: pb.WatchRequest['kinds'];
  } {
    return { addresses: [this.leaderAddress, ...this.daemons.map((d) => d.address)], ...req };
  }

  /**
   * `count` VMs created, `concurrency` calls in flight, each a CreateVm or (with `batch` above 1)
   * a CreateVms of `batch` VMs. A leader change on this loaded machine answers UNAVAILABLE: the
   * call is sent again under the same request ids (so each VM is created once), to whichever
   * daemon leads then. Resolves with how many calls were sent again.
   */
  async createVms(opts: {
    count: number;
    concurrency: number;
    batch?: number;
    /** VMs a second at most: the i-th is not sent before i / ratePerS s from the start (0: unpaced). */
    ratePerS?: number;
    config: (i: number) => pb.VmConfig;
    requestId: (i: number) => string;
    /** Each create as acknowledged: its VM, the call's time, and the operation as answered. */
    created?: (id: string, ms: number, op: pb.Operation__Output) => void;
  }): Promise<{ retried: number }> {
    const batch = Math.max(1, opts.batch ?? 1);
    let creates = cluster(this.leaderAddress);
    let retried = 0;
    let next = 0;
    const refused: string[] = [];
    const request = (i: number) => ({ config: opts.config(i), requestId: opts.requestId(i) });
    // The operations of VMs first..first+n-1, one call.
    const call = async (first: number, n: number): Promise<pb.Operation__Output[]> => {
      if (batch === 1) return [await creates.createVm(request(first), { timeoutMs: 60_000 })];
      const vms = Array.from({ length: n }, (_, k) => request(first + k));
      // Brief results: the operation's id, VM, progress and error are all the bench reads.
      const { results } = await creates.createVms({ vms, briefResults: true }, { timeoutMs: 60_000 });
      return results.map((r) => {
        if (r.error) throw new Error(`VM ${r.error.message} (code ${r.error.code})`);
        return r.operation!;
      });
    };
    const started = performance.now();
    const rate = opts.ratePerS ?? 0;
    const creator = async () => {
      while (next < opts.count) {
        const first = next;
        const n = Math.min(batch, opts.count - first);
        next += n;
        const due = rate > 0 ? started + (first / rate) * 1000 - performance.now() : 0;
        if (due > 0) await new Promise((r) => setTimeout(r, due));
        for (let attempt = 0; ; attempt++) {
          const t = performance.now();
          try {
            const ops = await call(first, n);
            for (const op of ops) opts.created?.(op.targetId, performance.now() - t, op);
            break;
          } catch (err) {
            if (attempt >= 20) {
              refused.push((err as Error).message);
              break;
            }
            retried++;
            await new Promise((r) => setTimeout(r, 250));
            creates = await this.leader().catch(() => creates);
          }
        }
      }
    };
    await Promise.all(Array.from({ length: opts.concurrency }, creator));
    if (refused.length > 0) throw new Error(`${refused.length} creates refused, first: ${refused[0]}`);
    return { retried };
  }

  /** kill -9 of one agent process. */
  async killAgent(agent: Agent): Promise<void> {
    agent.proc.kill('SIGKILL');
    if (agent.proc.exitCode === null && agent.proc.signalCode === null)
      await new Promise((r) => agent.proc.once('exit', r));
  }

  /**
   * Ends every process and removes the folder. A profiled process writes its profile as it
   * exits: it is asked to stop, and killed only if it does not within 20 s.
   */
  async stop(): Promise<void> {
    for (const p of this.procs) p.kill(this.profile ? 'SIGTERM' : 'SIGKILL');
    const kill = setTimeout(() => this.procs.forEach((p) => p.kill('SIGKILL')), this.profile ? 20_000 : 0);
    await Promise.all(
      this.procs.map((p) =>
        p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : null,
      ),
    );
    clearTimeout(kill);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
