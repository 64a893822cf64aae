import { RequestTimeoutError } from './errors.js';

/** Settles a promise with a timeout; the timer is cleared when it settles. */
export function withTimeout<T>(
  what: string,
  ms: number,
  start: (resolve: (v: T) => void, reject: (e: unknown) => void, onCancel: (f: () => void) => void) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let cancel: (() => void) | undefined;
    const timer = setTimeout(() => {
      cancel?.();
      reject(new RequestTimeoutError(what, ms));
    }, ms);
    start(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
      (f) => (cancel = f),
    );
  });
}
