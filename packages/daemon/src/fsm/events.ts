import type { FarmEvent } from './model.js';

/**
 * The last `capacity` events, in revision order: what Watch resumes from. A ring would save the
 * occasional copy; an array that drops its head in chunks is simpler and as fast in practice.
 */
export class EventWindow {
  private events: FarmEvent[] = [];
  private head = 0;

  constructor(
    public capacity: number,
    /** The revision before the first event ever kept (0 for a new farm). */
    private floor = 0,
  ) {}

  push(event: FarmEvent): void {
    this.events.push(event);
    if (this.events.length - this.head > this.capacity) {
      this.floor = this.events[this.head]!.revision;
      this.head++;
      if (this.head >= 4096 && this.head * 2 >= this.events.length) {
        this.events = this.events.slice(this.head);
        this.head = 0;
      }
    }
  }

  /** The lowest `from_revision` Watch accepts: every event after it is still here. */
  get oldestResumable(): number {
    return this.floor;
  }

  get size(): number {
    return this.events.length - this.head;
  }

  /** Events with a revision above `revision`, oldest first; undefined if some were dropped. */
  after(revision: number): FarmEvent[] | undefined {
    if (revision < this.floor) return undefined;
    return this.events.slice(this.firstAbove(revision));
  }

  /** The kept event of exactly this revision. */
  at(revision: number): FarmEvent | undefined {
    const e = this.events[this.firstAbove(revision - 1)];
    return e?.revision === revision ? e : undefined;
  }

  /** The position of the first kept event above `revision` (binary search). */
  private firstAbove(revision: number): number {
    let lo = this.head;
    let hi = this.events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.events[mid]!.revision <= revision) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  all(): FarmEvent[] {
    return this.events.slice(this.head);
  }

  static from(capacity: number, floor: number, events: FarmEvent[]): EventWindow {
    const w = new EventWindow(capacity, floor);
    w.events = events;
    return w;
  }
}
