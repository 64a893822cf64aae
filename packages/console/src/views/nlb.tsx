import { useEffect, useRef, useState } from 'preact/hooks';
import { byText, name } from '../model.js';
import {
  connectionsByMember,
  pushPoint,
  requestsByMember,
  sharePoint,
  SERIES_LENGTH,
  type SharePoint,
} from '../nlb.js';
import type { Store } from '../store.js';
import { duration, ErrorNote, Section, time } from '../ui.js';
import type { NlbBucketMap, NlbCluster, NlbClusterState, TrafficReport } from '../wire.js';

const POLL_MS = 1_000;
const COLOURS = ['#0b5cad', '#1d7a3a', '#a86a00', '#8e3bb5', '#b42318', '#0b7f8c', '#5b6571', '#c2185b'];

/** NLB clusters: members as their hosts see them, the bucket map, and who answers the traffic. */
export function NlbView(props: { store: Store; id: string }) {
  const m = props.store.model;
  const clusters = [
    ...((m.others.get('RESOURCE_KIND_NLB_CLUSTER') ?? new Map()) as Map<string, NlbCluster>).values(),
  ].sort((a, b) => byText(a.name, b.name));
  const chosen = clusters.find((c) => c.id === props.id || c.name === props.id) ?? clusters[0];
  if (!chosen)
    return (
      <p class="empty">No NLB cluster in the farm. Create one with CreateNlbCluster (docs/network.md).</p>
    );
  return (
    <div>
      {clusters.length > 1 && (
        <nav aria-label="NLB clusters" class="actions">
          {clusters.map((c) => (
            <a
              key={c.id}
              href={`#/nlb/${encodeURIComponent(c.name)}`}
              aria-current={c === chosen ? 'page' : undefined}
            >
              {c.name}
            </a>
          ))}
        </nav>
      )}
      <Cluster key={chosen.id} store={props.store} cluster={chosen} />
    </div>
  );
}

