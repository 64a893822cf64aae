/**
 * A closed-loop load generator: `clients` workers, each issuing one write at a time for
 * `durationMs`, recording each write's latency. The same generator drives hyperfarm and etcd.
 */

export type PutFn = (key: string, value: Buffer) => Promise<void>;

export interface LoadResult {
  clients: number;
  /** Every acknowledged write's latency in ms, sorted. */
  latencies: number[];
  writes: number;
  errors: number;
  seconds: number;
  writesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export async function runLoad(opts: {
  clients: number;
  durationMs: number;
  valueBytes: number;
  put: PutFn;
  keyPrefix: string;
}): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const stopAt = started + opts.durationMs;
  const worker = async (w: number): Promise<void> => {
    const value = Buffer.alloc(opts.valueBytes, 97 + (w % 26));
    for (let i = 0; performance.now() < stopAt; i++) {
      const t0 = performance.now();
      try {
        await opts.put(`${opts.keyPrefix}/${w}/${i % 1000}`, value);
        latencies.push(performance.now() - t0);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: opts.clients }, (_, w) => worker(w)));
  const seconds = (performance.now() - started) / 1000;
  return summarize(opts.clients, latencies, errors, seconds);
}

/** Figures from latencies (any order) gathered over `seconds`. */
export function summarize(clients: number, latencies: number[], errors: number, seconds: number): LoadResult {
  latencies.sort((a, b) => a - b);
  return {
    clients,
    latencies,
    writes: latencies.length,
    errors,
    seconds,
    writesPerSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies[latencies.length - 1] ?? NaN,
  };
}

/** Several slices of the same load, as one result. */
export function merge(results: LoadResult[]): LoadResult {
  const first = results[0];
  if (!first) throw new Error('merge: no results');
  return summarize(
    first.clients,
    results.flatMap((r) => r.latencies),
    results.reduce((n, r) => n + r.errors, 0),
    results.reduce((n, r) => n + r.seconds, 0),
  );
}
