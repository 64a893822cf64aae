import { createHash, hash, type Hash } from 'node:crypto';
import { hashString32 } from './rng.js';

export const PAGE_SIZE = 4096;

/** The first state of page `page`'s xorshift stream at `version`: the three inputs mixed, never 0. */
function streamSeed(vmSeed: number, page: number, version: number): number {
  let x = vmSeed ^ Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  return x === 0 ? 0x1234567 : x;
}

/**
 * Page contents, version 2. A page's 4 KiB are its number and version (u32 big-endian each, as
 * in a packed record) followed by 4088 bytes of the VM's content pool, from an offset derived
 * from (VM, page, version). The pool is 1 MiB (and 4088 bytes more, so that every offset has a
 * whole body) of the VM's xorshift32 stream. So content is a pure function of (VM, page,
 * version), distinct for every page and version, and random-looking; and making or checking a
 * page costs one memory copy or comparison instead of 1,024 steps of a generator, which cost
 * more CPU than moving the bytes (version 1 was a whole xorshift stream per page, which capped
 * a migration at about 0.5 GB/s per core on each side).
 */
const STAMP_BYTES = 8;
const BODY_BYTES = PAGE_SIZE - STAMP_BYTES;
const POOL_WORDS = 1 << 18;
const POOL_BYTES = POOL_WORDS * 4 + BODY_BYTES;
/** Pools of the VMs whose pages were made or checked lately: 1 MiB each. */
const pools = new Map<number, Buffer>();
const MAX_POOLS = 8;

/** The VM's content pool: its xorshift32 (13, 17, 5) stream from the mixed seed, words little-endian. */
export function contentPool(vmSeed: number): Buffer {
  let pool = pools.get(vmSeed);
  if (pool) return pool;
  pool = Buffer.allocUnsafeSlow(POOL_BYTES);
  xorshiftWords(streamSeed(vmSeed, -1, 0), new Int32Array(pool.buffer, pool.byteOffset, POOL_BYTES / 4));
  if (pools.size >= MAX_POOLS) pools.delete(pools.keys().next().value!);
  pools.set(vmSeed, pool);
  return pool;
}

function xorshiftWords(x: number, words: Int32Array): void {
  // Int32 arithmetic throughout: the same bits as unsigned, without leaving V8's small integers.
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
}

/** Where page `page` at `version` takes its body from in the pool: a word in the first 1 MiB. */
function bodyOffset(vmSeed: number, page: number, version: number): number {
  return (streamSeed(vmSeed, page, version) & (POOL_WORDS - 1)) * 4;
}

/**
 * Writes the content of page `page` at `version` of the VM seeded by `vmSeed` into `out` at
 * `offset`. Content is a pure function of those three numbers, so a saved state or a migration
 * stream carries real bytes that the receiver can check without trusting the sender. Version 0
 * is the never-written zero page.
 */
export function fillPage(vmSeed: number, page: number, version: number, out: Buffer, offset = 0): void {
  if (version === 0) {
    out.fill(0, offset, offset + PAGE_SIZE);
    return;
  }
  out.writeUInt32BE(page >>> 0, offset);
  out.writeUInt32BE(version >>> 0, offset + 4);
  const from = bodyOffset(vmSeed, page, version);
  // set() of a view: Buffer.copy with offsets costs about twice as much per 4 KiB page.
  out.set(contentPool(vmSeed).subarray(from, from + BODY_BYTES), offset + STAMP_BYTES);
}

/** Writes `count` pages back to back into `out` from `offset`: page `pages[k]` at `versions[k]`. */
export function fillPages(
  vmSeed: number,
  pages: ArrayLike<number>,
  versions: ArrayLike<number>,
  count: number,
  out: Buffer,
  offset = 0,
): void {
  for (let k = 0; k < count; k++) fillPage(vmSeed, pages[k]!, versions[k]!, out, offset + k * PAGE_SIZE);
}

/** Whether `data` holds, from `at`, the content of page `page` at `version` (compared in place). */
export function holdsPage(vmSeed: number, page: number, version: number, data: Buffer, at = 0): boolean {
  if (data.length < at + PAGE_SIZE) return false;
  if (version === 0) {
    for (let i = at; i < at + PAGE_SIZE; i++) if (data[i] !== 0) return false;
    return true;
  }
  if (data.readUInt32BE(at) !== page >>> 0 || data.readUInt32BE(at + 4) !== version >>> 0) return false;
  const from = bodyOffset(vmSeed, page, version);
  return data.compare(contentPool(vmSeed), from, from + BODY_BYTES, at + STAMP_BYTES, at + PAGE_SIZE) === 0;
}

/**
 * Version 1 of page contents, a whole xorshift32 stream per page: only to check saved-state
 * files written before version 2 ("HFSAVE01").
 */
