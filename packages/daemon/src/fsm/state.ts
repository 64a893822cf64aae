import { loadAdded, loadRemoved, usageChanged } from './capacity.js';
import type { CommandResult } from './command.js';
import { EventWindow } from './events.js';
import type {
  CheckpointRecord,
  GuestOs,
  HostRecord,
  MigrationRecord,
  NlbClusterRecord,
  OperationRecord,
  SwitchRecord,
  VmRecord,
} from './model.js';
import { DEFAULT_HA_SETTINGS, type HaSettings } from './settings.js';
import { SortedKeys } from './sorted-keys.js';

/** Limits that shape the state itself, so every replica must agree on them: part of the state. */
export interface FarmSettings {
  /** Events kept for Watch to resume from. */
  eventWindow: number;
  /** Request ids remembered, so a command committed twice changes the state once. */
  requestWindow: number;
  /** Finished operations kept for GetOperation (the unfinished ones are always kept). */
  doneOperationWindow: number;
}

export const DEFAULT_SETTINGS: FarmSettings = {
  eventWindow: 10_000,
  requestWindow: 50_000,
  doneOperationWindow: 10_000,
};

/**
 * The replicated farm state. The maps hold the truth; the indices below them are derived and
 * rebuilt on restore, so a snapshot carries only the truth.
 */
export interface FarmState {
  /** The revision of the last event: strictly increasing, one per change. */
  revision: number;
  settings: FarmSettings;
  /** The HA settings users change (UpdateFarmSettings). */
  ha: HaSettings;
  hosts: Map<string, HostRecord>;
  /** The guest catalog, as the hosts reported it (the latest registration wins). */
  guests: Map<string, GuestOs>;
  vms: Map<string, VmRecord>;
  checkpoints: Map<string, CheckpointRecord>;
  operations: Map<string, OperationRecord>;
  /** Migrations, running and finished (the finished ones beyond a window are forgotten). */
  migrations: Map<string, MigrationRecord>;
  /** Virtual switches, by id (fsm/network.ts). */
  switches: Map<string, SwitchRecord>;
  /** NLB clusters, by id (fsm/network.ts). */
  nlbClusters: Map<string, NlbClusterRecord>;
  events: EventWindow;
  /**
   * Request id to the result of its command, oldest first: as the command returned it (results
   * and the records in them are never changed in place), or encoded, as a snapshot restored it.
   */
  requests: Map<string, CommandResult | string>;
  /**
   * Where the oldest request id is, as a live iterator over `requests` (the ids before it are the
   * ones forgotten): `requests.keys().next()` walks past every entry the window deleted since the
   * map last compacted its table, tens of thousands once the window is full (29 s of the 245 s of
   * a 50,000-VM fill in the simulator, quadratic in the window). Derived: a new one per state.
   */
  oldestRequest: Iterator<string>;
  /** Each VM's failovers (their commands' times, oldest first), for the failover threshold. */
  failovers: Map<string, number[]>;

  // --- derived ---
  hostByName: Map<string, string>;
  vmByName: Map<string, string>;
  vmsByHost: Map<string, Set<string>>;
  /** VMs with no host yet, oldest first: what placement looks at. */
  unplaced: Set<string>;
  /** Every MAC a VM's configuration holds, to its VM. */
  macOwners: Map<string, string>;
  /** MAC block to the host that holds it. */
  macBlocks: Map<number, string>;
  /** Finished operations, oldest first: the ones dropped beyond the window. */
  doneOperations: IdQueue;
  /** Unfinished migrations by target host: the memory each reserves there. */
  incoming: Map<string, Set<string>>;
  /**
   * Unfinished migrations by source host: the source keeps the VM's room until the migration
   * ends, since it holds the VM (running, then frozen) until it is told the decision, and a
   * committed handover may still fall back to it.
   */
  outgoing: Map<string, Set<string>>;
  /**
   * Unfinished migrations by VM: a change of the VM marks both their hosts in the host journal,
   * since each host's load counts the VM (the target's from the request on, the source's until
   * the end), so the scheduler's kept table need not look at every host with a migration in
   * flight on every plan (17 s of a 50,000-VM fill in the simulator, with drains under way).
   */
  migrationsOfVm: Map<string, Set<string>>;
  /** Finished migrations, oldest first: the ones dropped beyond the window. */
  doneMigrations: IdQueue;
  /** Each VM's checkpoints, in the order of `checkpoints` (a VM's removal takes them all). */
  checkpointsByVm: Map<string, Set<string>>;
  /** Hosts whose record or committed load changed, for the scheduler's kept host table. */
  hostJournal: HostJournal;
  /**
   * The drain under way on each host, by its operation's id (host.drain answers the one under
   * way, so a host has one at most): drainOf looked through every operation, on every
   * migration's apply on every daemon.
   */
  drains: Map<string, string>;
  /**
   * Migrations under way (begun, not finished) per host, as source or target: each
   * `migration.start` apply and each run of the leader's migrations controller asks it of the
   * hosts of every pending migration, and counting a host's migrations (a drain queues all of
   * its VMs') was 6.3 s of a 50,000-VM fill in the simulator. A host with none has no entry.
   */
  activeMigrations: Map<string, number>;
  /**
   * The hosts that are not Up, in the order of `hosts` (the failover controller's order): it
   * looks for fenced Down hosts on every run, and a scan of every host was 3.3 s of a
   * 50,000-VM fill.
   */
  hostsNotUp: Set<string>;
  /**
   * Every VM's id, in order: a ListVms page reads its ids from here rather than looking at every
   * VM for the smallest ids after its token (a page cost the leader O(VMs), 1.6 ms at 10,000).
   */
  vmIds: SortedKeys;
}

