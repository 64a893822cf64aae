/**
 * Exponential backoff with full jitter: the n-th retry waits a random time in
 * [base·2^n / 2, base·2^n], capped at `maxMs`. Jitter keeps peers that lost the same node from
 * reconnecting in lockstep.
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
