/**
 * Exponential backoff with "equal jitter" (half the wait fixed, half random; not full jitter,
 * which would draw from [0, ceiling]): the n-th retry waits a random time in [c/2, c], where
 * c = min(maxMs, baseMs·2^n). The fixed half keeps a retry from coming at once; the random half
 * keeps peers that lost the same node from reconnecting in lockstep.
 */
export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 50, maxMs: 1_000 };

export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number): number {
  const ceiling = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(attempt, 20));
  return ceiling / 2 + random() * (ceiling / 2);
}
