import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { freePorts } from '@hyperfarm/api';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A local cluster of kv-server processes on loopback, for the real-process tests and the
 * benchmark: start, kill -9, restart, find the leader, and write through it.
 */

export interface KvMember {
  id: string;
  raft: string;
  http: string;
  dataDir: string;
  proc: ChildProcess | undefined;
  agent: Agent;
}

export interface KvClusterOptions {
  size: number;
  root: string;
  /** Extra kv-server flags, e.g. ['--tick-ms', '50']. */
  args?: string[];
  /** Run the TypeScript source through tsx (default) or the built dist. */
  entry?: 'source' | 'dist';
  /** Flags for node itself, e.g. ['--cpu-prof']. */
  nodeArgs?: string[];
  /** Receives each stdout line a member prints after it is ready (role changes, JSON). */
  onOutput?: (id: string, line: string) => void;
  /** Where kv-server writes its stderr (default: ignored). */
  stderr?: 'inherit' | 'ignore';
}

export interface KvResponse {
  status: number;
  body: Record<string, unknown>;
}

const freePort = async (): Promise<number> => (await freePorts('127.0.0.1', 1))[0]!;

function serverCommand(entry: 'source' | 'dist'): { cmd: string; args: string[] } {
  const source = fileURLToPath(new URL('./kv-server.ts', import.meta.url));
  // Loaded from dist: the server is the compiled file next to this one.
  if (!existsSync(source))
    return { cmd: process.execPath, args: [fileURLToPath(new URL('./kv-server.js', import.meta.url))] };
  if (entry === 'dist') {
    return {
      cmd: process.execPath,
      args: [fileURLToPath(new URL('../../dist/node/kv-server.js', import.meta.url))],
    };
  }
  return { cmd: process.execPath, args: ['--import', 'tsx', source] };
}

export class KvCluster {
  readonly members: KvMember[] = [];
  private peers = '';

  private constructor(private readonly opts: KvClusterOptions) {}

  static async start(opts: KvClusterOptions): Promise<KvCluster> {
    const c = new KvCluster(opts);
    for (let i = 1; i <= opts.size; i++) {
      const id = `n${i}`;
      c.members.push({
        id,
        raft: `127.0.0.1:${await freePort()}`,
        http: `127.0.0.1:${await freePort()}`,
        dataDir: join(opts.root, id),
        proc: undefined,
        agent: new Agent({ keepAlive: true, maxSockets: 256 }),
      });
    }
    c.peers = c.members.map((m) => `${m.id}=${m.raft}`).join(',');
    await Promise.all(c.members.map((m) => c.launch(m)));
    return c;
  }

  member(id: string): KvMember {
    const m = this.members.find((x) => x.id === id);
    if (!m) throw new Error(`no member '${id}'`);
    return m;
  }

  /** Starts a member's process and waits for its "ready" line. */
  launch(m: KvMember): Promise<void> {
    mkdirSync(m.dataDir, { recursive: true });
    const { cmd, args } = serverCommand(this.opts.entry ?? 'source');
    const proc = spawn(
      cmd,
      [
        ...(this.opts.nodeArgs ?? []),
        ...args,
        '--id',
        m.id,
        '--listen',
        m.raft,
        '--http',
        m.http,
        '--peers',
        this.peers,
        '--data-dir',
        m.dataDir,
        ...(this.opts.args ?? []),
      ],
      { stdio: ['ignore', 'pipe', this.opts.stderr ?? 'ignore'] },
    );
    m.proc = proc;
    return new Promise((resolve, reject) => {
      let out = '';
      const onData = (chunk: Buffer): void => {
        out += chunk.toString();
        if (out.includes('"event":"ready"')) {
          proc.stdout!.off('data', onData);
          const onOutput = this.opts.onOutput;
          if (onOutput) {
            let rest = '';
            proc.stdout!.on('data', (c: Buffer) => {
              const lines = (rest + c.toString()).split('\n');
              rest = lines.pop() ?? '';
              for (const line of lines) onOutput(m.id, line);
            });
          } else {
            proc.stdout!.resume();
          }
          resolve();
        }
      };
      proc.stdout!.on('data', onData);
      proc.once('exit', (code) =>
        reject(new Error(`kv-server ${m.id} exited with ${code} before it was ready: ${out}`)),
      );
    });
  }

