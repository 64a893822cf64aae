import { invalidArgument, notFound, unary, type pb } from '@hyperfarm/api';
import { checkpointsOf, checkpointView, type CheckpointRecord, type FarmState } from '../fsm/index.js';
import { operationOutcome, readState, type FarmContext } from './farm-context.js';
import { requireRef } from './requests.js';
import { newId, requireVm, startedOperation } from './vms-api.js';

/** A snapshot's display name: 1 to 100 characters, none of them control characters. */
function checkpointName(field: string, name: string, optional: boolean): string {
  if (name === '' && optional) return '';
  // eslint-disable-next-line no-control-regex
  if ([...name].length < 1 || [...name].length > 100 || /[\u0000-\u001f\u007f]/.test(name))
    throw invalidArgument(field, 'must be 1 to 100 characters, without control characters');
  return name;
}

function requireCheckpoint(s: FarmState, id: string): CheckpointRecord {
  const c = s.checkpoints.get(requireRef('id', id));
  if (!c) throw notFound('snapshot', id);
  return c;
}

/**
 * ClusterService: snapshots. Each change is an operation the leader carries out on the VM's
 * host; the farm then records the host's snapshot tree, which ListCheckpoints answers from.
 */
export function checkpointHandlers(ctx: FarmContext): Partial<pb.ClusterServiceHandlers> {
  const request = (vmId: string, params: CheckpointParams) =>
    ctx.proposer.submit({ type: 'checkpoint.request', opId: newId('op'), vmId, params });

  return {
    CreateCheckpoint: unary<pb.CreateCheckpointRequest__Output, pb.Operation>(async (req) => {
      const name = checkpointName('name', req.name, true);
      const vm = requireVm(await readState(ctx, 'CONSISTENCY_LINEARIZABLE'), 'vm_id', req.vmId);
      const result = await request(vm.id, { kind: 'checkpoint.create', checkpointId: newId('cp'), name });
      return startedOperation(ctx.machine.state, result);
    }),

    ListCheckpoints: unary<pb.ListCheckpointsRequest__Output, pb.ListCheckpointsResponse>(async (req) => {
      const s = await readState(ctx, req.consistency);
      const vm = requireVm(s, 'vm_id', req.vmId);
      const checkpoints = checkpointsOf(s, vm.id).sort(
        (a, b) => a.createdAtMs - b.createdAtMs || (a.id < b.id ? -1 : 1),
      );
      return { checkpoints: checkpoints.map(checkpointView), currentId: vm.checkpointCurrentId };
    }),

    RenameCheckpoint: unary<pb.RenameCheckpointRequest__Output, pb.Checkpoint>(async (req) => {
      const name = checkpointName('name', req.name, false);
      const cp = requireCheckpoint(await readState(ctx, 'CONSISTENCY_LINEARIZABLE'), req.id);
      const { opId } = await request(cp.vmId, { kind: 'checkpoint.rename', checkpointId: cp.id, name });
      await operationOutcome(ctx, String(opId));
      return checkpointView(ctx.machine.state.checkpoints.get(cp.id) ?? cp);
    }),

    ApplyCheckpoint: unary<pb.ApplyCheckpointRequest__Output, pb.Operation>(async (req) => {
      const cp = requireCheckpoint(await readState(ctx, 'CONSISTENCY_LINEARIZABLE'), req.id);
      const result = await request(cp.vmId, {
        kind: 'checkpoint.apply',
        checkpointId: cp.id,
        turnOffFirst: req.turnOffFirst,
        saveCurrentFirst: req.saveCurrentFirst,
      });
      return startedOperation(ctx.machine.state, result);
    }),

    DeleteCheckpoint: unary<pb.DeleteCheckpointRequest__Output, pb.Operation>(async (req) => {
      const cp = requireCheckpoint(await readState(ctx, 'CONSISTENCY_LINEARIZABLE'), req.id);
      const result = await request(cp.vmId, {
        kind: 'checkpoint.delete',
        checkpointId: cp.id,
        subtree: req.subtree,
      });
      return startedOperation(ctx.machine.state, result);
    }),
  };
}

type CheckpointParams =
  | { kind: 'checkpoint.create'; checkpointId: string; name: string }
  | { kind: 'checkpoint.apply'; checkpointId: string; turnOffFirst: boolean; saveCurrentFirst: boolean }
  | { kind: 'checkpoint.delete'; checkpointId: string; subtree: boolean }
  | { kind: 'checkpoint.rename'; checkpointId: string; name: string };
