import type { pb } from '@hyperfarm/api';
import type { SimRng } from '@hyperfarm/raft';

const MIB = 1024 ** 2;

/** The guests the workload creates (each in the engine's catalog, with integration services). */
const GUESTS = ['windows-server-2008-x64', 'windows-server-2003-sp2-x64', 'sles-10-sp1-x64'];

/** A VM configuration as a client sends it: a guest, 512 MiB to 4 GiB, 1 or 2 processors. */
export function randomVmConfig(rng: SimRng, name: string, opts: { disks: boolean }): pb.VmConfig {
  const guest = GUESTS[rng.int(GUESTS.length)]!;
  return {
    name,
    guestOs: guest,
    memoryBytes: [512, 1024, 2048, 4096][rng.int(4)]! * MIB,
    processor: { count: guest.startsWith('sles') ? 1 : 1 + rng.int(2) },
    integrationServices: true,
    disks: opts.disks
      ? [
          {
            controller: 'DISK_CONTROLLER_IDE',
            controllerNumber: 0,
            location: 0,
            path: 'disk0.vhd',
            createType: 'DISK_TYPE_DYNAMIC',
            createSizeBytes: 1024 * MIB,
          },
        ]
      : [],
    workload: {
      cpuDemandPercent: 5 + rng.int(30),
      workingSetBytes: 64 * MIB,
      dirtyPagesPerSecond: 0,
      diskIops: opts.disks ? 1 : 0,
      diskWriteBytes: 4096,
      bootMs: 2_000 + rng.int(8_000),
    },
  };
}

/** What the client believes, from the answers it got: the checks compare the farm with it. */
export interface ClientView {
  /** VMs whose create was acknowledged, and not deleted since by an acknowledged delete. */
  vms: Map<string, { name: string; desired: pb.VmState__Output | undefined; pendingSince: number }>;
  acknowledged: number;
  failed: number;
}