function Cluster(props: { store: Store; cluster: NlbCluster }) {
  const { store, cluster } = props;
  const [state, setState] = useState<NlbClusterState>();
  const [error, setError] = useState<unknown>();
  const [run, setRun] = useState({ id: '', hostId: '' });
  const [series, setSeries] = useState<SharePoint[]>([]);
  const last = useRef<Map<string, number> | undefined>(undefined);
  // One poll a second: the members' own view, and the traffic run's counts when one is named.
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout>;
    last.current = undefined;
    setSeries([]);
    const poll = async () => {
      try {
        const s = await store.conn.call<NlbClusterState>('GetNlbClusterState', { id: cluster.id });
        if (!live) return;
        setState(s);
        let point: SharePoint;
        if (run.id) {
          const r = await store.conn.call<TrafficReport>('GetTraffic', { id: run.id, hostId: run.hostId });
          const now = requestsByMember(r);
          point = sharePoint(Date.now(), now, last.current ?? now);
          last.current = now;
        } else point = sharePoint(Date.now(), connectionsByMember(s));
        if (live) {
          setSeries((old) => pushPoint(old, point));
          setError(undefined);
        }
      } catch (err) {
        if (live) setError(err);
      } finally {
        if (live) timer = setTimeout(() => void poll(), POLL_MS);
      }
    };
    void poll();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [cluster.id, run.id, run.hostId]);
  const vmName = (id: string) => {
    const vm = store.model.vms.get(id);
    return vm ? name(vm) : id;
  };
  const colour = (vmId: string) => {
    const i = cluster.members.findIndex((x) => x.vmId === vmId);
    return COLOURS[(i < 0 ? cluster.members.length : i) % COLOURS.length]!;
  };
  const byPriority = new Map((state?.members ?? []).map((x) => [x.hostPriority, x.vmId]));
  return (
    <div data-nlb={cluster.name}>
      <dl class="facts">
        <dt>Virtual IP</dt>
        <dd>{cluster.virtualIp}</dd>
        <dt>Mode</dt>
        <dd>{cluster.mode.replace('NLB_MODE_', '').toLowerCase()}</dd>
        <dt>Cluster MAC</dt>
        <dd>{cluster.clusterMac}</dd>
        <dt>Switch</dt>
        <dd>{cluster.switchName}</dd>
        <dt>Converged</dt>
        <dd>
          {state ? (state.converged ? 'yes' : 'no: the members disagree') : '…'}
          {state?.lastConvergence?.finishedAtMs
            ? ` · last at ${time(state.lastConvergence.finishedAtMs)} in ${duration(state.lastConvergence.durationMs)}`
            : ''}
        </dd>
      </dl>
      <ErrorNote error={error} />
      {state && state.missing.length > 0 && (
        <ul class="reasons" aria-label="Members not reported">
          {state.missing.map((x) => (
            <li key={x}>{x}</li>
          ))}
        </ul>
      )}
      <Section title="Members">
        <div class="table-wrap">
          <table class="table">
            <thead>
              <tr>
                <th scope="col">Member</th>
                <th scope="col">Priority</th>
                <th scope="col">Weight</th>
                <th scope="col">State</th>
                <th scope="col">Host</th>
                <th scope="col">Connections</th>
                <th scope="col">Notes</th>
              </tr>
            </thead>
            <tbody>
              {cluster.members.map((mem) => {
                const seen = state?.members.find((x) => x.vmId === mem.vmId);
                return (
                  <tr key={mem.vmId} data-member={vmName(mem.vmId)}>
                    <th scope="row">
                      <span class="swatch" style={{ background: colour(mem.vmId) }} />
                      <a href={`#/vm/${encodeURIComponent(mem.vmId)}`}>{vmName(mem.vmId)}</a>
                    </th>
                    <td>{mem.hostPriority}</td>
                    <td>{mem.loadWeight || 'equal'}</td>
                    <td>{seen?.state ?? mem.state ?? '—'}</td>
                    <td>{seen?.hostId ?? '—'}</td>
                    <td>{seen?.connections ?? '—'}</td>
                    <td class="muted">
                      {[
                        ...(seen?.warnings ?? []),
                        seen?.unconfirmedBuckets
                          ? `${seen.unconfirmedBuckets} buckets awaiting confirmation`
                          : '',
                      ]
                        .filter(Boolean)
                        .join('; ')}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      </Section>
      <Section title="Bucket map">
        {(state?.bucketMaps ?? []).length === 0 ? (
          <p class="muted">No agreed map now (the members are converging, or none has converged yet).</p>
        ) : (
          state!.bucketMaps.map((b) => (
            <Buckets
              key={b.startPort}
              map={b}
              owner={(p) => byPriority.get(p)}
              colour={colour}
              name={vmName}
            />
          ))
        )}
      </Section>
      <Section title="Share of requests per member">
        <form
          class="filters"
          aria-label="Follow a traffic run"
          onSubmit={(e) => {
            e.preventDefault();
            const f = new FormData(e.currentTarget);
            setRun({ id: String(f.get('run') ?? '').trim(), hostId: String(f.get('host') ?? '').trim() });
          }}
        >
          <label>
            Traffic run <input name="run" defaultValue={run.id} placeholder="run id (StartTraffic)" />
          </label>
          <label>
            on host <input name="host" defaultValue={run.hostId} placeholder="any Up host" />
          </label>
          <button type="submit">Follow</button>
        </form>
        <p class="muted">
          {run.id
            ? `Each member's share of the requests answered in each second of run “${run.id}”.`
            : 'No traffic run named: each member’s share of the connections it holds now. Name a run to see requests answered.'}
        </p>
        <ShareChart
          series={series}
          members={cluster.members.map((x) => x.vmId)}
          colour={colour}
          name={vmName}
        />
      </Section>
    </div>
  );
}

function Buckets(props: {
  map: NlbBucketMap;
  owner: (priority: number) => string | undefined;
  colour: (vmId: string) => string;
  name: (vmId: string) => string;
}) {
  return (
    <figure>
      <figcaption>Port rule from {props.map.startPort}: the 60 buckets and who owns each</figcaption>
      <div class="buckets" role="list">
        {props.map.owners.map((p, i) => {
          const vm = props.owner(p);
          return (
            <span
              key={i}
              role="listitem"
              class="bucket"
              style={{ background: vm ? props.colour(vm) : '#c9ced6' }}
              title={`bucket ${i}: ${vm ? props.name(vm) : p ? `priority ${p}` : 'no owner'}`}
            >
              {i}
            </span>
          );
        })}
      </div>
    </figure>
  );
}

/** Stacked shares over the last SERIES_LENGTH polls, one colour per member, with the latest in words. */
function ShareChart(props: {
  series: SharePoint[];
  members: string[];
  colour: (vmId: string) => string;
  name: (vmId: string) => string;
}) {
  const W = 600;
  const H = 160;
  const step = W / (SERIES_LENGTH - 1);
  const offset = SERIES_LENGTH - props.series.length;
  const bands = props.members.map((vm, k) => {
    const top: string[] = [];
    const bottom: string[] = [];
    props.series.forEach((p, i) => {
      const below = props.members.slice(0, k).reduce((s, v) => s + (p.shares.get(v) ?? 0), 0);
      const x = (offset + i) * step;
      bottom.push(`${x},${H - below * H}`);
      top.push(`${x},${H - (below + (p.shares.get(vm) ?? 0)) * H}`);
    });
    return { vm, points: [...top, ...bottom.reverse()].join(' ') };
  });
  const latest = props.series[props.series.length - 1];
  return (
    <div>
      <svg
        class="chart"
        viewBox={`0 0 ${W} ${H}`}
        role="img"
        aria-label="Share per member over the last minute"
      >
        {bands.map((b) => (
          <polygon key={b.vm} points={b.points} fill={props.colour(b.vm)} opacity={0.85} />
        ))}
      </svg>
      <ul class="legend" data-testid="shares">
        {props.members.map((vm) => (
          <li key={vm}>
            <span class="swatch" style={{ background: props.colour(vm) }} />
            {props.name(vm)}:{' '}
            {latest && latest.total > 0 ? `${Math.round((latest.shares.get(vm) ?? 0) * 100)}%` : '—'}
          </li>
        ))}
      </ul>
    </div>
  );
}
