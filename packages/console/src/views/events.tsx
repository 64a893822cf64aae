import { useState } from 'preact/hooks';
import { enumWords } from '../model.js';
import type { Store } from '../store.js';
import { time } from '../ui.js';

const SHOWN = 300;

/** The event stream as a live timeline, newest first, filtered by kind and words. */
export function EventsView(props: { store: Store }) {
  const m = props.store.model;
  const [kind, setKind] = useState('');
  const [text, setText] = useState('');
  const [frozen, setFrozen] = useState<number>();
  const words = text.trim().toLowerCase();
  const kinds = [...new Set(m.timeline.map((e) => e.kind))].sort();
  const entries = m.timeline.filter(
    (e) =>
      (frozen === undefined || e.revision <= frozen) &&
      (!kind || e.kind === kind) &&
      (!words || e.text.toLowerCase().includes(words) || e.id.toLowerCase().includes(words)),
  );
  const newest = entries.slice(-SHOWN).reverse();
  return (
    <div>
      <form class="filters" role="search" aria-label="Filter events" onSubmit={(e) => e.preventDefault()}>
        <label>
          Kind{' '}
          <select value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
            <option value="">any</option>
            {kinds.map((k) => (
              <option key={k} value={k}>
                {enumWords(k, 'RESOURCE_KIND_')}
              </option>
            ))}
          </select>
        </label>
        <label>
          Containing <input type="search" value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        <button
          type="button"
          aria-pressed={frozen !== undefined}
          onClick={() => setFrozen(frozen === undefined ? m.revision : undefined)}
        >
          {frozen === undefined ? 'Pause' : `Paused at ${frozen}: resume`}
        </button>
        <span class="muted">
          {entries.length} of the last {m.timeline.length} events
          {entries.length > SHOWN ? ` (newest ${SHOWN} shown)` : ''}
        </span>
      </form>
      <ol class="timeline" aria-label="Events, newest first" data-testid="timeline">
        {newest.map((e) => (
          <li key={e.revision} class={`ev ev-${e.kind.replace('RESOURCE_KIND_', '').toLowerCase()}`}>
            <span class="ev-time">{time(e.timeMs)}</span>
            <span class="ev-kind">{enumWords(e.kind, 'RESOURCE_KIND_')}</span>
            <span class="ev-text">{e.text}</span>
            <span class="ev-rev muted">#{e.revision}</span>
          </li>
        ))}
      </ol>
    </div>
  );
}
