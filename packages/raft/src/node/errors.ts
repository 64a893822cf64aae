import type { NodeId } from '../types.js';

export { NotLeaderError, ProposalDroppedError } from '../core/errors.js';

/** A request did not finish in time; whether it took effect is unknown. */
export class RequestTimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`${what} did not complete within ${ms} ms; it may or may not have taken effect`);
    this.name = 'RequestTimeoutError';
  }
}

/** The node was stopped (or failed) while a request waited. */
export class NodeStoppedError extends Error {
  constructor(id: NodeId, cause?: unknown) {
    super(`raft node '${id}' is stopped${cause ? `: ${(cause as Error).message ?? String(cause)}` : ''}`);
    this.name = 'NodeStoppedError';
  }
}
