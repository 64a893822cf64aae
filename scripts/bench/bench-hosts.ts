import type { pb } from '@hyperfarm/api';

/** The host the apply benches register (bench:placement-apply, bench:leader-path): 32 GiB, Windows Server 2008's limits. */
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

export const benchHostCommand = (h: number) => ({
  type: 'host.register' as const,
  host: {
    id: `host-${h}`,
    name: `host-${h}`,
    address: `127.0.0.1:${10_000 + h}`,
    labels: {},
    capacity: {
      logicalProcessors: 16,
      memoryBytes: 32 * GIB,
      rootReserveBytes: 2 * GIB,
      perVmOverheadBytes: 32 * MIB,
    },
    limits: {
      name: '2008',
      maxVcpusPerVm: 4,
      maxMemoryBytesPerVm: 64 * GIB,
      maxRunningVmsPerHost: 192,
      maxLogicalProcessors: 24,
    },
    guestOs: [
      {
        id: 'windows-server-2008-x64',
        displayName: 'Windows Server 2008 x64',
        architectureBits: 64,
        maxVcpus: 4,
        integrationServicesAvailable: true,
        maxMemoryBytes: 2048 * GIB,
      },
    ],
  },
});

/** The VM every placement bench creates (bench:placement, bench:agent-creates): 1 vCPU, 512 MiB. */
export const benchVmConfig = (i: number): pb.VmConfig => ({
  name: `vm-${i}`,
  processor: { count: 1 },
  memoryBytes: 512 * MIB,
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
});
