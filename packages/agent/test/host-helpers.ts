import { createLogger } from '@hyperfarm/api';
import type { StorageProvider } from '@hyperfarm/vhd';
import { AgentHost, type HostSettings } from '../src/edge/agent-host.js';
import type { DiskBackend } from '../src/edge/disk.js';
import { LIMITS_PROFILES } from '../src/limits.js';
import { gib, mib } from './helpers.js';

export interface TestHostOptions {
  id: string;
  macPoolStart: string;
  /** Where the virtual clock starts (Unix ms). */
  startMs: number;
  seed: number;
  settings?: Partial<HostSettings>;
  storageProvider?: StorageProvider;
  wrapDisk?: (vmId: string, index: number, disk: DiskBackend) => DiskBackend;
  /** The host's own timer pumps it every `tickMs` while a guest runs, on the virtual clock's timers. */
  tickMs?: number;
}

/**
 * A virtual clock: `t` is the time every part of the host reads, and `sleep` the timer its
 * background jobs wait on. Timers fire only when `advance` moves `t` past them, so nothing in
 * the host moves on real time.
 */
export class TestClock {
  private timers: { at: number; fire: () => void }[] = [];
  constructor(public t: number) {}

  readonly now = (): number => this.t;

  readonly sleep = (ms: number): Promise<void> =>
    new Promise((fire) => this.timers.push({ at: this.t + ms, fire }));

  /** Moves time on by `ms` and fires every timer that is due. */
  advance(ms: number): void {
    this.t += ms;
    const due = this.timers.filter((x) => x.at <= this.t);
    this.timers = this.timers.filter((x) => x.at > this.t);
    for (const x of due) x.fire();
  }

  private pending: { at: number; seq: number; fn: () => void }[] = [];
  private seq = 0;
  /** How many timers set with `set` have fired. */
  fired = 0;

  /** Timers (the host's pump) that fire only in `run`, each at its own time. */
  readonly set = (fn: () => void, ms: number): unknown => {
    const timer = { at: this.t + ms, seq: this.seq++, fn };
    this.pending.push(timer);
    return timer;
  };

  readonly clear = (handle: unknown): void => {
    this.pending = this.pending.filter((x) => x !== handle);
  };

  /** Moves time on by `ms`, firing the `set` timers due on the way in time order, each at its time. */
  run(ms: number): void {
    const until = this.t + ms;
    for (;;) {
      this.pending.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.pending[0];
      if (!next || next.at > until) break;
      this.pending.shift();
      this.t = Math.max(this.t, next.at);
      this.fired++;
      next.fn();
    }
    this.t = until;
  }
}

/**
 * A host of 4 LPs and 8 GiB on a virtual clock with no timer: tests move time with `clock.t`
 * and call `pump()`/`settle()` themselves.
 */
export async function openTestHost(
  dir: string,
  opts: TestHostOptions,
): Promise<{ host: AgentHost; clock: TestClock }> {
  const clock = new TestClock(opts.startMs);
  const host = await AgentHost.open({
    settings: {
      id: opts.id,
      dataDir: dir,
      logicalProcessors: 4,
      memoryBytes: gib(8),
      rootReserveBytes: gib(1),
      perVmOverheadBytes: mib(32),
      limits: LIMITS_PROFILES['2008'],
      macPoolStart: opts.macPoolStart,
      macPoolSize: 32,
      leaseMs: 10_000,
      ...opts.settings,
    },
    logger: createLogger({ program: 'test', id: opts.id, level: 'silent' }),
    clock: clock.now,
    sleep: clock.sleep,
    tickMs: opts.tickMs ?? 0,
    timers: clock,
    seed: opts.seed,
    ...(opts.storageProvider ? { storageProvider: opts.storageProvider } : {}),
    ...(opts.wrapDisk ? { wrapDisk: opts.wrapDisk } : {}),
  });
  return { host, clock };
}