/**
 * Ids oldest first, taken from the front. Array.prototype.shift copies the whole array when V8
 * cannot move its start in place, as it often could not in the simulator's heap: the windows of
 * finished operations (10,000 ids) spent 4 to 12 s of a 50,000-VM fill there. A head index, and
 * the taken ids dropped in chunks.
 */
export class IdQueue {
  private head = 0;

  constructor(private ids: string[] = []) {}

  get length(): number {
    return this.ids.length - this.head;
  }

  push(id: string): void {
    this.ids.push(id);
  }

  shift(): string | undefined {
    if (this.head >= this.ids.length) return undefined;
    const id = this.ids[this.head++];
    if (this.head >= 4096 && this.head * 2 >= this.ids.length) {
      this.ids = this.ids.slice(this.head);
      this.head = 0;
    }
    return id;
  }

  *[Symbol.iterator](): IterableIterator<string> {
    for (let i = this.head; i < this.ids.length; i++) yield this.ids[i]!;
  }
}

/**
 * The hosts whose record or the VMs and migrations they hold changed, in order, so a reader
 * that remembers where it read up to (`end`) learns which hosts to look at again instead of
 * comparing every host (the scheduler's kept table: a 1,000-host farm filling up plans one or
 * two VMs at a time). Only the latest `cap` to `2 * cap` marks are kept; a reader that fell
 * further behind is told so (`since` answers undefined) and checks every host.
 */
export class HostJournal {
  /** The position of `ids[0]` since the journal began. */
  private start = 0;
  private ids: string[] = [];

  constructor(private readonly cap = 4_096) {}

  /** The position after the last mark: what a reader remembers. */
  get end(): number {
    return this.start + this.ids.length;
  }

  mark(hostId: string): void {
    this.ids.push(hostId);
    if (this.ids.length >= 2 * this.cap) {
      this.start += this.ids.length - this.cap;
      this.ids = this.ids.slice(this.ids.length - this.cap);
    }
  }

  /** Everything may have changed (a restore): every reader checks every host. */
  forget(): void {
    this.start += this.ids.length + 1;
    this.ids = [];
  }

  /** The hosts marked since position `from` (repeats possible), or undefined if no longer kept. */
  since(from: number): readonly string[] | undefined {
    if (from < this.start || from > this.end) return undefined;
    return this.ids.slice(from - this.start);
  }
}

export function emptyState(settings: FarmSettings = DEFAULT_SETTINGS): FarmState {
  const requests = new Map<string, CommandResult | string>();
  return {
    revision: 0,
    settings: { ...settings },
    ha: DEFAULT_HA_SETTINGS,
    hosts: new Map(),
    guests: new Map(),
    vms: new Map(),
    checkpoints: new Map(),
    operations: new Map(),
    migrations: new Map(),
    switches: new Map(),
    nlbClusters: new Map(),
    events: new EventWindow(settings.eventWindow),
    requests,
    oldestRequest: requests.keys(),
    failovers: new Map(),
    hostByName: new Map(),
    vmByName: new Map(),
    vmsByHost: new Map(),
    unplaced: new Set(),
    macOwners: new Map(),
    macBlocks: new Map(),
    doneOperations: new IdQueue(),
    incoming: new Map(),
    outgoing: new Map(),
    migrationsOfVm: new Map(),
    doneMigrations: new IdQueue(),
    checkpointsByVm: new Map(),
    hostJournal: new HostJournal(),
    drains: new Map(),
    activeMigrations: new Map(),
    hostsNotUp: new Set(),
    vmIds: new SortedKeys(),
  };
}

