/**
 * The web console under load: a farm of real processes with 1,000 VMs, changed 100 times a
 * second, and the console's Farm view open in Debian's Chromium (playwright-core).
 *
 *   npm run bench:console [-- --vms 1000] [--rate 100] [--seconds 60] [--minutes 10] [--daemons 1]
 *                         [--profile page.cpuprofile]
 *
 * Load: UpdateVm calls (a label) on the VMs in turn, paced to `--rate` per second; each commits
 * one VM event. Lag: a gRPC Watch in this process notes when each revision arrives; the page
 * notes when its Farm view's DOM shows each revision (Store.renders); a revision's lag is the
 * second minus the first, on the machine's one clock. Memory: the page's JS heap after a forced
 * garbage collection (CDP), and its DOM node count, sampled through the run; the slope of a
 * least-squares line through the heap samples says whether it grows.
 * The lag is also split at the page: until the page applied the revision (daemon, gateway,
 * socket, and the page's main thread queueing the message), and from then to the render.
 * `--profile FILE` records the page's CPU profile (CDP Profiler) over the load and writes it as a
 * .cpuprofile (Chrome DevTools opens it), with the functions that took most time printed.
 * Figures first; the last line is one JSON object.
 */
import { readFileSync, writeFileSync } from 'node:fs';
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
const PROFILE = process.argv.includes('--profile') ? arg('profile', 'console.cpuprofile') : '';

