import { useEffect, useState } from 'preact/hooks';
import type { Store } from './store.js';
import { useStore } from './ui.js';
import { ControlView } from './views/control.js';
import { FarmView } from './views/farm.js';

interface Route {
  path: string;
  title: string;
}

const ROUTES: Route[] = [
  { path: 'farm', title: 'Farm' },
  { path: 'control', title: 'Control plane' },
];

function currentRoute(): { path: string; arg: string } {
  const [path = 'farm', ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  return { path: path || 'farm', arg: decodeURIComponent(rest.join('/')) };
}

/** The console: a navigation bar, the connection's state, and the view the URL's hash names. */
export function App(props: { store: Store }) {
  const store = props.store;
  useStore(store);
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const on = () => setRoute(currentRoute());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  const active = ROUTES.find((r) => r.path === route.path) ?? ROUTES[0]!;
  useEffect(() => {
    document.title = `${active.title} · hyperfarm`;
  }, [active]);
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
                <a href={`#/${r.path}`} aria-current={r.path === active.path ? 'page' : undefined}>
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
        <h2 class="view-title">{active.title}</h2>
        {active.path === 'farm' && <FarmView store={store} />}
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
