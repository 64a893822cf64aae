import type {
  CheckpointRecord,
  FarmEvent,
  HostRecord,
  MigrationRecord,
  NlbClusterRecord,
  OperationRecord,
  ResourceKindName,
  SwitchRecord,
  VmRecord,
} from './model.js';
import {
  checkpointsOf,
  migrationFinal,
  putCheckpoint,
  putHost,
  putMigration,
  putOperation,
  putVm,
  removeCheckpoint,
  removeHost,
  removeVm,
  type FarmState,
} from './state.js';

type Unrevised<R> = Omit<R, 'revision'>;

/**
 * The record a change was given, made the stored one: its revision (and an operation's time)
 * written into it. For vm, op and migration, whose every caller hands over an object it has just
 * built (a literal, a spread of the record it replaces, `reported`'s answer) and keeps no other
 * use of: copying it again was an object of a dozen fields per change, on every replica. The
 * keys come out in the order the copy gave them (an existing key keeps its place, revision is
 * added last when absent).
 */
function own<R>(next: Unrevised<R>, revision: number): R {
  (next as { revision?: number }).revision = revision;
  return next as R;
}

/**
 * Every change to the state goes through here: the record is stored with the next revision and
 * an event announces it. One command may make several changes; each gets its own revision, so
 * revisions stay strictly increasing and every record names the change that made it.
 */
export class Changes {
  constructor(
    private readonly s: FarmState,
    /** The command's time: when the proposer asked for it. */
    readonly timeMs: number,
    /** Where the events go, in order (the entry's list, shared by its commands). */
    readonly events: FarmEvent[] = [],
  ) {}

  host(next: Unrevised<HostRecord>): HostRecord {
    const rec = { ...next, revision: this.next() };
    putHost(this.s, rec);
    this.record('RESOURCE_KIND_HOST', 'EVENT_TYPE_PUT', rec);
    return rec;
  }

  removeHost(rec: HostRecord): void {
    removeHost(this.s, rec.id);
    this.next();
    this.record('RESOURCE_KIND_HOST', 'EVENT_TYPE_DELETE', rec);
  }

  /** Takes `next` over (see own): the caller must not keep it nor hand in a stored record. */
  vm(next: Unrevised<VmRecord>): VmRecord {
    const rec = own<VmRecord>(next, this.next());
    putVm(this.s, rec);
    this.record('RESOURCE_KIND_VM', 'EVENT_TYPE_PUT', rec);
    return rec;
  }

  removeVm(rec: VmRecord): void {
    removeVm(this.s, rec.id);
    this.s.failovers.delete(rec.id);
    for (const c of checkpointsOf(this.s, rec.id)) this.removeCheckpoint(c);
    this.next();
    this.record('RESOURCE_KIND_VM', 'EVENT_TYPE_DELETE', rec);
  }

  checkpoint(next: Unrevised<CheckpointRecord>): CheckpointRecord {
    const rec = { ...next, revision: this.next() };
    putCheckpoint(this.s, rec);
    this.record('RESOURCE_KIND_CHECKPOINT', 'EVENT_TYPE_PUT', rec);
    return rec;
  }

  removeCheckpoint(rec: CheckpointRecord): void {
    removeCheckpoint(this.s, rec.id);
    this.next();
    this.record('RESOURCE_KIND_CHECKPOINT', 'EVENT_TYPE_DELETE', rec);
  }

  switch(next: Unrevised<SwitchRecord>): SwitchRecord {
    const rec = { ...next, revision: this.next() };
    this.s.switches.set(rec.id, rec);
    this.record('RESOURCE_KIND_SWITCH', 'EVENT_TYPE_PUT', rec);
    return rec;
  }

  removeSwitch(rec: SwitchRecord): void {
    this.s.switches.delete(rec.id);
    this.next();
    this.record('RESOURCE_KIND_SWITCH', 'EVENT_TYPE_DELETE', rec);
  }

  nlbCluster(next: Unrevised<NlbClusterRecord>): NlbClusterRecord {
    const rec = { ...next, revision: this.next() };
    this.s.nlbClusters.set(rec.id, rec);
    this.record('RESOURCE_KIND_NLB_CLUSTER', 'EVENT_TYPE_PUT', rec);
    return rec;
  }

  removeNlbCluster(rec: NlbClusterRecord): void {
    this.s.nlbClusters.delete(rec.id);
    this.next();
    this.record('RESOURCE_KIND_NLB_CLUSTER', 'EVENT_TYPE_DELETE', rec);
  }

  /** Takes `next` over (see own), as vm does. */
  op(next: Unrevised<OperationRecord>): OperationRecord {
    const prev = this.s.operations.get(next.id);
    (next as { updatedAtMs: number }).updatedAtMs = this.timeMs;
    const rec = own<OperationRecord>(next, this.next());
    putOperation(this.s, rec);
    this.record('RESOURCE_KIND_OPERATION', 'EVENT_TYPE_PUT', rec);
    if (rec.done && !prev?.done) this.retire(rec.id);
    return rec;
  }

  /** Takes `next` over (see own), as vm does. */
  migration(next: Unrevised<MigrationRecord>): MigrationRecord {
    const prev = this.s.migrations.get(next.id);
    const rec = own<MigrationRecord>(next, this.next());
    putMigration(this.s, rec);
    this.record('RESOURCE_KIND_MIGRATION', 'EVENT_TYPE_PUT', rec);
    if (migrationFinal(rec) && !(prev && migrationFinal(prev))) {
      // Finished migrations share the operations' window.
      const done = this.s.doneMigrations;
      done.push(rec.id);
      while (done.length > this.s.settings.doneOperationWindow) {
        const old = this.s.migrations.get(done.shift()!);
        if (!old) continue;
        this.s.migrations.delete(old.id);
        this.next();
        this.record('RESOURCE_KIND_MIGRATION', 'EVENT_TYPE_DELETE', old);
      }
    }
    return rec;
  }

  /** Finished operations beyond the window are forgotten, oldest first. */
  private retire(id: string): void {
    const done = this.s.doneOperations;
    done.push(id);
    while (done.length > this.s.settings.doneOperationWindow) {
      const old = this.s.operations.get(done.shift()!);
      if (!old) continue;
      this.s.operations.delete(old.id);
      this.next();
      this.record('RESOURCE_KIND_OPERATION', 'EVENT_TYPE_DELETE', old);
    }
  }

  private next(): number {
    return ++this.s.revision;
  }

  private record(kind: ResourceKindName, type: FarmEvent['type'], resource: FarmEvent['resource']): void {
    const event = {
      revision: this.s.revision,
      type,
      kind,
      id: resource.id,
      timeMs: this.timeMs,
      resource,
    } as FarmEvent;
    this.s.events.push(event);
    this.events.push(event);
  }
}
