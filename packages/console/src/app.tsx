import { useEffect, useRef, useState } from 'preact/hooks';
import type { Store } from './store.js';
import { Notices, useStore } from './ui.js';
import { ControlView } from './views/control.js';
import { DrillsView } from './views/drills.js';
import { EventsView } from './views/events.js';
import { FarmView } from './views/farm.js';
import { NlbView } from './views/nlb.js';
import { OperationsView } from './views/operations.js';
import { VmView } from './views/vm.js';
import { VmsView } from './views/vms.js';

interface Route {
  path: string;
  title: string;
}

const ROUTES: Route[] = [
  { path: 'farm', title: 'Farm' },
  { path: 'vms', title: 'VMs' },
  { path: 'operations', title: 'Operations' },
  { path: 'events', title: 'Events' },
  { path: 'nlb', title: 'NLB' },
  { path: 'drills', title: 'Drills' },
  { path: 'control', title: 'Control plane' },
];

/** Pages not in the navigation bar, reached from links. */
const PAGES: Route[] = [{ path: 'vm', title: 'VM' }];

function currentRoute(): { path: string; arg: string } {
  const [path = 'farm', ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  return { path: path || 'farm', arg: decodeURIComponent(rest.join('/')) };
}

/** The console: a navigation bar, the connection's state, and the view the URL's hash names. */
export function App(props: { store: Store }) {
  const store = props.store;
  useStore(store);
  const [route, setRoute] = useState(currentRoute);
  const mounted = useRef(false);
  useEffect(() => {
    const on = () => setRoute(currentRoute());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  const active = [...ROUTES, ...PAGES].find((r) => r.path === route.path) ?? ROUTES[0]!;
  const title =
    active.path === 'vm'
      ? `VM ${route.arg}`
      : active.path === 'drills' && route.arg
        ? `Drill report ${route.arg}`
        : active.title;
  useEffect(() => {
    document.title = `${title} · hyperfarm`;
    // Keyboard and screen-reader users land on the new view, not on the link they left.
    if (mounted.current) document.getElementById('main')?.focus();
    mounted.current = true;
  }, [title]);
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <h1>hyperfarm</h1>
        <nav aria-label="Views">
          <ul>
            {ROUTES.map((r) => (
              <li key={r.path}>
                <a
                  href={`#/${r.path}`}
                  aria-current={
                    r.path === active.path || (r.path === 'vms' && active.path === 'vm') ? 'page' : undefined
                  }
                >
                  {r.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <ConnectionBadge store={store} />
      </header>
      {store.connection.problem && (
        <div class="banner" role="status">
          {store.connection.problem}
        </div>
      )}
      <main id="main" tabIndex={-1}>
        <h2 class="view-title">{title}</h2>
        <Notices store={store} />
        {active.path === 'farm' && <FarmView store={store} />}
        {active.path === 'vms' && <VmsView store={store} />}
        {active.path === 'vm' && <VmView store={store} id={route.arg} />}
        {active.path === 'operations' && <OperationsView store={store} />}
        {active.path === 'events' && <EventsView store={store} />}
        {active.path === 'nlb' && <NlbView store={store} id={route.arg} />}
        {active.path === 'drills' && <DrillsView store={store} path={route.arg} />}
        {active.path === 'control' && <ControlView store={store} />}
      </main>
    </div>
  );
}

function ConnectionBadge(props: { store: Store }) {
  const c = props.store.connection;
  const text =
    c.status === 'open'
      ? `connected to ${c.daemonId || 'a daemon'}`
      : c.status === 'connecting'
        ? 'connecting…'
        : `reconnecting (attempt ${c.attempts})…`;
  return (
    <span class={`conn conn-${c.status}`} role="status" aria-live="polite" data-testid="connection">
      {text}
    </span>
  );
}
