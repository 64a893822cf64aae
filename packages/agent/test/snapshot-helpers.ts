import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { pb } from '@hyperfarm/api';
import { VhdDisk, type StorageProvider } from '@hyperfarm/vhd';
import type { AgentHost } from '../src/edge/agent-host.js';
import { Checkpoints } from '../src/edge/checkpoints.js';
import type { DiskBackend } from '../src/edge/disk.js';
import { mib } from './helpers.js';
import { openTestHost, type TestClock } from './host-helpers.js';

export const SECTOR = 512;

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `hf-snap-${tag}-`));
}

/** A host on a virtual clock (no timer) with its snapshot manager. */
export async function openSnapshotHost(
  dir: string,
  opts: {
    storageProvider?: StorageProvider;
    mergeThrottleMs?: number;
    allowedRoots?: string[];
    wrapDisk?: (vmId: string, index: number, disk: DiskBackend) => DiskBackend;
  } = {},
): Promise<{ host: AgentHost; snaps: Checkpoints; clock: TestClock }> {
  const { host, clock } = await openTestHost(dir, {
    id: 'host-snap',
    macPoolStart: '00-15-5D-20-00-00',
    startMs: 1_700_000_000_000,
    seed: 7,
    settings: {
      leaseMs: 10_000_000,
      ...(opts.mergeThrottleMs ? { mergeThrottleMs: opts.mergeThrottleMs } : {}),
      ...(opts.allowedRoots ? { allowedRoots: opts.allowedRoots } : {}),
    },
    ...(opts.storageProvider ? { storageProvider: opts.storageProvider } : {}),
    ...(opts.wrapDisk ? { wrapDisk: opts.wrapDisk } : {}),
  });
  const snaps = new Checkpoints(host);
  await snaps.merges.resumeAll();
  return { host, snaps, clock };
}

/**
 * Lets everything the host and its merges can do without time passing finish: effects, record
 * writes and merge blocks, until each merge waits on the clock or has ended. Repeated because a
 * merge's last step changes the engine, which may hand the effect runner more work.
 */
export async function quiesce(host: AgentHost, snaps: Checkpoints): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await host.settle();
    await snaps.merges.whenQuiet();
  }
}

/**
 * Moves the virtual clock `stepMs` at a time, letting the host and its merges finish between
 * steps, until `done()` says so: no wait depends on how fast this machine is.
 */
export async function runUntil(
  host: AgentHost,
  snaps: Checkpoints,
  clock: TestClock,
  done: () => boolean | Promise<boolean>,
  stepMs = 100,
): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    await quiesce(host, snaps);
    if (await done()) return;
    clock.advance(stepMs);
    host.pump();
  }
  throw new Error('condition not reached after 2000 steps of the virtual clock');
}

export function snapVmConfig(
  name: string,
  workload: pb.WorkloadProfile = {},
  sizeBytes = mib(4),
): pb.VmConfig {
  return {
    name,
    processor: { count: 1 },
    memoryBytes: mib(64),
    guestOs: 'windows-server-2008-x64',
    integrationServices: true,
    disks: [
      {
        controller: 'DISK_CONTROLLER_IDE',
        path: 'boot.vhd',
        createType: 'DISK_TYPE_DYNAMIC',
        createSizeBytes: sizeBytes,
      },
    ],
    workload: { bootMs: 10, ...workload },
  };
}

/** One byte per sector, read through the whole chain. */
export async function readSectors(path: string, sectors: readonly number[]): Promise<number[]> {
  const d = await VhdDisk.open(path, { readOnly: true, parentTimestamp: 'ignore' });
  try {
    const out: number[] = [];
    for (const s of sectors) out.push((await d.read(s * SECTOR, SECTOR))[0]!);
    return out;
  } finally {
    await d.close();
  }
}

export async function writeSector(path: string, sector: number, value: number): Promise<void> {
  const d = await VhdDisk.open(path, { parentTimestamp: 'ignore' });
  try {
    await d.write(sector * SECTOR, Buffer.alloc(SECTOR, value));
    await d.flush();
  } finally {
    await d.close();
  }
}
