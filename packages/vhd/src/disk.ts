import { getBit, runLength, setBits } from './bitmap.js';
import {
  BAT_UNALLOCATED,
  type DiskKind,
  DiskType,
  FOOTER_SIZE,
  SECTOR_SIZE,
  VHD_EPOCH_UNIX_SECONDS,
  diskKind,
} from './constants.js';
import type { DynamicHeader } from './dynamic-header.js';
import { VhdArgumentError, VhdCorruptError, VhdOperationError } from './errors.js';
import { type Footer, encodeFooter } from './footer.js';
import { type Layout, isLayout, readLayout } from './layout.js';
import { resolveParent } from './parent.js';
import { FileSystemProvider, type Storage, type StorageProvider } from './storage.js';

/**
 * When metadata reaches the file. 'writeback' (default): data goes to the file at
 * once, bitmaps, BAT entries and the moved footer at the next flush(), in the crash-safe
 * order; a crash loses unflushed writes like a disk's write cache does. 'writethrough':
 * every write() ends with a flush().
 */
export type CacheMode = 'writeback' | 'writethrough';

export interface OpenOptions {
  /** Where files live; the real file system by default. */
  provider?: StorageProvider;
  readOnly?: boolean;
  cacheMode?: CacheMode;
  /** An already-open parent to use instead of resolving the parent locators. */
  parent?: VhdDisk;
}

/** What `info` reports about one disk of a chain. */
export interface DiskInfo {
  path: string;
  type: DiskKind;
  virtualSize: number;
  fileSize: number;
  /** Bytes of virtual disk backed by this file: the whole size (fixed), or allocated blocks. */
  allocatedSize: number;
  blockSize?: number;
  allocatedBlocks?: number;
  totalBlocks?: number;
  uniqueId: string;
  createdAt: string;
  creatorApplication: string;
  geometry: { cylinders: number; heads: number; sectorsPerTrack: number };
  footerSource: 'end' | 'copy';
  parentUniqueId?: string;
  parentPath?: string;
  /** This disk's parents, nearest first. */
  parentChain: string[];
}

