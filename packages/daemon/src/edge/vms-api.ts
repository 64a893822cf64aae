import { randomFillSync } from 'node:crypto';
import {
  ApiError,
  EncodedMessage,
  invalidArgument,
  normalizeVmConfig,
  notFound,
  quote,
  serviceDefinition,
  status,
  unary,
  type pb,
} from '@hyperfarm/api';
import { findVm, operationView, vmView, type FarmState, type VmConfig, type VmRecord } from '../fsm/index.js';
import { explainPlacement } from '../scheduler/index.js';
import { operationOutcome, readState, type FarmContext } from './farm-context.js';
import { admit } from './ha-api.js';
import type { Ok } from './proposer.js';
import { VmCreator, type CreateAsk } from './vm-creator.js';
import {
  optionalRequestId,
  page,
  pageInOrder,
  requireEnum,
  requireHostId,
  requireRef,
  requireVmConfig,
} from './requests.js';

/** Bytes per id: 48 random bits. */
const ID_BYTES = 6;
/**
 * Random bytes drawn for 1,024 ids at once: a randomBytes call per id (a system call each) was
 * 3% of the leader's CPU in bench:placement, where every create draws two ids.
 */
const idPool = Buffer.alloc(ID_BYTES * 1024);
let idPoolAt = idPool.length;
const randomIdBits = (): string => {
  if (idPoolAt + ID_BYTES > idPool.length) {
    randomFillSync(idPool);
    idPoolAt = 0;
  }
  idPoolAt += ID_BYTES;
  return idPool.toString('hex', idPoolAt - ID_BYTES, idPoolAt);
};
let idBits = randomIdBits;

/** A farm-wide id: a prefix and 48 random bits (collisions are not expected below millions). */
export const newId = (prefix: string): string => `${prefix}-${idBits()}`;

/**
 * Where ids' random bits come from: the farm simulator seeds them (so a seed replays the same
 * ids), and restores the default (undefined) when it is done. The real daemon never calls it.
 */
export function useIdBits(source: (() => string) | undefined): void {
  idBits = source ?? randomIdBits;
}

const VM_ACTIONS = [
  'VM_ACTION_START',
  'VM_ACTION_STOP',
  'VM_ACTION_TURN_OFF',
  'VM_ACTION_SAVE',
  'VM_ACTION_PAUSE',
  'VM_ACTION_RESUME',
  'VM_ACTION_RESET',
] as const;

const VM_STATES = [
  'VM_STATE_OFF',
  'VM_STATE_STARTING',
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSING',
  'VM_STATE_PAUSED',
  'VM_STATE_RESUMING',
  'VM_STATE_SAVING',
  'VM_STATE_SAVED',
  'VM_STATE_STOPPING',
  'VM_STATE_RESETTING',
  'VM_STATE_RUNNING_CRITICAL',
  'VM_STATE_PAUSED_CRITICAL',
  'VM_STATE_UNKNOWN',
] as const;

export function requireVm(s: FarmState, field: string, idOrName: string): VmRecord {
  const vm = findVm(s, requireRef(field, idOrName));
  if (!vm) throw notFound('VM', idOrName);
  return vm;
}

/** The operation a command started, as the caller sees it. */
export function startedOperation(s: FarmState, result: Ok): pb.Operation {
  return operationView(s.operations.get(String(result['opId']))!);
}

/** Most VMs in one CreateVms call. */
export const MAX_CREATES_PER_CALL = 1_000;

/** A CreateVm request checked field by field (`prefix` names it inside a CreateVms call). */
function createAsk(s: FarmState, req: pb.CreateVmRequest__Output, prefix = ''): CreateAsk {
  const config = requireVmConfig(s, req.config, `${prefix}config`);
  const hostId = req.hostId === '' ? '' : requireHostId(`${prefix}host_id`, req.hostId);
  const requestId = optionalRequestId(`${prefix}request_id`, req.requestId);
  return {
    vmId: newId('vm'),
    opId: newId('op'),
    config,
    start: req.start,
    hostId,
    warning: '',
    ...(requestId === undefined ? {} : { rid: `create-vm:${requestId}` }),
  };
}

/** Admission control for a VM created running: a refusal is thrown, a warning returned. */
function admitted(ctx: FarmContext, ask: CreateAsk): CreateAsk {
  if (!ask.start) return ask;
  const warning = admit(ctx, ctx.machine.state, { vmId: ask.vmId, config: ask.config, hostId: ask.hostId });
  return warning ? { ...ask, warning } : ask;
}

