import { invalidArgument } from '@hyperfarm/api';
import type { VmConfig } from './validate.js';

/**
 * The partition model. The root partition hosts one virtualization service provider (VSP) per
 * device class; each running VM has a child partition whose virtualization service clients
 * (VSCs) talk to them over VMBus channels. Channels are offered when the child partition is
 * created; the guest opens them once it has booted, and only if it has integration services.
 * Without them the guest uses emulated devices (IDE, the legacy DEC 21140 NIC, S3 video), which
 * the root partition serves by trapping and emulating each access: much more CPU per I/O.
 */
export const ROOT_VSPS = ['storvsp', 'netvsp', 'vidvsp', 'icvsp'] as const;

export interface VmbusChannel {
  /** What the channel carries: "storvsc", "netvsc/0", "synthvid", "heartbeat"... */
  name: string;
  /** The root partition's provider at the other end. */
  vsp: (typeof ROOT_VSPS)[number];
  open: boolean;
}

/** Channels the root offers a new child partition for this configuration. */
export function offeredChannels(c: VmConfig): VmbusChannel[] {
  const ch: VmbusChannel[] = [{ name: 'storvsc', vsp: 'storvsp', open: false }];
  c.networkAdapters.forEach((n, i) => {
    if (n.kind === 'NIC_KIND_SYNTHETIC') ch.push({ name: `netvsc/${i}`, vsp: 'netvsp', open: false });
  });
  ch.push({ name: 'synthvid', vsp: 'vidvsp', open: false });
  for (const ic of ['heartbeat', 'shutdown', 'timesync', 'kvp'])
    ch.push({ name: ic, vsp: 'icvsp', open: false });
  return ch;
}

/** The devices a guest ends up using: emulated ones when it has no integration services. */
export interface DevicePaths {
  /** Disk I/O is trapped and emulated by the root (IDE without the integration-services filter). */
  emulatedDisk: boolean;
  /** Legacy adapters present (each packet emulated). */
  legacyNics: number;
  syntheticNics: number;
}

export function devicePaths(c: VmConfig): DevicePaths {
  // Counted without filtering copies: every running VM's paths are read at every engine step.
  let legacyNics = 0;
  let syntheticNics = 0;
  for (const n of c.networkAdapters) {
    if (n.kind === 'NIC_KIND_LEGACY') legacyNics++;
    else if (n.kind === 'NIC_KIND_SYNTHETIC') syntheticNics++;
  }
  return { emulatedDisk: !c.integrationServices, legacyNics, syntheticNics };
}

/**
 * Host CPU cost, in logical-processor seconds, of one I/O on each path. Model constants, chosen
 * so the emulated path costs several times the synthetic one, as Microsoft's guidance describes.
 */
export const IO_COST_LP_SECONDS = {
  syntheticDisk: 20e-6,
  emulatedDisk: 150e-6,
  syntheticPacket: 8e-6,
  legacyPacket: 50e-6,
} as const;

/**
 * Device state as saved and migrated: deterministic bytes (sorted keys, no clocks), so the hash
 * before a save equals the hash after a restore.
 */
export interface DeviceStateModel {
  version: 1;
  vcpus: number;
  integrationServices: boolean;
  channels: VmbusChannel[];
  nics: { kind: string; mac: string; vlan: number }[];
  disks: { controller: string; number: number; location: number }[];
  boots: number;
}

export function encodeDeviceState(d: DeviceStateModel): Buffer {
  return Buffer.from(JSON.stringify(d), 'utf8');
}

/**
 * Device state from elsewhere (a migration stream, a saved-state file), checked whole: anything
 * but the exact shape above is refused (INVALID_ARGUMENT naming `field`).
 */
export function decodeDeviceState(data: Buffer, field = 'device_state'): DeviceStateModel {
  let d: unknown;
  try {
    d = JSON.parse(data.toString('utf8'));
  } catch {
    throw invalidArgument(field, 'is not device state (not JSON)');
  }
  const problem = deviceStateProblem(d);
  if (problem) throw invalidArgument(field, `is not device state: ${problem}`);
  return d as DeviceStateModel;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;

function deviceStateProblem(d: unknown): string | undefined {
  if (!isObject(d)) return 'not an object';
  if (d['version'] !== 1) return 'unknown version';
  if (!isCount(d['vcpus']) || !isCount(d['boots'])) return 'vcpus and boots must be whole numbers';
  if (typeof d['integrationServices'] !== 'boolean') return 'integrationServices must be true or false';
  const channels = d['channels'];
  if (
    !Array.isArray(channels) ||
    !channels.every(
      (c) =>
        isObject(c) &&
        typeof c['name'] === 'string' &&
        (ROOT_VSPS as readonly unknown[]).includes(c['vsp']) &&
        typeof c['open'] === 'boolean',
    )
  )
    return 'channels must be {name, vsp, open} with a known vsp';
  const nics = d['nics'];
  if (
    !Array.isArray(nics) ||
    !nics.every(
      (n) =>
        isObject(n) && typeof n['kind'] === 'string' && typeof n['mac'] === 'string' && isCount(n['vlan']),
    )
  )
    return 'nics must be {kind, mac, vlan}';
  const disks = d['disks'];
  if (
    !Array.isArray(disks) ||
    !disks.every(
      (k) =>
        isObject(k) && typeof k['controller'] === 'string' && isCount(k['number']) && isCount(k['location']),
    )
  )
    return 'disks must be {controller, number, location}';
  return undefined;
}
