/**
 * RawNode: the sans-I/O Raft core's public face.
 *
 * The core never touches a clock, a disk or a socket. The caller drives it:
 *
 *   - call `tick()` at a fixed interval (the real node: every 100 ms, say; the simulator: on its
 *     virtual clock). Election and heartbeat timeouts are counted in ticks;
 *   - call `step(message)` for every message received from a peer;
 *   - call `propose()`, `proposeConfChange()`, `readIndex()`, `transferLeader()` for local requests;
 *   - then, while `hasReady()`, take `const rd = ready()` and handle it IN THIS ORDER:
 *
 *       1. persist, in one synced write: `rd.snapshot` (storage.applySnapshot), `rd.entries`
 *          (storage.append: an entry replaces any at the same index and after) and
 *          `rd.hardState` (storage.setHardState). MemoryStorage must see the same writes.
 *       2. only then send `rd.messages`. A vote, an append acknowledgement or a leader's own
 *          append all promise that step 1 is durable: sending before it is fsynced can elect two
 *          leaders or lose an acknowledged write after a crash. (Messages may be sent in any
 *          order and may be lost: Raft tolerates that, not a broken promise.)
 *       3. apply `rd.committedEntries` in order to the state machine (they may include entries
 *          persisted in step 1 of this same Ready), and answer each of `rd.readStates` once the
 *          applied index reaches its `index`.
 *       4. call `advance(rd)`. Do not call `ready()` again before that.
 *
 *     tick(), step() and the local requests may be called between ready() and advance() (say,
 *     while the fsync runs): what they cause goes into the next Ready, except what `takeAhead()`
 *     hands out at once (heartbeats, their acknowledgements, read indexes and read states: none
 *     of them promises anything of a pending write).
 *
 *     In a Ready, `rd.messages` starts with those messages when they were not taken ahead: they
 *     may be sent before step 1 too.
 *
 * Membership changes are APPLIED AUTOMATICALLY: when `advance(rd)` sees a committed ConfChange
 * entry in `rd.committedEntries` it applies it to the membership, so the caller does not call
 * anything for it (applyConfChange() exists for tests and tools, not for the normal path). After
 * advance(), `status().conf` is the membership as of the applied index. To survive a restart with
 * `applied` set, the edge persists the membership as of its applied index
 * (MemoryStorage.setConfState and its durable counterpart).
 *
 * Snapshots are the application's: when it wants to compact, the edge takes the state machine's
 * state at an applied index `i`, calls `storage.createSnapshot(i, status().conf, data)` and then
 * `storage.compact(i)` (keeping some entries after `i` helps slow followers avoid a snapshot).
 * When a follower needs compacted entries the leader sends it `storage.snapshot()` as one
 * Snapshot message (the transport may stream it in chunks); the edge MUST then call
 * `reportSnapshot(to, ok)` once the stream finished or failed, or the leader stops replicating
 * to that follower. A follower receiving one gets it in `rd.snapshot`: persist it (step 1) and
 * restore the state machine from it before applying `rd.committedEntries`.
 *
 * On a restart the core hands out committed entries from after the storage's snapshot (or from
 * after `applied`, when given): the application first restores its state from `storage.snapshot()`.
 *
 * Proposals are batched: propose() appends (on the leader) or queues (on a follower) and the
 * messages go out with the next Ready, so proposals made between two Readies share messages.
 *
 * Reads: readIndex(context) needs a context unique to the request (a duplicate of one still
 * pending is merged with it). With `readOnly: 'safe'` (the default) every read is confirmed by a
 * heartbeat round; with 'lease' the leader answers at once while a majority acknowledged a
 * heartbeat within the last electionTick-1 ticks, which assumes bounded clock drift and that
 * followers do not restart within a lease.
 *
 * Forwarded proposals and reads are best effort: a follower forwards them to the leader it knows,
 * and they are dropped silently if leadership changed meanwhile. Callers wait for their entry to
 * be applied (or their read state) with a timeout, and retry.
 */
import {
  type ConfChange,
  type ConfState,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  type ReadState,
  Role,
  type SoftState,
} from '../types.js';
import { type RaftConfig, resolveConfig } from './config.js';
import { decodeConfChange } from './entries.js';
import { RaftArgumentError } from './errors.js';
import { type ProgressState } from './progress.js';
import { Raft, type ProposeResult } from './raft.js';

export interface PeerProgress {
  match: number;
  next: number;
  state: ProgressState;
  recentActive: boolean;
  pendingSnapshot: number;
  inflight: number;
  isLearner: boolean;
}

