/**
 * A drill's report: the JSON record (verdicts, steps, every observation) and a self-contained
 * HTML page drawn from it (no scripts, no external files). Pure: a report in, text out.
 */
import type { Plan } from './format.js';
import { of, type Observation } from './observations.js';
import { runIntervals, type Verdict } from './verdict.js';

export interface DrillReport {
  drill: string;
  description: string;
  file: string;
  quick: boolean;
  startedAt: string;
  durationMs: number;
  passed: boolean;
  verdicts: Verdict[];
  steps: {
    index: number;
    kind: string;
    label?: string;
    line: number;
    startMs?: number;
    endMs?: number;
    ok?: boolean;
    error?: string;
    detail?: string;
  }[];
  observations: Observation[];
  /**
   * Set when the drill ran in the farm simulator (`drill run --sim`): the seed that replays it,
   * and the simulator's invariant violations (also a verdict, `simInvariants`).
   */
  simulation?: {
    seed: number;
    violations: { property: string; time: number; detail: string }[];
    /** The drill's NLB clusters as the simulated hosts' networks left them. */
    nlb?: NlbClusterSummary[];
  };
}

/** An NLB cluster at the end of a simulated drill: whether it converged, and each member's share. */
export interface NlbClusterSummary {
  cluster: string;
  converged: boolean;
  /** Each member: its VM, the host it runs on, its state, and the buckets of the first rule it owns. */
  members: { vm: string; host: string; state: string; buckets: number }[];
}

export function buildReport(
  plan: Plan,
  file: string,
  startedAt: Date,
  obs: Observation[],
  verdicts: Verdict[],
): DrillReport {
  const starts = of(obs, 'step-start');
  const ends = of(obs, 'step-end');
  return {
    drill: plan.name,
    description: plan.description,
    file,
    quick: plan.quick,
    startedAt: startedAt.toISOString(),
    durationMs: Math.max(0, ...obs.map((o) => o.t)),
    passed: verdicts.every((v) => v.ok),
    verdicts,
    steps: plan.steps.map((s) => {
      const st = starts.find((x) => x.index === s.index);
      const en = ends.find((x) => x.index === s.index);
      return {
        index: s.index,
        kind: s.kind,
        ...(s.label ? { label: s.label } : {}),
        line: s.line,
        ...(st ? { startMs: st.t } : {}),
        ...(en
          ? {
              endMs: en.t,
              ok: en.ok,
              ...(en.error ? { error: en.error } : {}),
              ...(en.detail ? { detail: en.detail } : {}),
            }
          : {}),
      };
    }),
    observations: obs,
  };
}

/** The lines a terminal shows at the end of a run. */
export function summary(r: DrillReport): string {
  const lines = r.verdicts.map(
    (v) => `  ${v.ok ? 'PASS' : 'FAIL'}  ${v.expectation}${v.line ? ` (line ${v.line})` : ''}: ${v.reason}`,
  );
  const sim = r.simulation ? ` (simulated, seed ${r.simulation.seed})` : '';
  return `drill ${r.drill}${r.quick ? ' (quick)' : ''}${sim}: ${r.passed ? 'PASSED' : 'FAILED'} in ${(r.durationMs / 1000).toFixed(1)} s\n${lines.join('\n')}\n`;
}

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const sec = (t: number | undefined) => (t === undefined ? '' : `${(t / 1000).toFixed(2)} s`);
const PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#b07aa1',
  '#76b7b2',
  '#edc948',
  '#9c755f',
  '#e15759',
  '#bab0ac',
  '#ff9da7',
];

