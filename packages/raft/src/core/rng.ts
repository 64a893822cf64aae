import { type Rng } from '../types.js';

/**
 * A small seeded generator (mulberry32): fast, 32-bit state, good enough to spread election
 * timeouts and drive a simulator. The same seed always yields the same sequence, which is what
 * lets a failing simulation be replayed.
 */
export class SeededRng implements Rng {
  private state: number;

  constructor(seed: number) {
    if (!Number.isInteger(seed)) {
      throw new RangeError(`seed: must be an integer, got ${seed}`);
    }
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) {
      throw new RangeError(`n: must be a positive integer, got ${n}`);
    }
    return Math.floor(this.next() * n);
  }
}

export function seededRng(seed: number): SeededRng {
  return new SeededRng(seed);
}
