import {
  type ConfChange,
  type ConfState,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type NodeId,
  type ReadState,
  Role,
  type Snapshot,
  CompactedError,
  UnavailableError,
} from '../types.js';
import { type ResolvedConfig } from './config.js';
import { applyToConf, checkConfChange } from './conf-change.js';
import {
  CAMPAIGN_TRANSFER,
  encodeConfChange,
  entriesBytes,
  isCampaignTransfer,
  makeMessage,
  validateConfChange,
} from './entries.js';
import { NotLeaderError, ProposalDroppedError, RaftArgumentError } from './errors.js';
import { ProgressState } from './progress.js';
import { RaftLog } from './raft-log.js';
import { ReadOnly } from './read-only.js';
import { majority } from './quorum.js';
import { ProgressTracker } from './tracker.js';

/** Where a proposal went: appended here at (index, term), or forwarded to the leader. */
export type ProposeResult =
  { forwarded: false; index: number; term: number } | { forwarded: true; leader: NodeId };

const EMPTY = new Uint8Array(0);

/**
 * Messages that need nothing of this node's pending write, so they need not wait for it (etcd
 * keeps them out of msgsAfterAppend the same way): a heartbeat (its commit index bounded by
 * what the leader itself has on disk, see sendHeartbeat), its acknowledgement (which promises no
 * entry and no vote: a voter's term is on disk before its vote leaves, and that is what keeps a
 * majority from acknowledging a deposed leader), and a read index asked and answered (the read
 * still waits for its index to be applied). Sent while a node fsyncs and applies a large batch,
 * a read's heartbeat round no longer waits behind the batch of every node it asks. Append
 * acknowledgements and votes promise the write, and wait for it.
 */
const AHEAD = new Set<MessageType>([
  MessageType.Heartbeat,
  MessageType.HeartbeatResponse,
  MessageType.ReadIndex,
  MessageType.ReadIndexResponse,
]);

/** Whether `m` may leave before the write of the Ready it was made with (see AHEAD). */
export function goesAhead(m: Message): boolean {
  return AHEAD.has(m.type);
}

function voteResponseType(t: MessageType): MessageType {
  return t === MessageType.PreVote ? MessageType.PreVoteResponse : MessageType.VoteResponse;
}

/**
 * The Raft state machine of one node (the protocol; RawNode adds the Ready/advance handshake).
 * Every input is a method call; every output is a queued message or a change of state that
 * RawNode turns into a Ready. Nothing here reads a clock, a disk or a socket.
 */
export class Raft {
  readonly id: NodeId;
  readonly config: ResolvedConfig;
  term = 0;
  vote: NodeId = '';
  role: Role = Role.Follower;
  lead: NodeId = '';
  readonly log: RaftLog;
  readonly trk: ProgressTracker;
  msgs: Message[] = [];
  /**
   * Messages that promise nothing about what this node has yet to write (see AHEAD): the edge
   * may send them as soon as they are made, while a Ready is still being written or applied.
   */
  msgsAhead: Message[] = [];
  readStates: ReadState[] = [];
  isLearner = false;
  /** The node we hand leadership to, while a transfer is under way. */
  leadTransferee: NodeId = '';
  /** The index of the newest conf change the leader appended; one may be pending at a time. */
  pendingConfIndex = 0;
  uncommittedBytes = 0;
  /** Proposals appended since the last flush: their appends are not sent yet. */
  private broadcastPending = false;
  /** Proposals made on this follower, to forward to the leader at the next flush. */
  private forwardBuffer: Entry[] = [];
  private readOnly = new ReadOnly();
  /** ReadIndex requests that arrived before this leader committed an entry of its term. */
  private pendingReadIndex: Message[] = [];
  electionElapsed = 0;
  private heartbeatElapsed = 0;
  /** Ticks since this node started: heartbeats carry it so the leader can time its lease. */
  private ticks = 0;
  randomizedElectionTimeout = 0;