/** ClusterService: VMs. */
const encodeListVms = serviceDefinition('cluster')['ListVms']!.responseSerialize as (
  r: pb.ListVmsResponse,
) => Buffer;
/**
 * Each VM as it appears in a ListVmsResponse, encoded (a whole one-VM response: field 1, the VM).
 * Kept by record: a record is replaced, never changed in place, so its encoding holds while it
 * lives. Encoding a page of 100 VMs anew (fromObject and encode) was most of a ListVms call
 * once pages no longer scanned the farm, about 1 ms each on a free core.
 */
const listed = new WeakMap<VmRecord, Buffer>();

/**
 * A ListVmsResponse's bytes, joined from its VMs' kept encodings: protobuf messages joined are
 * one message whose repeated fields hold each part's in order (and a scalar the last part's),
 * so this is the response `{ vms, nextPageToken }` exactly, as the client decodes it.
 */
export function listVmsResponse(vms: readonly VmRecord[], nextPageToken: string): EncodedMessage {
  const parts = vms.map((v) => {
    let bytes = listed.get(v);
    if (!bytes) listed.set(v, (bytes = encodeListVms({ vms: [vmView(v)] })));
    return bytes;
  });
  if (nextPageToken) parts.push(encodeListVms({ vms: [], nextPageToken }));
  return new EncodedMessage(Buffer.concat(parts));
}

/** The farm's VMs whose ids are above `after`, in id order, that `wanted` keeps. */
function* vmsInOrder(s: FarmState, after: string, wanted: (v: VmRecord) => boolean): Generator<VmRecord> {
  for (const id of s.vmIds.after(after)) {
    const vm = s.vms.get(id)!;
    if (wanted(vm)) yield vm;
  }
}

export function vmHandlers(ctx: FarmContext): Partial<pb.ClusterServiceHandlers> {
  const creator = new VmCreator(ctx);
  return {
    CreateVm: unary<pb.CreateVmRequest__Output, pb.Operation>(async (req) =>
      creator.create(admitted(ctx, createAsk(ctx.machine.state, req))),
    ),

    CreateVms: unary<pb.CreateVmsRequest__Output, pb.CreateVmsResponse>(async (req) => {
      if (req.vms.length === 0) throw invalidArgument('vms', 'is empty: name 1 to 1000 VMs');
      if (req.vms.length > MAX_CREATES_PER_CALL)
        throw invalidArgument('vms', `${req.vms.length} VMs, at most ${MAX_CREATES_PER_CALL} a call`);
      // Every field is checked before anything is proposed: a bad one refuses the whole call.
      const asks = req.vms.map((vm, i) => createAsk(ctx.machine.state, vm, `vms[${i}].`));
      const view = req.briefResults ? briefOperation : (op: pb.Operation) => op;
      const results = await Promise.all(
        asks.map((ask) =>
          Promise.resolve()
            .then(() => creator.create(admitted(ctx, ask)))
            .then(
              (operation): pb.CreateVmsResult => ({ operation: view(operation) }),
              (err: unknown): pb.CreateVmsResult => ({ error: resultError(err) }),
            ),
        ),
      );
      return { results };
    }),

    GetVm: unary<pb.GetVmRequest__Output, pb.Vm>(async (req) => {
      requireRef('id', req.id);
      return vmView(requireVm(await readState(ctx, req.consistency), 'id', req.id));
    }),

    ListVms: unary<pb.ListVmsRequest__Output, pb.ListVmsResponse>(async (req) => {
      const hostId = req.hostId === '' ? undefined : requireHostId('host_id', req.hostId);
      const state =
        req.state === 'VM_STATE_UNSPECIFIED' ? undefined : requireEnum('state', req.state, VM_STATES);
      const s = await readState(ctx, req.consistency);
      const wanted = (v: VmRecord) => !state || v.observed.state === state;
      // A host's VMs are few (tens): picked from its own set. The farm's are read in id order
      // from the page's token on, so a page costs its own VMs, not the farm's (50,000).
      const p = hostId
        ? page(
            'vms',
            [...(s.vmsByHost.get(hostId) ?? [])].map((id) => s.vms.get(id)!).filter(wanted),
            (v) => v.id,
            req,
          )
        : pageInOrder(
            'vms',
            (after) => vmsInOrder(s, after, wanted),
            (v) => v.id,
            req,
          );
      // The server's serializer sends an EncodedMessage's bytes as they are (createServer).
      return listVmsResponse(p.items, p.nextPageToken) as unknown as pb.ListVmsResponse;
    }),

    UpdateVm: unary<pb.UpdateVmRequest__Output, pb.Vm>(async (req) => {
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const vm = requireVm(s, 'id', req.id);
      if (!req.config) throw invalidArgument('config', 'is required');
      const paths = (req.updateMask?.paths ?? []).map(configPath);
      if (paths.length === 0)
        throw invalidArgument('update_mask', 'name the fields to change, for example "config.memory_bytes"');
      const next = requireVmConfig(s, masked(vm.config, normalizeVmConfig(req.config) as VmConfig, paths));
      const { opId } = await ctx.proposer.submit({
        type: 'vm.update',
        vmId: vm.id,
        opId: newId('op'),
        config: next,
        paths,
      });
      await operationOutcome(ctx, String(opId));
      return vmView(ctx.machine.state.vms.get(vm.id) ?? vm);
    }),

    DeleteVm: unary<pb.DeleteVmRequest__Output, pb.Operation>(async (req) => {
      const vm = requireVm(await readState(ctx, 'CONSISTENCY_LINEARIZABLE'), 'id', req.id);
      const result = await ctx.proposer.submit({ type: 'vm.delete', vmId: vm.id, opId: newId('op') });
      return startedOperation(ctx.machine.state, result);
    }),

    ChangeVmState: unary<pb.ChangeVmStateRequest__Output, pb.Operation>(async (req) => {
      const action = requireEnum('action', req.action, VM_ACTIONS);
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      const vm = requireVm(s, 'id', req.id);
      const warning =
        action === 'VM_ACTION_START' && vm.hostId
          ? admit(ctx, s, { vmId: vm.id, config: vm.config, hostId: vm.hostId })
          : undefined;
      const result = await ctx.proposer.submit({
        type: 'vm.change_state',
        vmId: vm.id,
        opId: newId('op'),
        action,
        warning,
      });
      return startedOperation(ctx.machine.state, result);
    }),

    ExplainPlacement: unary<pb.ExplainPlacementRequest__Output, pb.ExplainPlacementResponse>(async (req) => {
      const s = await readState(ctx, 'CONSISTENCY_LINEARIZABLE');
      let e;
      if (req.vmId) {
        const vm = requireVm(s, 'vm_id', req.vmId);
        e = explainPlacement(s, vm.config, ctx.scheduler, vm.id);
      } else {
        e = explainPlacement(s, requireVmConfig(s, req.config), ctx.scheduler);
      }
      return { verdicts: e.verdicts, chosenHostId: e.chosen };
    }),
  };
}

