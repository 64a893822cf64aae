/**
 * Seeded randomness for the engine. The engine never calls Math.random: every choice (which page
 * a guest dirties, which disk block it writes) comes from one of these, so a run with seed N is
 * replayed exactly with seed N.
 */
export interface Rng {
  /** A uniform 32-bit unsigned integer. */
  nextU32(): number;
  /** A uniform integer in [0, n). */
  below(n: number): number;
}

/** mulberry32: tiny, fast and good enough for a simulation (not for cryptography). */
export function seededRng(seed: number): Rng {
  let s = seed >>> 0;
  const nextU32 = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return {
    nextU32,
    below: (n) => (n <= 1 ? 0 : Math.floor((nextU32() / 0x1_0000_0000) * n)),
  };
}

/** FNV-1a over a string: a stable 32-bit seed from an id. */
export function hashString32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