/** An open VHD: fixed, dynamic or differencing (with its parent chain open read-only). */
export class VhdDisk {
  private closed = false;
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly dirtyBitmaps = new Set<number>();
  private readonly dirtyBatEntries = new Set<number>();
  private footerMoved = false;
  /** Bitmaps being read, so concurrent callers share one load (and one buffer). */
  private readonly bitmapLoads = new Map<number, Promise<Buffer>>();
  /** Writes and flushes run one at a time: flush() must never see half a write. */
  private exclusiveTail: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly path: string,
    private readonly storage: Storage,
    private readonly layout: Layout,
    readonly parent: VhdDisk | undefined,
    readonly readOnly: boolean,
    private readonly cacheMode: CacheMode,
    /** False when the caller passed the parent in: closing it is then the caller's job. */
    private readonly ownsParent: boolean,
  ) {}

  /** Opens a VHD by path, refusing a corrupt one with a VhdCorruptError naming the structure and offset. */
  static async open(filePath: string, options: OpenOptions = {}): Promise<VhdDisk> {
    const provider = options.provider ?? new FileSystemProvider();
    const resolved = provider.resolve(filePath);
    const readOnly = options.readOnly ?? false;
    const storage = await provider.open(resolved, readOnly ? 'read' : 'readwrite');
    let parent: VhdDisk | undefined;
    try {
      const layout = await readLayout(storage);
      if (!isLayout(layout)) {
        const first = layout.issues.find((i) => i.fatal)!;
        throw new VhdCorruptError(first.structure, first.offset, first.message);
      }
      if (layout.footer.diskType === DiskType.Differencing) {
        parent = options.parent ?? (await resolveParent(resolved, layout, storage, provider));
        if (!parent.uniqueId.equals(layout.header!.parentUniqueId)) {
          throw new VhdCorruptError(
            'dynamic header',
            Number(layout.footer.dataOffset),
            `parent ${parent.path} has unique id ${formatUuid(parent.uniqueId)}, the child expects ${formatUuid(layout.header!.parentUniqueId)}`,
          );
        }
      } else if (options.parent) {
        throw new VhdArgumentError(
          'parent',
          `${resolved} is a ${diskKind(layout.footer.diskType)} disk, it has no parent`,
        );
      }
      const disk = new VhdDisk(
        resolved,
        storage,
        layout,
        parent,
        readOnly,
        options.cacheMode ?? 'writeback',
        options.parent === undefined,
      );
      if (!readOnly && layout.footerSource === 'copy') await disk.repairFooter();
      else if (!readOnly && !layout.copyMatches) await disk.repairFooterCopy();
      return disk;
    } catch (err) {
      await storage.close();
      if (parent && !options.parent) await parent.close();
      throw err;
    }
  }

  get type(): DiskKind {
    return diskKind(this.layout.footer.diskType);
  }

  get virtualSize(): number {
    return this.layout.footer.currentSize;
  }

  /** The same as virtualSize, under the name the agent's DiskBackend interface uses. */
  get sizeBytes(): number {
    return this.layout.footer.currentSize;
  }

  get uniqueId(): Buffer {
    return this.layout.footer.uniqueId;
  }

  get footer(): Readonly<Footer> {
    return this.layout.footer;
  }

  get header(): Readonly<DynamicHeader> | undefined {
    return this.layout.header;
  }

  get blockSize(): number | undefined {
    return this.layout.header?.blockSize;
  }

  /** Reads `length` bytes of the virtual disk at `offset`. */
  async read(offset: number, length: number): Promise<Buffer> {
    this.checkOpen();
    this.checkRange(offset, length);
    if (length === 0) return Buffer.alloc(0);
    if (this.layout.footer.diskType === DiskType.Fixed) return this.storage.read(offset, length);
    const start = Math.floor(offset / SECTOR_SIZE) * SECTOR_SIZE;
    const end = Math.ceil((offset + length) / SECTOR_SIZE) * SECTOR_SIZE;
    const out = Buffer.alloc(end - start);
    await this.readSectors(start, out);
    return start === offset && end === offset + length
      ? out
      : out.subarray(offset - start, offset - start + length);
  }

  /** Writes `data` at `offset` of the virtual disk. Durable after flush(). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkOpen();
    if (this.readOnly) throw new VhdOperationError(`${this.path} is open read-only`);
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    await this.exclusive(async () => {
      if (this.layout.footer.diskType === DiskType.Fixed) {
        await this.storage.write(offset, data);
      } else {
        await this.writeSparse(offset, data);
      }
      if (this.cacheMode === 'writethrough') await this.commit();
    });
  }

  /**
   * Makes every earlier write durable. The order is what keeps a crash harmless:
   *   1. fsync the data written into blocks;
   *   2. write the changed sector bitmaps, fsync (a bit is set only over durable data);
   *   3. write the changed BAT sectors, fsync (an entry points only at a durable block);
   *   4. write the footer at its new place after the last block, fsync.
   * Until step 4 the end of the file holds no footer and readers use the copy at offset 0.
   */
  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    await this.exclusive(() => this.commit());
  }

  private async commit(): Promise<void> {
    await this.storage.flush();
    if (this.dirtyBitmaps.size > 0) {
      for (const block of [...this.dirtyBitmaps].sort((a, b) => a - b)) {
        await this.storage.write(this.blockOffset(block), this.bitmaps.get(block)!);
      }
      await this.storage.flush();
      this.dirtyBitmaps.clear();
    }
    if (this.dirtyBatEntries.size > 0) {
      await this.writeBatSectors([...this.dirtyBatEntries]);
      await this.storage.flush();
      this.dirtyBatEntries.clear();
    }
    if (this.footerMoved) {
      await this.storage.write(this.layout.nextFreeOffset, encodeFooter(this.layout.footer));
      await this.storage.flush();
      this.footerMoved = false;
    }
  }

  /** Flushes and closes this disk and its parent chain. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.readOnly) await this.flush();
    } finally {
      this.closed = true;
      await this.storage.close();
      if (this.parent && this.ownsParent) await this.parent.close();
    }
  }

  async info(): Promise<DiskInfo> {
    this.checkOpen();
    const f = this.layout.footer;
    const h = this.layout.header;
    const allocatedBlocks = this.layout.bat
      ? this.layout.bat.filter((e) => e !== BAT_UNALLOCATED).length
      : undefined;
    const chain: string[] = [];
    for (let p = this.parent; p; p = p.parent) chain.push(p.path);
    return {
      path: this.path,
      type: this.type,
      virtualSize: f.currentSize,
      fileSize: await this.storage.size(),
      allocatedSize: h ? allocatedBlocks! * h.blockSize : f.currentSize,
      ...(h
        ? {
            blockSize: h.blockSize,
            allocatedBlocks,
            totalBlocks: Math.ceil(f.currentSize / h.blockSize),
          }
        : {}),
      uniqueId: formatUuid(f.uniqueId),
      createdAt: new Date((f.timestamp + VHD_EPOCH_UNIX_SECONDS) * 1000).toISOString(),
      creatorApplication: f.creatorApplication.replace(/\0+$/, ''),
      geometry: { ...f.geometry },
      footerSource: this.layout.footerSource,
      ...(this.parent ? { parentUniqueId: formatUuid(h!.parentUniqueId), parentPath: this.parent.path } : {}),
      parentChain: chain,
    };
  }

  // ---- for merge, compact, resize and check (same package) ----

  /** Internal: the parsed metadata. */
  get layoutForTools(): Layout {
    return this.layout;
  }

  /** Internal: the storage under this disk. */
  get storageForTools(): Storage {
    return this.storage;
  }

  /** The sector bitmap of an allocated block (cached). */
  async blockBitmap(block: number): Promise<Buffer> {
    const cached = this.bitmaps.get(block);
    if (cached) return cached;
    let load = this.bitmapLoads.get(block);
    if (!load) {
      load = this.storage.read(this.blockOffset(block), this.layout.bitmapSize).then((bm) => {
        this.bitmapLoads.delete(block);
        // A block allocated meanwhile already has its (newer) bitmap in the cache.
        if (!this.bitmaps.has(block)) this.bitmaps.set(block, bm);
        return this.bitmaps.get(block)!;
      });
      this.bitmapLoads.set(block, load);
    }
    return load;
  }

  /** File offset of an allocated block's bitmap. */
  blockOffset(block: number): number {
    return (this.layout.bat![block] as number) * SECTOR_SIZE;
  }

  isAllocated(block: number): boolean {
    const e = this.layout.bat?.[block];
    return e !== undefined && e !== BAT_UNALLOCATED;
  }

  // ---- internals ----

  private async readSectors(start: number, out: Buffer): Promise<void> {
    const blockSize = this.layout.header!.blockSize;
    let done = 0;
    while (done < out.length) {
      const pos = start + done;
      const block = Math.floor(pos / blockSize);
      const inBlock = pos - block * blockSize;
      const n = Math.min(out.length - done, blockSize - inBlock);
      await this.readInBlock(block, inBlock, out.subarray(done, done + n));
      done += n;
    }
  }

  private async readInBlock(block: number, inBlock: number, target: Buffer): Promise<void> {
    const blockStart = block * this.layout.header!.blockSize;
    if (!this.isAllocated(block)) {
      await this.readFromParent(blockStart + inBlock, target);
      return;
    }
    const bitmap = await this.blockBitmap(block);
    const dataStart = this.blockOffset(block) + this.layout.bitmapSize;
    const first = inBlock / SECTOR_SIZE;
    const count = target.length / SECTOR_SIZE;
    let i = 0;
    while (i < count) {
      const run = runLength(bitmap, first + i, count - i);
      const part = target.subarray(i * SECTOR_SIZE, (i + run) * SECTOR_SIZE);
      if (getBit(bitmap, first + i)) {
        (await this.storage.read(dataStart + (first + i) * SECTOR_SIZE, part.length)).copy(part);
      } else {
        await this.readFromParent(blockStart + (first + i) * SECTOR_SIZE, part);
      }
      i += run;
    }
  }

  private async readFromParent(offset: number, target: Buffer): Promise<void> {
    if (!this.parent) return; // a dynamic disk's unwritten sectors read as zero; target is zeroed
    const available = Math.max(0, Math.min(target.length, this.parent.virtualSize - offset));
    if (available > 0) (await this.parent.read(offset, available)).copy(target);
  }

  private async writeSparse(offset: number, data: Uint8Array): Promise<void> {
    const start = Math.floor(offset / SECTOR_SIZE) * SECTOR_SIZE;
    const end = Math.ceil((offset + data.length) / SECTOR_SIZE) * SECTOR_SIZE;
    let buf: Buffer;
    if (start === offset && end === offset + data.length) {
      buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    } else {
      // Bitmaps count whole sectors: complete the partial edge sectors with what they hold now.
      buf = Buffer.alloc(end - start);
      if (start !== offset) await this.readSectors(start, buf.subarray(0, SECTOR_SIZE));
      if (end !== offset + data.length)
        await this.readSectors(end - SECTOR_SIZE, buf.subarray(buf.length - SECTOR_SIZE));
      buf.set(data, offset - start);
    }
    const blockSize = this.layout.header!.blockSize;
    let done = 0;
    while (done < buf.length) {
      const pos = start + done;
      const block = Math.floor(pos / blockSize);
      const inBlock = pos - block * blockSize;
      const n = Math.min(buf.length - done, blockSize - inBlock);
      await this.writeInBlock(block, inBlock, buf.subarray(done, done + n));
      done += n;
    }
  }

  private async writeInBlock(block: number, inBlock: number, data: Buffer): Promise<void> {
    if (!this.isAllocated(block)) this.allocateBlock(block);
    await this.storage.write(this.blockOffset(block) + this.layout.bitmapSize + inBlock, data);
    const bitmap = await this.blockBitmap(block);
    if (setBits(bitmap, inBlock / SECTOR_SIZE, data.length / SECTOR_SIZE)) this.dirtyBitmaps.add(block);
  }

  /**
   * Claims the space where the footer sits for a new block. Nothing points at it
   * until flush() has made its data and bitmap durable.
   */
  private allocateBlock(block: number): void {
    const at = this.layout.nextFreeOffset;
    this.layout.bat![block] = at / SECTOR_SIZE;
    this.layout.nextFreeOffset = at + this.layout.bitmapSize + this.layout.header!.blockSize;
    this.bitmaps.set(block, Buffer.alloc(this.layout.bitmapSize));
    this.dirtyBitmaps.add(block);
    this.dirtyBatEntries.add(block);
    this.footerMoved = true;
  }

  /** Writes the whole BAT sectors holding `entries` (whole sectors, so a torn write never splits an entry). */
  private async writeBatSectors(entries: number[]): Promise<void> {
    const bat = this.layout.bat!;
    const perSector = SECTOR_SIZE / 4;
    const sectors = [...new Set(entries.map((e) => Math.floor(e / perSector)))].sort((a, b) => a - b);
    for (const s of sectors) {
      const buf = Buffer.alloc(SECTOR_SIZE, 0xff);
      for (let k = 0; k < perSector && s * perSector + k < bat.length; k++) {
        buf.writeUInt32BE(bat[s * perSector + k] as number, k * 4);
      }
      await this.storage.write(this.layout.header!.tableOffset + s * SECTOR_SIZE, buf);
    }
  }

  /** After a crash that lost the end footer: put it back after the last block and cut the orphans. */
  private async repairFooter(): Promise<void> {
    const at = this.layout.nextFreeOffset;
    await this.storage.write(at, encodeFooter(this.layout.footer));
    await this.storage.truncate(at + FOOTER_SIZE);
    await this.storage.flush();
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.exclusiveTail.then(fn, fn);
    this.exclusiveTail = run.catch(() => undefined);
    return run;
  }

  /** The end footer is the one in use; a crash between writing it and its copy left them different. */
  private async repairFooterCopy(): Promise<void> {
    await this.storage.write(0, encodeFooter(this.layout.footer));
    await this.storage.flush();
  }

  private checkOpen(): void {
    if (this.closed) throw new VhdOperationError(`${this.path} is closed`);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new VhdArgumentError('offset', `must be a non-negative integer, got ${offset}`);
    }
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new VhdArgumentError('length', `must be a non-negative integer, got ${length}`);
    }
    if (offset + length > this.virtualSize) {
      throw new VhdArgumentError(
        'offset',
        `${offset}+${length} runs past the end of the ${this.virtualSize}-byte disk ${this.path}`,
      );
    }
  }
}

export function formatUuid(id: Buffer): string {
  const h = id.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