export function holdsPageV1(vmSeed: number, page: number, version: number, data: Buffer, at = 0): boolean {
  const expected = Buffer.alloc(PAGE_SIZE);
  if (version !== 0)
    xorshiftWords(
      streamSeed(vmSeed, page, version),
      new Int32Array(expected.buffer, expected.byteOffset, 1024),
    );
  return data.length >= at + PAGE_SIZE && data.compare(expected, 0, PAGE_SIZE, at, at + PAGE_SIZE) === 0;
}

/** Fills a fresh buffer with a page's content. */
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
  /** Pages of the segment written since the last `takeDirty()`, a bit each (on first use). */
  dirty: Uint32Array | undefined;
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
  private dirtyCount = 0;
  /** Brings the guest's writes up to date before a read (a lazy engine's, see EngineOptions.lazyGuests). */
  beforeRead: (() => void) | undefined;

  constructor(
    readonly vmId: string,
    readonly totalPages: number,
  ) {
    this.seed = vmSeedOf(vmId);
    this.segments = new Array<Segment | undefined>(Math.ceil(totalPages / SEGMENT_PAGES));
  }

  get residentPages(): number {
    this.beforeRead?.();
    return this.resident;
  }

  get dirtyPages(): number {
    this.beforeRead?.();
    return this.dirtyCount;
  }

  versionOf(page: number): number {
    this.beforeRead?.();
    return this.storedVersion(page);
  }

  private storedVersion(page: number): number {
    return this.segments[page >>> SEGMENT_SHIFT]?.versions[page & (SEGMENT_PAGES - 1)] ?? 0;
  }

  /** The guest writes a page: a new version, and the page is dirty. */
  write(page: number): void {
    this.check(page);
    const version = this.storedVersion(page) + 1;
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
      seg = this.segments[at] = {
        versions: new Uint32Array(SEGMENT_PAGES),
        dirty: undefined,
        resident: 0,
        digest: undefined,
      };
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

  /**
   * Dirty bits are kept per segment, with the segment: a bitmap of the whole memory (128 KiB for
   * a 4 GiB guest) was allocated by the first write, the kernel pages of every boot.
   */
  private markDirty(page: number): void {
    const seg = this.segments[page >>> SEGMENT_SHIFT]!; // written, so there
    const bits = (seg.dirty ??= new Uint32Array(SEGMENT_PAGES / 32));
    const word = (page & (SEGMENT_PAGES - 1)) >>> 5;
    const bit = 1 << (page & 31);
    const w = bits[word]!;
    if ((w & bit) === 0) {
      bits[word] = w | bit;
      this.dirtyCount++;
    }
  }

  /** Page numbers written since the last call, ascending; clears the bits. */
  takeDirty(): number[] {
    this.beforeRead?.();
    const out: number[] = [];
    if (this.dirtyCount === 0) return out;
    this.segments.forEach((seg, at) => {
      const bits = seg?.dirty;
      if (!bits) return;
      for (let word = 0; word < bits.length; word++) {
        let w = bits[word]!;
        if (w === 0) continue;
        const base = at * SEGMENT_PAGES + word * 32;
        while (w !== 0) {
          const low = w & -w;
          out.push(base + (31 - Math.clz32(low)));
          w ^= low;
        }
        bits[word] = 0;
      }
    });
    this.dirtyCount = 0;
    return out;
  }

  /** Forgets what is dirty (the start of a full copy). */
  clearDirty(): void {
    this.beforeRead?.();
    for (const seg of this.segments) seg?.dirty?.fill(0);
    this.dirtyCount = 0;
  }

  /** Written pages, ascending. */
  residentPageNumbers(): number[] {
    this.beforeRead?.();
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
    this.beforeRead?.();
    const h = new StateHasher(this.seed, this.totalPages);
    this.segments.forEach((seg, at) => {
      if (seg && seg.resident > 0) h.addSegment(at, (seg.digest ??= segmentDigest(at, seg.versions)));
    });
    return h.finish(deviceState);
  }

  /** Computes the digests of the segments changed since they were last hashed (ahead of need). */
  refreshDigests(): void {
    this.beforeRead?.();
    this.segments.forEach((seg, at) => {
      if (seg && seg.resident > 0) seg.digest ??= segmentDigest(at, seg.versions);
    });
  }

  /** Bytes the sparse model holds for this VM, roughly: for capacity figures, not accounting. */
  approximateFootprintBytes(): number {
    let segments = 0;
    for (const seg of this.segments) if (seg) segments++;
    let dirty = 0;
    for (const seg of this.segments) if (seg?.dirty) dirty += seg.dirty.byteLength;
    return segments * (SEGMENT_PAGES * 4 + 64) + this.segments.length * 8 + dirty;
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
