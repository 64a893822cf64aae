import { MemoryFileSystem, type VhdDisk, createVhd } from '../src/index.js';

/** A small deterministic generator (mulberry32) so failures replay from their seed. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `length` bytes that depend on `seed`, never all zero. */
export function pattern(length: number, seed: number): Buffer {
  const next = seeded(seed);
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = 1 + Math.floor(next() * 255);
  return b;
}

export const fixedClock = () => new Date('2026-01-02T03:04:05Z');

export function uid(n: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(n, 12);
  return b;
}

export function memfs(): MemoryFileSystem {
  return new MemoryFileSystem();
}

/** A new, open dynamic disk of exactly `size` bytes (no CHS rounding), in blocks of `blockSize`. */
export function createDynamic(
  fs: MemoryFileSystem,
  path: string,
  size: number,
  blockSize: number,
): Promise<VhdDisk> {
  return createVhd(path, { type: 'dynamic', size, exactSize: true, blockSize, provider: fs });
}

export const KiB = 1024;
export const MiB = 1024 * 1024;
