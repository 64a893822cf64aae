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
 * A host of 4 LPs and 8 GiB on a virtual clock with no timer: tests move time with `clock.t`
 * and call `pump()`/`settle()` themselves.
 */
export async function openTestHost(
  dir: string,
  opts: TestHostOptions,
): Promise<{ host: AgentHost; clock: { t: number } }> {
  const clock = { t: opts.startMs };
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
    clock: () => clock.t,
    tickMs: 0,
    seed: opts.seed,
    ...(opts.storageProvider ? { storageProvider: opts.storageProvider } : {}),
    ...(opts.wrapDisk ? { wrapDisk: opts.wrapDisk } : {}),
  });
  return { host, clock };
}