  constructor(private readonly cfg: ResolvedConfig) {
    this.config = cfg;
    this.id = cfg.id;
    this.log = new RaftLog(cfg.storage);
    this.trk = new ProgressTracker(cfg.maxInflightMsgs, cfg.maxInflightBytes);
    const { hardState, conf } = cfg.storage.initialState();
    this.trk.setConf(conf, this.log.lastIndex() + 1);
    this.isLearner = this.trk.learners.has(this.id);
    if (hardState.term !== 0 || hardState.vote !== '' || hardState.commit !== 0) {
      if (hardState.commit > this.log.lastIndex()) {
        throw new RaftArgumentError(
          'storage',
          `hard state commit ${hardState.commit} is beyond the last index ${this.log.lastIndex()}: the log lost entries`,
        );
      }
      // A commit index below the compaction point was written without fsync (mustSync false)
      // and lost: compacted entries were applied, hence committed.
      this.log.committed = Math.max(this.log.committed, hardState.commit);
      this.term = hardState.term;
      this.vote = hardState.vote;
    }
    // The application restarts from its snapshot, which may be newer than the compaction
    // point (snapshots may keep some entries after them): do not re-deliver what it holds.
    const snapIndex = cfg.storage.snapshot().meta.index;
    if (snapIndex > this.log.applied) {
      this.log.committed = Math.max(this.log.committed, snapIndex);
      this.log.applied = snapIndex;
    }
    if (cfg.applied > 0) {
      if (cfg.applied > this.log.committed) {
        throw new RaftArgumentError(
          'applied',
          `${cfg.applied} is beyond the stored commit index ${this.log.committed}`,
        );
      }
      if (cfg.applied >= this.log.applied) this.log.appliedTo(cfg.applied);
    }
    this.becomeFollower(this.term, '');
  }

  get electionTimeout(): number {
    return this.cfg.electionTick;
  }

  // ---------------------------------------------------------------- sending

  private send(m: Message): void {
    if (m.type !== MessageType.Vote && m.type !== MessageType.PreVote) {
      if (m.type !== MessageType.VoteResponse && m.type !== MessageType.PreVoteResponse) {
        // Forwarded proposals and read requests are not bound to a term, like local input.
        if (m.type !== MessageType.Propose && m.type !== MessageType.ReadIndex) m.term = this.term;
      }
    }
    if (goesAhead(m)) this.msgsAhead.push(m);
    else this.msgs.push(m);
  }

  /** Sends an append (or a snapshot) to `to` if its progress allows; returns whether it sent. */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.trk.progress.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    let prevTerm: number;
    let ents: Entry[];
    try {
      prevTerm = this.log.term(prevIndex);
      ents = this.log.entries(pr.next, this.cfg.maxSizePerMsg);
    } catch (err) {
      if (err instanceof CompactedError) return this.sendSnapshot(to);
      if (err instanceof UnavailableError) {
        // The follower claimed entries past our end (a stale reply): probe again from our end.
        pr.becomeProbe();
        pr.next = Math.min(pr.next, this.log.lastIndex() + 1);
        return false;
      }
      throw err;
    }
    if (ents.length === 0 && !sendIfEmpty) return false;
    this.send(
      makeMessage({
        type: MessageType.Append,
        from: this.id,
        to,
        index: prevIndex,
        logTerm: prevTerm,
        entries: ents,
        commit: this.log.committed,
      }),
    );
    const last = ents.length > 0 ? ents[ents.length - 1]!.index : prevIndex;
    pr.sentEntries(ents.length, last, entriesBytes(ents));
    return true;
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  private sendSnapshot(to: NodeId): boolean {
    const pr = this.trk.progress.get(to)!;
    // Streaming a snapshot is costly: only to a follower we recently heard from.
    if (!pr.recentActive) return false;
    const snap = this.log.snapshot();
    if (snap.meta.index === 0) throw new Error('need a snapshot to send, but the storage holds none');
    pr.becomeSnapshot(snap.meta.index);
    this.send(makeMessage({ type: MessageType.Snapshot, from: this.id, to, snapshot: snap }));
    return true;
  }

