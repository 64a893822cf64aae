// Time for the network core: a queue of timers on a clock the caller moves. Nothing here reads a
// real clock; `runUntil` fires due timers in (time, order of arming), so a run is replayable.

import { Heap } from 'heap-js';

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
  private readonly heap = new Heap<Entry>((a, b) => a.at - b.at || a.seq - b.seq);
  private seq = 0;

  constructor(public nowMs = 0) {}

  at(timeMs: number, fn: () => void): Timer {
    const e: Entry = { at: Math.max(timeMs, this.nowMs), seq: this.seq++, fn, cancelled: false };
    this.heap.push(e);
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
    return this.heap.peek()?.at;
  }

  /** Fires every timer due by `toMs`, each at its own time, then leaves the clock at `toMs`. */
  runUntil(toMs: number, afterEach?: () => void): void {
    for (;;) {
      this.dropCancelled();
      const top = this.heap.peek();
      if (!top || top.at > toMs) break;
      this.heap.pop();
      if (top.at > this.nowMs) this.nowMs = top.at;
      top.fn();
      afterEach?.();
    }
    if (toMs > this.nowMs) this.nowMs = toMs;
  }

  private dropCancelled(): void {
    while (this.heap.peek()?.cancelled) this.heap.pop();
  }
}
