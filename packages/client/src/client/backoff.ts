/**
 * Exponential backoff with "full jitter" (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"): the wait before retry n is uniform in [0, min(cap, base * 2^n)). Spreading the waits
 * keeps clients that failed together (every client of a leader that died) from retrying together.
 */
export interface BackoffOptions {
  /** The first retry waits up to this many milliseconds. */
  baseMs?: number;
  /** No wait is longer than this. */
  capMs?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = { baseMs: 50, capMs: 2_000 };

/** The wait before retry `attempt` (0 for the first retry), with `random` in [0, 1). */
export function backoffDelay(attempt: number, random: () => number, opts: BackoffOptions = {}): number {
  const { baseMs, capMs } = { ...DEFAULT_BACKOFF, ...opts };
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Time as the client sees it: injected by tests, the real clock otherwise. */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};
