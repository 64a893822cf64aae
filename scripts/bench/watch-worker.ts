/** The thread of watchInThread: follows the Watch and posts what arrives, batched per turn. */
import { parentPort, workerData } from 'node:worker_threads';
import type { pb } from '@hyperfarm/api';
import { followWatch } from './watch-follow.js';
import type { Received } from './watch-thread.js';

const port = parentPort!;
const { addresses, fromRevision, kinds } = workerData as {
  addresses: string[];
  fromRevision: number;
  kinds: pb.WatchRequest['kinds'];
};
let batch: Received[] = [];
const flush = () => {
  if (batch.length > 0) port.postMessage({ type: 'events', events: batch });
  batch = [];
};
const following = followWatch({
  addresses,
  fromRevision,
  kinds,
  onEvent: (event) => {
    const receivedAt = Date.now();
    if (batch.length === 0) setImmediate(flush);
    batch.push({ event, receivedAt, lagMs: receivedAt - Number(event.timeMs) });
  },
  onGap: () => (flush(), port.postMessage({ type: 'gap' })),
  say: (line) => port.postMessage({ type: 'say', line }),
});
port.on('message', () => {
  following.stop();
  flush();
  port.postMessage({ type: 'stopped', restarts: following.restarts() });
  port.close();
  process.exit(0);
});
