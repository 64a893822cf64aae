import { z } from 'zod';
import type { Changes } from './changes.js';
import { defineCommand } from './command.js';
import { alreadyExists, failedPrecondition, FsmError, notFound } from './errors.js';
import type { HostRecord, HostStateName } from './model.js';
import { guestOsSchema, hostStateSchema, labels, limitsSchema, str, u32, u64 } from './schemas.js';
import { vmsOnHost, type FarmState } from './state.js';

/** Each host's dynamic MACs: 256 addresses, block k being 00-15-5D-kk-kk-00. */
export const MAC_BLOCK_SIZE = 256;
const MAX_MAC_BLOCK = 0xffff;

export function macBlockStart(block: number): string {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(2, '0');
  return `00-15-5D-${hex(block >> 8)}-${hex(block & 0xff)}-00`;
}

/**
 * Block 0 is every agent's configured default, in use before a host has registered, so the farm
 * hands out blocks from 1: the lowest free one, and a host keeps its block for good.
 */
function freeMacBlock(s: FarmState): number {
  for (let b = 1; b <= MAX_MAC_BLOCK; b++) if (!s.macBlocks.has(b)) return b;
  throw new FsmError('RESOURCE_EXHAUSTED', `every MAC block of 00-15-5D is taken (${MAX_MAC_BLOCK} hosts)`);
}

function requireHost(s: FarmState, id: string): HostRecord {
  const host = s.hosts.get(id);
  if (!host) throw notFound('host', id);
  return host;
}

function requireNameFree(s: FarmState, name: string, id: string): void {
  const owner = s.hostByName.get(name);
  if (owner !== undefined && owner !== id) throw alreadyExists('host name', name);
}

/** "web-1, web-2, web-3 and 7 more": names for a message, bounded. */
export function someNames(names: string[], max = 5): string {
  const shown = names.slice(0, max).join(', ');
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

const registerHost = defineCommand(
  'host.register',
  z.object({
    host: z.object({
      id: str(63),
      name: str(63),
      address: str(1024),
      labels,
      capacity: z.object({
        logicalProcessors: u32,
        memoryBytes: u64,
        rootReserveBytes: u64,
        perVmOverheadBytes: u64,
      }),
      limits: limitsSchema,
      guestOs: z.array(guestOsSchema).max(256),
      clusterStorage: z.boolean().default(false),
    }),
  }),
  (s, { host: h }, changes) => {
    const prev = s.hosts.get(h.id);
    const name = h.name || prev?.name || h.id;
    requireNameFree(s, name, h.id);
    const next = {
      id: h.id,
      name,
      address: h.address,
      // A registration is contact: the host is Up. The host monitor takes it from there.
      state: 'HOST_STATE_UP' as const,
      stateReason:
        prev && prev.state === 'HOST_STATE_UP' ? prev.stateReason : prev ? 're-registered' : 'registered',
      maintenance: prev?.maintenance ?? false,
      labels: Object.keys(h.labels).length > 0 || !prev ? h.labels : prev.labels,
      capacity: h.capacity,
      limits: h.limits,
      guestOsIds: h.guestOs.map((g) => g.id),
      clusterStorage: h.clusterStorage,
      macBlock: prev?.macBlock ?? freeMacBlock(s),
      registeredAtMs: prev?.registeredAtMs ?? changes.timeMs,
      stateChangedAtMs: prev && prev.state === 'HOST_STATE_UP' ? prev.stateChangedAtMs : changes.timeMs,
    };
    for (const g of h.guestOs) s.guests.set(g.id, g);
    if (!prev || !sameHost(prev, next)) changes.host(next);
    return { hostId: h.id };
  },
);

function sameHost(a: HostRecord, b: Omit<HostRecord, 'revision'>): boolean {
  const { revision: _r, ...rest } = a;
  return JSON.stringify(rest) === JSON.stringify(b);
}

const updateHost = defineCommand(
  'host.update',
  z.object({
    id: str(63),
    paths: z.array(z.enum(['name', 'labels', 'maintenance'])).max(3),
    name: str(63),
    labels,
    maintenance: z.boolean(),
  }),
  (s, p, changes) => {
    const host = requireHost(s, p.id);
    const next = { ...host };
    if (p.paths.includes('name')) {
      requireNameFree(s, p.name, host.id);
      next.name = p.name;
    }
    if (p.paths.includes('labels')) next.labels = p.labels;
    if (p.paths.includes('maintenance')) next.maintenance = p.maintenance;
    if (!sameHost(host, next)) changes.host(next);
    return { hostId: host.id };
  },
);

const removeHost = defineCommand('host.remove', z.object({ id: str(63) }), (s, p, changes) => {
  const host = requireHost(s, p.id);
  const names = vmsOnHost(s, host.id).map((v) => v.config.name);
  if (names.length > 0) {
    throw failedPrecondition(
      `cannot remove host '${host.id}': ${names.length} VM${names.length > 1 ? 's are' : ' is'} placed on it (${someNames(names)}); delete or move them first`,
    );
  }
  changes.removeHost(host);
});

/**
 * A liveness transition decided by the leader's host monitor: the only liveness the log sees.
 * A Down host's VMs are Unknown: the farm can no longer say what they do.
 */
const setHostState = defineCommand(
  'host.state',
  z.object({ id: str(63), state: hostStateSchema, reason: str(1024) }),
  (s, p, changes) => {
    const host = s.hosts.get(p.id);
    if (!host || host.state === p.state) return { changed: false };
    changes.host({ ...host, state: p.state, stateReason: p.reason, stateChangedAtMs: changes.timeMs });
    if (p.state === 'HOST_STATE_DOWN') markVmsUnknown(s, host, changes);
    return { changed: true };
  },
);

function markVmsUnknown(s: FarmState, host: HostRecord, changes: Changes): void {
  for (const vm of vmsOnHost(s, host.id)) {
    if (vm.observed.state === 'VM_STATE_UNKNOWN') continue;
    changes.vm({
      ...vm,
      observed: {
        ...vm.observed,
        state: 'VM_STATE_UNKNOWN',
        heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
        memoryAssignedBytes: 0,
        message: `host '${host.id}' is Down`,
        updatedAtMs: changes.timeMs,
      },
    });
  }
}

export const isUp = (h: HostRecord): boolean => h.state === ('HOST_STATE_UP' satisfies HostStateName);

export const hostCommands = [registerHost, updateHost, removeHost, setHostState];
