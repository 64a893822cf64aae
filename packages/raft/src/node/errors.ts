import type { NodeId } from '../types.js';

export { NotLeaderError, ProposalDroppedError, RaftArgumentError } from '../core/errors.js';

/**
 * A write was submitted but this node cannot tell whether it took effect (it timed out, the node
 * stopped while it waited, or its entry was compacted into a snapshot before it was matched).
 * The caller must treat it as "maybe": read back, or retry only what is idempotent.
 */
export class OutcomeUnknownError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutcomeUnknownError';
  }
}

/** A request did not finish in time; whether it took effect is unknown. */
export class RequestTimeoutError extends OutcomeUnknownError {
  constructor(what: string, ms: number) {
    super(`${what} did not complete within ${ms} ms; it may or may not have taken effect`);
    this.name = 'RequestTimeoutError';
  }
}

/**
 * A linearizable read could not be confirmed (the leader changed before it answered). Nothing
 * happened; retry.
 */
export class ReadNotConfirmedError extends Error {
  constructor(reason: string) {
    super(`read not confirmed: ${reason}; retry`);
    this.name = 'ReadNotConfirmedError';
  }
}

/** The node was stopped (or failed) before it took the request: nothing happened. */
export class NodeStoppedError extends Error {
  constructor(id: NodeId, cause?: unknown) {
    super(`raft node '${id}' is stopped${cause ? `: ${(cause as Error).message ?? String(cause)}` : ''}`);
    this.name = 'NodeStoppedError';
  }
}
