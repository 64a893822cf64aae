/**
 * The web console under load: a farm of real processes with 1,000 VMs, changed 100 times a
 * second, and the console's Farm view open in Debian's Chromium (playwright-core).
 *
 *   npm run bench:console [-- --vms 1000] [--rate 100] [--seconds 60] [--minutes 10] [--daemons 1]
 *
 * Load: UpdateVm calls (a label) on the VMs in turn, paced to `--rate` per second; each commits
 * one VM event. Lag: a gRPC Watch in this process notes when each revision arrives; the page
 * notes when its Farm view's DOM shows each revision (Store.renders); a revision's lag is the
 * second minus the first, on the machine's one clock. Memory: the page's JS heap after a forced
 * garbage collection (CDP), and its DOM node count, sampled through the run; the slope of a
 * least-squares line through the heap samples says whether it grows.
 * Figures first; the last line is one JSON object.
 */
import { cpus, loadavg, totalmem } from 'node:os';
import { chromium } from 'playwright-core';
import type { pb } from '@hyperfarm/api';
import { ProcessFarm, until } from '../../packages/daemon/test/process/harness.js';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const VMS = Number(arg('vms', '1000'));
const RATE = Number(arg('rate', '100'));
const SECONDS = process.argv.includes('--minutes')
  ? Number(arg('minutes', '10')) * 60
  : Number(arg('seconds', '60'));
const DAEMONS = Number(arg('daemons', '1'));
// Hyper-V 2008 runs at most 192 VMs a host (the agents' default limits profile).
const HOSTS = Math.ceil(VMS / 180);
const SAMPLES = 12;
const CHROMIUM = process.env.HYPERFARM_CHROMIUM ?? '/usr/bin/chromium';

interface PageStore {
  model: { revision: number; vms: Map<string, unknown> };
  renders: { revision: number; at: number }[];
  connection: { status: string };
}
type Win = { hyperfarm: PageStore };