// --- request ids ---

/** The result a request id's command (or create) got the first time it applied, if it did. */
export function firstResult(s: FarmState, rid: string): CommandResult | undefined {
  const first = s.requests.get(rid);
  return typeof first === 'string' ? (JSON.parse(first) as CommandResult) : first;
}

/**
 * Records a request id's result, forgetting the oldest beyond the window. Kept as it is, not
 * encoded: every command of the three daemons' apply paid a JSON encoding for a result that is
 * read again only if its request comes twice; a snapshot encodes what it carries.
 */
export function rememberResult(s: FarmState, rid: string, result: CommandResult): void {
  s.requests.set(rid, result);
  if (s.requests.size <= s.settings.requestWindow) return;
  // Only this deletes from `requests`, always the entry the iterator gives: so its next entry is
  // the oldest, and it cannot have run off the end while the map holds more than the window.
  s.requests.delete(s.oldestRequest.next().value as string);
}

// --- record updates that keep the indices right ---

export function putOperation(s: FarmState, next: OperationRecord): void {
  s.operations.set(next.id, next);
  indexDrain(s, next);
}

function indexDrain(s: FarmState, op: OperationRecord): void {
  if (op.params.kind !== 'host.drain') return;
  const hostId = op.params.hostId;
  if (!op.done) s.drains.set(hostId, op.id);
  else if (s.drains.get(hostId) === op.id) s.drains.delete(hostId);
}

export function putHost(s: FarmState, next: HostRecord): void {
  const prev = s.hosts.get(next.id);
  s.hostJournal.mark(next.id);
  if (prev && prev.name !== next.name) s.hostByName.delete(prev.name);
  s.hosts.set(next.id, next);
  s.hostByName.set(next.name, next.id);
  s.macBlocks.set(next.macBlock, next.id);
  if (!s.vmsByHost.has(next.id)) s.vmsByHost.set(next.id, new Set());
  indexNotUp(s, next);
}

function indexNotUp(s: FarmState, host: HostRecord): void {
  const notUp = s.hostsNotUp;
  if (host.state === 'HOST_STATE_UP') notUp.delete(host.id);
  else if (!notUp.has(host.id)) {
    notUp.add(host.id);
    // Put in its place in the order of `hosts` (a host that was Up comes back to the set last):
    // a walk of every host, only when one stops being Up.
    if (notUp.size > 1) {
      const ordered = [...s.hosts.keys()].filter((id) => notUp.has(id));
      notUp.clear();
      for (const id of ordered) notUp.add(id);
    }
  }
}

export function removeHost(s: FarmState, id: string): void {
  const prev = s.hosts.get(id);
  if (!prev) return;
  s.hostJournal.mark(id);
  s.hosts.delete(id);
  s.hostByName.delete(prev.name);
  s.macBlocks.delete(prev.macBlock);
  s.vmsByHost.delete(id);
  s.hostsNotUp.delete(id);
}

export function putVm(s: FarmState, next: VmRecord): void {
  const prev = s.vms.get(next.id);
  markMigrationHosts(s, next.id);
  // A VM still waiting for a host keeps its place in the placement queue.
  const same = prev !== undefined && sameCost(prev, next);
  if (prev) unindexVm(s, prev, prev.hostId === '' && next.hostId === '', same);
  else s.vmIds.add(next.id);
  s.vms.set(next.id, next);
  indexVm(s, next, same);
}

/**
 * The VM costs its host exactly what it did: the same host, the same configuration object, and
 * no anti-affinity class (a class lists its VMs in order, and taking one out and in again moves
 * it to the end, as a recount in the host's VM order would have it). Its host's kept load is then
 * left as it is, and the host not marked for the scheduler: most changes of a placed VM are its
 * reports and operations (a create's report copied the host's load twice, and had the leader's
 * scheduler weigh the host again, for nothing).
 */
