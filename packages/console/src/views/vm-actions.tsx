import { useEffect, useRef, useState } from 'preact/hooks';
import { MIGRATABLE, VM_ACTIONS } from '../actions.js';
import { name, vmState } from '../model.js';
import type { Store } from '../store.js';
import { ErrorNote, useConfirm } from '../ui.js';
import type { ExplainPlacementResponse, Operation, Vm } from '../wire.js';

/**
 * The buttons that drive one VM. Each is enabled in the states Hyper-V allows it from; the
 * destructive ones ask first; the outcome shows in the notices above the view.
 */
export function VmActions(props: { store: Store; vm: Vm }) {
  const { store, vm } = props;
  const [dialog, ask] = useConfirm();
  const [migrating, setMigrating] = useState(false);
  const state = vm.status?.state;
  const label = name(vm);
  return (
    <div class="actions" role="group" aria-label={`Actions for ${label}`}>
      {VM_ACTIONS.map((a) => {
        const allowed = a.allowed(state);
        return (
          <button
            type="button"
            key={a.key}
            data-action={a.key}
            class={a.confirm ? 'danger-outline' : undefined}
            disabled={!allowed}
            title={allowed ? undefined : `${a.label} is not possible while the VM is ${vmState(state)}`}
            onClick={async () => {
              if (
                a.confirm &&
                !(await ask({ title: `${a.label} ${label}?`, text: a.confirm(label), confirmLabel: a.label }))
              )
                return;
              await store.act(`${a.label} ${label}`, () => a.run(store.conn, vm));
            }}
          >
            {a.label}
          </button>
        );
      })}
      <button
        type="button"
        data-action="migrate"
        disabled={!state || !MIGRATABLE.includes(state)}
        title={state && MIGRATABLE.includes(state) ? undefined : `A ${vmState(state)} VM cannot move now`}
        onClick={() => setMigrating(true)}
      >
        Migrate…
      </button>
      {dialog}
      {migrating && <MigrateDialog store={store} vm={vm} onClose={() => setMigrating(false)} />}
    </div>
  );
}

/**
 * Where to move a VM and how: quick or live, and a host or placement's choice, with what
 * ExplainPlacement says of every host (its score, or the filters that refuse it).
 */
function MigrateDialog(props: { store: Store; vm: Vm; onClose: () => void }) {
  const { store, vm } = props;
  const ref = useRef<HTMLDialogElement>(null);
  const [explained, setExplained] = useState<ExplainPlacementResponse>();
  const [error, setError] = useState<unknown>();
  const [target, setTarget] = useState('');
  const [kind, setKind] = useState<'MIGRATION_KIND_LIVE' | 'MIGRATION_KIND_QUICK'>('MIGRATION_KIND_LIVE');
  const runs = ['VM_STATE_RUNNING', 'VM_STATE_PAUSED'].includes(vm.status?.state ?? '');
  useEffect(() => {
    ref.current!.showModal();
    store.conn
      .call<ExplainPlacementResponse>('ExplainPlacement', { vmId: vm.id })
      .then(setExplained, setError);
  }, []);
  const hostName = (id: string) => store.model.hosts.get(id)?.name || id;
  const submit = async (e: Event) => {
    e.preventDefault();
    props.onClose();
    const where = target ? hostName(target) : 'the host placement chooses';
    await store.act(`Migrate ${name(vm)} to ${where}`, () =>
      store.conn.call<Operation>('MigrateVm', {
        vmId: vm.id,
        targetHostId: target,
        ...(runs ? { kind } : {}),
      }),
    );
  };
  const verdicts = (explained?.verdicts ?? []).filter((v) => v.hostId !== vm.status?.hostId);
  return (
    <dialog
      ref={ref}
      class="dialog wide"
      aria-labelledby="migrate-title"
      onCancel={(e) => {
        e.preventDefault();
        props.onClose();
      }}
    >
      <form onSubmit={submit}>
        <h2 id="migrate-title">Migrate {name(vm)}</h2>
        <p class="muted">
          Now on {vm.status?.hostId ? hostName(vm.status.hostId) : 'no host'}, {vmState(vm.status?.state)}.
        </p>
        {runs ? (
          <fieldset>
            <legend>How</legend>
            <label class="check">
              <input
                type="radio"
                name="kind"
                checked={kind === 'MIGRATION_KIND_LIVE'}
                onChange={() => setKind('MIGRATION_KIND_LIVE')}
              />{' '}
              Live: memory is copied while the VM runs; it pauses only for the last pages
            </label>
            <label class="check">
              <input
                type="radio"
                name="kind"
                checked={kind === 'MIGRATION_KIND_QUICK'}
                onChange={() => setKind('MIGRATION_KIND_QUICK')}
              />{' '}
              Quick: the VM is saved, moved and resumed (it stops while its memory moves)
            </label>
          </fieldset>
        ) : (
          <p>
            The VM does not run: its configuration moves to the new host; its files stay on cluster storage.
          </p>
        )}
        <fieldset>
          <legend>To</legend>
          <ErrorNote error={error} />
          {!explained && !error && <p class="muted">Asking placement about every host…</p>}
          <label class="check">
            <input type="radio" name="target" checked={target === ''} onChange={() => setTarget('')} /> Let
            placement choose
            {explained && (
              <span class="muted">
                {' '}
                (
                {explained.chosenHostId
                  ? `it would pick ${hostName(explained.chosenHostId)}`
                  : 'no host fits now'}
                )
              </span>
            )}
          </label>
          <ul class="verdicts">
            {verdicts.map((v) => (
              <li key={v.hostId} data-verdict={v.hostId}>
                <label class="check">
                  <input
                    type="radio"
                    name="target"
                    value={v.hostId}
                    checked={target === v.hostId}
                    onChange={() => setTarget(v.hostId)}
                  />{' '}
                  <strong>{hostName(v.hostId)}</strong>{' '}
                  {v.feasible ? (
                    <span class="badge state-running">fits · score {v.score.toFixed(2)}</span>
                  ) : (
                    <span class="badge state-down">refused</span>
                  )}
                </label>
                {v.reasons.length > 0 && (
                  <ul class="reasons">
                    {v.reasons.map((r) => (
                      <li key={r}>{r}</li>
                    ))}
                  </ul>
                )}
              </li>
            ))}
          </ul>
        </fieldset>
        <div class="dialog-buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" class="primary">
            Migrate
          </button>
        </div>
      </form>
    </dialog>
  );
}
