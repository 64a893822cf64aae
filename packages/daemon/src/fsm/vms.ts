import { ACTION_RULES, actionName, stateName } from '@hyperfarm/api';
import { z } from 'zod';
import { SAFETY_FILTERS, refusals } from '../scheduler/feasible.js';
import {
  antiAffinityClasses,
  formatBytes,
  hostLoad,
  sharedClasses,
  usableMemory,
  vmMemoryCost,
} from './capacity.js';
import type { Changes } from './changes.js';
import { defineCommand, type CommandResult } from './command.js';
import { alreadyExists, failedPrecondition, FsmError, notFound } from './errors.js';
import type { HostRecord, ObservedVm, OperationRecord, VmConfig, VmRecord } from './model.js';
import {
  doneOperation,
  failOperation,
  finishOperation,
  progressOperation,
  startOperation,
} from './operations.js';
import { withBase } from './config-diff.js';
import { configDiffSchema, reportSchema, str, vmActionSchema, vmConfigSchema } from './schemas.js';
import { firstResult, rememberResult, type FarmState } from './state.js';

type Report = z.output<typeof reportSchema>;
type Unrevised = Omit<VmRecord, 'revision'>;

export function requireVm(s: FarmState, id: string): VmRecord {
  const vm = s.vms.get(id);
  if (!vm) throw notFound('VM', id);
  return vm;
}

/** One agent call per VM at a time: a VM busy with an operation refuses the next one. */
function requireIdle(s: FarmState, vm: VmRecord, what: string): void {
  if (!vm.busyOpId) return;
  const op = s.operations.get(vm.busyOpId);
  throw failedPrecondition(
    `cannot ${what} VM '${vm.config.name}': operation ${vm.busyOpId}${op ? ` (${op.kind})` : ''} is in progress; wait for it (WaitOperation)`,
  );
}

function requireHostUp(s: FarmState, vm: VmRecord, what: string): HostRecord {
  const host = s.hosts.get(vm.hostId);
  if (!host)
    throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': it is not placed on a host yet`);
  if (host.state === 'HOST_STATE_DOWN')
    throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': its host '${host.id}' is Down`);
  return host;
}

function requireNameFree(s: FarmState, name: string, vmId: string): void {
  const owner = s.vmByName.get(name);
  if (owner !== undefined && owner !== vmId) throw alreadyExists('VM', name);
}

function requireMacsFree(s: FarmState, config: VmConfig, vmId: string): void {
  config.networkAdapters.forEach((n, i) => {
    const owner = n.macAddress ? s.macOwners.get(n.macAddress) : undefined;
    if (owner !== undefined && owner !== vmId) {
      throw new FsmError(
        'ALREADY_EXISTS',
        `MAC ${n.macAddress} of network adapter ${i} is already used by VM '${s.vms.get(owner)?.config.name ?? owner}'`,
        `config.network_adapters[${i}].mac_address`,
      );
    }
  });
}

/** What the farm shows of a VM that is not on a host yet. */
const notOnHost = (message: string, timeMs: number): ObservedVm => ({
  present: false,
  state: 'VM_STATE_OFF',
  heartbeat: 'HEARTBEAT_STATUS_NO_CONTACT',
  message,
  memoryAssignedBytes: 0,
  updatedAtMs: timeMs,
});

const withWarning = (message: string, warning: string) => (warning ? `${message}; ${warning}` : message);

const createSchema = z.object({
  vmId: str(128),
  opId: str(128),
  config: vmConfigSchema,
  start: z.boolean(),
  hostId: str(63),
  /** Admission control's warning (admission_warn_only), shown in the operation's message. */
  warning: str(4096).default(''),
});
type NewVm = z.output<typeof createSchema>;

const placementSchema = z.object({ vmId: str(128), hostId: str(63), note: str(1024) });
type PlacementOf = z.output<typeof placementSchema>;

/**
 * Creates a VM, placed at once when the leader's plan named a host that still takes it (checked
 * against the committed state, as vm.place does), else waiting for placement. Checks everything
 * before it changes anything.
 */
