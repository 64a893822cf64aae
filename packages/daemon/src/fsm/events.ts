import type { FarmEvent } from './model.js';

type Resource = FarmEvent['resource'];

/**
 * The last `capacity` events, in revision order: what Watch resumes from. A ring would save the
 * occasional copy; arrays that drop their head in chunks are simpler and as fast in practice.
 *
 * Kept as columns (revision, time, type and kind as one small number, the resource), not as the
 * event objects: every change's event outlived the young generation only to sit in this window,
 * so each was copied by the collector on its way to the old generation, on every replica (a
 * large share of the apply's collection work). The resource is the record itself, shared with
 * the state while it is current, as before; records are never changed in place. An event read
 * back is built again, equal to the one pushed.
 */
export class EventWindow {
  private revisions: number[] = [];
  private times: number[] = [];
  /** The kind's code times two, plus one for a delete. */
  private codes: number[] = [];
  private resources: Resource[] = [];
  private head = 0;

  constructor(
    public capacity: number,
    /** The revision before the first event ever kept (0 for a new farm). */
    private floor = 0,
  ) {}

  push(event: FarmEvent): void {
    this.revisions.push(event.revision);
    this.times.push(event.timeMs);
    this.codes.push(kindCode(event.kind) * 2 + (event.type === 'EVENT_TYPE_DELETE' ? 1 : 0));
    this.resources.push(event.resource);
    if (this.revisions.length - this.head > this.capacity) {
      this.floor = this.revisions[this.head]!;
      // Not kept alive by the dropped part of the array until the next copy.
      this.resources[this.head] = undefined as unknown as Resource;
      this.head++;
      if (this.head >= 4096 && this.head * 2 >= this.revisions.length) {
        this.revisions = this.revisions.slice(this.head);
        this.times = this.times.slice(this.head);
        this.codes = this.codes.slice(this.head);
        this.resources = this.resources.slice(this.head);
        this.head = 0;
      }
    }
  }

  /** The lowest `from_revision` Watch accepts: every event after it is still here. */
  get oldestResumable(): number {
    return this.floor;
  }

  get size(): number {
    return this.revisions.length - this.head;
  }

  /** Events with a revision above `revision`, oldest first; undefined if some were dropped. */
  after(revision: number): FarmEvent[] | undefined {
    if (revision < this.floor) return undefined;
    return this.slice(this.firstAbove(revision));
  }

  /** The kept event of exactly this revision. */
  at(revision: number): FarmEvent | undefined {
    const i = this.firstAbove(revision - 1);
    return i < this.revisions.length && this.revisions[i] === revision ? this.event(i) : undefined;
  }

  /** The position of the first kept event above `revision` (binary search). */
  private firstAbove(revision: number): number {
    let lo = this.head;
    let hi = this.revisions.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.revisions[mid]! <= revision) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The event at position `i`, with the keys in the order Changes gives them. */
  private event(i: number): FarmEvent {
    const code = this.codes[i]!;
    const resource = this.resources[i]!;
    return {
      revision: this.revisions[i]!,
      type: code & 1 ? 'EVENT_TYPE_DELETE' : 'EVENT_TYPE_PUT',
      kind: KINDS[code >> 1]!,
      id: resource.id,
      timeMs: this.times[i]!,
      resource,
    } as FarmEvent;
  }

  private slice(from: number): FarmEvent[] {
    const out: FarmEvent[] = [];
    for (let i = from; i < this.revisions.length; i++) out.push(this.event(i));
    return out;
  }

  all(): FarmEvent[] {
    return this.slice(this.head);
  }

  static from(capacity: number, floor: number, events: FarmEvent[]): EventWindow {
    const w = new EventWindow(capacity, floor);
    for (const e of events) {
      w.revisions.push(e.revision);
      w.times.push(e.timeMs);
      w.codes.push(kindCode(e.kind) * 2 + (e.type === 'EVENT_TYPE_DELETE' ? 1 : 0));
      w.resources.push(e.resource);
    }
    return w;
  }
}

/** Kind names by code, in the order first seen (the codes never leave this process). */
const KINDS: FarmEvent['kind'][] = [];
const CODES = new Map<string, number>();

function kindCode(kind: FarmEvent['kind']): number {
  let code = CODES.get(kind);
  if (code === undefined) {
    code = KINDS.push(kind) - 1;
    CODES.set(kind, code);
  }
  return code;
}
