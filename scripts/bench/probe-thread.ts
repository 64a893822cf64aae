/**
 * The API probe of bench:scale on a thread of its own: paced calls (GetVm, ListVms one page,
 * CreateVm), each kind one at a time at its own interval, whose latency is the API's as a user
 * sees it while the farm is loaded, not the load generator's: the fill's calls in flight on the
 * main thread (hundreds) neither queue the probe's calls behind theirs nor delay their answers
 * on this thread's event loop.
 */
import { Worker } from 'node:worker_threads';
import type { pb } from '@hyperfarm/api';

export type ProbeCall = 'get' | 'list' | 'create';

export interface ProbeSample {
  call: ProbeCall;
  /** Date.now() on the probe's thread when the call was sent. */
  at: number;
  ms: number;
  error?: string;
}

export interface ProbeOptions {
  address: string;
  /** Interval between the sends of each kind, ms (a late call delays its kind's next, no burst). */
  everyMs: Record<ProbeCall, number>;
  /** The VM config of the probe's creates; each is named `${prefix}-${n}`. */
  config: pb.VmConfig;
  prefix: string;
}

export type ToProbe =
  | { type: 'ids'; ids: string[] }
  | { type: 'address'; address: string }
  | { type: 'creates'; on: boolean }
  | { type: 'stop' };
export type FromProbe = { type: 'samples'; samples: ProbeSample[]; created: string[] } | { type: 'stopped' };

export interface Probe {
  /** VMs the probe's GetVm picks from (the fill's, as they are acknowledged). */
  addIds(ids: string[]): void;
  /** Calls go to this daemon from now on (a new leader). */
  setAddress(address: string): void;
  /** Whether the probe creates VMs (off while a failover is timed). */
  setCreates(on: boolean): void;
  stop(): Promise<void>;
}

export function probeInThread(
  o: ProbeOptions & { onSamples: (samples: ProbeSample[], created: string[]) => void },
): Probe {
  // tsx's loader does not reach worker threads by itself: the thread registers it first.
  const entry = JSON.stringify(new URL('./probe-worker.ts', import.meta.url).href);
  const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${entry}); });`;
  const { onSamples, ...workerData } = o;
  const worker = new Worker(boot, { eval: true, workerData });
  let stopped!: () => void;
  const done = new Promise<void>((r) => (stopped = r));
  worker.on('message', (m: FromProbe) => {
    if (m.type === 'samples') onSamples(m.samples, m.created);
    else stopped();
  });
  worker.once('exit', () => stopped());
  const post = (m: ToProbe) => worker.postMessage(m);
  return {
    addIds: (ids) => ids.length > 0 && post({ type: 'ids', ids }),
    setAddress: (address) => post({ type: 'address', address }),
    setCreates: (on) => post({ type: 'creates', on }),
    stop: async () => {
      post({ type: 'stop' });
      await done;
      await worker.terminate();
    },
  };
}
