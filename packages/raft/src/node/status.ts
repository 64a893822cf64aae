import { ApiError, leaderHint, status, statusOf, TRAILERS, unavailable } from '@hyperfarm/api';
import {
  NodeStoppedError,
  NotLeaderError,
  OutcomeUnknownError,
  ProposalDroppedError,
  RaftArgumentError,
  ReadNotConfirmedError,
  RequestTimeoutError,
} from './errors.js';

/**
 * The one mapping between Raft's errors and gRPC statuses, used by RaftService (forwarded
 * requests) and by every service a daemon builds on Raft. Each status tells the caller what
 * happened to its request:
 *
 *   UNAVAILABLE          nothing happened: no leader, or not the leader (the leader's id and
 *                        address ride in the trailers when known), or the node is stopped; retry
 *   ABORTED              the leader dropped the write: it certainly did not take effect; retry
 *   INVALID_ARGUMENT     the request is wrong (the field is in the trailers); do not retry
 *   DEADLINE_EXCEEDED    timed out: the write may or may not have taken effect
 *   UNKNOWN              the write may or may not have taken effect (for another reason)
 *
 * Anything else passes through unchanged (an ApiError keeps its status; a bug becomes INTERNAL).
 */
export function raftApiError(err: unknown): unknown {
  if (err instanceof NotLeaderError) {
    if (err.leader === '') return unavailable('no leader yet (an election is under way): retry');
    return unavailable(`not the leader: the leader is '${err.leader}'; retry there`, {
      id: err.leader,
      address: err.leaderAddress,
    });
  }
  if (err instanceof ReadNotConfirmedError || err instanceof NodeStoppedError)
    return unavailable(err.message);
  if (err instanceof ProposalDroppedError) return new ApiError(status.ABORTED, err.message);
  if (err instanceof RaftArgumentError)
    return new ApiError(status.INVALID_ARGUMENT, `invalid ${err.field}: ${err.reason}`, err.field);
  if (err instanceof RequestTimeoutError) return new ApiError(status.DEADLINE_EXCEEDED, err.message);
  if (err instanceof OutcomeUnknownError) return new ApiError(status.UNKNOWN, err.message);
  return err;
}

/** For `.catch()`: rethrows Raft's errors as API errors. */
export function throwRaftApiError(err: unknown): never {
  throw raftApiError(err);
}

/**
 * The inverse, for a request forwarded to the leader: its status back as Raft's error, so the
 * forwarding node reports what the leader said. Only statuses that prove the write did not take
 * effect become refusals; anything else (a timeout, a connection lost mid-call, a status from a
 * server that is not ours) leaves the outcome unknown.
 */
export function raftErrorFromStatus(err: unknown, leader: string): Error {
  const details = (err as { details?: string }).details ?? String(err);
  const hint = leaderHint(err);
  switch (statusOf(err)) {
    case status.UNAVAILABLE:
      if (hint) return new NotLeaderError(hint.id, hint.address);
      break;
    case status.ABORTED:
      return new ProposalDroppedError(details.replace(/^proposal dropped: /, ''));
    case status.INVALID_ARGUMENT: {
      const field = (err as { metadata?: { get(k: string): unknown[] } }).metadata?.get(TRAILERS.field)[0];
      if (typeof field === 'string')
        return new RaftArgumentError(field, details.replace(`invalid ${field}: `, ''));
      break;
    }
  }
  return new OutcomeUnknownError(`forwarded to the leader '${leader}': ${details}; outcome unknown`);
}
