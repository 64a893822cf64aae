import { useEffect, useState } from 'preact/hooks';
import { checkpointTree, type TreeNode } from '../lists.js';
import { enumWords, name, vmState } from '../model.js';
import type { Store } from '../store.js';
import { bytes, duration, ErrorNote, Section, StateBadge, time, useConfirm, type Question } from '../ui.js';
import type { Checkpoint, ListCheckpointsResponse, Operation, Vm } from '../wire.js';
import { MigrationTable } from './operations.js';
import { VmActions } from './vm-actions.js';

/** One VM: its configuration and status, state history, snapshot tree and migrations. */
export function VmView(props: { store: Store; id: string }) {
  const { store } = props;
  const m = store.model;
  const vm = m.vms.get(props.id) ?? [...m.vms.values()].find((v) => v.config?.name === props.id);
  if (!vm)
    return (
      <p class="empty">
        No VM “{props.id}” in the farm{m.revision === 0 ? ' (still loading)' : ''}.{' '}
        <a href="#/vms">All VMs</a>
      </p>
    );
  const s = vm.status;
  const c = vm.config;
  const history = m.history.get(vm.id) ?? [];
  const migrations = [...m.migrations.values()]
    .filter((g) => g.vmId === vm.id)
    .sort((a, b) => b.startedAtMs - a.startedAtMs);
  const hostName = (id: string) => (id ? (m.hosts.get(id)?.name ?? id) : '—');
  return (
    <div class="vm-page" data-vm-page={name(vm)}>
      <header class="vm-head">
        <h3>{name(vm)}</h3>
        <StateBadge state={s?.state} text={vmState(s?.state)} />
        <span data-testid="vm-host">on {hostName(s?.hostId ?? '')}</span>
      </header>
      <VmActions store={store} vm={vm} />
      <div class="columns">
        <Section title="Configuration">
          <dl class="facts">
            <dt>Id</dt>
            <dd>{vm.id}</dd>
            <dt>Processors</dt>
            <dd>
              {c?.processor?.count ?? 0}
              {c?.processor?.reservePercent ? `, ${c.processor.reservePercent}% reserved` : ''}
              {c?.processor?.limitPercent ? `, ${c.processor.limitPercent}% limit` : ''}
            </dd>
            <dt>Memory</dt>
            <dd>{bytes(c?.memoryBytes ?? 0)}</dd>
            <dt>Guest</dt>
            <dd>{c?.guestOs}</dd>
            <dt>Integration services</dt>
            <dd>{c?.integrationServices ? 'yes' : 'no'}</dd>
            <dt>HA priority</dt>
            <dd>{enumWords(c?.haPriority, 'HA_PRIORITY_') || 'Medium'}</dd>
            <dt>Automatic start</dt>
            <dd>{enumWords(c?.automaticStartAction, 'AUTOMATIC_START_ACTION_')}</dd>
            <dt>Automatic stop</dt>
            <dd>{enumWords(c?.automaticStopAction, 'AUTOMATIC_STOP_ACTION_')}</dd>
            <dt>Disks</dt>
            <dd>
              {(c?.disks ?? []).length === 0
                ? 'none'
                : c!.disks.map((d, i) => <div key={i}>{JSON.stringify(d)}</div>)}
            </dd>
            <dt>Network adapters</dt>
            <dd>
              {(c?.networkAdapters ?? []).length === 0
                ? 'none'
                : c!.networkAdapters.map((a, i) => (
                    <div key={i}>
                      {a.switchName || 'not connected'} {a.macAddress}
                    </div>
                  ))}
            </dd>
            {c?.antiAffinityGroup && (
              <>
                <dt>Anti-affinity group</dt>
                <dd>{c.antiAffinityGroup}</dd>
              </>
            )}
            {Object.keys(c?.labels ?? {}).length > 0 && (
              <>
                <dt>Labels</dt>
                <dd>
                  {Object.entries(c!.labels)
                    .map(([k, v]) => `${k}=${v}`)
                    .join(', ')}
                </dd>
              </>
            )}
          </dl>
        </Section>
        <Section title="Status">
          <dl class="facts">
            <dt>State</dt>
            <dd>{vmState(s?.state)}</dd>
            <dt>Wanted</dt>
            <dd>{vmState(vm.desiredState)}</dd>
            <dt>Host</dt>
            <dd>{hostName(s?.hostId ?? '')}</dd>
            <dt>Heartbeat</dt>
            <dd>{enumWords(s?.heartbeat, 'HEARTBEAT_STATUS_')}</dd>
            <dt>CPU</dt>
            <dd>{Math.round(s?.cpuPercent ?? 0)}%</dd>
            <dt>Memory assigned</dt>
            <dd>{bytes(s?.memoryAssignedBytes ?? 0)}</dd>
            <dt>Uptime</dt>
            <dd>{s?.uptimeMs ? duration(s.uptimeMs) : '—'}</dd>
            <dt>Generation</dt>
            <dd>{s?.generation}</dd>
            {(s?.message || s?.placementNote) && (
              <>
                <dt>Note</dt>
                <dd>{s.message || s.placementNote}</dd>
              </>
            )}
          </dl>
        </Section>
      </div>
      <Section title="State history">
        <p class="muted">As this page saw it since it opened (from the event stream), newest first.</p>
        <table class="table" data-testid="state-history">
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">State</th>
              <th scope="col">Host</th>
              <th scope="col">Revision</th>
            </tr>
          </thead>
          <tbody>
            {[...history].reverse().map((h) => (
              <tr key={h.revision}>
                <td>{time(h.timeMs)}</td>
                <td>
                  <StateBadge state={h.state} text={vmState(h.state)} />
                </td>
                <td>{hostName(h.hostId)}</td>
                <td>{h.revision}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
      <Snapshots store={store} vm={vm} />
      <Section title="Migrations">
        {migrations.length === 0 ? (
          <p class="muted">This VM has not moved.</p>
        ) : (
          <MigrationTable store={store} migrations={migrations} />
        )}
      </Section>
    </div>
  );
}

/** The snapshot tree, with "Now" under the snapshot the VM's state hangs from. */
function Snapshots(props: { store: Store; vm: Vm }) {
  const { store, vm } = props;
  const list = [...store.model.checkpoints.values()].filter((c) => c.vmId === vm.id);
  const [current, setCurrent] = useState<string>();
  const [error, setError] = useState<unknown>();
  const [dialog, ask] = useConfirm();
  // Where "Now" hangs is not in the events: ask again whenever the snapshots or the VM change.
  const key = `${list.map((c) => c.id).join()}|${vm.revision}`;
  useEffect(() => {
    store.conn
      .call<ListCheckpointsResponse>('ListCheckpoints', { vmId: vm.id })
      .then((r) => (setCurrent(r.currentId), setError(undefined)), setError);
  }, [key]);
  const act = async (
    label: string,
    q: Question | undefined,
    call: (a: Record<string, boolean>) => Promise<object>,
  ) => {
    const answer = q ? await ask(q) : {};
    if (answer) await store.act(label, () => call(answer));
  };
  const render = (nodes: TreeNode[]) => (
    <ul class="tree">
      {nodes.map(({ checkpoint: c, children }) => (
        <li key={c.id} data-checkpoint={c.name}>
          <CheckpointItem
            checkpoint={c}
            onApply={() =>
              act(
                `Apply ${c.name}`,
                {
                  title: `Apply ${c.name}?`,
                  text: `${name(vm)} returns to this checkpoint; its current state is discarded unless you save it first.`,
                  confirmLabel: 'Apply',
                  options: [
                    { key: 'save', label: 'Take a checkpoint of the current state first', checked: true },
                    { key: 'off', label: 'Turn the VM off first if it runs' },
                  ],
                },
                (a) =>
                  store.conn.call<Operation>('ApplyCheckpoint', {
                    id: c.id,
                    saveCurrentFirst: a.save,
                    turnOffFirst: a.off,
                  }),
              )
            }
            onDelete={() =>
              act(
                `Delete ${c.name}`,
                {
                  title: `Delete ${c.name}?`,
                  text: 'Its differencing disk is merged into its child; the checkpoint cannot be applied again.',
                  confirmLabel: 'Delete',
                  options:
                    children.length > 0
                      ? [{ key: 'subtree', label: 'Also delete every checkpoint below it' }]
                      : [],
                },
                (a) => store.conn.call<Operation>('DeleteCheckpoint', { id: c.id, subtree: !!a.subtree }),
              )
            }
            onRename={(to) =>
              act(`Rename ${c.name} to ${to}`, undefined, () =>
                store.conn.call<Checkpoint>('RenameCheckpoint', { id: c.id, name: to }),
              )
            }
          />
          {c.id === current && <div class="now">▸ Now</div>}
          {children.length > 0 && render(children)}
        </li>
      ))}
    </ul>
  );
  return (
    <Section title="Checkpoints">
      <ErrorNote error={error} />
      {list.length === 0 ? (
        <p class="muted">No checkpoint. “Checkpoint” above takes one.</p>
      ) : (
        render(checkpointTree(list))
      )}
      {dialog}
    </Section>
  );
}

function CheckpointItem(props: {
  checkpoint: Checkpoint;
  onApply: () => void;
  onDelete: () => void;
  onRename: (name: string) => void;
}) {
  const c = props.checkpoint;
  const [renaming, setRenaming] = useState<string>();
  if (renaming !== undefined)
    return (
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          props.onRename(renaming);
          setRenaming(undefined);
        }}
      >
        <label>
          New name for {c.name}{' '}
          <input autofocus required value={renaming} onInput={(e) => setRenaming(e.currentTarget.value)} />
        </label>
        <button type="submit">Rename</button>
        <button type="button" onClick={() => setRenaming(undefined)}>
          Cancel
        </button>
      </form>
    );
  return (
    <div class="checkpoint">
      <span>
        <strong>{c.name}</strong>{' '}
        <span class="muted">
          {time(c.createdAtMs)} · {vmState(c.vmState)}
        </span>
      </span>
      <span class="actions">
        <button type="button" onClick={props.onApply}>
          Apply
        </button>
        <button type="button" onClick={() => setRenaming(c.name)}>
          Rename
        </button>
        <button type="button" class="danger-outline" onClick={props.onDelete}>
          Delete
        </button>
      </span>
    </div>
  );
}
