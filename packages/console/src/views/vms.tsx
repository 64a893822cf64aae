import { useState } from 'preact/hooks';
import { filterVms, type Column } from '../lists.js';
import { byText, hostState, name, vmState } from '../model.js';
import type { Store } from '../store.js';
import { bytes, duration, SortHeader, StateBadge } from '../ui.js';
import type { Operation } from '../wire.js';
import { VmActions } from './vm-actions.js';

const PAGE = 200;

/** Every VM in a table: filters, sorting, and the actions of the VM selected. */
export function VmsView(props: { store: Store }) {
  const { store } = props;
  const m = store.model;
  const [filter, setFilter] = useState({ text: '', state: '', host: '' });
  const [sort, setSort] = useState<{ column: Column; descending: boolean }>({
    column: 'name',
    descending: false,
  });
  const [selected, setSelected] = useState('');
  const [shown, setShown] = useState(PAGE);
  const rows = filterVms(m.vms.values(), filter, sort);
  const states = [...new Set([...m.vms.values()].map((v) => v.status?.state ?? ''))].filter(Boolean).sort();
  const hosts = [...m.hosts.values()].sort((a, b) => byText(a.id, b.id));
  const chosen = m.vms.get(selected);
  const header = (label: string, column: Column) => (
    <SortHeader label={label} column={column} sort={sort} onSort={setSort} />
  );
  return (
    <div>
      <NewVm store={store} />
      <form class="filters" role="search" aria-label="Filter VMs" onSubmit={(e) => e.preventDefault()}>
        <label>
          Name, id or label{' '}
          <input
            type="search"
            value={filter.text}
            onInput={(e) => setFilter({ ...filter, text: e.currentTarget.value })}
          />
        </label>
        <label>
          State{' '}
          <select
            value={filter.state}
            onChange={(e) => setFilter({ ...filter, state: e.currentTarget.value })}
          >
            <option value="">any</option>
            {states.map((s) => (
              <option key={s} value={s}>
                {vmState(s)}
              </option>
            ))}
          </select>
        </label>
        <label>
          Host{' '}
          <select value={filter.host} onChange={(e) => setFilter({ ...filter, host: e.currentTarget.value })}>
            <option value="">any</option>
            <option value="-">not placed</option>
            {hosts.map((h) => (
              <option key={h.id} value={h.id}>
                {h.name || h.id} ({hostState(h)})
              </option>
            ))}
          </select>
        </label>
        <span class="muted" data-testid="vm-count">
          {rows.length} of {m.vms.size} VMs
        </span>
      </form>
      <div class="selected-bar" aria-live="polite">
        {chosen ? (
          <>
            <span>
              <a href={`#/vm/${encodeURIComponent(chosen.id)}`}>{name(chosen)}</a>{' '}
              <StateBadge state={chosen.status?.state} text={vmState(chosen.status?.state)} />
            </span>
            <VmActions store={store} vm={chosen} />
          </>
        ) : (
          <span class="muted">Select a VM in the table to act on it.</span>
        )}
      </div>
      <div class="table-wrap">
        <table class="table vms">
          <thead>
            <tr>
              <th scope="col">
                <span class="sr-only">Select</span>
              </th>
              {header('Name', 'name')}
              {header('State', 'state')}
              {header('Host', 'host')}
              {header('Memory', 'memory')}
              {header('CPU', 'cpu')}
              {header('Uptime', 'uptime')}
              <th scope="col" class="wide-only">
                Note
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.slice(0, shown).map((vm) => (
              <tr key={vm.id} data-vm-row={name(vm)} class={vm.id === selected ? 'selected' : undefined}>
                <td>
                  <input
                    type="radio"
                    name="vm"
                    aria-label={`Select ${name(vm)}`}
                    checked={vm.id === selected}
                    onChange={() => setSelected(vm.id)}
                  />
                </td>
                <th scope="row">
                  <a href={`#/vm/${encodeURIComponent(vm.id)}`}>{name(vm)}</a>
                </th>
                <td>
                  <StateBadge state={vm.status?.state} text={vmState(vm.status?.state)} />
                </td>
                <td>{vm.status?.hostId ? (m.hosts.get(vm.status.hostId)?.name ?? vm.status.hostId) : '—'}</td>
                <td>{bytes(vm.config?.memoryBytes ?? 0)}</td>
                <td>{Math.round(vm.status?.cpuPercent ?? 0)}%</td>
                <td>{vm.status?.uptimeMs ? duration(vm.status.uptimeMs) : '—'}</td>
                <td class="wide-only muted">{vm.status?.message || vm.status?.placementNote}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {rows.length > shown && (
        <button type="button" onClick={() => setShown(shown + PAGE)}>
          Show {Math.min(PAGE, rows.length - shown)} more ({rows.length - shown} not shown)
        </button>
      )}
      {m.vms.size === 0 && <p class="empty">No VM yet: create one above.</p>}
    </div>
  );
}

/** A new VM: name, processors, memory, guest, and whether to start it at once. */
function NewVm(props: { store: Store }) {
  const { store } = props;
  // The guests some host's catalog supports, as the agents reported them.
  const guests = [...new Set([...store.model.hosts.values()].flatMap((h) => h.guestOsIds))].sort();
  const [form, setForm] = useState({
    name: '',
    cpus: 1,
    memoryMiB: 512,
    guestOs: 'windows-server-2008-x64',
    bootSeconds: '',
    host: '',
    start: true,
  });
  const set = (patch: Partial<typeof form>) => setForm({ ...form, ...patch });
  const submit = async (e: Event) => {
    e.preventDefault();
    const op = await store.act(`Create ${form.name}`, () =>
      store.conn.call<Operation>('CreateVm', {
        config: {
          name: form.name,
          processor: { count: form.cpus },
          memoryBytes: form.memoryMiB * 1024 * 1024,
          guestOs: form.guestOs,
          integrationServices: true,
          // A simulated guest boots in its catalog's time unless told otherwise.
          ...(form.bootSeconds ? { workload: { bootMs: Math.round(Number(form.bootSeconds) * 1000) } } : {}),
        },
        start: form.start,
        hostId: form.host,
      }),
    );
    if (op) set({ name: '' });
  };
  return (
    <details class="new-vm">
      <summary>New VM</summary>
      <form onSubmit={submit} aria-label="New VM">
        <label>
          Name <input required value={form.name} onInput={(e) => set({ name: e.currentTarget.value })} />
        </label>
        <label>
          Processors{' '}
          <input
            type="number"
            min={1}
            max={64}
            value={form.cpus}
            onInput={(e) => set({ cpus: Number(e.currentTarget.value) })}
          />
        </label>
        <label>
          Memory (MiB){' '}
          <input
            type="number"
            min={32}
            step={32}
            value={form.memoryMiB}
            onInput={(e) => set({ memoryMiB: Number(e.currentTarget.value) })}
          />
        </label>
        <label>
          Guest{' '}
          <input
            list="guests"
            value={form.guestOs}
            onInput={(e) => set({ guestOs: e.currentTarget.value })}
          />
          <datalist id="guests">
            {guests.map((g) => (
              <option key={g} value={g} />
            ))}
          </datalist>
        </label>
        <label>
          Boot time (s){' '}
          <input
            type="number"
            min={0}
            step="any"
            placeholder="the guest's"
            value={form.bootSeconds}
            onInput={(e) => set({ bootSeconds: e.currentTarget.value })}
          />
        </label>
        <label>
          Host{' '}
          <select value={form.host} onChange={(e) => set({ host: e.currentTarget.value })}>
            <option value="">placement chooses</option>
            {[...store.model.hosts.values()].map((h) => (
              <option key={h.id} value={h.id}>
                {h.name || h.id}
              </option>
            ))}
          </select>
        </label>
        <label class="check">
          <input
            type="checkbox"
            checked={form.start}
            onChange={(e) => set({ start: e.currentTarget.checked })}
          />{' '}
          Start it
        </label>
        <button type="submit" class="primary">
          Create
        </button>
      </form>
    </details>
  );
}
