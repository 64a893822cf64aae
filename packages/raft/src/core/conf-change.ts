import { type ConfChange, ConfChangeType, type ConfState } from '../types.js';
import { RaftArgumentError } from './errors.js';

/**
 * Membership changes of one server at a time, as pure functions over a ConfState: whether a
 * change makes sense for the current membership, and the membership after it.
 */

/** Refuses a change that makes no sense for `conf`, naming the field and the reason. */
export function checkConfChange(conf: ConfState, cc: ConfChange): void {
  const isVoter = conf.voters.includes(cc.node);
  const isLearner = conf.learners.includes(cc.node);
  const who = `'${cc.node}'`;
  switch (cc.type) {
    case ConfChangeType.AddVoter:
      if (isVoter) throw new RaftArgumentError('confChange.node', `${who} is already a voter`);
      if (isLearner)
        throw new RaftArgumentError('confChange.type', `${who} is a learner: use PromoteLearner`);
      return;
    case ConfChangeType.AddLearner:
      if (isVoter)
        throw new RaftArgumentError('confChange.node', `${who} is a voter; demotion is not supported`);
      if (isLearner) throw new RaftArgumentError('confChange.node', `${who} is already a learner`);
      return;
    case ConfChangeType.RemoveNode:
      if (!isVoter && !isLearner) throw new RaftArgumentError('confChange.node', `${who} is not a member`);
      if (isVoter && conf.voters.length === 1)
        throw new RaftArgumentError('confChange.node', `${who} is the last voter`);
      return;
    case ConfChangeType.PromoteLearner:
      if (!isLearner) throw new RaftArgumentError('confChange.node', `${who} is not a learner`);
      return;
  }
}

/**
 * The membership after a committed change. Tolerant of repeats and of changes that no longer
 * apply (a restart replays entries the stored membership may already include).
 */
export function applyToConf(conf: ConfState, cc: ConfChange): ConfState {
  const voters = new Set(conf.voters);
  const learners = new Set(conf.learners);
  switch (cc.type) {
    case ConfChangeType.AddVoter:
    case ConfChangeType.PromoteLearner:
      learners.delete(cc.node);
      voters.add(cc.node);
      break;
    case ConfChangeType.AddLearner:
      if (!voters.has(cc.node)) learners.add(cc.node);
      break;
    case ConfChangeType.RemoveNode:
      voters.delete(cc.node);
      learners.delete(cc.node);
      break;
  }
  return { voters: [...voters].sort(), learners: [...learners].sort() };
}
