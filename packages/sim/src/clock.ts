import type { Timers } from '@hyperfarm/daemon';
import type { NodeTimers } from '@hyperfarm/raft';
import { Heap } from 'heap-js';

/** One thing to do at a virtual time, for an owner (a process) that may die or pause. */
export interface Scheduled {
  time: number;
  seq: number;
  fn: () => void;
  scope: Scope;
  cancelled: boolean;
}

/**
 * The virtual clock: a queue of callbacks by (time, order of scheduling). Nothing in the
 * simulator reads the real clock or sets a real timer, so the same seed replays the same run.
 */
export class VirtualClock {
  /** The state machine wants Unix ms: a run starts at a fixed instant (2027-01-15), the same every time. */
  static readonly EPOCH = 1_800_000_000_000;
  now = VirtualClock.EPOCH;
  private readonly heap = new Heap<Scheduled>(byTimeThenOrder);
  private seq = 0;
  /** The scope of the simulator itself (faults, workload, checks): it never dies. */
  readonly root: Scope;

  constructor() {
    this.root = new Scope(this, 'sim');
  }

  schedule(scope: Scope, delayMs: number, fn: () => void): Scheduled {
    const ev: Scheduled = {
      // Whole milliseconds, as the real clock reads (commands carry their time as an integer).
      time: this.now + Math.max(0, Math.ceil(delayMs)),
      seq: this.seq++,
      fn,
      scope,
      cancelled: false,
    };
    this.heap.push(ev);
    return ev;
  }

  get pending(): number {
    return this.heap.length;
  }

  /** The next callback due (its scope alive), with the clock moved to its time; undefined when none is left. */
  pop(): Scheduled | undefined {
    for (;;) {
      const ev = this.heap.pop();
      if (!ev) return undefined;
      if (ev.cancelled || ev.scope.dead) continue;
      // A paused process does nothing until it resumes: its callbacks wait, in their order.
      if (ev.scope.pausedUntil > ev.time) {
        ev.time = ev.scope.pausedUntil;
        ev.seq = this.seq++;
        this.heap.push(ev);
        continue;
      }
      this.now = Math.max(this.now, ev.time);
      return ev;
    }
  }

  /** The next callback due at `time` at the latest (its scope alive), or undefined. */
  popBy(time: number): Scheduled | undefined {
    for (;;) {
      const top = this.heap.peek();
      if (!top || top.time > time) return undefined;
      const ev = this.pop();
      if (ev && ev.time <= time) return ev;
      if (ev) {
        // Paused past `time`: back in the queue, in its place.
        this.heap.push(ev);
        return undefined;
      }
    }
  }
}

const byTimeThenOrder = (a: Scheduled, b: Scheduled): number => a.time - b.time || a.seq - b.seq;

/**
 * The timers of one incarnation of a process (a daemon, a host agent). A crash kills the scope:
 * every timer it set is gone, as a killed process's are. A pause holds them until it ends.
 * It is the daemon's `Timers` and the Raft node's `NodeTimers`, so the real controller runner,
 * proposer and RaftNode run on it.
 */
export class Scope implements Timers, NodeTimers {
  dead = false;
  pausedUntil = 0;

  constructor(
    readonly clock: VirtualClock,
    readonly name: string,
  ) {}

  now(): number {
    return this.clock.now;
  }

  set(fn: () => void, ms: number): Scheduled {
    return this.clock.schedule(this, ms, fn);
  }

  /** Both a Scheduled and every()'s handle have `cancelled`. */
  clear(handle: unknown): void {
    if (handle) (handle as { cancelled: boolean }).cancelled = true;
  }

  every(fn: () => void, ms: number): { cancelled: boolean } {
    const handle = { cancelled: false };
    const loop = () => {
      if (handle.cancelled) return;
      fn();
      this.set(loop, ms);
    };
    this.set(loop, ms);
    return handle;
  }

  /** Later at this same virtual time, after what is already due: setImmediate's place. */
  yield(): Promise<void> {
    return new Promise((resolve) => this.set(resolve, 0));
  }

  private readonly deathWatch = new Set<() => void>();

  /** Runs `fn` when this process dies (connections to it reset); returns the undo. */
  onKill(fn: () => void): () => void {
    this.deathWatch.add(fn);
    return () => this.deathWatch.delete(fn);
  }

  kill(): void {
    this.dead = true;
    const watchers = [...this.deathWatch];
    this.deathWatch.clear();
    for (const fn of watchers) fn();
  }
}
