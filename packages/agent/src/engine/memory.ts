import { createHash, type Hash } from 'node:crypto';
import { hashString32 } from './rng.js';

export const PAGE_SIZE = 4096;
const WORDS_PER_PAGE = PAGE_SIZE / 4;

/**
 * Writes the content of page `page` at `version` of the VM seeded by `vmSeed` into `out` at
 * `offset`. Content is a pure function of those three numbers (an xorshift stream), so a saved
 * state or a migration stream carries real bytes that the receiver can check without trusting
 * the sender. Version 0 is the never-written zero page.
 */
export function fillPage(vmSeed: number, page: number, version: number, out: Buffer, offset = 0): void {
  const words = new Uint32Array(out.buffer, out.byteOffset + offset, WORDS_PER_PAGE);
  if (version === 0) {
    words.fill(0);
    return;
  }
  // Mix the three inputs into a non-zero xorshift state.
  let x = (vmSeed ^ Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d) >>> 0;
  if (x === 0) x = 0x1234567;
  for (let i = 0; i < WORDS_PER_PAGE; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
}

/** Fills a fresh buffer; requires `offset` alignment, so callers with odd offsets use this. */
export function pageContent(vmSeed: number, page: number, version: number): Buffer {
  const out = Buffer.allocUnsafe(PAGE_SIZE);
  fillPage(vmSeed, page, version, out);
  return out;
}

export const vmSeedOf = (vmId: string): number => hashString32(vmId);

/**
 * A guest's physical memory, tracked sparsely: only pages ever written are held, each as a
 * version number. A dirty bitmap (allocated on first use) records pages written since the last
 * `takeDirty()`, which is what live migration's rounds and incremental saves need.
 */
export class GuestMemory {
  readonly seed: number;
  private readonly versions = new Map<number, number>();
  private dirtyBits: Uint32Array | undefined;
  private dirtyCount = 0;

  constructor(
    readonly vmId: string,
    readonly totalPages: number,
  ) {
    this.seed = vmSeedOf(vmId);
  }

  get residentPages(): number {
    return this.versions.size;
  }

  get dirtyPages(): number {
    return this.dirtyCount;
  }

  versionOf(page: number): number {
    return this.versions.get(page) ?? 0;
  }

  /** The guest writes a page: a new version, and the page is dirty. */
  write(page: number): void {
    if (page < 0 || page >= this.totalPages) throw new RangeError(`page ${page} outside guest memory`);
    this.versions.set(page, (this.versions.get(page) ?? 0) + 1);
    this.markDirty(page);
  }

  /** Installs a page received from elsewhere (restore, migration); it is not dirty here. */
  install(page: number, version: number): void {
    if (page < 0 || page >= this.totalPages) throw new RangeError(`page ${page} outside guest memory`);
    if (version === 0) this.versions.delete(page);
    else this.versions.set(page, version);
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
    return [...this.versions.keys()].sort((a, b) => a - b);
  }

  /** SHA-256 of the memory and device state: see StateHasher. */
  stateHash(deviceState: Buffer): string {
    const h = new StateHasher(this.seed, this.totalPages);
    for (const page of this.residentPageNumbers()) h.addPage(page, this.versions.get(page)!);
    return h.finish(deviceState);
  }

  /** Bytes the sparse model holds for this VM, roughly: for capacity figures, not accounting. */
  approximateFootprintBytes(): number {
    return this.versions.size * 40 + (this.dirtyBits?.byteLength ?? 0);
  }
}

/**
 * The state hash: SHA-256 over a version tag, the VM's seed and page count, every written page
 * as (number, version) in ascending order, then the device state. A page's content is a pure
 * function of (VM, number, version), and every page's bytes are checked against that function
 * wherever they arrive (a restore, a migration), so hashing the pair covers the content without
 * regenerating 4 KiB per page: this keeps the hash cheap enough for a migration's stop-and-copy.
 */
export class StateHasher {
  private readonly h: Hash = createHash('sha256');
  private readonly buf = Buffer.allocUnsafe(16 * 4096);
  private n = 0;
  private last = -1;

  constructor(seed: number, totalPages: number) {
    const head = Buffer.alloc(32);
    head.write('hyperfarm-state-v1', 0, 'ascii');
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
    const at = this.n * 16;
    this.buf.writeUInt32BE(Math.floor(page / 2 ** 32), at);
    this.buf.writeUInt32BE(page >>> 0, at + 4);
    this.buf.writeUInt32BE(Math.floor(version / 2 ** 32), at + 8);
    this.buf.writeUInt32BE(version >>> 0, at + 12);
    if (++this.n === 4096) {
      this.h.update(this.buf);
      this.n = 0;
    }
  }

  finish(deviceState: Buffer): string {
    if (this.n > 0) this.h.update(this.buf.subarray(0, this.n * 16));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(deviceState.length);
    this.h.update(len);
    this.h.update(deviceState);
    return this.h.digest('hex');
  }
}
