import { MEMORY_ASSIGNED } from '../../api/src/vm-states.js';
import type { Checkpoint, FarmEvent, Host, Migration, Operation, Vm, VmStateName } from './wire.js';

/**
 * The farm as the console knows it: built only from the Watch stream, one event at a time, so
 * every view shows the same revision. Plain data and pure functions: no DOM, no socket.
 */

export const TIMELINE_LIMIT = 2_000;
/** The state changes kept per VM in a small farm. */
export const HISTORY_LIMIT = 50;
/**
 * The state changes kept for all VMs together: in a larger farm each VM keeps fewer (10 each for
 * 1,000 VMs, never fewer than HISTORY_MIN), so a page left open holds a bounded history however
 * large the farm and however long its churn (bench:console: 26,584 entries after 10 minutes at
 * 1,000 VMs with the per-VM bound alone, the heap's growth).
 */
export const HISTORY_BUDGET = 10_000;
export const HISTORY_MIN = 5;

/** How many state changes each VM keeps when the page knows `vms` VMs. */
export const historyLimit = (vms: number): number =>
  Math.max(HISTORY_MIN, Math.min(HISTORY_LIMIT, Math.floor(HISTORY_BUDGET / Math.max(1, vms))));
/**
 * Finished operations and migrations kept, beyond every one still running: the farm keeps them
 * longer than a page needs, and a page left open for days must not grow with them.
 */
export const FINISHED_KEPT = 500;

export interface TimelineEntry {
  revision: number;
  timeMs: number;
  kind: string;
  type: string;
  id: string;
  text: string;
}

export interface StateChange {
  timeMs: number;
  revision: number;
  state: VmStateName;
  hostId: string;
}

export interface FarmModel {
  /** The revision of the last event applied: where a Watch resumes. */
  revision: number;
  hosts: Map<string, Host>;
  vms: Map<string, Vm>;
  checkpoints: Map<string, Checkpoint>;
  migrations: Map<string, Migration>;
  operations: Map<string, Operation>;
  /** Other resources (switches, NLB clusters), by kind then id. */
  others: Map<string, Map<string, unknown>>;
  /** The newest events, oldest first, at most TIMELINE_LIMIT. */
  timeline: TimelineEntry[];
  /** Each VM's observed states as events showed them, oldest first. */
  history: Map<string, StateChange[]>;
  /** What each VM's history is cut to now (historyLimit of the VMs known). */
  historyKept: number;
  /** Grows when a VM appears, goes, is renamed or changes host: when vmsByHost must sort again. */
  placement: number;
  /** VMs Running now, kept as events come: the Farm view's summary, without a pass over them all. */
  running: number;
  /**
   * Finished operations and migrations held now, kept as events come: trimming to FINISHED_KEPT
   * no longer counts them on every event (a pass over 500 entries per operation event).
   */
  finished: { operations: number; migrations: number };
}

export function emptyModel(): FarmModel {
  return {
    revision: 0,
    hosts: new Map(),
    vms: new Map(),
    checkpoints: new Map(),
    migrations: new Map(),
    operations: new Map(),
    others: new Map(),
    timeline: [],
    history: new Map(),
    historyKept: HISTORY_LIMIT,
    placement: 0,
    running: 0,
    finished: { operations: 0, migrations: 0 },
  };
}

const RESOURCE_FIELD: Record<string, keyof FarmEvent> = {
  RESOURCE_KIND_HOST: 'host',
  RESOURCE_KIND_VM: 'vm',
  RESOURCE_KIND_CHECKPOINT: 'checkpoint',
  RESOURCE_KIND_MIGRATION: 'migration',
  RESOURCE_KIND_SWITCH: 'switch',
  RESOURCE_KIND_NLB_CLUSTER: 'nlbCluster',
  RESOURCE_KIND_OPERATION: 'operation',
};

/**
 * Applies one event. Revisions strictly grow, one per event: one at or below the model's was
 * applied already and changes nothing. Returns whether the model changed.
 */