interface PageStore {
  model: { revision: number; vms: Map<string, unknown> };
  renders: { revision: number; at: number }[];
  arrivals: { revision: number; at: number }[];
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
  const received = new Map<number, number>();
  const drain = async () => {
    // One string: playwright's serializer walking hundreds of objects took more of the page's
    // main thread (about 8 ms a second at 27 changes a second) than the page's own event handling.
    const got = JSON.parse(
      await page.evaluate(() => {
        const s = (globalThis as unknown as Win).hyperfarm;
        return JSON.stringify({
          renders: s.renders.splice(0, s.renders.length),
          arrivals: s.arrivals.splice(0, s.arrivals.length),
        });
      }),
    ) as { renders: { revision: number; at: number }[]; arrivals: { revision: number; at: number }[] };
    renders.push(...got.renders);
    for (const a of got.arrivals) received.set(a.revision, a.at);
  };
  const memory: { t: number; heapMiB: number; nodes: number; busyS: number; daemonRssMiB: number }[] = [];
  const gcMs: number[] = [];
  // When each forced collection ran: it stops the page's main thread (hundreds of ms under load),
  // which no page sees in use; the lag is also given without the revisions it held up.
  const gcWindows: { from: number; to: number }[] = [];
  const sampleMemory = async () => {
    const g0 = Date.now();
    await cdp.send('HeapProfiler.collectGarbage');
    gcMs.push(Date.now() - g0);
    gcWindows.push({ from: g0, to: Date.now() });
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
      daemonRssMiB: procRssMiB(farm.pidOf('daemon-1')),
    });
  };
  await cdp.send('Performance.enable');
  if (PROFILE) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 500 });
    await cdp.send('Profiler.start');
    await browser.startTracing(page, {
      categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline'],
    });
  }

  // Work per change, which the machine's load does not change: CPU time of each process.
  const browserCdp = await browser.newBrowserCDPSession();
  const cpuNow = async (): Promise<Map<string, number>> => {
    const out = new Map<string, number>();
    for (const id of ['daemon-1', 'agent-1']) out.set(id, procCpuMs(farm.pidOf(id)));
    const u = process.cpuUsage();
    out.set('bench', (u.user + u.system) / 1000);
    const info = (await browserCdp.send('SystemInfo.getProcessInfo')) as {
      processInfo: { type: string; id: number; cpuTime: number }[];
    };
    for (const p of info.processInfo) {
      const key = `chromium ${p.type}`;
      out.set(key, (out.get(key) ?? 0) + p.cpuTime * 1000);
    }
    return out;
  };

  // The load: RATE changes a second, paced to a schedule (late calls catch up, never pile up).
  const start = Date.now();
  await sampleMemory();
  const cpu0 = await cpuNow();
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
  // A loop, not Math.max(...keys): a 10-minute run streams more revisions than the stack holds.
  let lastRevision = 0;
  for (const rev of arrivals.keys()) lastRevision = Math.max(lastRevision, rev);
  await until('the page showing the last revision', 30_000, async () => {
    await drain();
    return renders.some((r) => r.revision >= lastRevision) || undefined;
  });
  clearInterval(drainTimer);
  const cpu1 = await cpuNow();
  if (PROFILE) {
    const { profile } = (await cdp.send('Profiler.stop')) as { profile: CpuProfile };
    writeFileSync(PROFILE, JSON.stringify(profile));
    console.log(`page CPU profile written to ${PROFILE}; most self time:`);
    for (const line of topSelfTime(profile, 25)) console.log(`  ${line}`);
    const trace = JSON.parse(String(await browser.stopTracing())) as { traceEvents: TraceEvent[] };
    writeFileSync(PROFILE.replace(/(\.cpuprofile)?$/, '.trace.json'), JSON.stringify(trace));
    console.log("the page's main thread by task kind (trace, top-level events):");
    for (const line of mainThreadTime(trace.traceEvents)) console.log(`  ${line}`);
  }
  await sampleMemory();
  watch.cancel();
  const elapsed = (Date.now() - start) / 1000;

  // Each revision's lag: the first render showing it, minus its arrival here.
  renders.sort((a, b) => a.revision - b.revision);
  const lags: number[] = [];
  const lagsNoGc: number[] = [];
  let j = 0;
  for (const [revision, at] of [...arrivals].sort((a, b) => a[0] - b[0])) {
    while (j < renders.length && renders[j]!.revision < revision) j++;
    const shown = renders.slice(j).reduce((min, r) => Math.min(min, r.at), Infinity);
    if (shown === Infinity) continue;
    lags.push(Math.max(0, shown - at));
    if (!gcWindows.some((w) => w.from < shown && w.to > at)) lagsNoGc.push(Math.max(0, shown - at));
  }
  lags.sort((a, b) => a - b);
  lagsNoGc.sort((a, b) => a - b);
  // The same lag in two parts: until the page applied the revision, and from then to the render.
  const upstream: number[] = [];
  const inPage: number[] = [];
  j = 0;
  for (const [revision, at] of [...received].sort((a, b) => a[0] - b[0])) {
    while (j < renders.length && renders[j]!.revision < revision) j++;
    const shown = renders.slice(j).reduce((min, r) => Math.min(min, r.at), Infinity);
    const sent = arrivals.get(revision);
    if (shown < Infinity) inPage.push(Math.max(0, shown - at));
    if (sent !== undefined) upstream.push(Math.max(0, at - sent));
  }
  upstream.sort((a, b) => a - b);
  inPage.sort((a, b) => a - b);
  const pctOf = (list: number[], p: number) =>
    list[Math.min(list.length - 1, Math.floor((p / 100) * list.length))] ?? NaN;
  const pct = (p: number) => pctOf(lags, p);
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
  console.log(
    `  without the ${lags.length - lagsNoGc.length} revisions in flight during the ${gcWindows.length} forced garbage collections of the memory samples: p50 ${r(pctOf(lagsNoGc, 50))}, p95 ${r(pctOf(lagsNoGc, 95))}, p99 ${r(pctOf(lagsNoGc, 99))}, max ${r(lagsNoGc.at(-1) ?? NaN)}`,
  );
  console.log(
    `  of which until the page applied it: p50 ${r(pctOf(upstream, 50))}, p95 ${r(pctOf(upstream, 95))}, p99 ${r(pctOf(upstream, 99))}; from then to the render: p50 ${r(pctOf(inPage, 50))}, p95 ${r(pctOf(inPage, 95))}, p99 ${r(pctOf(inPage, 99))}`,
  );
  console.log('page memory (after GC):');
  for (const m of memory)
    console.log(
      `  ${r(m.t).toString().padStart(6)} s  heap ${r(m.heapMiB, 2)} MiB  DOM nodes ${m.nodes}  (daemon RSS ${r(m.daemonRssMiB)} MiB)`,
    );
  console.log(
    `page main thread busy ${r(busy * 100)}% of the time (garbage collections forced by the samples included)`,
  );
  console.log(`heap slope ${r(slope * 60, 3)} MiB/min; connection ${status}`);
  const cpuPerChange: Record<string, number> = {};
  for (const [k, v] of cpu1) cpuPerChange[k] = r((v - (cpu0.get(k) ?? 0)) / Math.max(1, sent), 2);
  const busyMsPerChange = r(((memory.at(-1)!.busyS - memory[0]!.busyS) * 1000) / Math.max(1, sent), 2);
  console.log(`CPU ms per change by process: ${JSON.stringify(cpuPerChange)}`);
  console.log(
    `page main thread busy ${busyMsPerChange} ms per change; forced GC of a memory sample ${r(gcMs.reduce((a, b) => a + b, 0) / gcMs.length)} ms on average`,
  );
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
      lagWithoutForcedGcMs: {
        p50: r(pctOf(lagsNoGc, 50)),
        p95: r(pctOf(lagsNoGc, 95)),
        p99: r(pctOf(lagsNoGc, 99)),
        max: r(lagsNoGc.at(-1) ?? NaN),
        revisions: lagsNoGc.length,
      },
      forcedGcMs: r(gcMs.reduce((a, b) => a + b, 0) / gcMs.length),
      toPageMs: { p50: r(pctOf(upstream, 50)), p95: r(pctOf(upstream, 95)), p99: r(pctOf(upstream, 99)) },
      inPageMs: { p50: r(pctOf(inPage, 50)), p95: r(pctOf(inPage, 95)), p99: r(pctOf(inPage, 99)) },
      heapMiB: { first: r(heap[0]!, 2), last: r(heap.at(-1)!, 2), max: r(Math.max(...heap), 2) },
      heapSlopeMiBPerMin: r(slope * 60, 3),
      pageBusyPercent: r(busy * 100),
      pageBusyMsPerChange: busyMsPerChange,
      cpuMsPerChange: cpuPerChange,
      domNodes: { first: memory[0]!.nodes, last: memory.at(-1)!.nodes },
      daemonRssMiB: {
        first: r(memory[0]!.daemonRssMiB),
        last: r(memory.at(-1)!.daemonRssMiB),
        max: r(Math.max(...memory.map((m) => m.daemonRssMiB))),
      },
      machine: { cpus: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
      loadavg: { before: load0.map((x) => r(x, 2)), after: loadavg().map((x) => r(x, 2)) },
      date: new Date().toISOString(),
    }),
  );
} finally {
  await browser.close();
  await farm.stop();
}

