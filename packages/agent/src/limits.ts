import type { pb } from '@hyperfarm/api';

const GIB = 1024 ** 3;

/**
 * Per-VM and per-host limits of each Hyper-V generation. `2008` is Hyper-V 1.0 as shipped with
 * Windows Server 2008; the others are data for trying later generations' limits.
 */
export const LIMITS_PROFILES: Record<'2008' | '2012' | '2016', pb.LimitsProfile__Output> = {
  '2008': {
    name: '2008',
    maxVcpusPerVm: 4,
    maxMemoryBytesPerVm: 64 * GIB,
    maxRunningVmsPerHost: 192,
    maxLogicalProcessors: 24,
  },
  '2012': {
    name: '2012',
    maxVcpusPerVm: 64,
    maxMemoryBytesPerVm: 1024 * GIB,
    maxRunningVmsPerHost: 1024,
    maxLogicalProcessors: 320,
  },
  '2016': {
    name: '2016',
    maxVcpusPerVm: 240,
    maxMemoryBytesPerVm: 12 * 1024 * GIB,
    maxRunningVmsPerHost: 1024,
    maxLogicalProcessors: 512,
  },
};
