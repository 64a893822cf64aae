import { advance, nextDeadline } from './clock.js';
import { EngineCore } from './core.js';
import { Health } from './health.js';
import { hostUsage, memoryUsedBytes } from './host-resources.js';
import { Lease } from './lease.js';
import { Migrations } from './migration.js';
import type { CpuReport, Effect, EngineEvent, EngineOptions, VmRecord } from './model.js';
import { adopt, recover, takeChanges, type TurnedOff } from './persistence.js';
import { Power } from './power.js';
import { Snapshots } from './snapshots.js';
import { VCPUS_RUN } from './states.js';
import { Vms } from './vms.js';
import type { pb } from '@hyperfarm/api';

export {
  DEFAULT_TIMINGS,
  type CpuReport,
  type Effect,
  type EngineEvent,
  type EngineOptions,
  type Timings,
  type VmRecord,
} from './model.js';
export type { OutgoingMigration, IncomingMigration } from './migration.js';
export type { Capture } from './snapshots.js';
export type { PlannedUpdate, SnapshotFacts } from './vms.js';
export type { TurnedOff } from './persistence.js';

/**
 * The hypervisor engine of one host: a deterministic state machine. Time moves only through
 * `advance()`/`tick()`; randomness comes from the seed; what needs I/O (saves, restores, disk
 * writes, deletions) comes out of `takeEffects()` for the caller to carry out, with the
 * completions to report back. Its operations are grouped by what they do, each group in its own
 * module, where a reader follows one from start to end: `vms` (vms.ts), `power` (power.ts, with
 * saves and restores in save.ts), `migration` (migration.ts), `snapshots` (snapshots.ts),
 * `health` (health.ts) and `lease` (lease.ts).
 */
export class HypervisorEngine {
  private readonly core: EngineCore;
  readonly vms: Vms;
  readonly power: Power;
  readonly migration: Migrations;
  readonly snapshots: Snapshots;
  readonly health: Health;
  readonly lease: Lease;

  constructor(readonly options: EngineOptions) {
    const core = (this.core = new EngineCore(options));
    this.vms = new Vms(core);
    this.power = new Power(core);
    this.migration = new Migrations(core);
    this.snapshots = new Snapshots(core);
    this.health = new Health(core);
    this.lease = new Lease(core);
  }

  now(): number {
    return this.core.nowMs;
  }

  tick(dtMs: number): void {
    advance(this.core, this.core.nowMs + dtMs);
  }

  /**
   * Moves the clock to `toMs`, firing every deadline on the way in time order (clock.ts). Steps
   * are at most MAX_STEP_MS long, so what a step itself sets off (a starved guest's heartbeat
   * timer) is noticed within one step.
   */
  advance(toMs: number): void {
    advance(this.core, toMs);
  }

  /**
   * The next time a deadline fires (a transition's end, a heartbeat given up, the lease's
   * expiry), if any. With no guest running (`guestsRun`), advancing the engine to any time
   * before it changes nothing: what its caller's timer needs to wait for.
   */
  nextDeadline(): number | undefined {
    return nextDeadline(this.core);
  }

  /**
   * Whether some VM's virtual processors run (VCPUS_RUN): its guest works at every step (CPU
   * shares, dirtied pages, disk writes, its responsiveness), so the engine is advanced often.
   */
  guestsRun(): boolean {
    for (const vm of this.core.vms.values()) if (VCPUS_RUN.has(vm.state)) return true;
    return false;
  }

  /**
   * A lazy engine (EngineOptions.lazyGuests) works out what every guest did up to now, issuing
   * the disk writes it owes: for a caller whose storage just failed or filled, so the guests meet
   * it. A stepping engine has nothing owed.
   */
  settleGuests(): void {
    this.core.settleGuests();
  }

  cpuReport(): CpuReport {
    return this.core.lastCpu;
  }

  usage(): pb.HostUsage__Output {
    return hostUsage(this.core);
  }

  /** The host's dynamic MAC range. */
  macRange(): { start: string; size: number } {
    return this.core.macs.range;
  }

  /** Takes the MAC range the farm gave this host at registration. */
  adoptMacRange(start: string, size: number): void {
    const inUse = [...this.core.vms.values()].flatMap((vm) =>
      vm.config.networkAdapters.map((n) => n.macAddress),
    );
    this.core.macs.moveTo(
      start,
      size,
      inUse.filter((m) => m !== ''),
    );
  }

  memoryUsedBytes(): number {
    return memoryUsedBytes(this.core);
  }

  /**
   * Whether the caller has anything to take: effects, events, or changed or deleted records. A
   * caller that pumps the engine before and after every call (the simulated hosts) skips the
   * rest of a pump when there is nothing: most calls, such as a lease grant, leave nothing.
   */
  hasOutput(): boolean {
    const c = this.core;
    return c.effects.length > 0 || c.events.length > 0 || c.changed.size > 0 || c.deleted.size > 0;
  }

  takeEffects(): Effect[] {
    const e = this.core.effects;
    this.core.effects = [];
    return e;
  }

  takeEvents(): EngineEvent[] {
    const e = this.core.events;
    this.core.events = [];
    return e;
  }

  /** Records changed and ids deleted since the last call, for the caller to persist. */
  takeChanges(): { readonly records: readonly VmRecord[]; readonly deleted: readonly string[] } {
    return takeChanges(this.core);
  }

  /**
   * Loads a VM persisted by an earlier run. A VM that was Saved stays Saved (if its file is
   * there); anything that had a partition comes back Off, as after a host crash: then it says so.
   */
  recover(record: VmRecord, savedStatePresent: boolean): TurnedOff | undefined {
    return recover(this.core, record, savedStatePresent);
  }

  /** Takes in a VM another host left on cluster storage (see persistence.ts, adopt). */
  adopt(record: VmRecord, savedStatePresent: boolean, message: string): pb.Vm__Output {
    return this.core.view(adopt(this.core, record, savedStatePresent, message));
  }

  /** A sequence number for an event raised outside the engine (snapshot merges). */
  nextEventSequence(): number {
    return this.core.nextEventSequence();
  }
}
