import { useEffect, useState } from 'preact/hooks';
import { drillTimeline, type DrillTimeline } from '../drills.js';
import { vmState } from '../model.js';
import type { Store } from '../store.js';
import { duration, ErrorNote, Section, usePoll } from '../ui.js';
import type { DrillReport, DrillReportEntry } from '../wire.js';

/** The folder is read again this often: a drill run elsewhere shows up without a reload. */
const LIST_POLL_MS = 5_000;

/**
 * The drill reports `hyperfarm drill run` wrote in the daemon's reports folder: the list with
 * each run's verdict, and one report (its expectations and verdicts, timeline and steps).
 */
export function DrillsView(props: { store: Store; path: string }) {
  return props.path ? (
    <DrillReportView store={props.store} path={props.path} />
  ) : (
    <DrillList store={props.store} />
  );
}

const passText = (passed: boolean) => (passed ? 'Passed' : 'Failed');
const verdictBadge = (ok: boolean, text = passText(ok)) => (
  <span class={`badge ${ok ? 'state-running' : 'state-failed'}`}>{text}</span>
);
const when = (iso: string) => (iso ? new Date(iso).toLocaleString() : '—');
const secs = (ms: number | undefined) => (ms === undefined ? '—' : `${(ms / 1000).toFixed(1)} s`);

