import { type LogStorage, type NodeId, type Rng } from '../types.js';
import { RaftArgumentError } from './errors.js';

export type ReadOnlyOption = 'safe' | 'lease';

export interface RaftConfig {
  /** This node's id; never ''. */
  id: NodeId;
  /** Ticks a follower waits without hearing a leader before it campaigns. Default 10. */
  electionTick?: number;
  /** Ticks between a leader's heartbeats. Default 1. Must be below electionTick. */
  heartbeatTick?: number;
  storage: LogStorage;
  /** Spreads election timeouts over [electionTick, 2*electionTick). */
  rng: Rng;
  /** Ask for votes without bumping the term first, so a partitioned node cannot disrupt. Default true. */
  preVote?: boolean;
  /** A leader that has not heard from a quorum for an election timeout steps down. Default true. */
  checkQuorum?: boolean;
  /** Most payload bytes in one append message (at least one entry is always sent). Default 1 MiB. */
  maxSizePerMsg?: number;
  /** Most append messages in flight to one follower in replicate state. Default 256. */
  maxInflightMsgs?: number;
  /** Most payload bytes in flight to one follower (0: no limit). Default 0. */
  maxInflightBytes?: number;
  /** Most payload bytes appended and not yet committed before proposals are refused (0: no limit). */
  maxUncommittedBytes?: number;
  /** A follower forwards proposals to the leader (true), or refuses them with the leader's id. Default true. */
  forwardProposals?: boolean;
  /** 'safe' confirms each ReadIndex with a heartbeat round; 'lease' trusts the leader's lease (needs checkQuorum). */
  readOnly?: ReadOnlyOption;
  /** The last index the application applied before a restart; entries up to it are not re-delivered. */
  applied?: number;
  /** Most payload bytes of committed entries in one Ready (0: no limit). Default 0. */
  maxCommittedSizePerReady?: number;
}

export type ResolvedConfig = Required<Omit<RaftConfig, 'applied'>> & { applied: number };

function positiveInt(field: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0)
    throw new RaftArgumentError(field, `must be a positive integer, got ${v}`);
}

function nonNegativeInt(field: string, v: number): void {
  if (!Number.isInteger(v) || v < 0)
    throw new RaftArgumentError(field, `must be a non-negative integer, got ${v}`);
}

/** Fills defaults and refuses bad values with the field and the reason. */
export function resolveConfig(c: RaftConfig): ResolvedConfig {
  if (typeof c.id !== 'string' || c.id === '')
    throw new RaftArgumentError('id', 'must be a non-empty string');
  if (!c.storage) throw new RaftArgumentError('storage', 'is required');
  if (!c.rng || typeof c.rng.int !== 'function')
    throw new RaftArgumentError('rng', 'is required (an object with int(n))');
  const r: ResolvedConfig = {
    id: c.id,
    electionTick: c.electionTick ?? 10,
    heartbeatTick: c.heartbeatTick ?? 1,
    storage: c.storage,
    rng: c.rng,
    preVote: c.preVote ?? true,
    checkQuorum: c.checkQuorum ?? true,
    maxSizePerMsg: c.maxSizePerMsg ?? 1024 * 1024,
    maxInflightMsgs: c.maxInflightMsgs ?? 256,
    maxInflightBytes: c.maxInflightBytes ?? 0,
    maxUncommittedBytes: c.maxUncommittedBytes ?? 0,
    forwardProposals: c.forwardProposals ?? true,
    readOnly: c.readOnly ?? 'safe',
    applied: c.applied ?? 0,
    maxCommittedSizePerReady: c.maxCommittedSizePerReady ?? 0,
  };
  positiveInt('heartbeatTick', r.heartbeatTick);
  positiveInt('electionTick', r.electionTick);
  if (r.electionTick <= r.heartbeatTick) {
    throw new RaftArgumentError(
      'electionTick',
      `must be greater than heartbeatTick (${r.heartbeatTick}), got ${r.electionTick}`,
    );
  }
  nonNegativeInt('maxSizePerMsg', r.maxSizePerMsg);
  positiveInt('maxInflightMsgs', r.maxInflightMsgs);
  nonNegativeInt('maxInflightBytes', r.maxInflightBytes);
  nonNegativeInt('maxUncommittedBytes', r.maxUncommittedBytes);
  nonNegativeInt('applied', r.applied);
  nonNegativeInt('maxCommittedSizePerReady', r.maxCommittedSizePerReady);
  if (r.readOnly !== 'safe' && r.readOnly !== 'lease') {
    throw new RaftArgumentError('readOnly', `must be 'safe' or 'lease', got '${String(r.readOnly)}'`);
  }
  if (r.readOnly === 'lease' && !r.checkQuorum) {
    throw new RaftArgumentError(
      'readOnly',
      "'lease' requires checkQuorum: without it a deposed leader could serve stale reads",
    );
  }
  return r;
}
