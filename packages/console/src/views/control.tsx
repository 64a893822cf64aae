import type { Store } from '../store.js';
import { ErrorNote, Section, usePoll } from '../ui.js';
import type { ClusterStatus } from '../wire.js';

/** The control plane as the answering daemon sees it: members, leader, term, indexes. */
export function ControlView(props: { store: Store }) {
  const { conn, connection } = props.store;
  const { value: s, error } = usePoll(() => conn.call<ClusterStatus>('GetClusterStatus'), 1_000, [conn]);
  const consoles = new Map(connection.consoles.map((c) => [c.id, c.address]));
  return (
    <div>
      <ErrorNote error={error} />
      {s && (
        <>
          <dl class="facts" aria-label="Raft status">
            <dt>Answered by</dt>
            <dd data-testid="answered-by">{s.answeredBy}</dd>
            <dt>Leader</dt>
            <dd data-testid="leader">{s.leaderId || 'none (election under way)'}</dd>
            <dt>Term</dt>
            <dd>{s.term}</dd>
            <dt>Commit index</dt>
            <dd>{s.commitIndex}</dd>
            <dt>Applied index</dt>
            <dd>{s.appliedIndex}</dd>
            <dt>Farm revision</dt>
            <dd>{s.revision}</dd>
            <dt>Oldest resumable revision</dt>
            <dd>{s.oldestRevision}</dd>
          </dl>
          <Section title="Daemons">
            <table class="table">
              <thead>
                <tr>
                  <th scope="col">Daemon</th>
                  <th scope="col">Role</th>
                  <th scope="col">gRPC address</th>
                  <th scope="col">Console</th>
                  <th scope="col">Reachable</th>
                  <th scope="col">Match index</th>
                </tr>
              </thead>
              <tbody>
                {s.members.map((m) => (
                  <tr key={m.id} data-member={m.id}>
                    <td>
                      {m.id} {m.isLeader && <span class="badge state-running">leader</span>}
                    </td>
                    <td>{m.role}</td>
                    <td>{m.address}</td>
                    <td>
                      {consoles.get(m.id) ? <a href={consoles.get(m.id)}>{consoles.get(m.id)}</a> : '—'}
                    </td>
                    <td>{m.reachable ? 'yes' : <span class="badge state-down">no</span>}</td>
                    <td>{m.matchIndex}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
        </>
      )}
    </div>
  );
}
