import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { explain } from './errors.js';
import { noticeStatus } from './notices.js';
import type { Store } from './store.js';

/** Re-renders the component when the store changes (at most once per frame). */
export function useStore(store: Store): number {
  const [version, setVersion] = useState(store.version);
  useEffect(() => store.subscribe(() => setVersion(store.version)), [store]);
  return version;
}

/** A labelled bar: `value` of `max`, with the figure in words for screen readers. */
export function Bar(props: { label: string; value: number; max: number; text: string; progress?: boolean }) {
  const pct = props.max > 0 ? Math.min(100, Math.max(0, (100 * props.value) / props.max)) : 0;
  // A usage bar warns as it fills; a progress bar does not.
  const level = props.progress ? 'progress' : pct >= 90 ? 'high' : pct >= 70 ? 'mid' : 'low';
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

/** One formatter for the page: toLocaleTimeString builds one per call (a host card drawn per frame). */
const clock = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit', second: '2-digit' });

export function time(ms: number): string {
  return ms ? clock.format(ms) : '—';
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

export interface Question {
  title: string;
  text: string;
  /** The button that goes ahead: "Turn off", "Delete". */
  confirmLabel: string;
  /** Choices the answer carries, each a checkbox. */
  options?: { key: string; label: string; checked?: boolean }[];
}

/** The answer: the options chosen, or undefined when the person cancelled. */
export type Answer = Record<string, boolean> | undefined;

/**
 * A modal question before something that cannot be undone. The native <dialog> keeps focus
 * inside it, Escape cancels, and focus starts on Cancel so Enter alone never destroys anything.
 */
export function useConfirm(): [ComponentChildren, (q: Question) => Promise<Answer>] {
  const [pending, setPending] = useState<{ q: Question; resolve: (a: Answer) => void }>();
  const ask = useCallback((q: Question) => new Promise<Answer>((resolve) => setPending({ q, resolve })), []);
  const element = pending && (
    <ConfirmDialog
      question={pending.q}
      onAnswer={(a) => {
        setPending(undefined);
        pending.resolve(a);
      }}
    />
  );
  return [element, ask];
}

function ConfirmDialog(props: { question: Question; onAnswer: (a: Answer) => void }) {
  const ref = useRef<HTMLDialogElement>(null);
  const q = props.question;
  const [chosen, setChosen] = useState<Record<string, boolean>>(() =>
    Object.fromEntries((q.options ?? []).map((o) => [o.key, !!o.checked])),
  );
  useEffect(() => {
    const d = ref.current!;
    const opener = document.activeElement as HTMLElement | null;
    d.showModal();
    return () => opener?.focus?.();
  }, []);
  return (
    <dialog
      ref={ref}
      class="dialog"
      aria-labelledby="confirm-title"
      onCancel={(e) => {
        e.preventDefault();
        props.onAnswer(undefined);
      }}
    >
      <h2 id="confirm-title">{q.title}</h2>
      <p>{q.text}</p>
      {(q.options ?? []).map((o) => (
        <label class="check" key={o.key}>
          <input
            type="checkbox"
            checked={chosen[o.key]}
            onChange={(e) => setChosen({ ...chosen, [o.key]: e.currentTarget.checked })}
          />{' '}
          {o.label}
        </label>
      ))}
      <div class="dialog-buttons">
        <button type="button" autofocus onClick={() => props.onAnswer(undefined)}>
          Cancel
        </button>
        <button type="button" class="danger" onClick={() => props.onAnswer(chosen)}>
          {q.confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

/** What the person asked for lately and how it ended, followed live from the operations. */
export function Notices(props: { store: Store }) {
  const { notices, model } = props.store;
  if (notices.length === 0) return null;
  return (
    <ul class="notices" aria-label="Recent actions" aria-live="polite">
      {notices.map((n) => {
        const s = noticeStatus(n, n.operationId ? model.operations.get(n.operationId) : undefined);
        return (
          <li key={n.key} class={`notice notice-${s.kind}`} data-notice={s.kind}>
            <strong>{n.label}</strong> {s.kind === 'sent' && <span>sent…</span>}
            {s.kind === 'running' && (
              <span>
                {Math.round(s.percent)}%{s.message && ` · ${s.message}`}
              </span>
            )}
            {s.kind === 'done' && <span>done</span>}
            {s.kind === 'failed' && (
              <span role="alert">
                failed: {s.message}. {s.action}
              </span>
            )}
            <button
              type="button"
              class="link"
              onClick={() => props.store.dismiss(n.key)}
              aria-label={`Dismiss ${n.label}`}
            >
              ×
            </button>
          </li>
        );
      })}
    </ul>
  );
}

/** A column header that sorts the table: a button, with aria-sort saying which way. */
export function SortHeader<K extends string>(props: {
  label: string;
  column: K;
  sort: { column: K; descending: boolean };
  onSort: (s: { column: K; descending: boolean }) => void;
}) {
  const active = props.sort.column === props.column;
  return (
    <th scope="col" aria-sort={active ? (props.sort.descending ? 'descending' : 'ascending') : 'none'}>
      <button
        type="button"
        class="sort"
        onClick={() =>
          props.onSort({ column: props.column, descending: active ? !props.sort.descending : false })
        }
      >
        {props.label}
        <span aria-hidden="true">{active ? (props.sort.descending ? ' ▼' : ' ▲') : ''}</span>
      </button>
    </th>
  );
}

export function duration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
