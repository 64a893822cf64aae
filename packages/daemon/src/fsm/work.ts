import { actionName, stateName } from '@hyperfarm/api';
import { z } from 'zod';
import type { Changes } from './changes.js';
import { defineCommand } from './command.js';
import { alreadyExists, failedPrecondition, notFound } from './errors.js';
import type { CheckpointRecord, OperationRecord, VmRecord } from './model.js';
import {
  failOperation,
  finishOperation,
  progressOperation,
  requireOperation,
  startOperation,
} from './operations.js';
import { checkpointSchema, errorSchema, reportSchema, str } from './schemas.js';
import { checkpointsOf, type FarmState } from './state.js';
import { applyReport, finishVmOperation, reported, requireVm } from './vms.js';

/**
 * The work of operations that needs a host: the leader's controllers make the agent calls and
 * record what came of them here. A command for an operation that is already done (a leader
 * that did the same work twice) changes nothing.
 */

const tree = z.object({ checkpoints: z.array(checkpointSchema).max(1000), currentId: str(128) });

const recordResult = defineCommand(
  'op.result',
  z.object({
    opId: str(128),
    ok: z.boolean(),
    error: errorSchema.optional(),
    /** The VM as its host answered, when it answered with one. */
    report: reportSchema.optional(),
    /** The VM's snapshot tree after a checkpoint operation. */
    tree: tree.optional(),
  }),
  (s, p, changes) => {
    const op = requireOperation(s, p.opId);
    if (op.done) return { changed: false };
    if (op.params.kind === 'vm.migrate' || op.params.kind === 'host.drain')
      throw failedPrecondition(`operation ${op.id} (${op.kind}) is recorded by migration.* commands`);
    const vm = s.vms.get(op.targetId);
    if (!vm || vm.busyOpId !== op.id) {
      failOperation(changes, op, {
        code: 'ABORTED',
        message: `VM '${op.targetId}' went away during the operation`,
      });
      return { changed: true };
    }
    if (p.ok) succeed(s, vm, op, p, changes);
    else
      fail(s, vm, op, p.error ?? { code: 'UNKNOWN', message: 'the host gave no reason' }, p.report, changes);
    return { changed: true };
  },
  { compiled: true },
);

type ResultPayload = {
  report?: z.output<typeof reportSchema> | undefined;
  tree?: z.output<typeof tree> | undefined;
};

function succeed(s: FarmState, vm: VmRecord, op: OperationRecord, p: ResultPayload, changes: Changes): void {
  const params = op.params;
  switch (params.kind) {
    case 'vm.create':
      if (p.report) applyReport(s, vm, p.report, changes);
      return;
    case 'vm.change_state': {
      const issued = { ...op, params: { ...params, issued: true } };
      // The report may show the VM there already (a reset, a fast host).
      const current = (p.report && reported(s, vm, p.report, changes.timeMs)) || vm;
      if (current.observed.state === params.target) {
        finishVmOperation(
          current,
          issued,
          `${actionName(params.action)}: the VM is ${stateName(params.target)}`,
          changes,
        );
        return;
      }
      progressOperation(
        changes,
        op,
        50,
        `waiting for the VM to be ${stateName(params.target)}`,
        issued.params,
      );
      if (current !== vm) changes.vm(current);
      return;
    }
    case 'vm.update': {
      const updated = { ...vm, config: params.config };
      const current = (p.report && reported(s, updated, p.report, changes.timeMs)) || updated;
      finishVmOperation(
        current,
        op,
        `configuration changed: ${params.paths.join(', ') || 'every field'}`,
        changes,
      );
      return;
    }
    case 'vm.delete':
      changes.removeVm(vm);
      finishOperation(changes, op, `VM '${vm.config.name}' deleted`);
      return;
    case 'vm.migrate':
    case 'host.drain':
      return; // refused above: migration.* commands record them
    default: {
      if (p.tree) syncCheckpoints(s, vm, p.tree, changes);
      let current: Omit<VmRecord, 'revision'> = (p.report && reported(s, vm, p.report, changes.timeMs)) || vm;
      if (p.tree) current = { ...current, checkpointCurrentId: p.tree.currentId };
      if (params.kind === 'checkpoint.apply') {
        // The VM is where the snapshot left it (Saved or Off): that is now what is wanted.
        current = { ...current, desired: current.observed.present ? current.observed.state : 'VM_STATE_OFF' };
      }
      const next = changes.vm({ ...current, busyOpId: '' });
      const result =
        params.kind === 'checkpoint.create' || params.kind === 'checkpoint.rename'
          ? s.checkpoints.get(params.checkpointId)
          : params.kind === 'checkpoint.apply'
            ? next
            : undefined;
      finishOperation(changes, op, CHECKPOINT_DONE[params.kind as keyof typeof CHECKPOINT_DONE], result);
    }
  }
}

