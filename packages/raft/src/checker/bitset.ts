/** A fixed-size set of small integers: which operations are linearized so far. */
export class Bitset {
  // 16-bit words, so that key() can turn them into one character each in a single native call.
  private readonly words: Uint16Array;

  constructor(size: number) {
    this.words = new Uint16Array(Math.max(1, Math.ceil(size / 16)));
  }

  set(i: number): void {
    this.words[i >>> 4]! |= 1 << (i & 15);
  }

  clear(i: number): void {
    this.words[i >>> 4]! &= ~(1 << (i & 15));
  }

  has(i: number): boolean {
    return (this.words[i >>> 4]! & (1 << (i & 15))) !== 0;
  }

  /** A string equal for equal sets (one character per 16 members), used as a memoization key. */
  key(): string {
    const CHUNK = 8192; // stay well under the engine's argument-count limit
    if (this.words.length <= CHUNK) return String.fromCharCode.apply(null, this.words as unknown as number[]);
    let s = '';
    for (let i = 0; i < this.words.length; i += CHUNK) {
      s += String.fromCharCode.apply(null, this.words.subarray(i, i + CHUNK) as unknown as number[]);
    }
    return s;
  }
}