  private sendHeartbeat(to: NodeId, context: Uint8Array): void {
    const pr = this.trk.progress.get(to)!;
    // Never tell a follower to commit past what it is known to hold, nor past what this leader
    // has on disk: the leader counts its own copy of an entry as it appends it, so an entry may be
    // committed (here, with one follower's copy) while the leader is still writing it. A
    // heartbeat leaves at once (AHEAD), and a follower that applied such an entry could see it
    // overwritten if the leader crashed before its write (the leader and the follower that lacks
    // it elect that one). Appends carry the commit index only with the next Ready, once the
    // leader's write is done.
    const commit = Math.min(pr.match, this.log.committed, this.log.stableLastIndex());
    // `index` carries our tick: the follower echoes it, which times the lease (see leaseValid).
    this.send(
      makeMessage({ type: MessageType.Heartbeat, from: this.id, to, commit, context, index: this.ticks }),
    );
  }

  private forEachPeer(f: (id: NodeId) => void): void {
    for (const id of this.trk.members()) if (id !== this.id) f(id);
  }

  bcastAppend(): void {
    this.forEachPeer((id) => this.sendAppend(id));
  }

  private bcastHeartbeat(context?: Uint8Array): void {
    const ctx = context ?? this.readOnly.lastPendingContext() ?? EMPTY;
    this.forEachPeer((id) => this.sendHeartbeat(id, ctx));
  }