function sameCost(prev: VmRecord, next: VmRecord): boolean {
  const c = next.config;
  return (
    prev.hostId !== '' &&
    prev.hostId === next.hostId &&
    prev.config === c &&
    !c.antiAffinityGroup &&
    (c.antiAffinityClassNames ?? []).length === 0
  );
}

export function removeVm(s: FarmState, id: string): void {
  const prev = s.vms.get(id);
  if (!prev) return;
  markMigrationHosts(s, id);
  unindexVm(s, prev);
  s.vms.delete(id);
  s.vmIds.delete(id);
}

function markMigrationHosts(s: FarmState, vmId: string): void {
  for (const id of s.migrationsOfVm.get(vmId) ?? []) {
    const m = s.migrations.get(id)!;
    s.hostJournal.mark(m.targetHostId);
    s.hostJournal.mark(m.sourceHostId);
  }
}

/** `sameCost`: the VM's host load is unchanged (see sameCost); it still moves to the end of the host's VMs. */
function indexVm(s: FarmState, vm: VmRecord, sameCost = false): void {
  s.vmByName.set(vm.config.name, vm.id);
  if (vm.hostId) {
    const ids = s.vmsByHost.get(vm.hostId);
    // The load is the same, but the usage a host's view shows follows the VM's observed state.
    if (sameCost) usageChanged(ids, vm, 1);
    else {
      s.hostJournal.mark(vm.hostId);
      loadAdded(ids, vm);
    }
    ids?.add(vm.id);
  } else s.unplaced.add(vm.id);
  for (const mac of macsOf(vm)) s.macOwners.set(mac, vm.id);
}

function unindexVm(s: FarmState, vm: VmRecord, stillUnplaced = false, sameCost = false): void {
  if (s.vmByName.get(vm.config.name) === vm.id) s.vmByName.delete(vm.config.name);
  if (vm.hostId) {
    const ids = s.vmsByHost.get(vm.hostId);
    if (sameCost) usageChanged(ids, vm, -1);
    else {
      s.hostJournal.mark(vm.hostId);
      loadRemoved(ids, vm);
    }
    ids?.delete(vm.id);
  } else if (!stillUnplaced) s.unplaced.delete(vm.id);
  for (const mac of macsOf(vm)) if (s.macOwners.get(mac) === vm.id) s.macOwners.delete(mac);
}

export function macsOf(vm: VmRecord): string[] {
  return vm.config.networkAdapters.map((n) => n.macAddress).filter((m) => m !== '');
}

/** Rebuilds every derived index from the maps (after a restore). */
export function reindex(s: FarmState): void {
  const steps = reindexSteps(s);
  while (!steps.next().done);
}

/** reindex, yielding every `every` VMs so a large farm's restore can be cut in slices. */
export function* reindexSteps(s: FarmState, every = 1_000): Generator<void> {
  s.hostJournal.forget();
  s.hostByName.clear();
  s.vmByName.clear();
  s.vmsByHost.clear();
  s.unplaced.clear();
  s.macOwners.clear();
  s.macBlocks.clear();
  s.hostsNotUp.clear();
  s.vmIds.clear();
  for (const h of s.hosts.values()) putHost(s, h);
  let n = 0;
  for (const vm of s.vms.values()) {
    indexVm(s, vm);
    s.vmIds.add(vm.id);
    if (++n % every === 0) yield;
  }
  s.drains.clear();
  for (const o of s.operations.values()) indexDrain(s, o);
  s.doneOperations = new IdQueue(
    [...s.operations.values()]
      .filter((o) => o.done)
      .sort((a, b) => a.revision - b.revision)
      .map((o) => o.id),
  );
  yield;
  s.incoming.clear();
  s.outgoing.clear();
  s.migrationsOfVm.clear();
  s.activeMigrations.clear();
  s.doneMigrations = new IdQueue();
  const migrations = [...s.migrations.values()].sort((a, b) => a.revision - b.revision);
  for (const m of migrations) {
    if (migrationFinal(m)) s.doneMigrations.push(m.id);
    else indexMigration(s, m);
    countActive(s, m, 1);
  }
  s.checkpointsByVm.clear();
  for (const c of s.checkpoints.values()) indexCheckpoint(s, c);
  s.hostJournal.forget();
}

export const migrationFinal = (m: MigrationRecord): boolean =>
  m.phase === 'MIGRATION_PHASE_COMPLETED' || m.phase === 'MIGRATION_PHASE_FAILED';

