import { status, type pb } from '@hyperfarm/api';

/** An operation, or its id. */
export type OperationRef = string | pb.Operation__Output;

export interface WaitOptions {
  /** Hears each change of progress or message (and the final state). */
  onProgress?: (op: pb.Operation__Output) => void;
  /** How often progress is checked while the operation runs, in ms (default 1000). */
  intervalMs?: number;
  /** Give up (DEADLINE_EXCEEDED) after this many ms; the operation itself goes on. */
  timeoutMs?: number;
}

/** An operation that finished with an error: `code` is its status, `operation` the record. */
export class OperationFailedError extends Error {
  readonly code: status;
  constructor(readonly operation: pb.Operation__Output) {
    const e = operation.error!;
    super(`${status[e.code] ?? e.code}: ${e.message}`);
    this.name = 'OperationFailedError';
    this.code = e.code as status;
  }
}