  // ---------------------------------------------------------------- roles

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = '';
    }
    this.lead = '';
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.cfg.electionTick + this.cfg.rng.int(this.cfg.electionTick);
    this.leadTransferee = '';
    this.trk.resetVotes();
    const last = this.log.lastIndex();
    for (const [id, pr] of this.trk.progress) {
      const fresh = this.trk.newProgress(last + 1, pr.isLearner);
      fresh.recentActive = id === this.id;
      if (id === this.id) fresh.match = last;
      this.trk.progress.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.readOnly = new ReadOnly();
    this.pendingReadIndex = [];
  }

  becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.lead = lead;
    this.role = Role.Follower;
  }

  private becomeCandidate(): void {
    if (this.role === Role.Leader) throw new Error('invalid transition leader -> candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
  }

  private becomePreCandidate(): void {
    if (this.role === Role.Leader) throw new Error('invalid transition leader -> pre-candidate');
    // The term and vote stay: a pre-election changes nothing durable.
    this.trk.resetVotes();
    this.lead = '';
    this.role = Role.PreCandidate;
  }

  private becomeLeader(): void {
    if (this.role === Role.Follower) throw new Error('invalid transition follower -> leader');
    this.reset(this.term);
    this.lead = this.id;
    this.role = Role.Leader;
    this.trk.progress.get(this.id)?.becomeReplicate();
    // A conf change may sit uncommitted in our log: wait for it before accepting another.
    this.pendingConfIndex = this.log.lastIndex();
    // The no-op lets us commit entries of earlier terms (which we may not count: Figure 8).
    this.appendEntries([{ term: 0, index: 0, type: EntryType.Noop, data: EMPTY }]);
  }

  /** Whether this node may become leader: it is a voter in its own configuration. */
  promotable(): boolean {
    return this.trk.voters.has(this.id);
  }

  /** Starts an election (a pre-election first when PreVote is on, unless `transfer`). */
  hup(transfer: boolean): void {
    if (this.role === Role.Leader) return;
    if (!this.promotable()) return;
    // A committed but unapplied conf change may remove us or change the quorum: apply it first.
    if (this.hasUnappliedConfChanges()) return;
    if (this.cfg.preVote && !transfer) this.campaign(Role.PreCandidate, false);
    else this.campaign(Role.Candidate, transfer);
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.log.applied >= this.log.committed) return false;
    const lo = Math.max(this.log.applied + 1, this.log.firstIndex());
    if (lo > this.log.committed) return false;
    return this.log.slice(lo, this.log.committed + 1).some((e) => e.type === EntryType.ConfChange);
  }

  private campaign(kind: Role.PreCandidate | Role.Candidate, transfer: boolean): void {
    let voteType: MessageType;
    let term: number;
    if (kind === Role.PreCandidate) {
      this.becomePreCandidate();
      voteType = MessageType.PreVote;
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      voteType = MessageType.Vote;
      term = this.term;
    }
    this.trk.recordVote(this.id, true);
    if (this.trk.tallyVotes() === 'won') {
      // A single-voter cluster wins at once.
      if (kind === Role.PreCandidate) this.campaign(Role.Candidate, transfer);
      else this.becomeLeader();
      return;
    }
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    for (const id of [...this.trk.voters].sort()) {
      if (id === this.id) continue;
      this.send(
        makeMessage({
          type: voteType,
          from: this.id,
          to: id,
          term,
          index: lastIndex,
          logTerm: lastTerm,
          context: transfer ? CAMPAIGN_TRANSFER : EMPTY,
        }),
      );
    }
  }

  // ---------------------------------------------------------------- ticks

  tick(): void {
    this.ticks++;
    if (this.role === Role.Leader) this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTick) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum) {
        if (!this.trk.quorumActive(this.id)) {
          // We cannot reach a majority: another leader may exist. Stop serving.
          this.becomeFollower(this.term, '');
          return;
        }
        for (const [id, pr] of this.trk.progress) pr.recentActive = id === this.id;
      }
      // A transfer that did not finish within an election timeout is abandoned.
      if (this.leadTransferee !== '') this.leadTransferee = '';
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTick) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  // ---------------------------------------------------------------- input

  step(m: Message): void {
    if (m.term === 0) {
      // Forwarded proposals and reads carry no term.
    } else if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = isCampaignTransfer(m.context);
        const inLease =
          this.cfg.checkQuorum && this.lead !== '' && this.electionElapsed < this.cfg.electionTick;
        // We heard from a leader within the election timeout: a disruptive candidate (say, one
        // back from a partition) must not depose it. A transfer the leader asked for may.
        if (!force && inLease) return;
      }
      if (m.type === MessageType.PreVote) {
        // A pre-vote never changes our term.
      } else if (m.type === MessageType.PreVoteResponse && !m.reject) {
        // The term in a granted pre-vote is the one we would campaign at: not ours yet.
      } else if (
        m.type === MessageType.Append ||
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snapshot
      ) {
        this.becomeFollower(m.term, m.from);
      } else if (m.type === MessageType.Vote) {
        // Adopt the term, but only a granted vote restarts the election timer (Figure 2 of the
        // paper). Otherwise a candidate with a stale log, campaigning again and again, keeps
        // resetting the timers of the nodes that could win, and no leader emerges.
        const elapsed = this.electionElapsed;
        this.becomeFollower(m.term, '');
        this.electionElapsed = elapsed;
      } else {
        this.becomeFollower(m.term, '');
      }
    } else if (m.term < this.term) {
      if (
        (this.cfg.checkQuorum || this.cfg.preVote) &&
        (m.type === MessageType.Heartbeat || m.type === MessageType.Append)
      ) {
        // A stale leader (cut off, then back) is still sending: our reply carries our newer term
        // and deposes it. With PreVote or CheckQuorum it might otherwise never learn that term,
        // since higher-term vote requests no longer reach it (pre-votes keep the term; votes
        // are ignored in lease).
        this.send(makeMessage({ type: MessageType.AppendResponse, from: this.id, to: m.from }));
      } else if (m.type === MessageType.PreVote) {
        this.send(
          makeMessage({
            type: MessageType.PreVoteResponse,
            from: this.id,
            to: m.from,
            term: this.term,
            reject: true,
          }),
        );
      }
      return;
    }

    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m);
        break;
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m);
        break;
      case Role.Follower:
        this.stepFollower(m);
        break;
    }
  }

  private handleVoteRequest(m: Message): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === '' && this.lead === '') ||
      (m.type === MessageType.PreVote && m.term > this.term);
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      // A granted vote answers at the candidate's term, so the candidate counts it.
      this.send(makeMessage({ type: voteResponseType(m.type), from: this.id, to: m.from, term: m.term }));
      if (m.type === MessageType.Vote) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send(
        makeMessage({
          type: voteResponseType(m.type),
          from: this.id,
          to: m.from,
          term: this.term,
          reject: true,
        }),
      );
    }
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Propose:
        this.handleForwardedProposal(m);
        return;
      case MessageType.ReadIndex:
        this.handleReadIndex(m);
        return;
      default:
        break;
    }
    const pr = this.trk.progress.get(m.from);
    if (!pr) return;
    switch (m.type) {
      case MessageType.AppendResponse: {
        pr.recentActive = true;
        if (m.reject) {
          let nextProbe = m.rejectHint;
          if (m.conflictTerm > 0) {
            // Skip every entry of ours whose term is above the follower's term at the hint.
            nextProbe = this.log.findConflictByTerm(m.rejectHint, m.conflictTerm).index;
          }
          if (pr.maybeDecrTo(m.index, nextProbe)) {
            if (pr.state === ProgressState.Replicate) pr.becomeProbe();
            this.sendAppend(m.from);
          }
          return;
        }
        const wasPaused = pr.isPaused();
        if (!pr.maybeUpdate(m.index)) return;
        switch (pr.state) {
          case ProgressState.Probe:
            pr.becomeReplicate();
            break;
          case ProgressState.Snapshot:
            if (pr.match + 1 >= this.log.firstIndex()) {
              pr.becomeProbe();
              pr.becomeReplicate();
            }
            break;
          case ProgressState.Replicate:
            pr.inflights.freeLE(m.index);
            break;
        }
        if (this.maybeCommit()) {
          this.releasePendingReadIndex();
          this.bcastAppend();
        } else if (wasPaused) {
          this.sendAppend(m.from);
        }
        // Pipelining: fill the window while there are entries to send.
        while (this.maybeSendAppend(m.from, false)) {
          /* keep sending */
        }
        if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
          this.sendTimeoutNow(m.from);
        }
        return;
      }
      case MessageType.HeartbeatResponse: {
        pr.recentActive = true;
        pr.probeSent = false;
        pr.heartbeatAckTick = Math.max(pr.heartbeatAckTick, m.index);
        // Appends in a full window may all have been lost: free one slot so that an append goes
        // out; if the follower lacks its predecessors it rejects it and we fall back to probing.
        if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.match < this.log.lastIndex()) this.sendAppend(m.from);
        if (m.context.byteLength === 0) return;
        const acks = this.readOnly.recvAck(m.from, m.context);
        if (!acks) return;
        let granted = 0;
        for (const id of acks) if (this.trk.voters.has(id)) granted++;
        if (granted < Math.floor(this.trk.voters.size / 2) + 1) return;
        for (const req of this.readOnly.advance(m.context))
          this.respondToRead(req.from, req.index, req.context);
        return;
      }
      default:
        return;
    }
  }

  private stepCandidate(m: Message): void {
    const myVoteResponse =
      this.role === Role.PreCandidate ? MessageType.PreVoteResponse : MessageType.VoteResponse;
    switch (m.type) {
      case MessageType.Append:
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snapshot:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case myVoteResponse: {
        this.trk.recordVote(m.from, !m.reject);
        const result = this.trk.tallyVotes();
        if (result === 'won') {
          if (this.role === Role.PreCandidate) {
            this.campaign(Role.Candidate, false);
          } else {
            this.becomeLeader();
            this.bcastAppend();
          }
        } else if (result === 'lost') {
          // A pre-vote response with a higher term already made us a follower above.
          this.becomeFollower(this.term, '');
        }
        return;
      }
      default:
        // Forwarded proposals and reads are dropped: there is no leader to take them.
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Append:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snapshot:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TimeoutNow:
        // The leader hands over: campaign at once, skipping the pre-vote and the voters' lease.
        this.hup(true);
        return;
      case MessageType.ReadIndexResponse:
        this.readStates.push({ index: m.index, context: m.context });
        return;
      default:
        // Proposals and reads forwarded to us by mistake are dropped (not forwarded again, so a
        // stale view of the leader can never make messages loop); their senders time out.
        return;
    }
  }

  private handleAppend(m: Message): void {
    const committed = this.log.committed;
    if (m.index < committed) {
      if (m.index + m.entries.length <= committed) {
        this.send(
          makeMessage({ type: MessageType.AppendResponse, from: this.id, to: m.from, index: committed }),
        );
        return;
      }
      // An append that starts below our commit index but brings entries past it (the leader
      // sending again from an older match, its acknowledgement still on the way): what it holds
      // up to our commit index is committed, so the leader's copy is ours (and maybeAppend checks
      // the term there). Taken from our commit index on, rather than dropped whole: a node whose
      // append acknowledgements wait behind a long Ready (a snapshot restore) while its heartbeat
      // acknowledgements go ahead keeps taking the log in.
      const from = committed - m.index;
      m = { ...m, index: committed, logTerm: m.entries[from - 1]!.term, entries: m.entries.slice(from) };
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.send(makeMessage({ type: MessageType.AppendResponse, from: this.id, to: m.from, index: lastNew }));
      return;
    }
    // Consistency check failed. Hint where to retry: the last index we have at or below
    // m.index whose term is at most the leader's term there (fast backtracking).
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.send(
      makeMessage({
        type: MessageType.AppendResponse,
        from: this.id,
        to: m.from,
        index: m.index,
        reject: true,
        rejectHint: hint.index,
        conflictTerm: hint.term,
      }),
    );
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    this.send(
      makeMessage({
        type: MessageType.HeartbeatResponse,
        from: this.id,
        to: m.from,
        context: m.context,
        index: m.index,
      }),
    );
  }

  private handleSnapshot(m: Message): void {
    const snap = m.snapshot;
    if (!snap) return;
    const index = this.restore(snap) ? this.log.lastIndex() : this.log.committed;
    this.send(makeMessage({ type: MessageType.AppendResponse, from: this.id, to: m.from, index }));
  }

  /** Installs a snapshot from the leader; false when we already have everything it holds. */
  private restore(snap: Snapshot): boolean {
    if (snap.meta.index <= this.log.committed) return false;
    if (this.log.matchTerm(snap.meta.index, snap.meta.term)) {
      // We hold the snapshot's last entry: just fast-forward the commit index.
      this.log.commitTo(snap.meta.index);
      return false;
    }
    this.log.restore(snap);
    this.trk.progress.clear();
    this.trk.setConf(snap.meta.conf, this.log.lastIndex() + 1);
    this.isLearner = this.trk.learners.has(this.id);
    return true;
  }

  // ---------------------------------------------------------------- proposals

  /** Appends entries to the leader's log, stamping term and index. False if over the byte budget. */
  private appendEntries(es: Entry[]): boolean {
    const bytes = entriesBytes(es);
    if (
      this.cfg.maxUncommittedBytes > 0 &&
      this.uncommittedBytes > 0 &&
      this.uncommittedBytes + bytes > this.cfg.maxUncommittedBytes
    ) {
      return false;
    }
    this.uncommittedBytes += bytes;
    let li = this.log.lastIndex();
    const stamped = es.map((e) => ({ ...e, term: this.term, index: ++li }));
    li = this.log.append(stamped);
    this.trk.progress.get(this.id)?.maybeUpdate(li);
    this.maybeCommit();
    return true;
  }

  propose(data: Uint8Array): ProposeResult {
    if (this.role !== Role.Leader) {
      if (this.lead === '') throw new NotLeaderError('');
      if (!this.cfg.forwardProposals) throw new NotLeaderError(this.lead);
      // Batched: flushPending() sends one Propose with everything proposed since the last Ready.
      this.forwardBuffer.push({ term: 0, index: 0, type: EntryType.Normal, data });
      return { forwarded: true, leader: this.lead };
    }
    this.checkCanPropose();
    if (!this.appendEntries([{ term: 0, index: 0, type: EntryType.Normal, data }])) {
      throw new ProposalDroppedError(`more than ${this.cfg.maxUncommittedBytes} uncommitted bytes`);
    }
    // Batched: flushPending() sends the new entries to followers in as few appends as fit.
    this.broadcastPending = true;
    return { forwarded: false, index: this.log.lastIndex(), term: this.term };
  }

  private checkCanPropose(): void {
    if (!this.trk.progress.has(this.id))
      throw new ProposalDroppedError('this leader is being removed from the cluster');
    if (this.leadTransferee !== '') {
      throw new ProposalDroppedError(`leadership is being transferred to '${this.leadTransferee}'`);
    }
  }

  private handleForwardedProposal(m: Message): void {
    if (!this.trk.progress.has(this.id) || this.leadTransferee !== '') return;
    // Only plain commands are forwarded; membership changes go through proposeConfChange.
    const es = m.entries.filter((e) => e.type === EntryType.Normal);
    if (es.length === 0) return;
    if (this.appendEntries(es.map((e) => ({ ...e })))) this.broadcastPending = true;
  }

  /**
   * Sends what proposals left pending: appends of the new entries to every follower (filling
   * each replicate-state window), and the proposals to forward to the leader. RawNode calls it
   * before handing out a Ready, so many proposals between two Readies share messages.
   */
  flushPending(): void {
    if (this.broadcastPending) {
      this.broadcastPending = false;
      if (this.role === Role.Leader) {
        this.forEachPeer((id) => {
          while (this.maybeSendAppend(id, false)) {
            /* fill the window */
          }
        });
      }
    }
    if (this.forwardBuffer.length > 0) {
      const entries = this.forwardBuffer;
      this.forwardBuffer = [];
      // Best effort: if leadership moved meanwhile, they go to the new leader (maybe us) or
      // are dropped when there is none.
      if (this.role === Role.Leader) {
        this.handleForwardedProposal(
          makeMessage({ type: MessageType.Propose, from: this.id, to: this.id, entries }),
        );
        this.flushPending();
      } else if (this.lead !== '') {
        this.send(makeMessage({ type: MessageType.Propose, from: this.id, to: this.lead, entries }));
      }
    }
  }

  hasPending(): boolean {
    return this.broadcastPending || this.forwardBuffer.length > 0;
  }

  committedEntryInCurrentTerm(): boolean {
    return this.log.termOrUndefined(this.log.committed) === this.term;
  }

  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    validateConfChange(cc);
    if (this.role !== Role.Leader) throw new NotLeaderError(this.lead);
    this.checkCanPropose();
    if (!this.committedEntryInCurrentTerm()) {
      throw new ProposalDroppedError('the leader has not yet committed an entry of its term; retry shortly');
    }
    if (this.pendingConfIndex > this.log.applied) {
      throw new ProposalDroppedError(
        `a configuration change (index ${this.pendingConfIndex}) is still pending`,
      );
    }
    checkConfChange(this.trk.confState(), cc);
    const data = encodeConfChange(cc);
    if (!this.appendEntries([{ term: 0, index: 0, type: EntryType.ConfChange, data }])) {
      throw new ProposalDroppedError(`more than ${this.cfg.maxUncommittedBytes} uncommitted bytes`);
    }
    this.pendingConfIndex = this.log.lastIndex();
    this.bcastAppend();
    return { index: this.log.lastIndex(), term: this.term };
  }

  /**
   * Applies a committed conf change to the membership. Tolerant of repeats (a restart replays
   * entries the stored membership may already include).
   */
  applyConfChange(cc: ConfChange): ConfState {
    this.trk.setConf(applyToConf(this.trk.confState(), cc), this.log.lastIndex() + 1);
    this.isLearner = this.trk.learners.has(this.id);
    if (this.role !== Role.Leader) return this.trk.confState();
    if (!this.trk.voters.has(this.id)) {
      // The leader was removed: the change is committed, so step down and let the others elect.
      this.becomeFollower(this.term, '');
      return this.trk.confState();
    }
    if (this.leadTransferee !== '' && !this.trk.voters.has(this.leadTransferee)) this.leadTransferee = '';
    // A smaller quorum may commit more; a new member needs the log.
    if (this.maybeCommit()) this.releasePendingReadIndex();
    this.bcastAppend();
    return this.trk.confState();
  }

  private maybeCommit(): boolean {
    return this.log.maybeCommit(this.trk.committed(), this.term);
  }

  reduceUncommittedBytes(es: readonly Entry[]): void {
    if (this.role !== Role.Leader) return;
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - entriesBytes(es));
  }

  // ---------------------------------------------------------------- reads

  readIndex(context: Uint8Array): void {
    if (this.role === Role.Leader) {
      this.handleReadIndex(makeMessage({ type: MessageType.ReadIndex, from: this.id, to: this.id, context }));
      return;
    }
    if (this.lead === '') throw new NotLeaderError('');
    this.send(makeMessage({ type: MessageType.ReadIndex, from: this.id, to: this.lead, context }));
  }

  private handleReadIndex(m: Message): void {
    if (!this.committedEntryInCurrentTerm()) {
      // Our commit index may lag the previous leader's: hold the read until our no-op commits.
      this.pendingReadIndex.push(m);
      return;
    }
    this.serveReadIndex(m);
  }

  private serveReadIndex(m: Message): void {
    const index = this.log.committed;
    if (this.trk.voters.size === 1 && this.trk.voters.has(this.id)) {
      this.respondToRead(m.from, index, m.context);
      return;
    }
    if (this.cfg.readOnly === 'lease' && this.leaseValid()) {
      this.respondToRead(m.from, index, m.context);
      return;
    }
    // Safe read (or a lease read whose lease lapsed): confirm leadership with a heartbeat round.
    this.readOnly.add(index, m.from, m.context);
    this.readOnly.recvAck(this.id, m.context);
    this.bcastHeartbeat(m.context);
  }

  /**
   * Whether no other leader can have been elected yet. A follower that received our heartbeat
   * sent at tick t refuses votes for electionTick of its ticks after receiving it (CheckQuorum's
   * lease), so once a majority acknowledged a heartbeat sent at t, nobody else can win before
   * t + electionTick. One tick is kept as a margin for tick granularity. This assumes ticks of
   * the same length everywhere (bounded clock drift) and that followers do not restart within
   * the lease (a restarted follower has forgotten it): 'safe' reads assume neither.
   */
  private leaseValid(): boolean {
    if (this.trk.voters.size === 1 && this.trk.voters.has(this.id)) return true;
    let acked = 0;
    const ticks: number[] = [];
    for (const id of this.trk.voters) {
      ticks.push(id === this.id ? this.ticks : (this.trk.progress.get(id)?.heartbeatAckTick ?? -1));
    }
    ticks.sort((x, y) => y - x);
    acked = ticks[majority(ticks.length) - 1] ?? -1;
    return acked >= 0 && this.ticks - acked < this.cfg.electionTick - 1;
  }

  private releasePendingReadIndex(): void {
    if (this.pendingReadIndex.length === 0 || !this.committedEntryInCurrentTerm()) return;
    const held = this.pendingReadIndex;
    this.pendingReadIndex = [];
    for (const m of held) this.serveReadIndex(m);
  }

  private respondToRead(from: NodeId, index: number, context: Uint8Array): void {
    if (from === this.id) {
      this.readStates.push({ index, context });
      return;
    }
    this.send(makeMessage({ type: MessageType.ReadIndexResponse, from: this.id, to: from, index, context }));
  }

  // ---------------------------------------------------------------- leadership transfer

  transferLeader(to: NodeId): void {
    if (this.role !== Role.Leader) throw new NotLeaderError(this.lead);
    if (typeof to !== 'string' || to === '') throw new RaftArgumentError('transferee', 'must be a node id');
    if (to === this.id) return;
    if (!this.trk.voters.has(to)) throw new RaftArgumentError('transferee', `'${to}' is not a voter`);
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    // The transfer must finish within an election timeout or it is abandoned.
    this.electionElapsed = 0;
    const pr = this.trk.progress.get(to)!;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(to);
    else this.sendAppend(to);
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send(makeMessage({ type: MessageType.TimeoutNow, from: this.id, to }));
  }

  // ---------------------------------------------------------------- reports from the edge

  reportUnreachable(id: NodeId): void {
    if (this.role !== Role.Leader) return;
    const pr = this.trk.progress.get(id);
    // Appends in flight were probably lost: go back to probing.
    if (pr && pr.state === ProgressState.Replicate) pr.becomeProbe();
  }

  reportSnapshot(id: NodeId, ok: boolean): void {
    if (this.role !== Role.Leader) return;
    const pr = this.trk.progress.get(id);
    if (!pr || pr.state !== ProgressState.Snapshot) return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the follower's answer (or the next heartbeat) before probing again.
    pr.probeSent = true;
  }
}
