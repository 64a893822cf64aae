import { type ConfState, type NodeId } from '../types.js';
import { Progress } from './progress.js';
import { committedIndex, quorumActive, voteResult, type VoteResult } from './quorum.js';

/**
 * The membership (voters and learners), the leader's progress for each member, and the votes of
 * the current election. Members are kept in a sorted order so that messages go out in the same
 * order on every run.
 */
export class ProgressTracker {
  voters = new Set<NodeId>();
  learners = new Set<NodeId>();
  progress = new Map<NodeId, Progress>();
  votes = new Map<NodeId, boolean>();

  constructor(
    readonly maxInflight: number,
    readonly maxInflightBytes: number,
  ) {}

  confState(): ConfState {
    return { voters: [...this.voters].sort(), learners: [...this.learners].sort() };
  }

  /** Replaces the membership; progress of members that stay is kept, new ones start probing. */
  setConf(conf: ConfState, nextIndex: number): void {
    this.voters = new Set(conf.voters);
    this.learners = new Set(conf.learners.filter((id) => !this.voters.has(id)));
    this.memberList = [...[...this.voters].sort(), ...[...this.learners].sort()];
    const progress = new Map<NodeId, Progress>();
    for (const id of this.members()) {
      const isLearner = this.learners.has(id);
      const pr = this.progress.get(id) ?? this.newProgress(nextIndex, isLearner);
      pr.isLearner = isLearner;
      progress.set(id, pr);
    }
    this.progress = progress;
  }

  newProgress(nextIndex: number, isLearner: boolean): Progress {
    const pr = new Progress(nextIndex, this.maxInflight, this.maxInflightBytes, isLearner);
    // A member just added counts as active, so CheckQuorum does not depose the leader before
    // it had a chance to hear from it.
    pr.recentActive = true;
    return pr;
  }

  private memberList: NodeId[] = [];

  /** Voters then learners, each sorted (computed once per membership change). */
  members(): readonly NodeId[] {
    return this.memberList;
  }

  isVoter(id: NodeId): boolean {
    return this.voters.has(id);
  }

  /** The largest index replicated on a majority of voters. */
  committed(): number {
    return committedIndex(this.voters, (id) => this.progress.get(id)?.match);
  }

  quorumActive(self: NodeId): boolean {
    return quorumActive(this.voters, (id) => id === self || this.progress.get(id)?.recentActive === true);
  }

  resetVotes(): void {
    this.votes = new Map();
  }

  recordVote(id: NodeId, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  tallyVotes(): VoteResult {
    return voteResult(this.voters, this.votes);
  }
}