function createOne(s: FarmState, p: NewVm, changes: Changes, placement?: PlacementOf): void {
  if (s.vms.has(p.vmId)) throw alreadyExists('VM id', p.vmId);
  if (s.operations.has(p.opId)) throw alreadyExists('operation', p.opId);
  requireNameFree(s, p.config.name, p.vmId);
  requireMacsFree(s, p.config, p.vmId);
  if (p.hostId && !s.hosts.has(p.hostId)) throw notFound('host', p.hostId);
  const hostId =
    placement && placementRefusal(s, p.config, p.hostId, placement.hostId) === undefined
      ? placement.hostId
      : '';
  changes.vm({
    id: p.vmId,
    config: p.config,
    desired: p.start ? 'VM_STATE_RUNNING' : 'VM_STATE_OFF',
    hostId,
    generation: hostId ? 1 : 0,
    placementNote: hostId ? placement!.note : '',
    observed: notOnHost(hostId ? placedMessage(hostId) : 'waiting for placement', changes.timeMs),
    busyOpId: p.opId,
    checkpointCurrentId: '',
    createdAtMs: changes.timeMs,
  });
  startOperation(
    changes,
    {
      id: p.opId,
      targetId: p.vmId,
      params: { kind: 'vm.create', start: p.start, pinnedHostId: p.hostId },
      message: withWarning(hostId ? placedStep(hostId) : 'waiting for placement', p.warning),
    },
    hostId ? PLACED_PROGRESS : 0,
  );
}

const placedMessage = (hostId: string) => `placed on host '${hostId}'; being created there`;
const placedStep = (hostId: string) => `placed on host '${hostId}'; creating the VM there`;
const PLACED_PROGRESS = 30;

/**
 * Why `hostId` cannot take a VM of this configuration now, or undefined if it can: the host
 * exists, is the one the create asked for (if any), and passes the safety filters.
 */
function placementRefusal(
  s: FarmState,
  config: VmConfig,
  pinned: string,
  hostId: string,
): string | undefined {
  const host = s.hosts.get(hostId);
  if (!host || (pinned && pinned !== hostId))
    return `host '${hostId}' ${host ? 'is not the one asked for' : 'not found'}`;
  const ask = { config, classes: antiAffinityClasses(config) };
  // hostLoad is kept as VMs land (capacity.ts), so asking per placement costs no recount.
  const reasons = refusals(SAFETY_FILTERS, placementFilters(s), host, hostLoad(s, host), ask);
  return reasons.length > 0 ? `${hostId}: ${reasons.join(', ')}` : undefined;
}

const placementFilters = (s: FarmState) => ({ guests: s.guests, switches: s.switches, vcpuRatio: Infinity });

/** One create (the log's form before vm.create_many; still replayed, and still accepted). */
const createVm = defineCommand('vm.create', createSchema, (s, p, changes) => {
  createOne(s, p, changes);
  return { vmId: p.vmId, opId: p.opId };
});

/**
 * The creates of a turn of the leader's create path, with the plan that places them: one command
 * for hundreds of VMs, checked by its compiled schema. Each create is answered on its own, as a
 * vm.create command would be (a refused one leaves nothing behind and does not stop the others),
 * and one that carries the caller's request id (`rid`) is applied once: a retry, in this command
 * or a later one, or after an older daemon's vm.create of the same id, gets the first answer.
 */
const createMany = defineCommand(
  'vm.create_many',
  z.object({
    creates: z.array(createSchema.extend({ rid: str(200).default('') })).max(5_000),
    placements: z.array(placementSchema).max(5_000).default([]),
  }),
  (s, p, changes) => ({ results: createEach(s, p.creates, p.placements, changes) }),
  { compiled: true },
);

/**
 * vm.create_many with each configuration given as its differences from CONFIG_BASE_V1
 * (config-diff.ts): what the create path proposes since. A bench create's 724 bytes of JSON were
 * 604 bytes of configuration, mostly defaults, decoded, parsed, checked and collected on every
 * replica; here its configuration is about 120. Each configuration is the base with its given
 * fields, and the VM is created exactly as vm.create_many creates it from the whole.
 */
const createCompact = defineCommand(
  'vm.create_compact',
  z.object({
    creates: z.array(createSchema.extend({ rid: str(200).default(''), config: configDiffSchema })).max(5_000),
    placements: z.array(placementSchema).max(5_000).default([]),
  }),
  (s, p, changes) => {
    const creates = p.creates.map((c) => ({ ...c, config: withBase(c.config) }));
    return { results: createEach(s, creates, p.placements, changes) };
  },
  { compiled: true },
);

/**
 * Applies each create on its own (a refused one leaves nothing behind and does not stop the
 * others), once per request id, placed when its placement still fits.
 */
