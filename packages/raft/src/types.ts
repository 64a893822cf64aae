/**
 * The vocabulary shared by the Raft core, its storage, its transport and its simulator.
 * Node ids are strings (daemon ids such as "daemon-1"). Terms and indexes are plain numbers:
 * they stay far below 2^53.
 */

export type NodeId = string;

export enum EntryType {
  /** An application command. */
  Normal = 1,
  /** A membership change; `data` holds a JSON-encoded ConfChange. */
  ConfChange = 2,
  /** The empty entry a new leader appends to commit entries of earlier terms. */
  Noop = 3,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  data: Uint8Array;
}

/** What must be on stable storage before a node answers any message that depends on it. */
export interface HardState {
  term: number;
  /** Who this node voted for in `term`, or '' for nobody. */
  vote: NodeId;
  commit: number;
}

/** The membership: voters and learners. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export enum ConfChangeType {
  AddVoter = 1,
  AddLearner = 2,
  RemoveNode = 3,
  /** Learner to voter. */
  PromoteLearner = 4,
}

export interface ConfChange {
  type: ConfChangeType;
  node: NodeId;
  /** The node's address, for the transport; carried in the log so every replica learns it. */
  address?: string;
}

export interface SnapshotMeta {
  index: number;
  term: number;
  conf: ConfState;
}

export interface Snapshot {
  meta: SnapshotMeta;
  /** The application's state at `meta.index`, opaque to Raft. */
  data: Uint8Array;
}

export enum MessageType {
  Append = 1,
  AppendResponse = 2,
  Vote = 3,
  VoteResponse = 4,
  PreVote = 5,
  PreVoteResponse = 6,
  Heartbeat = 7,
  HeartbeatResponse = 8,
  Snapshot = 9,
  SnapshotResponse = 10,
  TimeoutNow = 11,
  ReadIndex = 12,
  ReadIndexResponse = 13,
  /** A proposal forwarded from a follower to the leader. */
  Propose = 14,
}

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** Append: term of the entry before `entries`. Vote/PreVote: the candidate's last log term. */
  logTerm: number;
  /** Append: index of the entry before `entries`. Vote/PreVote: the candidate's last index. */
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /** A rejected append: the follower's last index, or the first index of `conflictTerm`. */
  rejectHint: number;
  conflictTerm: number;
  /** Opaque: read-index request ids, campaign-transfer markers. */
  context: Uint8Array;
  snapshot?: Snapshot;
}

/** A read whose index is known: the application may serve it once `index` is applied. */
export interface ReadState {
  index: number;
  /** The context the caller passed to readIndex(). */
  context: Uint8Array;
}

export enum Role {
  Follower = 'follower',
  PreCandidate = 'pre-candidate',
  Candidate = 'candidate',
  Leader = 'leader',
}

/** Volatile state worth showing (status RPCs, metrics, the simulator's checks). */
export interface SoftState {
  leader: NodeId;
  role: Role;
}

/**
 * Everything the caller must do after feeding the core an input, in this order:
 * 1. persist `hardState`, `entries` and `snapshot` (one synced write);
 * 2. send `messages` (only after 1: they may promise what 1 wrote);
 * 3. apply `committedEntries` to the state machine and answer `readStates` once applied;
 * 4. call `advance(ready)`.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  /** New entries to append to stable storage; an entry replaces any at the same index and after. */
  entries: Entry[];
  /** A snapshot to persist and install, received from the leader. */
  snapshot?: Snapshot;
  messages: Message[];
  committedEntries: Entry[];
  readStates: ReadState[];
  /**
   * Whether step 1 needs an fsync: true when the Ready carries entries, a snapshot, or a new term
   * or vote. When only the commit index changed it may be written without an fsync (a lost
   * commit index is learned again from the leader). Absent means true.
   */
  mustSync?: boolean;
}

/** A deterministic source of randomness: returns integers in [0, n). */
export interface Rng {
  int(n: number): number;
}

/**
 * The log as the core reads it: synchronous, like etcd's Storage. The durable edge (LevelDB)
 * loads the log into an in-memory implementation at start and writes every Ready through to
 * disk, so the core never waits on I/O.
 */
export interface LogStorage {
  /** The persisted hard state and membership, read once when the core starts. */
  initialState(): { hardState: HardState; conf: ConfState };
  /** Entries [lo, hi), at most `maxBytes` of data (always at least one entry). */
  entries(lo: number, hi: number, maxBytes?: number): Entry[];
  /** The term of the entry at `index`; throws CompactedError below firstIndex()-1. */
  term(index: number): number;
  /** The index of the first entry still in the log (snapshot index + 1). */
  firstIndex(): number;
  lastIndex(): number;
  /** The most recent snapshot. */
  snapshot(): Snapshot;
}

/** Asked for an entry that a snapshot has replaced. */
export class CompactedError extends Error {
  constructor(readonly index: number) {
    super(`log index ${index} is compacted`);
    this.name = 'CompactedError';
  }
}

/** Asked for an entry beyond the end of the log. */
export class UnavailableError extends Error {
  constructor(readonly index: number) {
    super(`log index ${index} is not available yet`);
    this.name = 'UnavailableError';
  }
}
