import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { explain } from './errors.js';
import type { Store } from './store.js';

/** Re-renders the component when the store changes (at most once per frame). */
export function useStore(store: Store): number {
  const [version, setVersion] = useState(store.version);
  useEffect(() => store.subscribe(() => setVersion(store.version)), [store]);
  return version;
}

/** A labelled bar: `value` of `max`, with the figure in words for screen readers. */
export function Bar(props: { label: string; value: number; max: number; text: string }) {
  const pct = props.max > 0 ? Math.min(100, Math.max(0, (100 * props.value) / props.max)) : 0;
  const level = pct >= 90 ? 'high' : pct >= 70 ? 'mid' : 'low';
  return (
    <div class="bar-row">
      <span class="bar-label">{props.label}</span>
      <div
        class="bar"
        role="meter"
        aria-label={props.label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(pct)}
        aria-valuetext={props.text}
      >
        <div class={`bar-fill ${level}`} style={{ width: `${pct}%` }} />
      </div>
      <span class="bar-text">{props.text}</span>
    </div>
  );
}

/** A VM state as a coloured word. */
export function StateBadge(props: { state: string | undefined; text: string }) {
  const cls = (props.state ?? '')
    .toLowerCase()
    .replace(/^(vm|host)_state_/, '')
    .replace(/_/g, '-');
  return <span class={`badge state-${cls}`}>{props.text}</span>;
}

/** A failed call, said as the daemon said it and what to do about it. */
export function ErrorNote(props: { error: unknown; onClose?: () => void }) {
  if (!props.error) return null;
  const { message, action } = explain(props.error);
  return (
    <div class="error-note" role="alert">
      <strong>{message}</strong>
      <span>{action}</span>
      {props.onClose && (
        <button type="button" class="link" onClick={props.onClose} aria-label="Dismiss">
          Dismiss
        </button>
      )}
    </div>
  );
}

export function Section(props: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section class="section" aria-label={props.title}>
      <header class="section-head">
        <h2>{props.title}</h2>
        {props.actions}
      </header>
      {props.children}
    </section>
  );
}

export function bytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(n % 1024 ** 3 === 0 ? 0 : 1)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(0)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${n} B`;
}

export function time(ms: number): string {
  return ms ? new Date(ms).toLocaleTimeString() : '—';
}

/** Polls `load` every `everyMs` while mounted; returns the latest value and error. */
export function usePoll<T>(
  load: () => Promise<T>,
  everyMs: number,
  deps: unknown[],
): { value?: T; error?: unknown } {
  const [result, setResult] = useState<{ value?: T; error?: unknown }>({});
  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout>;
    const run = () =>
      load()
        .then(
          (value) => live && setResult({ value }),
          (error: unknown) => live && setResult((r) => ({ value: r.value, error })),
        )
        .finally(() => {
          if (live) timer = setTimeout(run, everyMs);
        });
    void run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, deps);
  return result;
}
