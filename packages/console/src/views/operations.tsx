import { useState } from 'preact/hooks';
import { migrationPhase, name } from '../model.js';
import type { Store } from '../store.js';
import { Bar, bytes, duration, Section, time } from '../ui.js';
import type { Migration, Operation } from '../wire.js';

const FINAL_PHASES = new Set(['MIGRATION_PHASE_COMPLETED', 'MIGRATION_PHASE_FAILED']);
export const migrationDone = (g: Migration) => FINAL_PHASES.has(g.phase);
const RECENT = 50;

/** Migrations and operations under way, with live progress bars, then the ones that ended. */
export function OperationsView(props: { store: Store }) {
  const m = props.store.model;
  const [showDone, setShowDone] = useState(true);
  const migrations = [...m.migrations.values()].sort((a, b) => b.startedAtMs - a.startedAtMs);
  const running = migrations.filter((g) => !migrationDone(g));
  const ended = migrations.filter(migrationDone).slice(0, RECENT);
  const ops = [...m.operations.values()].sort((a, b) => b.createdAtMs - a.createdAtMs);
  const active = ops.filter((o) => !o.done);
  const finished = ops.filter((o) => o.done).slice(0, RECENT);
  return (
    <div>
      <Section title={`Migrations under way (${running.length})`}>
        {running.length === 0 ? (
          <p class="muted">None. Migrate a VM from the VMs view.</p>
        ) : (
          <MigrationTable store={props.store} migrations={running} />
        )}
      </Section>
      <Section title={`Operations under way (${active.length})`}>
        {active.length === 0 ? <p class="muted">None.</p> : <OperationTable ops={active} />}
      </Section>
      <label class="check">
        <input type="checkbox" checked={showDone} onChange={(e) => setShowDone(e.currentTarget.checked)} />{' '}
        Show the ones that ended (latest {RECENT})
      </label>
      {showDone && (
        <>
          <Section title="Migrations that ended">
            {ended.length === 0 ? (
              <p class="muted">None.</p>
            ) : (
              <MigrationTable store={props.store} migrations={ended} />
            )}
          </Section>
          <Section title="Operations that ended">
            {finished.length === 0 ? <p class="muted">None.</p> : <OperationTable ops={finished} />}
          </Section>
        </>
      )}
    </div>
  );
}

export function MigrationRow(props: { store: Store; migration: Migration }) {
  const g = props.migration;
  const m = props.store.model;
  const vm = m.vms.get(g.vmId);
  const hostName = (id: string) => (id ? (m.hosts.get(id)?.name ?? id) : 'placement’s choice');
  const done = migrationDone(g);
  const failed = g.phase === 'MIGRATION_PHASE_FAILED';
  return (
    <tr data-migration={g.id} data-phase={g.phase}>
      <th scope="row">
        <a href={`#/vm/${encodeURIComponent(g.vmId)}`}>{vm ? name(vm) : g.vmId}</a>
      </th>
      <td>
        {hostName(g.sourceHostId)} → {hostName(g.targetHostId)}
      </td>
      <td>
        {g.kind === 'MIGRATION_KIND_QUICK' ? 'Quick' : g.kind === 'MIGRATION_KIND_LIVE' ? 'Live' : 'Move'}
      </td>
      <td>
        {migrationPhase(g.phase)}
        {failed && g.error && <div class="reason">{g.error}</div>}
      </td>
      <td class="progress-cell">
        <Bar
          progress
          label="Progress"
          value={g.progressPercent}
          max={100}
          text={`${Math.round(g.progressPercent)}% · ${bytes(g.bytesTransferred)}${g.rounds ? ` · ${g.rounds} rounds` : ''}${g.throttlePercent ? ` · throttled ${g.throttlePercent}%` : ''}`}
        />
      </td>
      <td data-testid="downtime">{done && !failed ? `${g.downtimeMs} ms` : '—'}</td>
      <td>
        {time(g.startedAtMs)}
        {g.finishedAtMs ? ` (${duration(g.finishedAtMs - g.startedAtMs)})` : ''}
      </td>
    </tr>
  );
}

export function MigrationTable(props: { store: Store; migrations: Migration[] }) {
  return (
    <div class="table-wrap">
      <table class="table">
        <thead>
          <tr>
            <th scope="col">VM</th>
            <th scope="col">From → to</th>
            <th scope="col">Kind</th>
            <th scope="col">Phase</th>
            <th scope="col">Progress</th>
            <th scope="col">Downtime</th>
            <th scope="col">Started</th>
          </tr>
        </thead>
        <tbody>
          {props.migrations.map((g) => (
            <MigrationRow key={g.id} store={props.store} migration={g} />
          ))}
        </tbody>
      </table>
    </div>
  );
}

function OperationTable(props: { ops: Operation[] }) {
  return (
    <div class="table-wrap">
      <table class="table">
        <thead>
          <tr>
            <th scope="col">Operation</th>
            <th scope="col">Of</th>
            <th scope="col">Progress</th>
            <th scope="col">Outcome</th>
            <th scope="col">Started</th>
          </tr>
        </thead>
        <tbody>
          {props.ops.map((o) => (
            <tr key={o.id} data-operation={o.id}>
              <th scope="row">{o.kind}</th>
              <td>{o.targetId}</td>
              <td class="progress-cell">
                <Bar
                  label="Progress"
                  value={o.progressPercent}
                  max={100}
                  text={`${Math.round(o.progressPercent)}%`}
                />
              </td>
              <td>
                {!o.done ? (
                  o.message || 'running'
                ) : o.error && o.error.code !== 0 ? (
                  <span class="reason">failed: {o.error.message}</span>
                ) : (
                  'done'
                )}
              </td>
              <td>
                {time(o.createdAtMs)}
                {o.done && o.updatedAtMs ? ` (${duration(o.updatedAtMs - o.createdAtMs)})` : ''}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
