import { invalidArgument, quote } from './errors.js';
import { parseCidr } from './ipv4.js';
import type * as pb from './generated/pb.js';

/**
 * A VM's configuration as the contract defines it (common.proto's VmConfig): its defaults and
 * its rules, in one place for the agent, which runs the VM, and the daemon, which checks a
 * request before anything is proposed. Rules that need a host (its limits profile) apply only
 * when one is given.
 */

export type VmConfig = pb.VmConfig__Output;

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const NAME_RE = /^[A-Za-z0-9._-]{1,63}$/;
const MAC_RE = /^[0-9A-F]{2}(-[0-9A-F]{2}){5}$/;
/** VHD's largest virtual disk. */
const MAX_DISK_BYTES = 2040 * GIB;
const MAX_SYNTHETIC_NICS = 8;
const MAX_LEGACY_NICS = 4;

/** A VM's display name: 1 to 63 letters, digits, '-', '_' or '.' (INVALID_ARGUMENT naming `field`). */
export function checkName(field: string, name: string): void {
  if (!NAME_RE.test(name))
    throw invalidArgument(
      field,
      `must be 1 to 63 letters, digits, '-', '_' or '.' (got ${name.length} characters)`,
    );
}

const num = (v: unknown): number => (v === undefined || v === null ? 0 : Number(v));

/** Fills the proto's defaults, so a VM's configuration has one complete shape whatever was sent. */
export function normalizeVmConfig(c: pb.VmConfig | pb.VmConfig__Output): VmConfig {
  const p = c.processor ?? {};
  const w = c.workload ?? {};
  return {
    name: c.name ?? '',
    processor: {
      count: num(p.count),
      reservePercent: num(p.reservePercent),
      limitPercent: num(p.limitPercent) || 100,
      relativeWeight: num(p.relativeWeight) || 100,
    },
    memoryBytes: num(c.memoryBytes),
    guestOs: c.guestOs ?? '',
    disks: (c.disks ?? []).map((d) => ({
      controller: (d.controller ?? 'DISK_CONTROLLER_UNSPECIFIED') as pb.DiskController__Output,
      controllerNumber: num(d.controllerNumber),
      location: num(d.location),
      path: d.path ?? '',
      createType: (d.createType ?? 'DISK_TYPE_UNSPECIFIED') as pb.DiskType__Output,
      createSizeBytes: num(d.createSizeBytes),
    })),
    networkAdapters: (c.networkAdapters ?? []).map((n) => ({
      kind: (n.kind ?? 'NIC_KIND_UNSPECIFIED') as pb.NicKind__Output,
      macAddress: (n.macAddress ?? '').toUpperCase().replace(/:/g, '-'),
      staticMac: n.staticMac ?? false,
      switchName: n.switchName ?? '',
      vlanId: num(n.vlanId),
      ipv4Address: n.ipv4Address ?? '',
    })),
    integrationServices: c.integrationServices ?? false,
    automaticStartAction:
      !c.automaticStartAction || c.automaticStartAction === 'AUTOMATIC_START_ACTION_UNSPECIFIED'
        ? 'AUTOMATIC_START_ACTION_START_IF_RUNNING'
        : (c.automaticStartAction as pb.AutomaticStartAction__Output),
    automaticStopAction:
      !c.automaticStopAction || c.automaticStopAction === 'AUTOMATIC_STOP_ACTION_UNSPECIFIED'
        ? 'AUTOMATIC_STOP_ACTION_SAVE'
        : (c.automaticStopAction as pb.AutomaticStopAction__Output),
    haPriority:
      !c.haPriority || c.haPriority === 'HA_PRIORITY_UNSPECIFIED'
        ? 'HA_PRIORITY_MEDIUM'
        : (c.haPriority as pb.HaPriority__Output),
    workload: {
      cpuDemandPercent: num(w.cpuDemandPercent),
      workingSetBytes: num(w.workingSetBytes),
      dirtyPagesPerSecond: num(w.dirtyPagesPerSecond),
      diskIops: num(w.diskIops),
      diskWriteBytes: num(w.diskWriteBytes) || 4096,
      requestServiceTimeMs: num(w.requestServiceTimeMs),
      bootMs: num(w.bootMs),
    },
    antiAffinityGroup: c.antiAffinityGroup ?? '',
    labels: { ...(c.labels ?? {}) },
    antiAffinityClassNames: [...(c.antiAffinityClassNames ?? [])],
    antiAffinityHard: c.antiAffinityHard ?? false,
  };
}

