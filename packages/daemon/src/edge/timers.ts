/**
 * Time for the leader's loops, injected: the real clock and timers in the daemon, a virtual
 * clock in the farm simulator (issue 14), which then runs the same controller code.
 */
export interface Timers {
  now(): number;
  /** Runs `fn` after `ms`; returns a handle for `clear`. */
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export const realTimers: Timers = {
  now: () => Date.now(),
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
