import type { pb } from '@hyperfarm/api';
import { HypervisorEngine, type EngineOptions } from '../src/engine/engine.js';
import { encodeDeviceState } from '../src/engine/partition.js';
import { LIMITS_PROFILES } from '../src/limits.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** A host of 8 LPs and 16 GiB on a virtual clock starting at 0. */
export function makeEngine(overrides: Partial<EngineOptions> = {}): HypervisorEngine {
  return new HypervisorEngine({
    hostId: 'host-1',
    logicalProcessors: 8,
    memoryBytes: 16 * GIB,
    rootReserveBytes: 2 * GIB,
    perVmOverheadBytes: 32 * MIB,
    limits: LIMITS_PROFILES['2008'],
    macPoolStart: '00-15-5D-00-00-00',
    macPoolSize: 16,
    leaseMs: 10_000,
    startMs: 0,
    seed: 42,
    ...overrides,
  });
}

export function vmConfig(name: string, over: Partial<pb.VmConfig> = {}): pb.VmConfig {
  return {
    name,
    processor: { count: 2 },
    memoryBytes: 512 * MIB,
    guestOs: 'windows-server-2008-x64',
    integrationServices: true,
    workload: { bootMs: 1000, cpuDemandPercent: 50 },
    ...over,
  };
}

export const mib = (n: number): number => n * MIB;
export const gib = (n: number): number => n * GIB;

/** The device state of a VM with `vcpus` processors and no channels, adapters or disks. */
export const bareDeviceState = (vcpus = 1): Buffer =>
  encodeDeviceState({
    version: 1,
    vcpus,
    integrationServices: true,
    channels: [],
    nics: [],
    disks: [],
    boots: 1,
  });