/** A uint64 that arrived from a negative number on the wire is about 2^64. */
function checkSize(field: string, value: number): void {
  if (!Number.isFinite(value) || value < 0) throw invalidArgument(field, `${value} is negative`);
  if (value >= 2 ** 63) {
    throw invalidArgument(field, `${value} is out of range (a negative number sent as uint64?)`);
  }
}

const mibText = (bytes: number): string => `${Math.round((bytes / MIB) * 100) / 100} MiB`;

/** What a configuration is checked against. */
export interface VmConfigContext {
  /** The guest catalog: the agent's own, or on the daemon every guest some host of the farm runs. */
  guests: ReadonlyMap<string, pb.GuestOs__Output>;
  /** The host's limits profile; absent before a host is chosen (placement checks it per host). */
  limits?: pb.LimitsProfile__Output | undefined;
}

/**
 * Checks a configuration against the guest catalog and, when given, the host's limits profile.
 * Every refusal names the field (a dotted path under `prefix`) and the reason. Throws
 * INVALID_ARGUMENT.
 */
export function validateVmConfig(c: VmConfig, ctx: VmConfigContext, prefix = 'config'): void {
  const f = (name: string): string => `${prefix}.${name}`;
  const limits = ctx.limits;
  checkName(f('name'), c.name);
  const guest = ctx.guests.get(c.guestOs);
  if (!guest) {
    throw invalidArgument(
      f('guest_os'),
      `unknown guest OS ${quote(c.guestOs)}; the catalog has ${[...ctx.guests.keys()].join(', ') || 'no guests (no host registered yet)'}`,
    );
  }

  const p = c.processor!;
  if (p.count < 1) throw invalidArgument(f('processor.count'), 'a VM needs at least 1 virtual processor');
  if (limits && p.count > limits.maxVcpusPerVm) {
    throw invalidArgument(
      f('processor.count'),
      `${p.count} virtual processors exceed the ${limits.name} limits profile's ${limits.maxVcpusPerVm} per VM`,
    );
  }
  if (p.count > guest.maxVcpus) {
    throw invalidArgument(
      f('processor.count'),
      `${guest.displayName} supports at most ${guest.maxVcpus} virtual processor${guest.maxVcpus > 1 ? 's' : ''} under Hyper-V, not ${p.count}`,
    );
  }
  if (p.reservePercent > 100) throw invalidArgument(f('processor.reserve_percent'), 'must be 0 to 100');
  if (p.limitPercent > 100) throw invalidArgument(f('processor.limit_percent'), 'must be 1 to 100');
  if (p.limitPercent < p.reservePercent) {
    throw invalidArgument(
      f('processor.limit_percent'),
      `${p.limitPercent} is below the reserve of ${p.reservePercent}`,
    );
  }
  if (p.relativeWeight > 10_000) throw invalidArgument(f('processor.relative_weight'), 'must be 1 to 10000');

  checkSize(f('memory_bytes'), c.memoryBytes);
  if (c.memoryBytes < 32 * MIB) {
    throw invalidArgument(f('memory_bytes'), `${mibText(c.memoryBytes)} is below the minimum of 32 MiB`);
  }
  if (c.memoryBytes % MIB !== 0) throw invalidArgument(f('memory_bytes'), 'must be a multiple of 1 MiB');
  if (limits && c.memoryBytes > limits.maxMemoryBytesPerVm) {
    throw invalidArgument(
      f('memory_bytes'),
      `${mibText(c.memoryBytes)} exceeds the ${limits.name} limits profile's ${mibText(limits.maxMemoryBytesPerVm)} per VM`,
    );
  }
  if (c.memoryBytes > guest.maxMemoryBytes) {
    throw invalidArgument(
      f('memory_bytes'),
      `${guest.displayName} is a ${guest.architectureBits}-bit guest and addresses at most ${mibText(guest.maxMemoryBytes)}`,
    );
  }

  if (c.integrationServices && !guest.integrationServicesAvailable) {
    throw invalidArgument(
      f('integration_services'),
      `no integration services exist for ${guest.displayName}`,
    );
  }

  validateDisks(c, f);
  validateNics(c, f);
  validateWorkload(c, f);

  for (const [k, v] of Object.entries(c.labels)) {
    if (k.length < 1 || k.length > 63)
      throw invalidArgument(f('labels'), `key ${quote(k)} must be 1 to 63 characters`);
    if (v.length > 255)
      throw invalidArgument(f('labels'), `the value of ${quote(k)} must be at most 255 characters`);
  }
  if (c.antiAffinityGroup.length > 63)
    throw invalidArgument(f('anti_affinity_group'), 'at most 63 characters');
  const classes = c.antiAffinityClassNames;
  if (classes.length > 16) throw invalidArgument(f('anti_affinity_class_names'), 'at most 16 classes');
  classes.forEach((name, i) => {
    if (name.length < 1 || name.length > 63)
      throw invalidArgument(f(`anti_affinity_class_names[${i}]`), 'must be 1 to 63 characters');
    if (classes.indexOf(name) !== i)
      throw invalidArgument(f(`anti_affinity_class_names[${i}]`), `${quote(name)} is listed twice`);
  });
}