function createEach(
  s: FarmState,
  creates: readonly (NewVm & { rid: string })[],
  plan: readonly PlacementOf[],
  changes: Changes,
): CommandResult[] {
  const placements = new Map<string, PlacementOf>();
  for (const pl of plan) placements.set(pl.vmId, pl);
  const results: CommandResult[] = [];
  for (const c of creates) {
    const first = c.rid ? firstResult(s, c.rid) : undefined;
    if (first) {
      results.push(first);
      continue;
    }
    let result: CommandResult;
    try {
      createOne(s, c, changes, placements.get(c.vmId));
      result = { ok: true, vmId: c.vmId, opId: c.opId };
    } catch (err) {
      if (!(err instanceof FsmError)) throw err;
      result = { ok: false, error: err.result() };
    }
    if (c.rid) rememberResult(s, c.rid, result);
    results.push(result);
  }
  return results;
}

/** A VM that waits for a host: created, and neither placed nor being deleted. */
export function awaitsPlacement(s: FarmState, vm: VmRecord): boolean {
  return vm.hostId === '' && s.operations.get(vm.busyOpId)?.kind === 'vm.create';
}

/**
 * A plan of placements from the leader's scheduler. Each is checked again against the committed
 * state, as Nomad's plan_apply does: one that no longer fits (another placement took the room, a
 * host went down) is refused, and the scheduler places that VM again. VMs the plan found waiting
 * for a host to be Up again have their operation say so, and keep waiting.
 */
const placeVms = defineCommand(
  'vm.place',
  z.object({
    placements: z.array(placementSchema).max(20_000),
    waiting: z
      .array(z.object({ vmId: str(128), message: str(4096) }))
      .max(20_000)
      .default([]),
  }),
  (s, p, changes) => {
    for (const { vmId, message } of p.waiting) {
      const vm = s.vms.get(vmId);
      if (vm && awaitsPlacement(s, vm)) {
        const op = s.operations.get(vm.busyOpId)!;
        progressOperation(changes, op, op.progress, message);
      }
    }
    const placed: string[] = [];
    const rejected: { vmId: string; reason: string }[] = [];
    for (const { vmId, hostId, note } of p.placements) {
      const vm = s.vms.get(vmId);
      if (!vm || !awaitsPlacement(s, vm)) {
        rejected.push({ vmId, reason: 'no longer waits for placement' });
        continue;
      }
      const pinned = (s.operations.get(vm.busyOpId)!.params as { pinnedHostId: string }).pinnedHostId;
      const reason = placementRefusal(s, vm.config, pinned, hostId);
      if (reason !== undefined) {
        rejected.push({ vmId, reason });
        continue;
      }
      const next = changes.vm({
        ...vm,
        hostId,
        generation: vm.generation + 1,
        placementNote: note,
        observed: notOnHost(placedMessage(hostId), changes.timeMs),
      });
      progressOperation(changes, s.operations.get(vm.busyOpId)!, PLACED_PROGRESS, placedStep(hostId));
      placed.push(next.id);
    }
    return { placed, rejected };
  },
  { compiled: true },
);

/** VMs no host can take: the create fails with the reasons, and nothing of the VM is kept. */
const placementFailed = defineCommand(
  'vm.place_failed',
  z.object({ failures: z.array(z.object({ vmId: str(128), message: str(8192) })).max(20_000) }),
  (s, p, changes) => {
    const failed: string[] = [];
    for (const { vmId, message } of p.failures) {
      const vm = s.vms.get(vmId);
      if (!vm || !awaitsPlacement(s, vm)) continue;
      changes.removeVm(vm);
      failOperation(changes, s.operations.get(vm.busyOpId)!, { code: 'RESOURCE_EXHAUSTED', message });
      failed.push(vmId);
    }
    return { failed };
  },
);

/**
 * The VM as a host's report shows it, if the report is about the VM as the farm placed it (its
 * host, its generation) and says something new; undefined otherwise.
 */
export function reported(s: FarmState, vm: Unrevised, r: Report, timeMs: number): Unrevised | undefined {
  if (r.hostId !== vm.hostId) return undefined;
  if (r.present && r.generation !== vm.generation) return undefined;
  const host = s.hosts.get(vm.hostId);
  if (!host || host.state === 'HOST_STATE_DOWN') return undefined;
  const observed: ObservedVm = r.present
    ? {
        present: true,
        state: r.state,
        heartbeat: r.heartbeat,
        message: r.message,
        memoryAssignedBytes: r.memoryAssignedBytes,
        updatedAtMs: timeMs,
      }
    : notOnHost(`host '${vm.hostId}' does not have the VM`, timeMs);
  const config = withMacs(vm.config, r.present ? r.macs : []);
  const o = vm.observed;
  const same =
    config === vm.config &&
    o.present === observed.present &&
    o.state === observed.state &&
    o.heartbeat === observed.heartbeat &&
    o.message === observed.message &&
    o.memoryAssignedBytes === observed.memoryAssignedBytes;
  return same ? undefined : { ...vm, config, observed };
}