export interface RaftStatus {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lastIndex: number;
  role: Role;
  leader: NodeId;
  conf: ConfState;
  /** The node leadership is being handed to, or ''. */
  leadTransferee: NodeId;
  /** Per member, only on the leader (empty elsewhere). */
  progress: Record<NodeId, PeerProgress>;
}

const RESPONSES = new Set<MessageType>([
  MessageType.AppendResponse,
  MessageType.VoteResponse,
  MessageType.PreVoteResponse,
  MessageType.HeartbeatResponse,
  MessageType.SnapshotResponse,
  MessageType.ReadIndexResponse,
]);

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

export class RawNode {
  private readonly raft: Raft;
  private prevSoft: SoftState;
  private prevHard: HardState;
  private outstanding: Ready | undefined;

  constructor(config: RaftConfig) {
    const cfg = resolveConfig(config);
    this.raft = new Raft(cfg);
    this.prevSoft = this.softState();
    this.prevHard = this.hardState();
  }

  get id(): NodeId {
    return this.raft.id;
  }

  /** Advances logical time by one tick. */
  tick(): void {
    this.raft.tick();
  }

  /** Feeds a message received from a peer. */
  step(m: Message): void {
    if (m.to !== this.raft.id) {
      throw new RaftArgumentError('message.to', `is '${m.to}' but this node is '${this.raft.id}'`);
    }
    if (m.from === this.raft.id) throw new RaftArgumentError('message.from', 'a node cannot send to itself');
    if (m.term === 0 && m.type !== MessageType.Propose && m.type !== MessageType.ReadIndex) {
      // Term 0 means "no term" and would be taken as ours: only forwarded requests carry it.
      throw new RaftArgumentError('message.term', `must be positive on a ${MessageType[m.type]} message`);
    }
    // A response from a node we do not track (removed, or never a member) carries nothing useful.
    if (RESPONSES.has(m.type) && !this.raft.trk.progress.has(m.from) && this.raft.role === Role.Leader)
      return;
    this.raft.step(m);
  }

  /** Starts an election now (with a pre-vote first when PreVote is on). */
  campaign(): void {
    this.raft.hup(false);
  }

  /**
   * Proposes a command. On the leader it is appended at the returned index and term (it is
   * committed if an entry at that index with that term is later applied). On a follower it is
   * forwarded to the leader when `forwardProposals` is on; otherwise NotLeaderError names the
   * leader. With no leader known: NotLeaderError with leader ''. ProposalDroppedError when the
   * leader refuses (transfer in progress, too many uncommitted bytes).
   */
  propose(data: Uint8Array): ProposeResult {
    if (!(data instanceof Uint8Array)) throw new RaftArgumentError('data', 'must be a Uint8Array');
    return this.raft.propose(data);
  }

  /**
   * The leader a proposal made here goes to: '' when this node leads or knows no leader (propose
   * appends it, or refuses it with NotLeaderError('')), else the leader it knows of.
   */
  leaderElsewhere(): NodeId {
    return this.raft.role === Role.Leader ? '' : this.raft.lead;
  }