function DrillList(props: { store: Store }) {
  const { conn } = props.store;
  const { value, error } = usePoll(() => conn.drills(), LIST_POLL_MS, [conn]);
  return (
    <div>
      <ErrorNote error={error} />
      {value && (
        <>
          <p class="summary" data-testid="drills-summary">
            {value.reports.length} reports in {value.folder} ·{' '}
            {value.reports.filter((r) => !r.error && r.passed).length} passed ·{' '}
            {value.reports.filter((r) => !r.error && !r.passed).length} failed
          </p>
          {value.reports.length === 0 ? (
            <p class="empty">
              No drill has reported here yet. Run one, for example{' '}
              <code>npx hyperfarm drill run drills/host-failure.yaml</code>, from the folder the farm was
              started in (reports go to .hyperfarm/drills/), or start the daemons with --drill-reports naming
              the folder your reports are in.
            </p>
          ) : (
            <div class="table-wrap">
              <table class="table" aria-label="Drill reports">
                <thead>
                  <tr>
                    <th scope="col">Drill</th>
                    <th scope="col">Verdict</th>
                    <th scope="col">Expectations</th>
                    <th scope="col">Started</th>
                    <th scope="col">Took</th>
                    <th scope="col">Folder</th>
                  </tr>
                </thead>
                <tbody>
                  {value.reports.map((r) => (
                    <DrillRow key={r.path} r={r} />
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </div>
  );
}

function DrillRow(props: { r: DrillReportEntry }) {
  const r = props.r;
  const link = `#/drills/${r.path.split('/').map(encodeURIComponent).join('/')}`;
  if (r.error)
    return (
      <tr data-drill={r.path}>
        <td>{r.path}</td>
        <td colSpan={5}>
          <span class="badge state-unknown">Unreadable</span> report.json {r.error}
        </td>
      </tr>
    );
  return (
    <tr data-drill={r.path}>
      <td>
        <a href={link}>{r.drill}</a>
        {r.quick && <span class="muted"> (quick)</span>}
      </td>
      <td>{verdictBadge(r.passed)}</td>
      <td>
        {r.held} held{r.failed > 0 && <strong>, {r.failed} failed</strong>}
      </td>
      <td>{when(r.startedAt)}</td>
      <td>{secs(r.durationMs)}</td>
      <td class="muted">{r.path}</td>
    </tr>
  );
}

function DrillReportView(props: { store: Store; path: string }) {
  const { conn } = props.store;
  const [state, setState] = useState<{ report?: DrillReport; error?: unknown }>({});
  useEffect(() => {
    let live = true;
    setState({});
    conn.drill(props.path).then(
      (report) => live && setState({ report }),
      (error: unknown) => live && setState({ error }),
    );
    return () => {
      live = false;
    };
  }, [conn, props.path]);
  const r = state.report;
  return (
    <div>
      <p>
        <a href="#/drills">← Every report</a>
      </p>
      <ErrorNote error={state.error} />
      {!r && !state.error && <p class="muted">Reading the report…</p>}
      {r && <Report r={r} path={props.path} />}
    </div>
  );
}

function Report(props: { r: DrillReport; path: string }) {
  const r = props.r;
  const failed = r.verdicts.filter((v) => !v.ok).length;
  return (
    <>
      <dl class="facts" aria-label="The run" data-testid="drill-facts">
        <dt>Drill</dt>
        <dd>
          {r.drill}
          {r.quick && ' (quick)'} {verdictBadge(r.passed)}
        </dd>
        <dt>What it rehearses</dt>
        <dd>{r.description.trim() || '—'}</dd>
        <dt>File</dt>
        <dd>{r.file}</dd>
        <dt>Started</dt>
        <dd>{when(r.startedAt)}</dd>
        <dt>Took</dt>
        <dd>{secs(r.durationMs)}</dd>
        <dt>Expectations</dt>
        <dd>
          {r.verdicts.length - failed} held, {failed} failed
        </dd>
      </dl>
      <Section title="Expectations and verdicts">
        <div class="table-wrap">
          <table class="table" aria-label="Verdicts">
            <thead>
              <tr>
                <th scope="col">Verdict</th>
                <th scope="col">Expected</th>
                <th scope="col">Measured</th>
                <th scope="col">Why</th>
              </tr>
            </thead>
            <tbody>
              {r.verdicts.map((v, i) => (
                <tr key={i} data-verdict-ok={String(v.ok)}>
                  <td>{verdictBadge(v.ok, v.ok ? 'Held' : 'Failed')}</td>
                  <td>
                    {v.expectation}
                    {v.line > 0 && <span class="muted"> (line {v.line})</span>}
                  </td>
                  <td>{v.measured ?? '—'}</td>
                  <td>{v.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Section>
      <Section title="Timeline">
        <Timeline t={drillTimeline(r)} />
      </Section>
      <Section title="Steps">
        <div class="table-wrap">
          <table class="table" aria-label="Steps">
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Step</th>
                <th scope="col">Line</th>
                <th scope="col">From</th>
                <th scope="col">To</th>
                <th scope="col">Outcome</th>
              </tr>
            </thead>
            <tbody>
              {r.steps.map((s) => (
                <tr key={s.index}>
                  <td>{s.index + 1}</td>
                  <td>
                    {s.kind}
                    {s.label && <span class="muted"> '{s.label}'</span>}
                  </td>
                  <td>{s.line}</td>
                  <td>{secs(s.startMs)}</td>
                  <td>{secs(s.endMs)}</td>
                  <td>
                    {s.ok === undefined
                      ? 'not played'
                      : s.ok
                        ? (s.detail ?? 'done')
                        : verdictBadge(false, `failed: ${s.error ?? ''}`)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Section>
    </>
  );
}

const FILL: Record<string, string> = {
  running: 'var(--running)',
  off: 'var(--off)',
  paused: 'var(--paused)',
  saved: 'var(--saved)',
  'running-critical': 'var(--critical)',
  'paused-critical': 'var(--critical)',
  unknown: 'var(--critical)',
  unspecified: 'var(--line)',
};
const fill = (state: string) =>
  FILL[
    state
      .toLowerCase()
      .replace(/^vm_state_/, '')
      .replace(/_/g, '-')
  ] ?? 'var(--busy)';

/**
 * One lane per VM, its states as the daemons reported them over the run (the host in each
 * piece's title), with the steps, faults and leader changes as vertical marks.
 */
function Timeline(props: { t: DrillTimeline }) {
  const { endMs, lanes, marks } = props.t;
  const W = 1000;
  const left = 120;
  const lane = 22;
  const top = 18;
  const H = top + lanes.length * lane + 30;
  const x = (t: number) => left + (Math.max(0, Math.min(t, endMs)) / endMs) * (W - left - 10);
  const ticks = Array.from({ length: 11 }, (_, i) => (i * endMs) / 10);
  if (lanes.length === 0) return <p class="muted">The run reported no VM.</p>;
  return (
    <figure class="drill-timeline">
      <svg
        viewBox={`0 0 ${W} ${H}`}
        role="img"
        aria-label={`Timeline of ${lanes.length} VMs over ${secs(endMs)}`}
        data-testid="drill-timeline"
      >
        {marks.map((m, i) => (
          <g key={`m${i}`} class={`mark mark-${m.kind}`}>
            <line x1={x(m.t)} x2={x(m.t)} y1={top - 4} y2={top + lanes.length * lane} />
            <title>{`${secs(m.t)}: ${m.text}`}</title>
          </g>
        ))}
        {lanes.map((l, i) => (
          <g key={l.vm} data-lane={l.vm}>
            <text x={4} y={top + i * lane + 15} class="lane">
              {l.vm}
            </text>
            {l.segments.map((s, j) => (
              <rect
                key={j}
                x={x(s.from)}
                y={top + i * lane + 3}
                width={Math.max(1, x(s.to) - x(s.from))}
                height={lane - 6}
                style={{ fill: fill(s.state) }}
              >
                <title>{`${l.vm}: ${vmState(s.state)}${s.host ? ` on ${s.host}` : ''}, ${secs(s.from)} to ${secs(s.to)}`}</title>
              </rect>
            ))}
          </g>
        ))}
        {ticks.map((t, i) => (
          <text key={`t${i}`} x={x(t)} y={H - 8} class="tick" text-anchor="middle">
            {duration(t)}
          </text>
        ))}
      </svg>
      <figcaption class="muted">
        Each VM’s state as the daemons reported it (hover for its host). Marks:{' '}
        <span class="key-step">steps</span>, <span class="key-fault">faults</span>,{' '}
        <span class="key-leader">leader changes</span>.
      </figcaption>
      <ul class="marks" aria-label="Steps, faults and leader changes">
        {marks.map((m, i) => (
          <li key={i} class={`key-${m.kind}`}>
            {secs(m.t)}: {m.text}
          </li>
        ))}
      </ul>
    </figure>
  );
}
