import { type NodeId } from '../types.js';

/**
 * A proposal, read or transfer was made on a node that is not the leader. `leader` names the
 * leader this node knows of, or is '' when it knows none (an election is under way). The core
 * knows no addresses: the edge that does fills in `leaderAddress`.
 */
export class NotLeaderError extends Error {
  constructor(
    readonly leader: NodeId,
    readonly leaderAddress?: string,
  ) {
    super(
      leader === '' ? 'not the leader, and no leader is known' : `not the leader; the leader is '${leader}'`,
    );
    this.name = 'NotLeaderError';
  }
}

/**
 * The leader refused a proposal for a transient reason (a leadership transfer in progress, a
 * configuration change already pending, too many uncommitted bytes...). Retrying later may work.
 */
export class ProposalDroppedError extends Error {
  constructor(readonly reason: string) {
    super(`proposal dropped: ${reason}`);
    this.name = 'ProposalDroppedError';
  }
}

/** A caller passed a bad argument (a config field, a conf change, a transferee...). */
export class RaftArgumentError extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'RaftArgumentError';
  }
}

/** Whether `err` is the core declining an input (nothing changed), as opposed to a failure. */
export function isRefusal(err: unknown): boolean {
  return (
    err instanceof NotLeaderError || err instanceof ProposalDroppedError || err instanceof RaftArgumentError
  );
}
