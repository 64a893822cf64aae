/**
 * A Watch followed on a thread of its own, for a benchmark whose main thread is busy sending
 * load: the lag is then the farm's (its commit to this client), not the load generator's event
 * loop. Each event comes back with the time it was received and its lag, taken on that thread.
 */
import { Worker } from 'node:worker_threads';
import type { pb } from '@hyperfarm/api';
import type { FollowOptions, Following } from './watch-follow.js';

export interface Received {
  event: pb.Event__Output;
  /** Date.now() on the watching thread when the event arrived. */
  receivedAt: number;
  /** receivedAt less the event's time (its proposer's clock: one machine, one clock). */
  lagMs: number;
}

type FromWorker = { type: 'events'; events: Received[] } | { type: 'gap' } | { type: 'say'; line: string };

export function watchInThread(
  o: Omit<FollowOptions, 'onEvent'> & { onEvent: (r: Received) => void },
): Following & { stopped: Promise<number> } {
  // tsx's loader does not reach worker threads by itself: the thread registers it first.
  const entry = JSON.stringify(new URL('./watch-worker.ts', import.meta.url).href);
  const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${entry}); });`;
  const worker = new Worker(boot, {
    eval: true,
    workerData: { addresses: o.addresses, fromRevision: o.fromRevision, kinds: o.kinds ?? [] },
  });
  let restarts = 0;
  worker.on('message', (m: FromWorker | { type: 'stopped'; restarts: number }) => {
    if (m.type === 'events') for (const r of m.events) o.onEvent(r);
    else if (m.type === 'gap') o.onGap?.();
    else if (m.type === 'say') o.say?.(m.line);
    else restarts = m.restarts;
  });
  const stopped = new Promise<number>((resolve) => worker.once('exit', () => resolve(restarts)));
  return {
    stop: () => worker.postMessage('stop'),
    restarts: () => restarts,
    stopped,
  };
}