/** User and system CPU time of a process so far, in ms (Linux /proc; clock ticks of 10 ms). */
/** A process's resident memory (the daemon's, beside the page's heap), MiB; 0 if unreadable. */
function procRssMiB(pid: number | undefined): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

function procCpuMs(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
    hitCount?: number;
  }[];
  samples: number[];
  timeDeltas: number[];
}

/** The functions with the most self time in a CPU profile, as "ms  share  function (file:line)". */
function topSelfTime(p: CpuProfile, n: number): string[] {
  const byNode = new Map(p.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    total += dt;
    const f = byNode.get(id)!.callFrame;
    const key = `${f.functionName || '(anonymous)'} (${f.url.split('/').pop()}:${f.lineNumber + 1}:${f.columnNumber + 1})`;
    self.set(key, (self.get(key) ?? 0) + dt);
  });
  return [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(
      ([k, ms]) => `${ms.toFixed(0).padStart(7)} ms ${((100 * ms) / total).toFixed(1).padStart(5)}%  ${k}`,
    );
}

interface TraceEvent {
  name: string;
  ph: string;
  pid: number;
  tid: number;
  ts: number;
  dur?: number;
  args?: { name?: string };
}

/** Time on the renderer's main thread by event name, counting only events not inside another. */
function mainThreadTime(events: TraceEvent[]): string[] {
  const main = events.find(
    (e) => e.ph === 'M' && e.name === 'thread_name' && e.args?.name === 'CrRendererMain',
  );
  if (!main) return ['(no renderer main thread in the trace)'];
  const own = events
    .filter((e) => e.pid === main.pid && e.tid === main.tid && e.ph === 'X' && e.dur !== undefined)
    .sort((a, b) => a.ts - b.ts);
  const by = new Map<string, number>();
  const stack: TraceEvent[] = [];
  let span = 0;
  // Each top-level task, with what its time went to (second-level events by name).
  const tasks: { ms: number; parts: Map<string, number> }[] = [];
  for (const e of own) {
    while (stack.length && stack[stack.length - 1]!.ts + stack[stack.length - 1]!.dur! <= e.ts) stack.pop();
    // Second level: what the thread's tasks spent their time on.
    if (stack.length === 1) {
      by.set(e.name, (by.get(e.name) ?? 0) + e.dur! / 1000);
      const parts = tasks[tasks.length - 1]!.parts;
      parts.set(e.name, (parts.get(e.name) ?? 0) + e.dur! / 1000);
    }
    if (stack.length === 0) {
      span += e.dur! / 1000;
      tasks.push({ ms: e.dur! / 1000, parts: new Map() });
    }
    stack.push(e);
  }
  const first = own[0]?.ts ?? 0;
  const last = own.reduce((m, e) => Math.max(m, e.ts + e.dur!), first);
  const sorted = tasks.map((t) => t.ms).sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
  const longest = [...tasks].sort((a, b) => b.ms - a.ms).slice(0, 8);
  return [
    `tasks ${span.toFixed(0)} ms over ${((last - first) / 1000).toFixed(0)} ms`,
    ...[...by]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 15)
      .map(([k, ms]) => `${ms.toFixed(0).padStart(7)} ms  ${k}`),
    `${tasks.length} tasks: p50 ${at(50).toFixed(1)} ms, p99 ${at(99).toFixed(1)} ms, max ${at(100).toFixed(1)} ms; ${sorted.filter((x) => x > 16).length} over 16 ms, ${sorted.filter((x) => x > 50).length} over 50 ms`,
    'longest tasks:',
    ...longest.map(
      (t) =>
        `${t.ms.toFixed(1).padStart(7)} ms  ${[...t.parts]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 4)
          .map(([k, ms]) => `${k} ${ms.toFixed(1)}`)
          .join(', ')}`,
    ),
  ];
}