const CHECKPOINT_DONE = {
  'checkpoint.create': 'snapshot taken',
  'checkpoint.apply': 'snapshot applied',
  'checkpoint.delete': 'snapshot deleted',
  'checkpoint.rename': 'snapshot renamed',
};

function fail(
  s: FarmState,
  vm: VmRecord,
  op: OperationRecord,
  error: z.output<typeof errorSchema>,
  report: z.output<typeof reportSchema> | undefined,
  changes: Changes,
): void {
  const params = op.params;
  const current = (report && reported(s, vm, report, changes.timeMs)) || vm;
  if (params.kind === 'vm.create' && !current.observed.present) {
    // The host refused the VM: nothing of it is kept.
    changes.removeVm(vm);
    failOperation(changes, op, error);
    return;
  }
  // A VM created that would not start stays, Off; a refused change leaves the wish as it was.
  const desired =
    params.kind === 'vm.create'
      ? 'VM_STATE_OFF'
      : params.kind === 'vm.change_state'
        ? params.previousDesired
        : current.desired;
  changes.vm({ ...current, desired, busyOpId: '' });
  const message =
    params.kind === 'vm.create'
      ? `created on host '${vm.hostId}', but not started: ${error.message}`
      : error.message;
  failOperation(changes, op, { code: error.code, message });
}

/** Replaces the farm's record of a VM's snapshots with its host's (the VM's current one aside). */
function syncCheckpoints(s: FarmState, vm: VmRecord, t: z.output<typeof tree>, changes: Changes): void {
  const keep = new Set(t.checkpoints.map((c) => c.id));
  for (const c of checkpointsOf(s, vm.id)) if (!keep.has(c.id)) changes.removeCheckpoint(c);
  for (const c of t.checkpoints) {
    const prev = s.checkpoints.get(c.id);
    const next: Omit<CheckpointRecord, 'revision'> = { ...c, vmId: vm.id };
    if (!prev || JSON.stringify({ ...prev, revision: 0 }) !== JSON.stringify({ ...next, revision: 0 }))
      changes.checkpoint(next);
  }
}

const checkpointParams = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('checkpoint.create'), checkpointId: str(128), name: str(255) }),
  z.object({
    kind: z.literal('checkpoint.apply'),
    checkpointId: str(128),
    turnOffFirst: z.boolean(),
    saveCurrentFirst: z.boolean(),
  }),
  z.object({ kind: z.literal('checkpoint.delete'), checkpointId: str(128), subtree: z.boolean() }),
  z.object({ kind: z.literal('checkpoint.rename'), checkpointId: str(128), name: str(255) }),
]);

const CHECKPOINT_VERB = {
  'checkpoint.create': 'snapshot',
  'checkpoint.apply': 'apply a snapshot to',
  'checkpoint.delete': 'delete a snapshot of',
  'checkpoint.rename': 'rename a snapshot of',
};

const requestCheckpoint = defineCommand(
  'checkpoint.request',
  z.object({ opId: str(128), vmId: str(128), params: checkpointParams }),
  (s, p, changes) => {
    const vm = requireVm(s, p.vmId);
    const what = CHECKPOINT_VERB[p.params.kind];
    if (s.operations.has(p.opId)) throw alreadyExists('operation', p.opId);
    if (vm.busyOpId) {
      throw failedPrecondition(
        `cannot ${what} VM '${vm.config.name}': operation ${vm.busyOpId} is in progress; wait for it (WaitOperation)`,
      );
    }
    const host = s.hosts.get(vm.hostId);
    if (!host || !vm.observed.present)
      throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': it is not on a host yet`);
    if (host.state === 'HOST_STATE_DOWN')
      throw failedPrecondition(`cannot ${what} VM '${vm.config.name}': its host '${host.id}' is Down`);
    const cp = s.checkpoints.get(p.params.checkpointId);
    if (p.params.kind === 'checkpoint.create') {
      if (cp) throw alreadyExists('snapshot', p.params.checkpointId);
    } else if (!cp || cp.vmId !== vm.id) {
      throw notFound('snapshot', p.params.checkpointId);
    }
    changes.vm({ ...vm, busyOpId: p.opId });
    startOperation(changes, {
      id: p.opId,
      targetId: vm.id,
      params: p.params,
      message: `asking host '${vm.hostId}' to ${what} the VM`,
    });
    return { opId: p.opId };
  },
);

export const workCommands = [recordResult, requestCheckpoint];
