/** The thread of probeInThread: three paced loops of calls, their samples posted every 200 ms. */
import { setTimeout as sleep } from 'node:timers/promises';
import { parentPort, workerData } from 'node:worker_threads';
import type { pb } from '@hyperfarm/api';
import { cluster, type Cluster } from './farm-harness.js';
import type { FromProbe, ProbeCall, ProbeOptions, ProbeSample, ToProbe } from './probe-thread.js';

const port = parentPort!;
const o = workerData as ProbeOptions;
let client: Cluster = cluster(o.address);
const ids: string[] = [];
let creates = true;
let running = true;
let samples: ProbeSample[] = [];
let created: string[] = [];
let n = 0;

const calls: Record<ProbeCall, () => Promise<unknown> | undefined> = {
  get: () =>
    ids.length === 0 ? undefined : client.getVm({ id: ids[Math.floor(Math.random() * ids.length)]! }),
  list: () => client.listVms({ pageSize: 100 }),
  create: () => {
    if (!creates) return undefined;
    const name = `${o.prefix}-${n++}`;
    const config: pb.VmConfig = { ...o.config, name };
    return client.createVm({ config, requestId: name }).then((op) => created.push(op.targetId));
  },
};

/** One kind's loop: a call every `every` ms, one at a time; a call that overruns moves the next. */
async function paced(call: ProbeCall, every: number): Promise<void> {
  let next = performance.now();
  while (running) {
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    next = Math.max(next + every, performance.now());
    const at = Date.now();
    const t = performance.now();
    const sent = calls[call]();
    if (!sent) continue;
    let error: string | undefined;
    await sent.catch((err: Error) => (error = err.message));
    samples.push({ call, at, ms: performance.now() - t, ...(error ? { error } : {}) });
  }
}

const flush = () => {
  if (samples.length > 0 || created.length > 0) {
    const m: FromProbe = { type: 'samples', samples, created };
    port.postMessage(m);
  }
  samples = [];
  created = [];
};
const flusher = setInterval(flush, 200);
const loops = (Object.keys(o.everyMs) as ProbeCall[]).map((c) => paced(c, o.everyMs[c]));

port.on('message', (m: ToProbe) => {
  if (m.type === 'ids') ids.push(...m.ids);
  else if (m.type === 'address') client = cluster(m.address);
  else if (m.type === 'creates') creates = m.on;
  else {
    running = false;
    void Promise.all(loops).then(() => {
      clearInterval(flusher);
      flush();
      port.postMessage({ type: 'stopped' } satisfies FromProbe);
    });
  }
});