function indexMigration(s: FarmState, m: MigrationRecord): void {
  s.hostJournal.mark(m.targetHostId);
  s.hostJournal.mark(m.sourceHostId);
  let set = s.incoming.get(m.targetHostId);
  if (!set) s.incoming.set(m.targetHostId, (set = new Set()));
  set.add(m.id);
  let out = s.outgoing.get(m.sourceHostId);
  if (!out) s.outgoing.set(m.sourceHostId, (out = new Set()));
  out.add(m.id);
  let ofVm = s.migrationsOfVm.get(m.vmId);
  if (!ofVm) s.migrationsOfVm.set(m.vmId, (ofVm = new Set()));
  ofVm.add(m.id);
}

/** Stores a migration record, keeping the index of what each host has coming. */
export function putMigration(s: FarmState, next: MigrationRecord): void {
  const prev = s.migrations.get(next.id);
  if (prev) countActive(s, prev, -1);
  countActive(s, next, 1);
  s.migrations.set(next.id, next);
  if (migrationFinal(next)) {
    s.hostJournal.mark(next.targetHostId);
    s.hostJournal.mark(next.sourceHostId);
    // A host's set stays when it empties: the controllers walk these maps, and their order
    // (the order hosts first had a migration) is part of what replicas and replays agree on.
    s.incoming.get(next.targetHostId)?.delete(next.id);
    s.outgoing.get(next.sourceHostId)?.delete(next.id);
    const ofVm = s.migrationsOfVm.get(next.vmId);
    if (ofVm?.delete(next.id) && ofVm.size === 0) s.migrationsOfVm.delete(next.vmId);
  } else indexMigration(s, next);
}

/** Under way: begun and not finished (what `activeMigrations` counts). */
const underWay = (m: MigrationRecord): boolean => m.phase !== 'MIGRATION_PHASE_PENDING' && !migrationFinal(m);

function countActive(s: FarmState, m: MigrationRecord, by: 1 | -1): void {
  if (!underWay(m)) return;
  for (const h of [m.sourceHostId, m.targetHostId]) {
    const n = (s.activeMigrations.get(h) ?? 0) + by;
    if (n === 0) s.activeMigrations.delete(h);
    else s.activeMigrations.set(h, n);
  }
}

// --- checkpoints ---

export function putCheckpoint(s: FarmState, next: CheckpointRecord): void {
  const prev = s.checkpoints.get(next.id);
  s.checkpoints.set(next.id, next);
  if (!prev) indexCheckpoint(s, next);
  else if (prev.vmId !== next.vmId) {
    unindexCheckpoint(s, prev);
    // Kept where it was in `checkpoints`: the new VM's set is put in that order again.
    const ids = new Set<string>();
    for (const c of s.checkpoints.values()) if (c.vmId === next.vmId) ids.add(c.id);
    s.checkpointsByVm.set(next.vmId, ids);
  }
}

export function removeCheckpoint(s: FarmState, id: string): void {
  const prev = s.checkpoints.get(id);
  if (!prev) return;
  s.checkpoints.delete(id);
  unindexCheckpoint(s, prev);
}

/** A VM's checkpoints, in the order of `checkpoints`. */
export function checkpointsOf(s: FarmState, vmId: string): CheckpointRecord[] {
  return [...(s.checkpointsByVm.get(vmId) ?? [])].map((id) => s.checkpoints.get(id)!);
}

function indexCheckpoint(s: FarmState, c: CheckpointRecord): void {
  let ids = s.checkpointsByVm.get(c.vmId);
  if (!ids) s.checkpointsByVm.set(c.vmId, (ids = new Set()));
  ids.add(c.id);
}

function unindexCheckpoint(s: FarmState, c: CheckpointRecord): void {
  const ids = s.checkpointsByVm.get(c.vmId);
  if (ids?.delete(c.id) && ids.size === 0) s.checkpointsByVm.delete(c.vmId);
}

/** A VM by id, or by name when no VM has that id. */
export function findVm(s: FarmState, idOrName: string): VmRecord | undefined {
  const byId = s.vms.get(idOrName);
  if (byId) return byId;
  const id = s.vmByName.get(idOrName);
  return id === undefined ? undefined : s.vms.get(id);
}

export function vmsOnHost(s: FarmState, hostId: string): VmRecord[] {
  return [...(s.vmsByHost.get(hostId) ?? [])].map((id) => s.vms.get(id)!);
}
