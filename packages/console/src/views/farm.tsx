import { memo } from 'preact/compat';
import { useLayoutEffect } from 'preact/hooks';
import { byText, hostState, hostUse, name, sameLook, sameLooks, vmsByHost, vmState } from '../model.js';
import type { Store } from '../store.js';
import type { HostLive } from '../live.js';
import { Bar, bytes, StateBadge, time } from '../ui.js';
import type { Host, Vm } from '../wire.js';

/** Every host as a card: state, CPU and memory, and its VMs coloured by state. Live. */
export function FarmView(props: { store: Store }) {
  const m = props.store.model;
  // After every render: the DOM now shows this revision.
  useLayoutEffect(() => props.store.rendered());
  const byHost = vmsByHost(m);
  const hosts = [...m.hosts.values()].sort((a, b) => byText(a.id, b.id));
  const unplaced = byHost.get('') ?? [];
  return (
    <div>
      <p class="summary" data-testid="farm-summary">
        {hosts.length} hosts ({hosts.filter((h) => h.state === 'HOST_STATE_UP').length} up) · {m.vms.size} VMs
        ({m.running} running) · revision {m.revision}
      </p>
      {hosts.length === 0 && (
        <p class="empty">No host has registered yet. Start an agent with --daemons pointing here.</p>
      )}
      <div class="cards">
        {hosts.map((h) => (
          <HostCard key={h.id} host={h} vms={byHost.get(h.id) ?? EMPTY} live={props.store.live.get(h.id)} />
        ))}
        {unplaced.length > 0 && (
          <article class="card" aria-label="VMs not placed">
            <header class="card-head">
              <h3>Not placed</h3>
            </header>
            <VmChips vms={unplaced} />
          </article>
        )}
      </div>
    </div>
  );
}

const EMPTY: Vm[] = [];

const HostCard = memo(
  function HostCard(props: { host: Host; vms: Vm[]; live: HostLive | undefined }) {
    const h = props.host;
    const cap = h.capacity;
    // CPU is not in the event stream: the store asks for it (the leader's live view).
    const cpu = props.live?.cpuPercent ?? h.usage?.cpuPercent ?? 0;
    const heartbeat = props.live?.lastHeartbeatMs ?? 0;
    // Counted from the VMs on the card: the host's record is not sent again when they change.
    const use = hostUse(h, props.vms);
    const mem = use.memoryUsedBytes;
    const state = hostState(h);
    return (
      <article
        class={`card host host-${state.toLowerCase()}`}
        aria-label={`host ${h.name || h.id}`}
        data-host={h.id}
      >
        <header class="card-head">
          <h3>{h.name || h.id}</h3>
          <StateBadge state={h.maintenance ? 'host_state_maintenance' : h.state} text={state} />
        </header>
        {h.stateReason && h.state !== 'HOST_STATE_UP' && <p class="reason">{h.stateReason}</p>}
        <Bar
          label="CPU"
          value={cpu}
          max={100}
          text={`${Math.round(cpu)}% of ${cap?.logicalProcessors ?? 0} LPs`}
        />
        <Bar
          label="Memory"
          value={mem}
          max={cap?.memoryBytes ?? 0}
          text={`${bytes(mem)} of ${bytes(cap?.memoryBytes ?? 0)}`}
        />
        <p class="muted">
          {use.runningVms} running of {props.vms.length} VMs · {h.address}
        </p>
        <p class="heartbeat">last heartbeat {heartbeat ? time(heartbeat) : 'not yet'}</p>
        <VmChips vms={props.vms} />
      </article>
    );
  },
  (a, b) => a.host === b.host && a.live === b.live && sameLooks(a.vms, b.vms),
);

/** A card's VMs; drawn again only when one of them looks different (not for the host's CPU). */
const VmChips = memo(
  function VmChips(props: { vms: Vm[] }) {
    return (
      <ul class="chips" aria-label="VMs">
        {props.vms.map((vm) => (
          <VmChip key={vm.id} vm={vm} />
        ))}
      </ul>
    );
  },
  (a, b) => sameLooks(a.vms, b.vms),
);

/** One VM; re-rendered only when what it shows of that VM changed (a card holds up to 192). */
const VmChip = memo(
  function VmChip(props: { vm: Vm }) {
    const vm = props.vm;
    return (
      <li>
        <a
          href={`#/vm/${encodeURIComponent(vm.id)}`}
          class={`chip state-${(vm.status?.state ?? '').toLowerCase().replace('vm_state_', '').replace(/_/g, '-')}`}
          title={`${name(vm)}: ${vmState(vm.status?.state)}`}
          data-vm={name(vm)}
        >
          {name(vm)}
        </a>
      </li>
    );
  },
  (a, b) => sameLook(a.vm, b.vm),
);
