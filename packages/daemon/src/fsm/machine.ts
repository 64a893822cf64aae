import type { StateMachine } from '@hyperfarm/raft';
import { applyEntry, type AppliedEntry } from './apply.js';
import type { CommandResult } from './command.js';
import {
  decodeSnapshot,
  decodeSnapshotInSlices,
  encodeSnapshot,
  encodeSnapshotInSlices,
} from './snapshot.js';
import { emptyState, type FarmState } from './state.js';

export interface Applied extends AppliedEntry {
  /** The Raft index of the entry. */
  index: number;
}

/**
 * The farm state machine as RaftNode drives it, the way kv-state-machine.ts plugs the test store
 * in: apply in log order, snapshot, restore. Listeners hear every applied entry (Watch,
 * WaitOperation, the controllers) right after it is applied, before the proposer's promise
 * resolves.
 */
export class FarmStateMachine implements StateMachine {
  state: FarmState = emptyState();
  appliedIndex = 0;
  private readonly listeners = new Set<(applied: Applied) => void>();
  private readonly restoreListeners = new Set<() => void>();
  private appliedWaiters: { index: number; resolve(): void }[] = [];

  /**
   * Applies an entry and answers its results encoded, or, when no proposer here waits for them
   * (`awaited` false: a follower, or a leader replaying its log), an empty array: the results are
   * still built and remembered by request id alike, only not encoded. Absent, as awaited.
   */
  apply(data: Uint8Array, index: number, awaited = true): Uint8Array {
    const applied = { ...applyEntry(this.state, data), index };
    this.appliedIndex = index;
    for (const l of this.listeners) l(applied);
    this.releaseWaiters();
    return awaited ? encodeResults(applied.results) : NOT_AWAITED;
  }

  /** Resolves once the entry at `index` (or a snapshot past it) is applied here. */
  waitApplied(index: number): Promise<void> {
    if (this.appliedIndex >= index) return Promise.resolve();
    return new Promise((resolve) => this.appliedWaiters.push({ index, resolve }));
  }

  private releaseWaiters(): void {
    if (this.appliedWaiters.length === 0) return;
    const ready = this.appliedWaiters.filter((w) => w.index <= this.appliedIndex);
    this.appliedWaiters = this.appliedWaiters.filter((w) => w.index > this.appliedIndex);
    for (const w of ready) w.resolve();
  }

  constructor(
    private readonly opts: {
      /**
       * Given, snapshots are encoded and restored a slice at a time with this between slices
       * (the daemon yields to its event loop); absent, at once (the farm simulator, which must
       * replay exactly).
       */
      pause?: () => Promise<void>;
    } = {},
  ) {}

  snapshot(): Uint8Array | Promise<Uint8Array> {
    const pause = this.opts.pause;
    return pause ? encodeSnapshotInSlices(this.state, pause) : encodeSnapshot(this.state);
  }

  /**
   * Replaces the state (RaftNode does not say the snapshot's index: waiters below it are
   * released by the next entry applied, which always follows an installed snapshot). Decoded
   * in slices when paced: the old state serves reads until the new one replaces it whole.
   */
  restore(data: Uint8Array): void | Promise<void> {
    const pause = this.opts.pause;
    if (!pause) return this.replaceState(decodeSnapshot(data));
    return decodeSnapshotInSlices(data, pause).then((state) => this.replaceState(state));
  }

  private replaceState(state: FarmState): void {
    this.state = state;
    for (const l of this.restoreListeners) l();
  }

  onApplied(listener: (applied: Applied) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Called after the state was replaced by a snapshot (a follower far behind). */
  onRestored(listener: () => void): () => void {
    this.restoreListeners.add(listener);
    return () => this.restoreListeners.delete(listener);
  }
}

/** The answer to an entry nobody here waits for: RaftNode drops it unread. */
const NOT_AWAITED = new Uint8Array();

export const encodeResults = (results: CommandResult[]): Uint8Array =>
  new TextEncoder().encode(JSON.stringify(results));

export function decodeResults(data: Uint8Array): CommandResult[] {
  const parsed = JSON.parse(new TextDecoder().decode(data)) as unknown;
  if (!Array.isArray(parsed)) throw new Error('the command results are not a list');
  return parsed as CommandResult[];
}