export function applyEvent(m: FarmModel, e: FarmEvent): boolean {
  if (e.revision <= m.revision) return false;
  m.revision = Math.max(m.revision, e.revision);
  const field = RESOURCE_FIELD[e.kind];
  const resource = field ? e[field] : undefined;
  const put = e.type === 'EVENT_TYPE_PUT';
  const store = <T>(map: Map<string, T>) => (put ? map.set(e.id, resource as T) : map.delete(e.id));
  switch (e.kind) {
    case 'RESOURCE_KIND_HOST':
      store(m.hosts);
      break;
    case 'RESOURCE_KIND_VM': {
      const before = m.vms.get(e.id);
      const after = put ? (resource as Vm) : undefined;
      if (!put || !before || name(before) !== name(after!) || before.status?.hostId !== after!.status?.hostId)
        m.placement++;
      m.running += (isRunning(after) ? 1 : 0) - (isRunning(before) ? 1 : 0);
      store(m.vms);
      if (put) recordState(m, e, resource as Vm);
      else m.history.delete(e.id);
      break;
    }
    case 'RESOURCE_KIND_CHECKPOINT':
      store(m.checkpoints);
      break;
    case 'RESOURCE_KIND_MIGRATION':
      m.finished.migrations = replaceLast(m.migrations, e.id, put ? (resource as Migration) : undefined, {
        finished: migrationEnded,
        count: m.finished.migrations,
      });
      break;
    case 'RESOURCE_KIND_OPERATION':
      m.finished.operations = replaceLast(m.operations, e.id, put ? (resource as Operation) : undefined, {
        finished: (o) => o.done,
        count: m.finished.operations,
      });
      break;
    default: {
      let map = m.others.get(e.kind);
      if (!map) m.others.set(e.kind, (map = new Map()));
      store(map);
    }
  }
  m.timeline.push({
    revision: e.revision,
    timeMs: e.timeMs,
    kind: e.kind,
    type: e.type,
    id: e.id,
    text: describeEvent(m, e),
  });
  if (m.timeline.length > TIMELINE_LIMIT) m.timeline.splice(0, m.timeline.length - TIMELINE_LIMIT);
  return true;
}

const isRunning = (vm: Vm | undefined) => vm?.status?.state === 'VM_STATE_RUNNING';

const migrationEnded = (g: Migration) =>
  g.phase === 'MIGRATION_PHASE_COMPLETED' || g.phase === 'MIGRATION_PHASE_FAILED';

/**
 * Puts (or, with `value` undefined, deletes) an entry and moves it last, so the Map's order is
 * the order of last change; then drops the finished entries changed longest ago until at most
 * FINISHED_KEPT finished ones remain (running ones are never dropped). `count` is how many
 * finished entries the map held before; returns how many it holds now.
 */
function replaceLast<T>(
  map: Map<string, T>,
  id: string,
  value: T | undefined,
  done: { finished: (t: T) => boolean; count: number },
): number {
  const before = map.get(id);
  let count = done.count - (before !== undefined && done.finished(before) ? 1 : 0);
  map.delete(id);
  if (value !== undefined) {
    map.set(id, value);
    if (done.finished(value)) count++;
  }
  if (count <= FINISHED_KEPT) return count;
  for (const [key, v] of map) {
    if (count <= FINISHED_KEPT) break;
    if (done.finished(v)) {
      map.delete(key);
      count--;
    }
  }
  return count;
}

function recordState(m: FarmModel, e: FarmEvent, vm: Vm): void {
  const limit = historyLimit(m.vms.size);
  // More VMs: every history is cut at once, so the total stays within the budget.
  if (limit < m.historyKept)
    for (const list of m.history.values()) if (list.length > limit) list.splice(0, list.length - limit);
  m.historyKept = limit;
  const list = m.history.get(vm.id) ?? [];
  const state = vm.status?.state ?? 'VM_STATE_UNSPECIFIED';
  const hostId = vm.status?.hostId ?? '';
  const last = list[list.length - 1];
  if (last && last.state === state && last.hostId === hostId) return;
  list.push({ timeMs: e.timeMs, revision: e.revision, state, hostId });
  if (list.length > limit) list.splice(0, list.length - limit);
  m.history.set(vm.id, list);
}

