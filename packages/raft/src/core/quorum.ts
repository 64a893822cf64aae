import { type NodeId } from '../types.js';

/**
 * Majority arithmetic for a single (non-joint) configuration of voters. Pure functions, so the
 * commit and election rules can be tested on their own.
 */

/** How many voters make a majority. */
export function majority(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

/**
 * The largest index that a majority of voters hold: sort the voters' match indexes from high to
 * low and take the one at position majority-1. A voter with no known match counts as 0.
 * With no voters nothing can be committed, so the answer is 0.
 */
export function committedIndex(
  voters: Iterable<NodeId>,
  matchOf: (id: NodeId) => number | undefined,
): number {
  const matches: number[] = [];
  for (const id of voters) matches.push(matchOf(id) ?? 0);
  if (matches.length === 0) return 0;
  matches.sort((a, b) => b - a);
  return matches[majority(matches.length) - 1]!;
}

export type VoteResult = 'won' | 'lost' | 'pending';

/** An election's outcome so far: won once a majority granted, lost once a majority refused. */
export function voteResult(voters: Iterable<NodeId>, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  let granted = 0;
  let missing = 0;
  let n = 0;
  for (const id of voters) {
    n++;
    const v = votes.get(id);
    if (v === undefined) missing++;
    else if (v) granted++;
  }
  if (n === 0) return 'won';
  const q = majority(n);
  if (granted >= q) return 'won';
  if (granted + missing >= q) return 'pending';
  return 'lost';
}

/** Whether a majority of voters satisfy `isActive` (CheckQuorum's test). */
export function quorumActive(voters: Iterable<NodeId>, isActive: (id: NodeId) => boolean): boolean {
  let n = 0;
  let active = 0;
  for (const id of voters) {
    n++;
    if (isActive(id)) active++;
  }
  return n === 0 || active >= majority(n);
}
