import { RequestTimeoutError } from './errors.js';
import { realNodeTimers, type NodeTimers } from './node-io.js';

/** Settles a promise with a timeout; the timer is cleared when it settles. */
export function withTimeout<T>(
  what: string,
  ms: number,
  start: (resolve: (v: T) => void, reject: (e: unknown) => void, onCancel: (f: () => void) => void) => void,
  timers: Pick<NodeTimers, 'set' | 'clear'> = realNodeTimers,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let cancel: (() => void) | undefined;
    const timer = timers.set(() => {
      cancel?.();
      reject(new RequestTimeoutError(what, ms));
    }, ms);
    start(
      (v) => {
        timers.clear(timer);
        resolve(v);
      },
      (e) => {
        timers.clear(timer);
        reject(e);
      },
      (f) => (cancel = f),
    );
  });
}
