import { formatBytes, sharedClasses, usableMemory, vmMemoryCost, type HostLoad } from '../fsm/capacity.js';
import type { GuestOs, HostRecord, SwitchRecord, VmConfig } from '../fsm/model.js';

/**
 * The filters, as Nomad's feasibility checkers: each looks at one host for one VM and says why it
 * refuses, or nothing. The safety filters guard the farm's promises (a host's memory is never
 * overcommitted, a hard anti-affinity class never shares a host): the state machine runs them
 * again on every placement it commits, against the committed state (Nomad's plan_apply). The
 * others are policy, checked when the plan is made.
 */

export interface FilterContext {
  guests: ReadonlyMap<string, GuestOs>;
  switches: ReadonlyMap<string, SwitchRecord>;
  /** Most virtual processors per logical processor on a host (Hyper-V 2008 R2 supports 8). */
  vcpuRatio: number;
}

/** A VM to place: its configuration and its anti-affinity classes (name → hard). */
export interface PlacementAsk {
  config: VmConfig;
  classes: Map<string, boolean>;
  /**
   * The NLB clusters the VM is a member of, each with the hosts its other members are on. Windows
   * NLB runs one member per host (a host's members would share its one adapter to the switch,
   * and a host failure would take out several at once), so each cluster is a soft anti-affinity
   * class: a host holding another member is taken only when no other host fits.
   */
  nlb?: NlbPeers[];
}

/** An NLB cluster a VM is a member of, and where its other members are: host id to VM name. */
export interface NlbPeers {
  cluster: string;
  hosts: Map<string, string>;
}

/** The NLB clusters of `ask` with another member on `hostId`, each with that member's name. */
export function nlbShared(ask: PlacementAsk, hostId: string): { cluster: string; with: string }[] {
  const out: { cluster: string; with: string }[] = [];
  for (const p of ask.nlb ?? []) {
    const other = p.hosts.get(hostId);
    if (other !== undefined) out.push({ cluster: p.cluster, with: other });
  }
  return out;
}

/**
 * The soft rules a host that fits would break (soft anti-affinity classes shared, NLB clusters
 * with a member there already), for a person: placement takes such a host only when none fits
 * without.
 */
export function softConflicts(ask: PlacementAsk, host: HostRecord, load: HostLoad): string[] {
  return [
    ...sharedClasses(ask.classes, load)
      .filter((c) => !c.hard)
      .map((c) => `soft anti-affinity class '${c.name}' is held by VM '${c.with}'`),
    ...nlbShared(ask, host.id).map(
      (n) => `NLB cluster '${n.cluster}' has member '${n.with}' here (Windows NLB runs one member per host)`,
    ),
  ];
}

export interface Filter {
  name: string;
  /** Checked again by the state machine when the placement is committed. */
  safety: boolean;
  check(ctx: FilterContext, host: HostRecord, load: HostLoad, ask: PlacementAsk): string | undefined;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export const FILTERS: readonly Filter[] = [
  {
    name: 'state',
    safety: true,
    check: (_ctx, host) =>
      host.state === 'HOST_STATE_UP'
        ? undefined
        : `host is ${host.state === 'HOST_STATE_DOWN' ? 'Down' : 'Suspect'}`,
  },
  {
    name: 'maintenance',
    safety: true,
    check: (_ctx, host) => (host.maintenance ? 'in maintenance' : undefined),
  },
  {
    name: 'guest',
    safety: true,
    check: (ctx, host, _load, { config }) => {
      const guest = ctx.guests.get(config.guestOs);
      if (!guest || !host.guestOsIds.includes(config.guestOs))
        return `guest OS '${config.guestOs}' is not in its catalog`;
      const vcpus = config.processor.count;
      const limits = host.limits;
      if (vcpus > limits.maxVcpusPerVm)
        return `${plural(vcpus, 'virtual processor')} exceed the ${limits.name} limits profile's ${limits.maxVcpusPerVm} per VM`;
      if (vcpus > guest.maxVcpus)
        return `${guest.displayName} supports at most ${plural(guest.maxVcpus, 'virtual processor')}, not ${vcpus}`;
      if (config.memoryBytes > limits.maxMemoryBytesPerVm)
        return `${formatBytes(config.memoryBytes)} exceeds the ${limits.name} limits profile's ${formatBytes(limits.maxMemoryBytesPerVm)} per VM`;
      if (config.memoryBytes > guest.maxMemoryBytes)
        return `${guest.displayName} addresses at most ${formatBytes(guest.maxMemoryBytes)}`;
      return undefined;
    },
  },
  {
    name: 'memory',
    safety: true,
    check: (_ctx, host, load, { config }) => {
      const free = Math.max(0, usableMemory(host) - load.memoryBytes);
      const need = vmMemoryCost(host, config);
      return need > free ? `${formatBytes(free)} free, ${formatBytes(need)} needed` : undefined;
    },
  },
  {
    name: 'vms',
    safety: true,
    check: (_ctx, host, load) =>
      load.vms + 1 > host.limits.maxRunningVmsPerHost
        ? `holds ${plural(load.vms, 'VM')}, the most the ${host.limits.name} limits profile allows`
        : undefined,
  },
  {
    name: 'vcpu-ratio',
    safety: false,
    check: (ctx, host, load, { config }) => {
      const total = load.vcpus + config.processor.count;
      const cap = ctx.vcpuRatio * host.capacity.logicalProcessors;
      return total > cap
        ? `${plural(total, 'virtual processor')} with this VM, above ${ctx.vcpuRatio} per logical processor (${cap})`
        : undefined;
    },
  },
  {
    name: 'switches',
    safety: false,
    check: (ctx, host, _load, { config }) => {
      for (const nic of config.networkAdapters) {
        if (!nic.switchName) continue;
        const sw = [...ctx.switches.values()].find((w) => w.name === nic.switchName);
        if (!sw) return `switch '${nic.switchName}' does not exist`;
        if (sw.type !== 'SWITCH_TYPE_EXTERNAL' && sw.hostId !== host.id)
          return `switch '${nic.switchName}' lives on host '${sw.hostId}'`;
      }
      return undefined;
    },
  },
  {
    name: 'anti-affinity',
    safety: true,
    check: (_ctx, _host, load, { classes }) => {
      const hard = sharedClasses(classes, load).find((c) => c.hard);
      return hard ? `hard anti-affinity class '${hard.name}' is held by VM '${hard.with}'` : undefined;
    },
  },
];

export const SAFETY_FILTERS = FILTERS.filter((f) => f.safety);

/** Every reason `filters` give to refuse the host; empty when it fits. */
export function refusals(
  filters: readonly Filter[],
  ctx: FilterContext,
  host: HostRecord,
  load: HostLoad,
  ask: PlacementAsk,
): string[] {
  const reasons: string[] = [];
  for (const f of filters) {
    const reason = f.check(ctx, host, load, ask);
    if (reason !== undefined) reasons.push(reason);
  }
  return reasons;
}
