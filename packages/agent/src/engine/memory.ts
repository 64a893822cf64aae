import { createHash, hash, type Hash } from 'node:crypto';
import { hashString32 } from './rng.js';

export const PAGE_SIZE = 4096;
const WORDS_PER_PAGE = PAGE_SIZE / 4;

/** The first state of page `page`'s xorshift stream at `version`: the three inputs mixed, never 0. */
function streamSeed(vmSeed: number, page: number, version: number): number {
  let x = vmSeed ^ Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  return x === 0 ? 0x1234567 : x;
}

/** A 32-bit view of `out` from `offset`, which must be 4-byte aligned in its memory. */
function wordsOf(out: Buffer, offset: number, words: number): Int32Array {
  if ((out.byteOffset + offset) % 4 !== 0) throw new RangeError('page content must start 4-byte aligned');
  return new Int32Array(out.buffer, out.byteOffset + offset, words);
}

/**
 * Writes the content of page `page` at `version` of the VM seeded by `vmSeed` into `out` at
 * `offset`. Content is a pure function of those three numbers (an xorshift stream), so a saved
 * state or a migration stream carries real bytes that the receiver can check without trusting
 * the sender. Version 0 is the never-written zero page.
 */
export function fillPage(vmSeed: number, page: number, version: number, out: Buffer, offset = 0): void {
  const words = wordsOf(out, offset, WORDS_PER_PAGE);
  if (version === 0) {
    words.fill(0);
    return;
  }
  // Int32 arithmetic throughout: the same bits as unsigned, without leaving V8's small integers.
  let x = streamSeed(vmSeed, page, version);
  for (let i = 0; i < WORDS_PER_PAGE; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
}

/**
 * Writes the contents of `count` pages back to back into `out` from `offset` (4-byte aligned):
 * page `pages[k]` at `versions[k]`, each as `fillPage` writes it. Four pages are generated in one
 * loop: each xorshift step depends on the one before, so a single stream leaves most of the CPU
 * idle, and four independent ones run about twice as fast. This is the bulk of a migration's CPU
 * on both sides (the sender writes every page, the receiver regenerates it to check it).
 */
export function fillPages(
  vmSeed: number,
  pages: ArrayLike<number>,
  versions: ArrayLike<number>,
  count: number,
  out: Buffer,
  offset = 0,
): void {
  const words = wordsOf(out, offset, count * WORDS_PER_PAGE);
  let k = 0;
  for (; k + 4 <= count; k += 4) {
    if (versions[k] === 0 || versions[k + 1] === 0 || versions[k + 2] === 0 || versions[k + 3] === 0) {
      for (let j = k; j < k + 4; j++) fillPage(vmSeed, pages[j]!, versions[j]!, out, offset + j * PAGE_SIZE);
      continue;
    }
    let x0 = streamSeed(vmSeed, pages[k]!, versions[k]!);
    let x1 = streamSeed(vmSeed, pages[k + 1]!, versions[k + 1]!);
    let x2 = streamSeed(vmSeed, pages[k + 2]!, versions[k + 2]!);
    let x3 = streamSeed(vmSeed, pages[k + 3]!, versions[k + 3]!);
    const a0 = k * WORDS_PER_PAGE;
    const a1 = a0 + WORDS_PER_PAGE;
    const a2 = a1 + WORDS_PER_PAGE;
    const a3 = a2 + WORDS_PER_PAGE;
    for (let i = 0; i < WORDS_PER_PAGE; i++) {
      x0 ^= x0 << 13;
      x1 ^= x1 << 13;
      x2 ^= x2 << 13;
      x3 ^= x3 << 13;
      x0 ^= x0 >>> 17;
      x1 ^= x1 >>> 17;
      x2 ^= x2 >>> 17;
      x3 ^= x3 >>> 17;
      x0 ^= x0 << 5;
      x1 ^= x1 << 5;
      x2 ^= x2 << 5;
      x3 ^= x3 << 5;
      words[a0 + i] = x0;
      words[a1 + i] = x1;
      words[a2 + i] = x2;
      words[a3 + i] = x3;
    }
  }
  for (; k < count; k++) fillPage(vmSeed, pages[k]!, versions[k]!, out, offset + k * PAGE_SIZE);
}

/** Fills a fresh buffer; requires `offset` alignment, so callers with odd offsets use this. */
export function pageContent(vmSeed: number, page: number, version: number): Buffer {
  const out = Buffer.allocUnsafe(PAGE_SIZE);
  fillPage(vmSeed, page, version, out);
  return out;
}

export const vmSeedOf = (vmId: string): number => hashString32(vmId);

/** Pages per segment: 2 MiB of guest memory, the unit of storage and of the cached hash. */
const SEGMENT_PAGES = 512;
const SEGMENT_SHIFT = 9;
/** A version is a u32 everywhere it is stored (saved-state files, packed migration batches). */
export const MAX_VERSION = 0xffffffff;

interface Segment {
  /** Version per page of the segment; 0 is never written. */
  versions: Uint32Array;
  resident: number;
  /** SHA-256 of the segment's (page, version) records, until a page of it changes. */
  digest: Buffer | undefined;
}

/**
 * A guest's physical memory, tracked sparsely: segments of 512 pages are allocated on their
 * first write, each page held as a version number. A dirty bitmap (allocated on first use)
 * records pages written since the last `takeDirty()`, which is what live migration's rounds and
 * incremental saves need. Each segment caches the digest the state hash is made of, so hashing
 * after a few writes costs only the segments they touched: a live migration's stop-and-copy
 * hashes what changed in its last round, not the whole memory.
 */
export class GuestMemory {
  readonly seed: number;
  private readonly segments: (Segment | undefined)[];
  private resident = 0;
  private dirtyBits: Uint32Array | undefined;
  private dirtyCount = 0;

  constructor(
    readonly vmId: string,
    readonly totalPages: number,
  ) {
    this.seed = vmSeedOf(vmId);
    this.segments = new Array<Segment | undefined>(Math.ceil(totalPages / SEGMENT_PAGES));
  }

  get residentPages(): number {
    return this.resident;
  }

  get dirtyPages(): number {
    return this.dirtyCount;
  }

  versionOf(page: number): number {
    return this.segments[page >>> SEGMENT_SHIFT]?.versions[page & (SEGMENT_PAGES - 1)] ?? 0;
  }

  /** The guest writes a page: a new version, and the page is dirty. */
  write(page: number): void {
    this.check(page);
    const version = this.versionOf(page) + 1;
    if (version > MAX_VERSION) throw new RangeError(`page ${page} was written ${MAX_VERSION} times`);
    this.set(page, version);
    this.markDirty(page);
  }

  /** Installs a page received from elsewhere (restore, migration); it is not dirty here. */
  install(page: number, version: number): void {
    this.check(page);
    if (!Number.isInteger(version) || version < 0 || version > MAX_VERSION)
      throw new RangeError(`page ${page}: version ${version} is not a u32`);
    this.set(page, version);
  }

  private check(page: number): void {
    if (!Number.isInteger(page) || page < 0 || page >= this.totalPages)
      throw new RangeError(`page ${page} outside guest memory`);
  }

  private set(page: number, version: number): void {
    const at = page >>> SEGMENT_SHIFT;
    let seg = this.segments[at];
    if (!seg) {
      if (version === 0) return;
      seg = this.segments[at] = { versions: new Uint32Array(SEGMENT_PAGES), resident: 0, digest: undefined };
    }
    const i = page & (SEGMENT_PAGES - 1);
    const before = seg.versions[i]!;
    if (before === version) return;
    const change = (before === 0 ? 1 : 0) - (version === 0 ? 1 : 0);
    seg.resident += change;
    this.resident += change;
    seg.versions[i] = version;
    seg.digest = undefined;
  }

  private markDirty(page: number): void {
    this.dirtyBits ??= new Uint32Array(Math.ceil(this.totalPages / 32));
    const word = page >>> 5;
    const bit = 1 << (page & 31);
    const w = this.dirtyBits[word]!;
    if ((w & bit) === 0) {
      this.dirtyBits[word] = w | bit;
      this.dirtyCount++;
    }
  }

  /** Page numbers written since the last call, ascending; clears the bitmap. */
  takeDirty(): number[] {
    const out: number[] = [];
    const bits = this.dirtyBits;
    if (!bits || this.dirtyCount === 0) return out;
    for (let word = 0; word < bits.length; word++) {
      let w = bits[word]!;
      if (w === 0) continue;
      while (w !== 0) {
        const low = w & -w;
        out.push(word * 32 + (31 - Math.clz32(low)));
        w ^= low;
      }
      bits[word] = 0;
    }
    this.dirtyCount = 0;
    return out;
  }

  /** Forgets what is dirty (the start of a full copy). */
  clearDirty(): void {
    this.dirtyBits?.fill(0);
    this.dirtyCount = 0;
  }

  /** Written pages, ascending. */
  residentPageNumbers(): number[] {
    const out: number[] = [];
    this.segments.forEach((seg, at) => {
      if (!seg || seg.resident === 0) return;
      const base = at * SEGMENT_PAGES;
      for (let i = 0; i < SEGMENT_PAGES; i++) if (seg.versions[i] !== 0) out.push(base + i);
    });
    return out;
  }

  /** SHA-256 of the memory and device state: see StateHasher. */
  stateHash(deviceState: Buffer): string {
    const h = new StateHasher(this.seed, this.totalPages);
    this.segments.forEach((seg, at) => {
      if (seg && seg.resident > 0) h.addSegment(at, (seg.digest ??= segmentDigest(at, seg.versions)));
    });
    return h.finish(deviceState);
  }

  /** Computes the digests of the segments changed since they were last hashed (ahead of need). */
  refreshDigests(): void {
    this.segments.forEach((seg, at) => {
      if (seg && seg.resident > 0) seg.digest ??= segmentDigest(at, seg.versions);
    });
  }

  /** Bytes the sparse model holds for this VM, roughly: for capacity figures, not accounting. */
  approximateFootprintBytes(): number {
    let segments = 0;
    for (const seg of this.segments) if (seg) segments++;
    return segments * (SEGMENT_PAGES * 4 + 64) + this.segments.length * 8 + (this.dirtyBits?.byteLength ?? 0);
  }
}

const RECORD_BYTES = 8;

/** A segment's (page, version) records, built as native words and swapped to big-endian at once. */
const records = new Uint32Array(SEGMENT_PAGES * 2);
const recordBytes = Buffer.from(records.buffer);

/** SHA-256 over a segment's written pages as (u32 page, u32 version) records, ascending. */
function segmentDigest(at: number, versions: Uint32Array): Buffer {
  const base = at * SEGMENT_PAGES;
  let n = 0;
  for (let i = 0; i < SEGMENT_PAGES; i++) {
    const v = versions[i]!;
    if (v === 0) continue;
    records[n++] = base + i;
    records[n++] = v;
  }
  const bytes = recordBytes.subarray(0, n * 4);
  if (LITTLE_ENDIAN) bytes.swap32();
  return hash('sha256', bytes, 'buffer') as unknown as Buffer;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * The state hash: SHA-256 over a version tag, the VM's seed and page count, then for every
 * segment of 512 pages that holds a written page, in ascending order, its number and the SHA-256
 * of its written pages as (page, version) records, then the device state. A page's content is a
 * pure function of (VM, number, version), and every page's bytes are checked against that
 * function wherever they arrive (a restore, a migration), so hashing the pair covers the content
 * without regenerating 4 KiB per page; hashing per segment lets memory cache what did not change.
 * Pages are fed in ascending order (a saved-state file), or whole segments (GuestMemory).
 */
export class StateHasher {
  private readonly h: Hash = createHash('sha256');
  private readonly seg = Buffer.allocUnsafe(SEGMENT_PAGES * RECORD_BYTES);
  private segAt = -1;
  private n = 0;
  private last = -1;

  constructor(seed: number, totalPages: number) {
    const head = Buffer.alloc(32);
    head.write('hyperfarm-state-v2', 0, 'ascii');
    head.writeUInt32BE(seed >>> 0, 20);
    head.writeUInt32BE(Math.floor(totalPages / 2 ** 32), 24);
    head.writeUInt32BE(totalPages >>> 0, 28);
    this.h.update(head);
  }

  /** Pages must come in ascending order; version 0 (the zero page) is left out. */
  addPage(page: number, version: number): void {
    if (version === 0) return;
    if (page <= this.last) throw new Error(`state hash: page ${page} after page ${this.last}`);
    this.last = page;
    const at = page >>> SEGMENT_SHIFT;
    if (at !== this.segAt) {
      this.closeSegment();
      this.segAt = at;
    }
    this.seg.writeUInt32BE(page, this.n);
    this.seg.writeUInt32BE(version, this.n + 4);
    this.n += RECORD_BYTES;
  }

  /** A whole segment, by its digest (segments in ascending order, after any pages before it). */
  addSegment(at: number, digest: Buffer): void {
    this.closeSegment();
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(at);
    this.h.update(head);
    this.h.update(digest);
    this.last = (at + 1) * SEGMENT_PAGES - 1;
  }

  private closeSegment(): void {
    if (this.n === 0) return;
    const digest = createHash('sha256').update(this.seg.subarray(0, this.n)).digest();
    this.n = 0;
    this.addSegment(this.segAt, digest);
  }

  finish(deviceState: Buffer): string {
    this.closeSegment();
    const len = Buffer.alloc(4);
    len.writeUInt32BE(deviceState.length);
    this.h.update(len);
    this.h.update(deviceState);
    return this.h.digest('hex');
  }
}