  /**
   * Proposes a membership change of one server, on the leader only (NotLeaderError elsewhere).
   * Refused (ProposalDroppedError) while another change is pending or until the leader has
   * committed an entry of its term; refused (RaftArgumentError) when it makes no sense for the
   * current membership.
   */
  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    return this.raft.proposeConfChange(cc);
  }

  /**
   * Asks for a linearizable read. A ReadState with the same context appears in a later Ready;
   * serve the read once the applied index reaches its index. On a follower the request goes to
   * the leader (NotLeaderError with '' when none is known).
   */
  readIndex(context: Uint8Array): void {
    if (!(context instanceof Uint8Array) || context.byteLength === 0) {
      throw new RaftArgumentError('context', 'must be a non-empty Uint8Array that identifies the request');
    }
    this.raft.readIndex(context);
  }

  /** Hands leadership to voter `to` (leader only): it is caught up, then told to campaign. */
  transferLeader(to: NodeId): void {
    this.raft.transferLeader(to);
  }

  /** The transport could not reach `id`: the leader stops assuming its appends arrive. */
  reportUnreachable(id: NodeId): void {
    this.raft.reportUnreachable(id);
  }

  /** The snapshot stream to `id` finished (ok) or failed. Required after every Snapshot message. */
  reportSnapshot(id: NodeId, ok: boolean): void {
    this.raft.reportSnapshot(id, ok);
  }

  /** Applies a conf change by hand. The normal path does not need it: advance() applies them. */
  applyConfChange(cc: ConfChange): ConfState {
    return this.raft.applyConfChange(cc);
  }

  /** Whether ready() has something. Not meaningful between ready() and advance(). */
  hasReady(): boolean {
    const r = this.raft;
    if (r.hasPending()) return true;
    if (!this.sameSoft(this.softState())) return true;
    const hs = this.hardState();
    if (!sameHardState(hs, this.prevHard)) return true;
    if (r.log.unstable.snapshot) return true;
    if (r.log.unstableEntries().length > 0) return true;
    if (r.msgs.length > 0 || r.msgsAhead.length > 0 || r.readStates.length > 0) return true;
    return r.log.hasNextCommittedEntries();
  }

  ready(): Ready {
    if (this.outstanding) throw new Error('ready() called again before advance() of the previous Ready');
    const r = this.raft;
    r.flushPending();
    const soft = this.softState();
    const hard = this.hardState();
    const rd: Ready = {
      entries: r.log.unstableEntries().slice(),
      // Those not taken ahead go with the rest, first (they were made no later).
      messages: r.msgsAhead.length > 0 ? [...r.msgsAhead, ...r.msgs] : r.msgs,
      committedEntries: r.log.nextCommittedEntries(this.maxCommittedBytes()),
      readStates: r.readStates,
    };
    if (!this.sameSoft(soft)) rd.softState = soft;
    if (!sameHardState(hard, this.prevHard)) rd.hardState = hard;
    if (r.log.unstable.snapshot) rd.snapshot = r.log.unstable.snapshot;
    rd.mustSync =
      rd.entries.length > 0 ||
      rd.snapshot !== undefined ||
      (rd.hardState !== undefined && (hard.term !== this.prevHard.term || hard.vote !== this.prevHard.vote));
    r.msgs = [];
    r.msgsAhead = [];
    r.readStates = [];
    this.outstanding = rd;
    return rd;
  }

  /**
   * What may go out at once, also between ready() and advance() (while the caller writes and
   * applies a Ready): heartbeats, their acknowledgements and read indexes, asked and answered
   * (they promise nothing of the pending write: see AHEAD in raft.ts), and the read states
   * confirmed so far (a read still waits for its index to be applied). Taken here, they are not
   * in the next Ready; left, they are.
   */
  takeAhead(): { messages: Message[]; readStates: ReadState[] } {
    const r = this.raft;
    const taken = { messages: r.msgsAhead, readStates: r.readStates };
    r.msgsAhead = [];
    r.readStates = [];
    return taken;
  }

  private maxCommittedBytes(): number | undefined {
    const max = this.raft.config.maxCommittedSizePerReady;
    return max > 0 ? max : undefined;
  }

  /** The caller has persisted, sent and applied `rd`: move the cursors on. */
  advance(rd: Ready): void {
    if (rd !== this.outstanding)
      throw new Error('advance() must be given the Ready returned by the last ready()');
    this.outstanding = undefined;
    const r = this.raft;
    if (rd.softState) this.prevSoft = rd.softState;
    if (rd.hardState) this.prevHard = rd.hardState;
    if (rd.snapshot) {
      r.log.stableSnapTo(rd.snapshot.meta.index);
      r.log.appliedTo(rd.snapshot.meta.index);
    }
    const lastEntry = rd.entries[rd.entries.length - 1];
    if (lastEntry) r.log.stableTo(lastEntry.index, lastEntry.term);
    const lastCommitted = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastCommitted) {
      r.log.appliedTo(lastCommitted.index);
      r.reduceUncommittedBytes(rd.committedEntries);
      for (const e of rd.committedEntries) {
        if (e.type === EntryType.ConfChange) r.applyConfChange(decodeConfChange(e.data));
      }
    }
  }

  status(): RaftStatus {
    const r = this.raft;
    const progress: Record<NodeId, PeerProgress> = {};
    if (r.role === Role.Leader) {
      for (const [id, pr] of r.trk.progress) {
        progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          recentActive: pr.recentActive,
          pendingSnapshot: pr.pendingSnapshot,
          inflight: pr.inflights.count(),
          isLearner: pr.isLearner,
        };
      }
    }
    return {
      id: r.id,
      term: r.term,
      vote: r.vote,
      commit: r.log.committed,
      applied: r.log.applied,
      lastIndex: r.log.lastIndex(),
      role: r.role,
      leader: r.lead,
      conf: r.trk.confState(),
      leadTransferee: r.leadTransferee,
      progress,
    };
  }

  private softState(): SoftState {
    return { leader: this.raft.lead, role: this.raft.role };
  }

  private hardState(): HardState {
    return { term: this.raft.term, vote: this.raft.vote, commit: this.raft.log.committed };
  }

  private sameSoft(s: SoftState): boolean {
    return s.leader === this.prevSoft.leader && s.role === this.prevSoft.role;
  }
}
