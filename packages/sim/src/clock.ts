import type { Timers } from '@hyperfarm/daemon';

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
  private heap: Scheduled[] = [];
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
    this.push(ev);
    return ev;
  }

  get pending(): number {
    return this.heap.length;
  }

  /** The next callback due (its scope alive), with the clock moved to its time; undefined when none is left. */
  pop(): Scheduled | undefined {
    for (;;) {
      const ev = this.heap[0];
      if (!ev) return undefined;
      this.removeTop();
      if (ev.cancelled || ev.scope.dead) continue;
      // A paused process does nothing until it resumes: its callbacks wait, in their order.
      if (ev.scope.pausedUntil > ev.time) {
        ev.time = ev.scope.pausedUntil;
        ev.seq = this.seq++;
        this.push(ev);
        continue;
      }
      this.now = Math.max(this.now, ev.time);
      return ev;
    }
  }

  private push(ev: Scheduled): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private removeTop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && before(h[l]!, h[m]!)) m = l;
      if (r < h.length && before(h[r]!, h[m]!)) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}

const before = (a: Scheduled, b: Scheduled): boolean =>
  a.time < b.time || (a.time === b.time && a.seq < b.seq);

/**
 * The timers of one incarnation of a process (a daemon, a host agent). A crash kills the scope:
 * every timer it set is gone, as a killed process's are. A pause holds them until it ends.
 * It is the daemon's `Timers`, so the real controller runner and proposer run on it.
 */
export class Scope implements Timers {
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

  clear(handle: unknown): void {
    if (handle) (handle as Scheduled).cancelled = true;
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