/** Takes a host's report of a VM, moving its operation on. Returns the VM as it then is. */
export function applyReport(s: FarmState, vm: VmRecord, r: Report, changes: Changes): VmRecord {
  const candidate = reported(s, vm, r, changes.timeMs);
  if (!candidate) return vm;
  const op = vm.busyOpId ? s.operations.get(vm.busyOpId) : undefined;
  const step = op ? nextStep(candidate, op) : undefined;
  if (op && step?.done !== undefined) return finishVmOperation(candidate, op, step.done, changes);
  const next = changes.vm(candidate);
  if (op && step?.progress) progressOperation(changes, op, step.progress[0], step.progress[1]);
  return next;
}

/** The MACs the host assigned to dynamic adapters, so the farm knows every MAC in use. */
function withMacs(config: VmConfig, macs: readonly string[]): VmConfig {
  if (macs.length !== config.networkAdapters.length) return config;
  if (config.networkAdapters.every((n, i) => n.macAddress === macs[i] || n.staticMac)) return config;
  return {
    ...config,
    networkAdapters: config.networkAdapters.map((n, i) => (n.staticMac ? n : { ...n, macAddress: macs[i]! })),
  };
}

/** Where a VM's operation stands once the VM is observed as `vm` says. */
function nextStep(
  vm: Unrevised,
  op: OperationRecord,
): { done?: string; progress?: [number, string] } | undefined {
  const p = op.params;
  const state = vm.observed.state;
  if (p.kind === 'vm.create' && vm.observed.present) {
    if (!p.start) return { done: `created on host '${vm.hostId}'` };
    if (state === 'VM_STATE_RUNNING') return { done: `created and started on host '${vm.hostId}'` };
    return { progress: [60, `created on host '${vm.hostId}'; starting`] };
  }
  if (p.kind === 'vm.change_state' && p.issued && state === p.target)
    return { done: `${actionName(p.action)}: the VM is ${stateName(state)}` };
  return undefined;
}

/** Ends the VM's operation successfully: the VM is free for the next one. */
export function finishVmOperation(
  vm: Unrevised,
  op: Omit<OperationRecord, 'revision'>,
  message: string,
  changes: Changes,
): VmRecord {
  const next = changes.vm({ ...vm, busyOpId: vm.busyOpId === op.id ? '' : vm.busyOpId });
  finishOperation(changes, op, message, next);
  return next;
}

const observeVms = defineCommand(
  'vm.observed',
  z.object({ reports: z.array(reportSchema).max(20_000) }),
  (s, p, changes) => {
    let applied = 0;
    for (const r of p.reports) {
      const vm = s.vms.get(r.vmId);
      if (vm && applyReport(s, vm, r, changes) !== vm) applied++;
    }
    return { applied };
  },
  { compiled: true },
);

const changeState = defineCommand(
  'vm.change_state',
  z.object({ vmId: str(128), opId: str(128), action: vmActionSchema, warning: str(4096).default('') }),
  (s, p, changes) => {
    const vm = requireVm(s, p.vmId);
    const what = actionName(p.action);
    if (s.operations.has(p.opId)) throw alreadyExists('operation', p.opId);
    requireIdle(s, vm, what);
    requireHostUp(s, vm, what);
    const current = vm.observed.present ? vm.observed.state : 'VM_STATE_OFF';
    if (current === 'VM_STATE_UNKNOWN')
      throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': its state is Unknown`);
    const rule = ACTION_RULES[p.action];
    if (!rule.alreadyThere.includes(current) && !rule.from.includes(current))
      throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': it is ${stateName(current)}`);
    const params = {
      kind: 'vm.change_state' as const,
      action: p.action,
      target: rule.target,
      previousDesired: vm.desired,
      issued: false,
    };
    if (rule.alreadyThere.includes(current)) {
      // A harmless repeat: nothing to ask of the host, but the wish is recorded.
      const next = vm.desired === rule.target ? vm : changes.vm({ ...vm, desired: rule.target });
      const message = `${what}: the VM is already ${stateName(current)}`;
      doneOperation(changes, { id: p.opId, targetId: vm.id, params, message }, next);
      return { opId: p.opId };
    }
    changes.vm({ ...vm, desired: rule.target, busyOpId: p.opId });
    startOperation(changes, {
      id: p.opId,
      targetId: vm.id,
      params,
      message: withWarning(`asking host '${vm.hostId}' to ${what} the VM`, p.warning),
    });
    return { opId: p.opId };
  },
  { compiled: true },
);