/** An operation as CreateVms answers it when asked for brief results (`brief_results`). */
function briefOperation(op: pb.Operation): pb.Operation {
  const brief: pb.Operation = {
    id: op.id,
    targetId: op.targetId,
    done: op.done,
    progressPercent: op.progressPercent,
  };
  if (op.error) brief.error = op.error;
  return brief;
}

/** A VM's refusal inside a CreateVms answer, as CreateVm would have failed with it. */
function resultError(err: unknown): pb.OperationError {
  if (err instanceof ApiError) return { code: err.code, message: err.message };
  return { code: status.INTERNAL, message: (err as Error).message ?? String(err) };
}

const TOP_FIELDS = new Set([
  'name',
  'processor',
  'memory_bytes',
  'guest_os',
  'disks',
  'network_adapters',
  'integration_services',
  'automatic_start_action',
  'automatic_stop_action',
  'ha_priority',
  'workload',
  'anti_affinity_group',
  'labels',
  'anti_affinity_class_names',
  'anti_affinity_hard',
]);
const SUB_FIELDS: Record<string, ReadonlySet<string>> = {
  processor: new Set(['count', 'reserve_percent', 'limit_percent', 'relative_weight']),
  workload: new Set([
    'cpu_demand_percent',
    'working_set_bytes',
    'dirty_pages_per_second',
    'disk_iops',
    'disk_write_bytes',
    'request_service_time_ms',
    'boot_ms',
  ]),
};

/** "config.processor.count" → "processor.count", checked against VmConfig's fields. */
function configPath(path: string): string {
  const [head, top, sub, ...rest] = path.split('.');
  const ok =
    head === 'config' &&
    top !== undefined &&
    TOP_FIELDS.has(top) &&
    rest.length === 0 &&
    (sub === undefined || SUB_FIELDS[top]?.has(sub));
  if (!ok)
    throw invalidArgument(
      'update_mask',
      `${quote(path)} is not a field of the VM's configuration (paths start with "config.")`,
    );
  return sub === undefined ? top! : `${top}.${sub}`;
}

const camel = (snake: string): string => snake.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());

/** `current` with the fields named by `paths` taken from `given`. */
function masked(current: VmConfig, given: VmConfig, paths: string[]): pb.VmConfig__Output {
  const next = structuredClone(current) as unknown as Record<string, Record<string, unknown>>;
  const src = given as unknown as Record<string, Record<string, unknown>>;
  for (const path of paths) {
    const [top, sub] = path.split('.').map(camel) as [string, string | undefined];
    if (sub === undefined) next[top] = structuredClone(src[top]!) as Record<string, unknown>;
    else next[top]![sub] = src[top]![sub];
  }
  return next as unknown as pb.VmConfig__Output;
}