  /** kill -9: no chance to flush or close anything. Resolves once the process is gone. */
  kill(m: KvMember): Promise<void> {
    const proc = m.proc;
    m.proc = undefined;
    m.agent.destroy();
    m.agent = new Agent({ keepAlive: true, maxSockets: 256 });
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGKILL');
    });
  }

  running(): KvMember[] {
    return this.members.filter((m) => m.proc);
  }

  call(m: KvMember, method: string, path: string, body?: string, timeoutMs = 5_000): Promise<KvResponse> {
    const [host, port] = [
      m.http.slice(0, m.http.lastIndexOf(':')),
      Number(m.http.slice(m.http.lastIndexOf(':') + 1)),
    ];
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host,
          port,
          method,
          path,
          agent: m.agent,
          timeout: timeoutMs,
          headers: body !== undefined ? { 'content-length': Buffer.byteLength(body) } : {},
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () => {
            try {
              resolve({
                status: res.statusCode ?? 0,
                body: JSON.parse(Buffer.concat(parts).toString() || '{}') as Record<string, unknown>,
              });
            } catch (err) {
              reject(err as Error);
            }
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`request to ${m.id} timed out after ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** The member that says it leads, polling until `timeoutMs`. */
  async leader(timeoutMs = 15_000): Promise<KvMember> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      for (const m of this.running()) {
        const st = await this.call(m, 'GET', '/status', undefined, 1_000).catch(() => undefined);
        if (st?.status === 200 && st.body.role === 'leader') return m;
      }
      if (performance.now() > deadline) throw new Error(`no leader within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => this.kill(m)));
    for (const m of this.members) m.agent.destroy();
  }
}

/**
 * A client that writes through whichever member leads: it follows 503 leader hints and, when a
 * member is unreachable, tries the others. Each put resolves with the index once acknowledged;
 * 503 and 409 mean the write certainly did not happen (NotAcceptedError), anything else that it
 * may have.
 */
export class KvClient {
  private target: KvMember | undefined;

  constructor(private readonly cluster: KvCluster) {}

  /** One attempt against the current target; throws on anything but an acknowledgement. */
  async putOnce(
    key: string,
    value: string,
    timeoutMs = 5_000,
  ): Promise<{ index: number; prev: string | null }> {
    const m = this.target ?? this.cluster.running()[0];
    if (!m) throw new Error('no member is running');
    this.target = m;
    let res: KvResponse;
    try {
      res = await this.cluster.call(m, 'PUT', `/kv/${encodeURIComponent(key)}`, value, timeoutMs);
    } catch (err) {
      this.rotate(m);
      throw err;
    }
    if (res.status === 200) return { index: res.body.index as number, prev: res.body.prev as string | null };
    if (res.status === 503) {
      const hint = res.body.leader as string;
      const next = this.cluster.running().find((x) => x.id === hint);
      if (next) this.target = next;
      else this.rotate(m);
      throw new NotAcceptedError(`${m.id} did not take the write (leader hint '${hint}')`);
    }
    if (res.status === 409) throw new NotAcceptedError(`${m.id}: ${String(res.body.error)}`);
    throw new Error(`${m.id} answered ${res.status}: ${JSON.stringify(res.body)}`);
  }

  async get(key: string, timeoutMs = 5_000): Promise<string | null> {
    const m = this.target ?? this.cluster.running()[0];
    if (!m) throw new Error('no member is running');
    const res = await this.cluster.call(m, 'GET', `/kv/${encodeURIComponent(key)}`, undefined, timeoutMs);
    if (res.status === 200 || res.status === 404) return res.body.value as string | null;
    if (res.status === 503) this.rotate(m);
    throw new Error(`${m.id} answered ${res.status}: ${JSON.stringify(res.body)}`);
  }

  private rotate(from: KvMember): void {
    const running = this.cluster.running();
    const i = running.indexOf(from);
    this.target = running[(i + 1) % running.length];
  }
}

/** The request was refused (not the leader, or dropped by the leader): it certainly did not happen. */
export class NotAcceptedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotAcceptedError';
  }
}