function validateDisks(c: VmConfig, f: (n: string) => string): void {
  const used = new Set<string>();
  c.disks.forEach((d, i) => {
    const at = (n: string): string => f(`disks[${i}].${n}`);
    if (d.controller === 'DISK_CONTROLLER_UNSPECIFIED')
      throw invalidArgument(at('controller'), 'must be IDE or SCSI');
    const ide = d.controller === 'DISK_CONTROLLER_IDE';
    const maxController = ide ? 1 : 3;
    const maxLocation = ide ? 1 : 63;
    if (d.controllerNumber > maxController) {
      throw invalidArgument(
        at('controller_number'),
        `${ide ? 'IDE' : 'SCSI'} controllers are 0 to ${maxController}`,
      );
    }
    if (d.location > maxLocation) {
      throw invalidArgument(at('location'), `${ide ? 'IDE' : 'SCSI'} locations are 0 to ${maxLocation}`);
    }
    const key = `${d.controller}/${d.controllerNumber}/${d.location}`;
    if (used.has(key))
      throw invalidArgument(
        at('location'),
        `another disk already sits at ${key.replace(/DISK_CONTROLLER_/, '')}`,
      );
    used.add(key);
    if (!ide && !c.integrationServices) {
      throw invalidArgument(
        at('controller'),
        'the SCSI controller is a synthetic (VMBus) device and needs integration services; use IDE',
      );
    }
    if (d.path === '' || d.path.includes('\0')) throw invalidArgument(at('path'), 'must name a VHD file');
    if (!d.path.startsWith('/') && d.path.split(/[\\/]/).includes('..')) {
      throw invalidArgument(at('path'), "a relative path may not climb out of the VM's folder with '..'");
    }
    if (d.createType === 'DISK_TYPE_DIFFERENCING') {
      throw invalidArgument(
        at('create_type'),
        'a differencing disk needs a parent, which a disk attachment cannot name; take a snapshot instead',
      );
    }
    checkSize(at('create_size_bytes'), d.createSizeBytes);
    if (d.createSizeBytes % 512 !== 0)
      throw invalidArgument(at('create_size_bytes'), 'must be a multiple of 512');
    if (d.createSizeBytes > MAX_DISK_BYTES)
      throw invalidArgument(at('create_size_bytes'), 'VHD disks hold at most 2040 GiB');
    if (d.createSizeBytes !== 0 && d.createSizeBytes < MIB)
      throw invalidArgument(at('create_size_bytes'), 'must be at least 1 MiB');
  });
}

