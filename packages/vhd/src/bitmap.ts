import { SECTOR_SIZE } from './constants.js';

/**
 * Per-block sector bitmaps. Bit order follows Virtual PC and Hyper-V: sector 0 of a
 * block is the most significant bit of byte 0. A set bit means "this sector's data
 * is in this file"; a clear one means "zero" (dynamic) or "ask the parent" (differencing).
 */

/** Bytes a block's bitmap occupies on disk: one bit per sector, padded to a whole sector. */
export function bitmapSizeFor(blockSize: number): number {
  const bytes = Math.ceil(blockSize / SECTOR_SIZE / 8);
  return Math.ceil(bytes / SECTOR_SIZE) * SECTOR_SIZE;
}

export function getBit(bitmap: Uint8Array, sector: number): boolean {
  return (((bitmap[sector >>> 3] as number) >>> (7 - (sector & 7))) & 1) === 1;
}

/** Sets bits [first, first+count); returns whether any bit changed. */
export function setBits(bitmap: Uint8Array, first: number, count: number): boolean {
  let changed = false;
  for (let s = first; s < first + count; s++) {
    const byte = s >>> 3;
    const mask = 0x80 >>> (s & 7);
    const old = bitmap[byte] as number;
    if ((old & mask) === 0) {
      bitmap[byte] = old | mask;
      changed = true;
    }
  }
  return changed;
}

/** Length of the run of equal bits starting at `first`, at most `limit`. */
export function runLength(bitmap: Uint8Array, first: number, limit: number): number {
  const value = getBit(bitmap, first);
  let n = 1;
  while (n < limit) {
    const s = first + n;
    // Skip whole bytes when they are uniform: 4096-sector blocks are scanned often.
    if ((s & 7) === 0 && n + 8 <= limit) {
      const byte = bitmap[s >>> 3] as number;
      if (byte === (value ? 0xff : 0)) {
        n += 8;
        continue;
      }
    }
    if (getBit(bitmap, s) !== value) break;
    n++;
  }
  return n;
}

export function anyBitSet(bitmap: Uint8Array, first: number, count: number): boolean {
  for (let s = first; s < first + count; s++) if (getBit(bitmap, s)) return true;
  return false;
}
