import { Worker } from 'node:worker_threads';
import { expect } from 'chai';
import { watchInThread, type Received } from '../bench/watch-thread.js';

/** Holds this thread for `ms`, as a bench's main thread does with hundreds of calls in flight. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

// bench:scale's Watch follower must measure the farm's lag, not its own main thread's: the fill
// keeps 256 creates in flight on that thread, and a follower beside them reported the bench's
// event-loop delay as the farm's (docs/benchmarks.md, Scale).
describe("bench:scale's Watch follower, on a thread of its own", function () {
  this.timeout(30_000);
  let server: Worker;
  let address: string;

  before(async () => {
    const entry = JSON.stringify(new URL('./fixtures/watch-server-worker.ts', import.meta.url).href);
    const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${entry}); });`;
    server = new Worker(boot, { eval: true });
    address = await new Promise<string>((resolve, reject) => {
      server.once('message', resolve);
      server.once('error', reject);
    });
  });

  after(async () => {
    server.postMessage('stop');
    await server.terminate();
  });

  it('takes each event’s lag on its own thread, whatever this thread is doing meanwhile', async () => {
    const got: Received[] = [];
    const watch = watchInThread({ addresses: [address], fromRevision: 1, onEvent: (r) => got.push(r) });
    const deadline = Date.now() + 20_000;
    while (got.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(got.length, 'events before the hold').to.be.at.least(5);
    const heldFrom = Date.now();
    busy(800);
    const heldTo = Date.now();
    // What arrived during the hold reaches this thread after it.
    await new Promise((r) => setTimeout(r, 300));
    watch.stop();
    await watch.stopped;
    const during = got.filter((r) => r.receivedAt >= heldFrom && r.receivedAt <= heldTo);
    // An event every 10 ms over 800 ms: most received while this thread was held, each soon
    // after it was sent. Followed here, they would all be received after the hold, up to 800 ms late.
    expect(during.length, 'events received during the hold').to.be.above(20);
    const lags = during.map((r) => r.lagMs).sort((a, b) => a - b);
    expect(lags[Math.floor(lags.length / 2)], 'median lag during the hold, ms').to.be.below(200);
  });
});