/** The fields a running VM keeps: everything else needs it Off (the agent's rule). */
const updateVm = defineCommand(
  'vm.update',
  z.object({ vmId: str(128), opId: str(128), config: vmConfigSchema, paths: z.array(str(64)).max(32) }),
  (s, p, changes) => {
    const vm = requireVm(s, p.vmId);
    if (s.operations.has(p.opId)) throw alreadyExists('operation', p.opId);
    requireIdle(s, vm, 'update');
    requireNameFree(s, p.config.name, vm.id);
    requireMacsFree(s, p.config, vm.id);
    const host = s.hosts.get(vm.hostId);
    if (host) requireFitAfterUpdate(s, host, vm, p.config);
    const params = { kind: 'vm.update' as const, config: p.config, paths: p.paths };
    if (!vm.observed.present) {
      // Not on its host (yet): the new configuration is what the host will be given.
      const next = changes.vm({ ...vm, config: p.config });
      doneOperation(changes, { id: p.opId, targetId: vm.id, params, message: 'configuration changed' }, next);
      return { opId: p.opId };
    }
    requireHostUp(s, vm, 'update');
    changes.vm({ ...vm, busyOpId: p.opId });
    startOperation(changes, {
      id: p.opId,
      targetId: vm.id,
      params,
      message: `changing the configuration on host '${vm.hostId}'`,
    });
    return { opId: p.opId };
  },
);

/** A bigger VM must still fit its host, and new hard classes must not meet a VM there. */
function requireFitAfterUpdate(s: FarmState, host: HostRecord, vm: VmRecord, config: VmConfig): void {
  const load = hostLoad(s, host, vm.id);
  const free = Math.max(0, usableMemory(host) - load.memoryBytes);
  const need = vmMemoryCost(host, config);
  if (need > free) {
    throw new FsmError(
      'RESOURCE_EXHAUSTED',
      `cannot update VM '${vm.config.name}': host '${host.id}' has ${formatBytes(free)} free, ${formatBytes(need)} needed`,
    );
  }
  const hard = sharedClasses(antiAffinityClasses(config), load).find((c) => c.hard);
  if (hard) {
    throw failedPrecondition(
      `cannot update VM '${vm.config.name}': hard anti-affinity class '${hard.name}' is held by VM '${hard.with}' on its host '${host.id}'`,
    );
  }
}

const DELETABLE = new Set(['VM_STATE_OFF', 'VM_STATE_SAVED']);

const deleteVm = defineCommand('vm.delete', z.object({ vmId: str(128), opId: str(128) }), (s, p, changes) => {
  const vm = requireVm(s, p.vmId);
  if (s.operations.has(p.opId)) throw alreadyExists('operation', p.opId);
  const busy = vm.busyOpId ? s.operations.get(vm.busyOpId) : undefined;
  // A create still waiting for its host is cancelled; any other work must finish first.
  if (!(busy?.kind === 'vm.create' && !vm.observed.present)) requireIdle(s, vm, 'delete');
  if (vm.observed.present) {
    requireHostUp(s, vm, 'delete');
    if (!DELETABLE.has(vm.observed.state)) {
      throw failedPrecondition(
        `cannot delete VM '${vm.config.name}': it is ${stateName(vm.observed.state)}; turn it off first`,
      );
    }
  }
  const params = { kind: 'vm.delete' as const };
  if (!vm.observed.present) {
    if (busy)
      failOperation(changes, busy, { code: 'ABORTED', message: `VM '${vm.config.name}' was deleted` });
    changes.removeVm(vm);
    doneOperation(changes, {
      id: p.opId,
      targetId: vm.id,
      params,
      message: `VM '${vm.config.name}' deleted`,
    });
    return { opId: p.opId };
  }
  changes.vm({ ...vm, desired: 'VM_STATE_OFF', busyOpId: p.opId });
  startOperation(changes, {
    id: p.opId,
    targetId: vm.id,
    params,
    message: `deleting the VM on host '${vm.hostId}'`,
  });
  return { opId: p.opId };
});

export const vmCommands = [
  createVm,
  createMany,
  createCompact,
  placeVms,
  placementFailed,
  observeVms,
  changeState,
  updateVm,
  deleteVm,
];
