// Time for the network core: a queue of timers on a clock the caller moves. Nothing here reads a
// real clock; `runUntil` fires due timers in (time, order of arming), so a run is replayable.

export interface Timer {
  cancel(): void;
}

interface Entry {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

export class Scheduler {
  private heap: Entry[] = [];
  private seq = 0;

  constructor(public nowMs = 0) {}

  at(timeMs: number, fn: () => void): Timer {
    const e: Entry = { at: Math.max(timeMs, this.nowMs), seq: this.seq++, fn, cancelled: false };
    this.push(e);
    return {
      cancel: () => {
        e.cancelled = true;
      },
    };
  }

  after(delayMs: number, fn: () => void): Timer {
    return this.at(this.nowMs + delayMs, fn);
  }

  nextDeadline(): number | undefined {
    this.dropCancelled();
    return this.heap[0]?.at;
  }

  /** Fires every timer due by `toMs`, each at its own time, then leaves the clock at `toMs`. */
  runUntil(toMs: number, afterEach?: () => void): void {
    for (;;) {
      this.dropCancelled();
      const top = this.heap[0];
      if (!top || top.at > toMs) break;
      this.pop();
      if (top.at > this.nowMs) this.nowMs = top.at;
      top.fn();
      afterEach?.();
    }
    if (toMs > this.nowMs) this.nowMs = toMs;
  }

  private dropCancelled(): void {
    while (this.heap.length > 0 && this.heap[0]!.cancelled) this.pop();
  }

  private less(a: Entry, b: Entry): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(e: Entry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}