const load0 = loadavg();
const farm = await ProcessFarm.start({ daemons: DAEMONS });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
try {
  // Enough processors that 1,000 one-processor VMs fit (8 virtual per logical processor).
  await farm.startAgent('agent-1', HOSTS, ['--memory-mib', '65536', '--logical-processors', '64']);
  const c = farm.client('daemon-1');
  await until(
    `${HOSTS} hosts Up`,
    60_000,
    async () => (await c.listHosts({ state: 'HOST_STATE_UP' })).hosts.length === HOSTS || undefined,
  );

  // The VMs, Off, placed by the farm.
  const t0 = Date.now();
  let made = 0;
  const name = (i: number) => `bench-${String(i).padStart(4, '0')}`;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (made < VMS) {
        const i = made++;
        await c.createVm({
          config: {
            name: name(i),
            processor: { count: 1 },
            memoryBytes: 256 * 1024 * 1024,
            guestOs: 'windows-server-2008-x64',
          },
          requestId: `bench-${i}`,
        });
      }
    }),
  );
  const listVms = async () => {
    const vms: pb.Vm__Output[] = [];
    for (let token = ''; ;) {
      const page = await c.listVms({ pageSize: 1000, pageToken: token });
      vms.push(...page.vms);
      token = page.nextPageToken;
      if (!token) return vms;
    }
  };
  // Every create done (one the farm cannot carry out is undone: count them too).
  await until(
    'every create done',
    300_000,
    async () =>
      (await c.listOperations({ pendingOnly: true, pageSize: 10 })).operations.length === 0 || undefined,
  );
  const ids = (await listVms()).map((v) => v.id);
  if (ids.length < VMS) {
    const ops = await c.listOperations({ pageSize: 1000 });
    const failed = ops.operations.find((o) => o.done && o.error);
    throw new Error(`only ${ids.length} of ${VMS} VMs were created: ${failed?.error?.message}`);
  }
  console.log(`created ${ids.length} VMs in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  // The page, on the Farm view, with every VM.
  const console1 = (await c.getClusterStatus({})).consoleAddress;
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const cdp = await page.context().newCDPSession(page);
  await page.goto(`${console1}/#/farm`);
  await until('the page has every VM', 120_000, () =>
    page.evaluate(
      (n) => (globalThis as unknown as Win).hyperfarm?.model.vms.size >= n || undefined,
      ids.length,
    ),
  );

  // The stream as a gRPC client sees it: when each revision arrives.
  const arrivals = new Map<number, number>();
  const from = (await c.getClusterStatus({})).revision;
  const watch = farm.watch('daemon-1', { fromRevision: from });
  const kindCount = new Map<string, number>();
  watch.on('data', (e: pb.Event__Output) => {
    arrivals.set(e.revision, Date.now());
    kindCount.set(e.kind, (kindCount.get(e.kind) ?? 0) + 1);
  });
  watch.on('error', () => undefined);

  const renders: { revision: number; at: number }[] = [];
  const drain = async () => {
    const got = await page.evaluate(() => {
      const r = (globalThis as unknown as Win).hyperfarm.renders;
      return r.splice(0, r.length);
    });
    renders.push(...got);
  };
  const memory: { t: number; heapMiB: number; nodes: number; busyS: number }[] = [];
  const sampleMemory = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    const heap = (await cdp.send('Runtime.getHeapUsage')) as { usedSize: number };
    const metrics = (await cdp.send('Performance.getMetrics')) as {
      metrics: { name: string; value: number }[];
    };
    const metric = (name: string) => metrics.metrics.find((m) => m.name === name)?.value ?? 0;
    // TaskDuration: seconds the page's main thread has been busy (script, style, layout, paint).
    memory.push({
      t: (Date.now() - start) / 1000,
      heapMiB: heap.usedSize / 2 ** 20,
      nodes: metric('Nodes'),
      busyS: metric('TaskDuration'),
    });
  };
  await cdp.send('Performance.enable');

  // The load: RATE changes a second, paced to a schedule (late calls catch up, never pile up).
  const start = Date.now();
  await sampleMemory();
  let sent = 0;
  let failed = 0;
  let inFlight = 0;
  const end = start + SECONDS * 1000;
  const drainTimer = setInterval(() => void drain().catch(() => undefined), 500);
  let nextSample = start + (SECONDS * 1000) / SAMPLES;
  while (Date.now() < end) {
    const due = Math.floor(((Date.now() - start) * RATE) / 1000);
    while (sent < due && inFlight < RATE) {
      const id = ids[sent % ids.length]!;
      const seq = sent++;
      inFlight++;
      c.updateVm({ id, config: { labels: { seq: String(seq) } }, updateMask: { paths: ['config.labels'] } })
        .catch((err: Error) => {
          if (failed++ === 0) console.log(`first refused change: ${err.message}`);
        })
        .finally(() => inFlight--);
    }
    if (Date.now() >= nextSample) {
      nextSample += (SECONDS * 1000) / SAMPLES;
      await sampleMemory();
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await until('the last calls answered', 30_000, () => inFlight === 0 || undefined);
  const lastRevision = Math.max(...arrivals.keys());
  await until('the page showing the last revision', 30_000, async () => {
    await drain();
    return renders.some((r) => r.revision >= lastRevision) || undefined;
  });
  clearInterval(drainTimer);
  await sampleMemory();
  watch.cancel();
  const elapsed = (Date.now() - start) / 1000;

  // Each revision's lag: the first render showing it, minus its arrival here.
  renders.sort((a, b) => a.revision - b.revision);
  const lags: number[] = [];
  let j = 0;
  for (const [revision, at] of [...arrivals].sort((a, b) => a[0] - b[0])) {
    while (j < renders.length && renders[j]!.revision < revision) j++;
    const shown = renders.slice(j).reduce((min, r) => Math.min(min, r.at), Infinity);
    if (shown < Infinity) lags.push(Math.max(0, shown - at));
  }
  lags.sort((a, b) => a - b);
  const pct = (p: number) => lags[Math.min(lags.length - 1, Math.floor((p / 100) * lags.length))] ?? NaN;
  const heap = memory.map((m) => m.heapMiB);
  const n = memory.length;
  const mt = memory.reduce((s, m) => s + m.t, 0) / n;
  const mh = heap.reduce((s, h) => s + h, 0) / n;
  const slope =
    memory.reduce((s, m) => s + (m.t - mt) * (m.heapMiB - mh), 0) /
    memory.reduce((s, m) => s + (m.t - mt) ** 2, 0);
  const busy = (memory.at(-1)!.busyS - memory[0]!.busyS) / (memory.at(-1)!.t - memory[0]!.t);
  const status = await page.evaluate(() => (globalThis as unknown as Win).hyperfarm.connection.status);
  const shownVms = await page.evaluate(
    () =>
      (
        globalThis as unknown as { document: { querySelectorAll(s: string): { length: number } } }
      ).document.querySelectorAll('[data-vm]').length,
  );
  console.log(`VM chips on the page at the end: ${shownVms}`);
  const sizes = await page.evaluate(() => {
    const m = (globalThis as unknown as Win).hyperfarm.model as unknown as {
      timeline: unknown[];
      history: Map<string, unknown[]>;
      operations: Map<string, unknown>;
      migrations: Map<string, unknown>;
      checkpoints: Map<string, unknown>;
      others: Map<string, Map<string, unknown>>;
    };
    return {
      timeline: m.timeline.length,
      history: [...m.history.values()].reduce((s, l) => s + l.length, 0),
      operations: m.operations.size,
      migrations: m.migrations.size,
      checkpoints: m.checkpoints.size,
      others: [...m.others.values()].reduce((s, l) => s + l.size, 0),
    };
  });
  console.log(`page model sizes: ${JSON.stringify(sizes)}`);
  console.log(`events by kind: ${JSON.stringify(Object.fromEntries(kindCount))}`);

  const r = (x: number, d = 1) => Number(x.toFixed(d));
  console.log(
    `load: ${sent} changes in ${r(elapsed)} s (${r(sent / elapsed)}/s, ${failed} refused), ${arrivals.size} events streamed`,
  );
  console.log(
    `farm view lag behind the stream, ms: p50 ${r(pct(50))}, p95 ${r(pct(95))}, p99 ${r(pct(99))}, max ${r(lags.at(-1) ?? NaN)} (${lags.length} revisions)`,
  );
  console.log('page memory (after GC):');
  for (const m of memory)
    console.log(`  ${r(m.t).toString().padStart(6)} s  heap ${r(m.heapMiB, 2)} MiB  DOM nodes ${m.nodes}`);
  console.log(
    `page main thread busy ${r(busy * 100)}% of the time (garbage collections forced by the samples included)`,
  );
  console.log(`heap slope ${r(slope * 60, 3)} MiB/min; connection ${status}`);
  console.log(
    JSON.stringify({
      bench: 'console',
      vms: ids.length,
      hosts: HOSTS,
      daemons: DAEMONS,
      targetRate: RATE,
      rate: r(sent / elapsed),
      seconds: r(elapsed),
      events: arrivals.size,
      refused: failed,
      lagMs: { p50: r(pct(50)), p95: r(pct(95)), p99: r(pct(99)), max: r(lags.at(-1) ?? NaN) },
      heapMiB: { first: r(heap[0]!, 2), last: r(heap.at(-1)!, 2), max: r(Math.max(...heap), 2) },
      heapSlopeMiBPerMin: r(slope * 60, 3),
      pageBusyPercent: r(busy * 100),
      domNodes: { first: memory[0]!.nodes, last: memory.at(-1)!.nodes },
      machine: { cpus: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
      loadavg: { before: load0.map((x) => r(x, 2)), after: loadavg().map((x) => r(x, 2)) },
      date: new Date().toISOString(),
    }),
  );
} finally {
  await browser.close();
  await farm.stop();
}
