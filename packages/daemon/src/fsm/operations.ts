import type { Changes } from './changes.js';
import { notFound } from './errors.js';
import type {
  OperationError,
  OperationParams,
  OperationRecord,
  VmRecord,
  CheckpointRecord,
} from './model.js';
import type { FarmState } from './state.js';

/** Operations: long work the farm does on a caller's behalf, recorded as it goes. */

interface NewOperation {
  id: string;
  targetId: string;
  params: OperationParams;
  message: string;
}

export function startOperation(changes: Changes, o: NewOperation, progress = 0): OperationRecord {
  return changes.op(fresh(changes, o, progress));
}

/** An operation that is over as soon as it is asked for (nothing for a host to do). */
export function doneOperation(changes: Changes, o: NewOperation, result?: VmRecord): OperationRecord {
  return finishOperation(changes, fresh(changes, o), o.message, result);
}

const fresh = (changes: Changes, o: NewOperation, progress = 0): Omit<OperationRecord, 'revision'> => ({
  id: o.id,
  kind: o.params.kind,
  targetId: o.targetId,
  params: o.params,
  done: false,
  progress,
  message: o.message,
  error: null,
  result: null,
  createdAtMs: changes.timeMs,
  updatedAtMs: changes.timeMs,
});

export function progressOperation(
  changes: Changes,
  op: OperationRecord,
  progress: number,
  message: string,
  params: OperationParams = op.params,
): OperationRecord {
  if (op.done || (op.progress === progress && op.message === message && op.params === params)) return op;
  return changes.op({ ...op, progress, message, params });
}

export function finishOperation(
  changes: Changes,
  op: Omit<OperationRecord, 'revision'>,
  message: string,
  result?: VmRecord | CheckpointRecord,
): OperationRecord {
  return changes.op({
    ...op,
    done: true,
    progress: 100,
    message,
    result: !result
      ? null
      : 'vmId' in result
        ? { kind: 'checkpoint', record: result }
        : { kind: 'vm', record: result },
  });
}

export function failOperation(changes: Changes, op: OperationRecord, error: OperationError): OperationRecord {
  return changes.op({ ...op, done: true, message: error.message, error });
}

export function requireOperation(s: FarmState, id: string): OperationRecord {
  const op = s.operations.get(id);
  if (!op) throw notFound('operation', id);
  return op;
}