function validateNics(c: VmConfig, f: (n: string) => string): void {
  let synthetic = 0;
  let legacy = 0;
  c.networkAdapters.forEach((n, i) => {
    const at = (x: string): string => f(`network_adapters[${i}].${x}`);
    if (n.kind === 'NIC_KIND_UNSPECIFIED') throw invalidArgument(at('kind'), 'must be SYNTHETIC or LEGACY');
    if (n.kind === 'NIC_KIND_SYNTHETIC') {
      synthetic++;
      if (!c.integrationServices) {
        throw invalidArgument(
          at('kind'),
          'a synthetic network adapter needs integration services; use a legacy adapter',
        );
      }
    } else legacy++;
    if (n.staticMac || n.macAddress !== '') {
      if (!MAC_RE.test(n.macAddress)) {
        throw invalidArgument(
          at('mac_address'),
          `${quote(n.macAddress)} is not a MAC address like 00-15-5D-01-02-03`,
        );
      }
      if (parseInt(n.macAddress.slice(0, 2), 16) & 1) {
        throw invalidArgument(at('mac_address'), `${quote(n.macAddress)} is a multicast address`);
      }
      if (n.macAddress === '00-00-00-00-00-00')
        throw invalidArgument(at('mac_address'), 'may not be all zeros');
    }
    if (n.vlanId > 4094)
      throw invalidArgument(at('vlan_id'), `${n.vlanId} is out of range: 0 (untagged) or 1 to 4094`);
    if (n.switchName.length > 63) throw invalidArgument(at('switch_name'), 'at most 63 characters');
    if (n.ipv4Address !== '' && !parseCidr(n.ipv4Address))
      throw invalidArgument(
        at('ipv4_address'),
        `${quote(n.ipv4Address)} is not an address with a prefix length like 10.0.0.11/24`,
      );
  });
  if (synthetic > MAX_SYNTHETIC_NICS)
    throw invalidArgument(f('network_adapters'), `at most ${MAX_SYNTHETIC_NICS} synthetic adapters`);
  if (legacy > MAX_LEGACY_NICS)
    throw invalidArgument(f('network_adapters'), `at most ${MAX_LEGACY_NICS} legacy adapters`);
  const macs = c.networkAdapters.map((n) => n.macAddress).filter((m) => m !== '');
  const dup = macs.find((m, i) => macs.indexOf(m) !== i);
  if (dup) throw invalidArgument(f('network_adapters'), `MAC ${dup} is used twice`);
}

function validateWorkload(c: VmConfig, f: (n: string) => string): void {
  const w = c.workload!;
  const at = (x: string): string => f(`workload.${x}`);
  if (!(w.cpuDemandPercent >= 0 && w.cpuDemandPercent <= 100))
    throw invalidArgument(at('cpu_demand_percent'), 'must be 0 to 100');
  checkSize(at('working_set_bytes'), w.workingSetBytes);
  if (w.workingSetBytes > c.memoryBytes) {
    throw invalidArgument(
      at('working_set_bytes'),
      `${mibText(w.workingSetBytes)} exceeds the VM's memory of ${mibText(c.memoryBytes)}`,
    );
  }
  checkSize(at('dirty_pages_per_second'), w.dirtyPagesPerSecond);
  if (w.dirtyPagesPerSecond > 10_000_000)
    throw invalidArgument(at('dirty_pages_per_second'), 'at most 10,000,000');
  if (w.diskIops > 1_000_000) throw invalidArgument(at('disk_iops'), 'at most 1,000,000');
  if (w.diskWriteBytes % 512 !== 0 || w.diskWriteBytes > MIB) {
    throw invalidArgument(at('disk_write_bytes'), 'must be a multiple of 512, at most 1 MiB');
  }
  if (!(w.requestServiceTimeMs >= 0 && w.requestServiceTimeMs <= 600_000)) {
    throw invalidArgument(at('request_service_time_ms'), 'must be 0 to 600000');
  }
  checkSize(at('boot_ms'), w.bootMs);
  if (w.bootMs > 600_000) throw invalidArgument(at('boot_ms'), 'at most 600000 (10 minutes)');
}
