import { render } from 'preact';
import { App } from './app.js';
import { Store } from './store.js';
import './styles.css';

// The page talks to the daemon that served it; the connection moves to the others if it dies.
const store = new Store(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
// Tests and the benchmark read the store from here (revision, last event applied).
(window as unknown as { hyperfarm: Store }).hyperfarm = store;
render(<App store={store} />, document.getElementById('app')!);
