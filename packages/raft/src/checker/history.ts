import { UNKNOWN } from './model.js';

/** One client operation as the checker sees it: its input, its output and when it ran. */
export interface Operation<Input, Output> {
  client: number;
  input: Input;
  /** Virtual time of the call. */
  call: number;
  /** Virtual time of the return; Infinity when the outcome is unknown. */
  return: number;
  output: Output | typeof UNKNOWN;
}

/**
 * Records client operations as they start and finish. An operation that never finishes is kept
 * with an unknown outcome: it may have taken effect at any point after its call, or never.
 */
export class HistoryRecorder<Input, Output> {
  private readonly ops = new Map<number, Operation<Input, Output>>();
  private nextId = 0;

  /** Records a call; returns the id to finish it with. */
  invoke(client: number, input: Input, time: number): number {
    const id = this.nextId++;
    this.ops.set(id, { client, input, call: time, return: Infinity, output: UNKNOWN });
    return id;
  }

  /** The operation returned `output` at `time`. */
  complete(id: number, output: Output, time: number): void {
    const op = this.mustGet(id);
    if (time < op.call)
      throw new Error(`operation ${id}: return time ${time} is before its call time ${op.call}`);
    op.output = output;
    op.return = time;
  }

  /** The operation definitely did not take effect (refused before it reached the log): drop it. */
  fail(id: number): void {
    this.mustGet(id);
    this.ops.delete(id);
  }

  /** The client gave up on the operation: it may or may not have taken effect. */
  abandon(id: number): void {
    const op = this.mustGet(id);
    op.output = UNKNOWN;
    op.return = Infinity;
  }

  operations(): Operation<Input, Output>[] {
    return [...this.ops.values()].map((op) => ({ ...op }));
  }

  private mustGet(id: number): Operation<Input, Output> {
    const op = this.ops.get(id);
    if (!op) throw new Error(`operation ${id}: no such operation in the history`);
    return op;
  }
}