/** Enum names as a person reads them: VM_STATE_RUNNING_CRITICAL -> "Running critical". */
export function enumWords(value: string | undefined, prefix: string): string {
  if (!value) return '';
  const words = value.startsWith(prefix) ? value.slice(prefix.length) : value;
  const text = words.toLowerCase().replace(/_/g, ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export const vmState = (s: string | undefined) => enumWords(s, 'VM_STATE_');
export const hostState = (h: Host) => (h.maintenance ? 'Maintenance' : enumWords(h.state, 'HOST_STATE_'));
export const migrationPhase = (p: string | undefined) => enumWords(p, 'MIGRATION_PHASE_');

/** One line saying what an event changed, for the timeline. */
export function describeEvent(m: FarmModel, e: FarmEvent): string {
  const gone = e.type === 'EVENT_TYPE_DELETE';
  switch (e.kind) {
    case 'RESOURCE_KIND_HOST': {
      const h = e.host!;
      return gone ? `host ${h.name || h.id} removed` : `host ${h.name || h.id}: ${hostState(h)}`;
    }
    case 'RESOURCE_KIND_VM': {
      const v = e.vm!;
      const name = v.config?.name ?? v.id;
      if (gone) return `VM ${name} deleted`;
      const where = v.status?.hostId ? ` on ${v.status.hostId}` : ' (not placed)';
      return `VM ${name}: ${vmState(v.status?.state)}${where}`;
    }
    case 'RESOURCE_KIND_CHECKPOINT': {
      const c = e.checkpoint!;
      const vm = m.vms.get(c.vmId)?.config?.name ?? c.vmId;
      return gone ? `checkpoint ${c.name} of ${vm} deleted` : `checkpoint ${c.name} of ${vm}`;
    }
    case 'RESOURCE_KIND_MIGRATION': {
      const g = e.migration!;
      const vm = m.vms.get(g.vmId)?.config?.name ?? g.vmId;
      return `migration of ${vm} ${g.sourceHostId} → ${g.targetHostId || '?'}: ${migrationPhase(g.phase)} ${Math.round(g.progressPercent)}%`;
    }
    case 'RESOURCE_KIND_OPERATION': {
      const o = e.operation!;
      const outcome = o.done
        ? o.error
          ? `failed: ${o.error.message}`
          : 'done'
        : `${Math.round(o.progressPercent)}%`;
      return `${o.kind} ${o.targetId}: ${outcome}${o.message && !o.done ? ` (${o.message})` : ''}`;
    }
    default:
      return `${enumWords(e.kind, 'RESOURCE_KIND_')} ${e.id} ${gone ? 'deleted' : 'changed'}`;
  }
}

/**
 * Names in the order a person expects ("web-2" before "web-10"). One collator for the page:
 * String.localeCompare builds one per call, which made sorting 1,000 VMs cost a frame.
 */
const collator = new Intl.Collator(undefined, { numeric: true });
export const byText = (a: string, b: string): number => collator.compare(a, b);

const sorted = new WeakMap<FarmModel, { placement: number; ids: Map<string, string[]> }>();

/**
 * VMs by the host they are on ('' for those not placed), each list sorted by name. Sorting is
 * redone only when placement changed; otherwise the last order is filled with the VMs as they
 * are now (most events change a VM's state, not where it is or its name).
 */
export function vmsByHost(m: FarmModel): Map<string, Vm[]> {
  const cached = sorted.get(m);
  if (cached && cached.placement === m.placement) {
    const out = new Map<string, Vm[]>();
    for (const [host, ids] of cached.ids)
      out.set(
        host,
        ids.map((id) => m.vms.get(id)!),
      );
    return out;
  }
  const out = sortVmsByHost(m);
  sorted.set(m, {
    placement: m.placement,
    ids: new Map([...out].map(([h, vms]) => [h, vms.map((v) => v.id)])),
  });
  return out;
}

function sortVmsByHost(m: FarmModel): Map<string, Vm[]> {
  const out = new Map<string, Vm[]>();
  for (const vm of m.vms.values()) {
    const host = vm.status?.hostId ?? '';
    let list = out.get(host);
    if (!list) out.set(host, (list = []));
    list.push(vm);
  }
  for (const list of out.values()) list.sort((a, b) => byText(name(a), name(b)));
  return out;
}

export const name = (vm: Vm) => vm.config?.name ?? vm.id;

/**
 * Whether the Farm view draws two versions of a VM alike: its chip (name, state) and its share
 * of its host's card (memory while it holds memory). Most events change what the view does not
 * show (a label, a checkpoint's parent), and drawing a card again for those, its up to 192 chips
 * included, was most of the page's script per frame (docs/benchmarks.md, Web console).
 */
export const sameLook = (a: Vm, b: Vm): boolean =>
  a === b ||
  (a.id === b.id &&
    name(a) === name(b) &&
    a.status?.state === b.status?.state &&
    Number(a.config?.memoryBytes ?? 0) === Number(b.config?.memoryBytes ?? 0));

/** Whether a host's card looks the same with these VMs: the same ones, in order, each drawn alike. */
export const sameLooks = (a: readonly Vm[], b: readonly Vm[]): boolean =>
  a.length === b.length && a.every((v, i) => sameLook(v, b[i]!));

export interface HostUse {
  memoryUsedBytes: number;
  runningVms: number;
}

/**
 * What a host's VMs use, from the VMs as the stream shows them now. A host's own record (its
 * `usage`) is only sent again when the host itself changes, not when a VM on it starts or stops,
 * so the page counts for itself, by the daemon's rule (HostUsage in common.proto): each VM with
 * memory assigned (every state but Off and Saved) costs its memory plus the host's per-VM overhead.
 */
export function hostUse(host: Host, vms: readonly Vm[]): HostUse {
  const overhead = Number(host.capacity?.perVmOverheadBytes ?? 0);
  let memoryUsedBytes = 0;
  let runningVms = 0;
  for (const vm of vms) {
    const state = vm.status?.state;
    if (!state || !MEMORY_ASSIGNED.has(state)) continue;
    runningVms++;
    memoryUsedBytes += Number(vm.config?.memoryBytes ?? 0) + overhead;
  }
  return { memoryUsedBytes, runningVms };
}