/** The timeline: a lane per host and VM its own agent ran it on, the leader, and the faults. */
function timeline(r: DrillReport): string {
  const runs = runIntervals(r.observations);
  const hosts = [...new Set(runs.map((x) => `${x.host} / ${x.vm}`))].sort();
  const end = Math.max(r.durationMs, 1);
  const W = 1000;
  const left = 150;
  const lane = 26;
  const top = 24;
  const x = (t: number) => left + (Math.max(0, Math.min(t, end)) / end) * (W - left - 10);
  const vmColor = new Map<string, string>();
  for (const v of [...new Set(runs.map((x) => x.vm))].sort())
    vmColor.set(v, PALETTE[vmColor.size % PALETTE.length]!);
  const leaders = of(r.observations, 'leader');
  const rows = [...hosts, 'leader'];
  const H = top + rows.length * lane + 40;
  const parts: string[] = [];
  rows.forEach((h, i) => {
    const y = top + i * lane;
    parts.push(`<text x="4" y="${y + 17}" class="lane">${esc(h)}</text>`);
    parts.push(`<line x1="${left}" x2="${W - 10}" y1="${y + lane}" y2="${y + lane}" class="grid"/>`);
  });
  runs.forEach((run) => {
    const i = hosts.indexOf(`${run.host} / ${run.vm}`);
    const y = top + i * lane + 4;
    const x1 = x(run.from);
    const x2 = x(run.to ?? end);
    const w = Math.max(1, x2 - x1);
    parts.push(
      `<rect x="${x1.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${lane - 8}" fill="${vmColor.get(run.vm)}" opacity="0.8"><title>${esc(`${run.vm} on ${run.host}: ${sec(run.from)} to ${run.to === undefined ? 'the end' : sec(run.to)}`)}</title></rect>`,
    );
    if (w > 40)
      parts.push(`<text x="${(x1 + 3).toFixed(1)}" y="${y + 13}" class="bar">${esc(run.vm)}</text>`);
  });
  const ly = top + hosts.length * lane + 4;
  leaders.forEach((l, i) => {
    const to = leaders[i + 1]?.t ?? end;
    const x1 = x(l.t);
    const w = Math.max(1, x(to) - x1);
    parts.push(
      `<rect x="${x1.toFixed(1)}" y="${ly}" width="${w.toFixed(1)}" height="${lane - 8}" fill="${l.leader ? '#8cd17d' : '#e15759'}" opacity="0.7"><title>${esc(`${l.leader || 'no leader'} from ${sec(l.t)}`)}</title></rect>`,
    );
    if (w > 50)
      parts.push(
        `<text x="${(x1 + 3).toFixed(1)}" y="${ly + 13}" class="bar">${esc(l.leader || 'none')}</text>`,
      );
  });
  const bottom = top + rows.length * lane;
  for (const f of of(r.observations, 'fault')) {
    const fx = x(f.t).toFixed(1);
    parts.push(
      `<line x1="${fx}" x2="${fx}" y1="${top}" y2="${bottom}" class="${f.on ? 'fault' : 'heal'}"><title>${esc(`${sec(f.t)}: ${f.what}`)}</title></line>`,
    );
  }
  for (const st of of(r.observations, 'step-start').filter((x) => x.label)) {
    const sx = x(st.t).toFixed(1);
    parts.push(
      `<line x1="${sx}" x2="${sx}" y1="${top - 12}" y2="${bottom}" class="step"><title>${esc(`${sec(st.t)}: step ${st.index + 1}, ${st.kind} [${st.label}]`)}</title></line><text x="${sx}" y="${top - 4}" class="axis">${esc(st.label!)}</text>`,
    );
  }
  for (let t = 0; t <= end; t += tick(end)) {
    parts.push(
      `<text x="${x(t).toFixed(1)}" y="${bottom + 16}" class="axis">${(t / 1000).toFixed(0)} s</text>`,
    );
  }
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="timeline">${parts.join('')}</svg>`;
}

const tick = (end: number) =>
  [1000, 2000, 5000, 10_000, 30_000, 60_000].find((s) => end / s <= 12) ?? 120_000;

/** Rates per second: acknowledged writes and completed connections, as lines. */
function rates(r: DrillReport): string {
  const end = Math.max(r.durationMs, 1);
  const buckets = Math.max(1, Math.ceil(end / 1000));
  const writes = new Array<number>(buckets).fill(0);
  for (const w of of(r.observations, 'write'))
    if (w.ok) writes[Math.min(buckets - 1, Math.floor(w.t / 1000))]!++;
  // A traffic bucket no sample fell in has no value (undefined), not zero.
  const series: { name: string; values: (number | undefined)[]; color: string }[] = [];
  if (writes.some((v) => v > 0))
    series.push({ name: 'writes acknowledged/s', values: writes, color: '#4e79a7' });
  const samples = of(r.observations, 'traffic');
  for (const name of new Set(samples.map((s) => s.name))) {
    const mine = samples.filter((s) => s.name === name);
    const done = new Array<number | undefined>(buckets).fill(undefined);
    const lost = new Array<number | undefined>(buckets).fill(undefined);
    mine.forEach((s, i) => {
      const prev = mine[i - 1];
      const b = Math.min(buckets - 1, Math.floor(s.t / 1000));
      const dt = prev ? Math.max(1, (s.t - prev.t) / 1000) : 1;
      done[b] = (s.completed - (prev?.completed ?? 0)) / dt;
      lost[b] = (s.lost + s.reset - (prev ? prev.lost + prev.reset : 0)) / dt;
    });
    series.push({ name: `${name}: connections completed/s`, values: done, color: '#59a14f' });
    series.push({ name: `${name}: lost or reset/s`, values: lost, color: '#e15759' });
  }
  if (series.length === 0) return '<p>No writes or traffic in this drill.</p>';
  const W = 1000;
  const H = 160;
  const left = 40;
  const max = Math.max(1, ...series.flatMap((s) => s.values.filter((v): v is number => v !== undefined)));
  const x = (i: number) => left + ((i + 0.5) / buckets) * (W - left - 10);
  const y = (v: number) => H - 20 - (v / max) * (H - 40);
  const lines = series.map(
    (s) =>
      `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.values.flatMap((v, i) => (v === undefined ? [] : [`${x(i).toFixed(1)},${y(v).toFixed(1)}`])).join(' ')}"><title>${esc(s.name)}</title></polyline>`,
  );
  const legend = series
    .map((s) => `<span style="color:${s.color}">&#9632;</span> ${esc(s.name)}`)
    .join(' &nbsp; ');
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="rates"><text x="2" y="${y(max) + 4}" class="axis">${max.toFixed(0)}</text><text x="2" y="${y(0)}" class="axis">0</text>${lines.join('')}</svg><p>${legend}</p>`;
}

export function renderHtml(r: DrillReport): string {
  const verdictRows = r.verdicts
    .map(
      (v) =>
        `<tr class="${v.ok ? 'pass' : 'fail'}"><td>${v.ok ? 'PASS' : 'FAIL'}</td><td>${esc(v.expectation)}${v.line ? ` <small>(line ${v.line})</small>` : ''}</td><td>${esc(v.measured ?? '')}</td><td>${esc(v.reason)}</td></tr>`,
    )
    .join('\n');
  const stepRows = r.steps
    .map(
      (s) =>
        `<tr class="${s.ok === false ? 'fail' : ''}"><td>${s.index + 1}</td><td>${esc(s.kind)}${s.label ? ` <small>[${esc(s.label)}]</small>` : ''}</td><td>${s.line}</td><td>${sec(s.startMs)}</td><td>${sec(s.endMs)}</td><td>${s.ok === undefined ? 'not played' : s.ok ? 'ok' : 'failed'}</td><td>${esc(s.error ?? s.detail ?? '')}</td></tr>`,
    )
    .join('\n');
  const changes = r.observations
    .filter((o) => o.type === 'vm' || o.type === 'host' || o.type === 'fault' || o.type === 'leader')
    .map((o) => {
      const what =
        o.type === 'vm'
          ? `VM ${o.vm}: ${o.state.replace('VM_STATE_', '')}${o.host ? ` on ${o.host}` : ''}`
          : o.type === 'host'
            ? `host ${o.host}: ${o.state.replace('HOST_STATE_', '')}`
            : o.type === 'fault'
              ? `fault: ${o.what}`
              : `leader: ${o.leader || 'none'}`;
      return `<tr><td>${sec(o.t)}</td><td>${esc(what)}</td></tr>`;
    })
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drill ${esc(r.drill)}: ${r.passed ? 'passed' : 'FAILED'}</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1 .verdict{padding:0 .4em;border-radius:4px;color:#fff}
.passed{background:#2e7d32}.failed{background:#c62828}
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
tr.fail td{background:#fdecea} tr.pass td:first-child{color:#2e7d32;font-weight:bold} tr.fail td:first-child{color:#c62828;font-weight:bold}
svg text{font:11px system-ui,sans-serif} .lane{fill:#333} .bar{fill:#fff} .axis{fill:#666}
.grid{stroke:#eee} .step{stroke:#4e79a7;stroke-dasharray:1 3} .fault{stroke:#c62828;stroke-width:2;stroke-dasharray:4 2} .heal{stroke:#2e7d32;stroke-width:2;stroke-dasharray:2 2}
</style></head><body>
<h1>Drill ${esc(r.drill)}${r.quick ? ' (quick)' : ''} <span class="verdict ${r.passed ? 'passed' : 'failed'}">${r.passed ? 'PASSED' : 'FAILED'}</span></h1>
<p>${esc(r.description)}</p>
<p>File ${esc(r.file)}; started ${esc(r.startedAt)}; ran ${sec(r.durationMs)}${r.simulation ? ` of farm time in the simulator, seed ${r.simulation.seed}` : ''}.</p>
<h2>Verdict</h2>
<table><tr><th></th><th>expectation</th><th>measured</th><th>why</th></tr>
${verdictRows}
</table>
<h2>Timeline</h2>
<p>A lane per host and VM shows when that host's own agent ran the VM (its event stream); the last lane, the Raft leader the daemons agreed on. Red dashed lines are faults, green ones their end.</p>
${timeline(r)}
<h2>Rates</h2>
${rates(r)}
<h2>Steps</h2>
<table><tr><th>#</th><th>step</th><th>line</th><th>began</th><th>ended</th><th>result</th><th>detail</th></tr>
${stepRows}
</table>
<details><summary>State changes (${r.observations.filter((o) => ['vm', 'host', 'fault', 'leader'].includes(o.type)).length})</summary>
<table><tr><th>time</th><th>change</th></tr>
${changes}
</table></details>
</body></html>
`;
}
