/**
 * Snapshot figures: how long a running VM's disk I/O is held while a snapshot is taken (by
 * memory size), how long the whole snapshot takes (memory file included), and the online merge
 * rate when the snapshot's disk folds into the running VM's disk while the guest writes.
 *
 *   node --import tsx scripts/bench/snapshots.ts [--memory-mib 256] [--disk-mib 64]
 *
 * The last line is one JSON object.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { createLogger } from '@hyperfarm/api';
import { VhdDisk } from '@hyperfarm/vhd';
import { AgentHost } from '../../packages/agent/src/edge/agent-host.js';
import { Checkpoints } from '../../packages/agent/src/edge/checkpoints.js';
import { LIMITS_PROFILES } from '../../packages/agent/src/limits.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const MIB = 1024 * 1024;
const memoryMib = arg('memory-mib', 256);
const diskMib = arg('disk-mib', 64);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hf-bench-snap-'));
  const host = await AgentHost.open({
    settings: {
      id: 'bench',
      dataDir: dir,
      logicalProcessors: 2,
      memoryBytes: 8192 * MIB,
      rootReserveBytes: 512 * MIB,
      perVmOverheadBytes: 32 * MIB,
      limits: LIMITS_PROFILES['2008'],
      macPoolStart: '00-15-5D-30-00-00',
      macPoolSize: 16,
      leaseMs: 600_000,
    },
    logger: createLogger({ program: 'bench', id: 'bench', level: 'silent' }),
    tickMs: 100,
  });
  const snaps = new Checkpoints(host);
  try {
    await host.createVm(
      'b',
      {
        name: 'bench-1',
        processor: { count: 1 },
        memoryBytes: memoryMib * MIB,
        guestOs: 'windows-server-2008-x64',
        integrationServices: true,
        disks: [
          {
            controller: 'DISK_CONTROLLER_IDE',
            path: 'boot.vhd',
            createType: 'DISK_TYPE_DYNAMIC',
            createSizeBytes: diskMib * MIB,
          },
        ],
        workload: {
          bootMs: 10,
          workingSetBytes: memoryMib * MIB,
          dirtyPagesPerSecond: 50_000,
          diskIops: 200,
          diskWriteBytes: 4096,
        },
      },
      1,
    );
    // A base disk full of data, so the merge has every block to copy.
    const base = await VhdDisk.open(join(host.vmDir('b'), 'boot.vhd'));
    const chunk = Buffer.alloc(MIB, 0x5a);
    for (let o = 0; o < diskMib * MIB; o += MIB) await base.write(o, chunk);
    await base.flush();
    await base.close();
    await snaps.create('b', 'base', 1, 'b0');
    await host.mutate((e) => e.power.change('b', 'VM_ACTION_START'));
    while (host.read((e) => e.vms.get('b')).status!.state !== 'VM_STATE_RUNNING') await delay(20);
    await delay(3000); // the guest dirties its memory
    const pages = host.read((e) => e.vms.stateHash('b')).residentPages;
    const pauses: number[] = [];
    const totals: number[] = [];
    for (let i = 1; i <= 3; i++) {
      const t0 = performance.now();
      await snaps.create('b', `run ${i}`, 1, `r${i}`);
      totals.push(performance.now() - t0);
      const rec = (await snaps.list('b')).checkpoints.find((c) => c.id === `r${i}`)!;
      pauses.push(rec.pauseMs ?? 0);
    }
    // Fold everything below the running VM's disk back into it, online.
    const t1 = performance.now();
    const { mergeId } = await snaps.delete('b0', 1, true);
    let m = await snaps.merges.get(mergeId);
    while (m.state !== 'completed' && m.state !== 'failed') {
      await delay(50);
      m = await snaps.merges.get(mergeId);
    }
    const mergeS = (performance.now() - t1) / 1000;
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const result = {
      memory_mib: memoryMib,
      resident_mib: Math.round((pages * 4096) / MIB),
      snapshot_io_pause_ms: Number(median(pauses).toFixed(1)),
      snapshot_total_ms: Number(median(totals).toFixed(1)),
      merge_state: m.state,
      merge_mib: diskMib,
      merge_s: Number(mergeS.toFixed(2)),
      online_merge_mb_s: Number((m.bytesCopied / MIB / mergeS).toFixed(1)),
      vm_state_after: host.read((e) => e.vms.get('b')).status!.state,
    };
    console.log(
      `snapshot of a running VM with ${result.resident_mib} MiB resident: guest I/O held ${result.snapshot_io_pause_ms} ms (median of 3), whole snapshot ${result.snapshot_total_ms} ms`,
    );
    console.log(
      `online merge of ${diskMib} MiB + 3 small disks into the running VM's disk: ${result.merge_s} s, ${result.online_merge_mb_s} MB/s copied`,
    );
    console.log(JSON.stringify(result));
  } finally {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
