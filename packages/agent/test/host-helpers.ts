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
    tickMs: 0,
    seed: opts.seed,
    ...(opts.storageProvider ? { storageProvider: opts.storageProvider } : {}),
    ...(opts.wrapDisk ? { wrapDisk: opts.wrapDisk } : {}),
  });
  return { host, clock };
}
