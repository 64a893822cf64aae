import { execFileSync, spawnSync } from 'node:child_process';
import { processAlive } from '@hyperfarm/api';

/**
 * Where a farm's processes listen and how the links between them are cut. On loopback every
 * process shares 127.0.0.1 and a cut is FaultService's (in the gRPC layer of the processes
 * themselves). In network namespaces each process has its own network stack, joined to the
 * others by a veth pair on a bridge, and a cut takes its link down for real.
 */
export interface FarmNetwork {
  /** The address process `id` listens on and is reached at. */
  ip(id: string): string;
  /** The one port every daemon listens on when each has its own address; otherwise free ports. */
  readonly fixedPort?: number;
  /** Prepares process `id`'s place on the network (idempotent). */
  add(id: string): Promise<void>;
  /** What runs a program there: prepended to `node <program>`. */
  command(id: string): string[];
  /**
   * Cuts every link of the processes named (from and to every other process, and the runner),
   * where the network can: undefined on loopback, where FaultService does it.
   */
  cut?(ids: string[]): Promise<void>;
  /** Brings every cut link back. */
  heal?(): Promise<void>;
  /** Removes what `add` made. Safe to call twice. */
  close(): Promise<void>;
}

export class LoopbackNetwork implements FarmNetwork {
  constructor(private readonly host = '127.0.0.1') {}
  ip(): string {
    return this.host;
  }
  async add(): Promise<void> {}
  command(): string[] {
    return [];
  }
  async close(): Promise<void> {}
}

const PREFIX = 'hf-';

/** Why network namespaces cannot be used here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'network namespaces need root (the runner is not root)';
  const probe = `${PREFIX}probe-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (add.error) return `\`ip\` is not installed (${add.error.message})`;
  if (add.status !== 0) return `\`ip netns add\` failed: ${add.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return undefined;
}

/**
 * One network namespace per process (`hf-<runner pid>-<n>`), each with a veth pair whose other
 * end is on a bridge in the root namespace (`hfb<runner pid>`), addresses from a private /24
 * (the bridge is .1, so the runner reaches every process). `cut` sets the root end of a
 * process's veth down: its packets are lost, as when a cable is pulled, and TCP finds out by its
 * own timeouts. Everything is removed by `close`, by the runner's exit (even on an error), and
 * namespaces a killed runner left are removed by the next one.
 */
export class NetnsNetwork implements FarmNetwork {
  readonly fixedPort = 7000;
  private readonly index = new Map<string, number>();
  private readonly subnet: string;
  private readonly bridge: string;
  private closed = false;
  private readonly onExit = () => this.closeSync();

  constructor() {
    const why = netnsUnavailable();
    if (why) throw new Error(`--netns: ${why}`);
    removeStale();
    this.subnet = `10.77.${(process.pid % 254) + 1}`;
    this.bridge = `hfb${process.pid}`;
    ip('link', 'add', this.bridge, 'type', 'bridge');
    process.once('exit', this.onExit);
    try {
      ip('addr', 'add', `${this.subnet}.1/24`, 'dev', this.bridge);
      ip('link', 'set', this.bridge, 'up');
    } catch (err) {
      this.closeSync();
      throw err;
    }
  }

  private ns(n: number): string {
    return `${PREFIX}${process.pid}-${n}`;
  }

  private veth(n: number): string {
    return `hf${process.pid}v${n}`;
  }

  ip(id: string): string {
    const n = this.index.get(id);
    if (n === undefined) throw new Error(`${id} has no place on the network yet`);
    return `${this.subnet}.${n + 1}`;
  }

  async add(id: string): Promise<void> {
    if (this.index.has(id)) return;
    const n = this.index.size + 1;
    if (n > 250) throw new Error('a namespace farm holds at most 250 processes');
    this.index.set(id, n);
    const ns = this.ns(n);
    const outside = this.veth(n);
    const inside = `hf${process.pid}p${n}`;
    ip('netns', 'add', ns);
    ip('link', 'add', outside, 'type', 'veth', 'peer', 'name', inside);
    ip('link', 'set', inside, 'netns', ns);
    ip('link', 'set', outside, 'master', this.bridge, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'addr', 'add', `${this.subnet}.${n + 1}/24`, 'dev', inside);
    ip('-n', ns, 'link', 'set', inside, 'up');
  }

  command(id: string): string[] {
    return ['ip', 'netns', 'exec', this.ns(this.index.get(id)!)];
  }

  async cut(ids: string[]): Promise<void> {
    for (const id of ids) ip('link', 'set', this.veth(this.index.get(id)!), 'down');
  }

  async heal(): Promise<void> {
    for (const n of this.index.values()) ip('link', 'set', this.veth(n), 'up');
  }

  /** Whether process `id`'s link is up now (for tests). */
  linkUp(id: string): boolean {
    const out = execFileSync('ip', ['-o', 'link', 'show', this.veth(this.index.get(id)!)], {
      encoding: 'utf8',
    });
    return !/state DOWN/.test(out) && /[<,]UP[,>]/.test(out);
  }

  async close(): Promise<void> {
    this.closeSync();
  }

  private closeSync(): void {
    if (this.closed) return;
    this.closed = true;
    process.off('exit', this.onExit);
    // Deleting a namespace deletes the veth end inside it, and with it the pair.
    for (const n of this.index.values()) spawnSync('ip', ['netns', 'del', this.ns(n)]);
    spawnSync('ip', ['link', 'del', this.bridge]);
  }
}

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim() || r.error?.message}`);
}

/** Namespaces and bridges of runners that died without cleaning up (kill -9). */
function removeStale(): void {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  const dead = new Set<number>();
  for (const line of list.split('\n')) {
    const m = new RegExp(`^${PREFIX}(\\d+)-\\d+`).exec(line);
    if (m && !processAlive(Number(m[1]))) {
      spawnSync('ip', ['netns', 'del', line.split(' ')[0]!]);
      dead.add(Number(m[1]));
    }
  }
  for (const pid of dead) spawnSync('ip', ['link', 'del', `hfb${pid}`]);
}
