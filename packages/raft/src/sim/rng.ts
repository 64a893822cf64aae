import type { Rng } from '../types.js';

/**
 * A small seeded generator (mulberry32 on a splitmix-scrambled seed): the same seed always gives
 * the same run, which is what lets a failing simulation seed be replayed.
 */
export class SimRng implements Rng {
  private s: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new Error(`seed: must be a safe integer, got ${seed}`);
    // Scramble so that neighbouring seeds give unrelated streams.
    let z = (seed ^ 0x9e3779b9) >>> 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16) ^ Math.floor(seed / 0x100000000)) >>> 0;
    this.s = z;
  }

  /** A uniform float in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    if (!(n > 0)) throw new Error(`n: must be positive, got ${n}`);
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick: no items to pick from');
    return items[this.int(items.length)]!;
  }

  /** An independent generator derived from this one, so adding a consumer elsewhere does not shift it. */
  fork(): SimRng {
    return new SimRng(this.int(0x7fffffff));
  }
}
