import { getBit, runLength, setBits } from './bitmap.js';
import {
  BAT_UNALLOCATED,
  type DiskKind,
  DYNAMIC_HEADER_SIZE,
  DiskType,
  FOOTER_SIZE,
  SECTOR_SIZE,
  VHD_EPOCH_UNIX_SECONDS,
  diskKind,
} from './constants.js';
import { type DynamicHeader, encodeDynamicHeader } from './dynamic-header.js';
import {
  VhdArgumentError,
  VhdCorruptError,
  VhdNoSpaceError,
  VhdOperationError,
  isNoSpace,
} from './errors.js';
import { type Footer, encodeFooter } from './footer.js';
import { type Layout, isLayout, readLayout } from './layout.js';
import { resolveParent } from './parent.js';
import { buildParentLocators, locatorSectors } from './parent-locator.js';
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
  /**
   * What to do when a differencing disk's stored parent timestamp differs from its
   * parent's footer timestamp (the unique ids match): 'warn' (default) opens it and
   * adds a line to `warnings`; 'refuse' throws VhdCorruptError; 'ignore' says nothing.
   */
  parentTimestamp?: 'warn' | 'refuse' | 'ignore';
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
  /** Reads in progress, so a merge can wait for those that may still use an old parent. */
  private readonly inflightReads = new Set<Promise<unknown>>();
  /** Bumped when the layout is reloaded, so a bitmap load started before never lands in the cache. */
  private generation = 0;
  /** Things found on open that do not stop the disk from working (e.g. a parent timestamp mismatch). */
  readonly warnings: string[] = [];

  private constructor(
    readonly path: string,
    private readonly storage: Storage,
    private layout: Layout,
    private parentDisk: VhdDisk | undefined,
    readonly readOnly: boolean,
    private readonly cacheMode: CacheMode,
    /** False when the caller passed the parent in: closing it is then the caller's job. */
    private ownsParent: boolean,
  ) {}

  /** The open parent of a differencing disk (read-only), undefined otherwise. */
  get parent(): VhdDisk | undefined {
    return this.parentDisk;
  }

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
      const timestampWarning =
        parent && layout.header!.parentTimestamp !== parent.footer.timestamp
          ? `parent ${parent.path} has timestamp ${vhdTime(parent.footer.timestamp)}, the child recorded ${vhdTime(layout.header!.parentTimestamp)}: the parent may have been modified since the child was made`
          : undefined;
      if (timestampWarning && options.parentTimestamp === 'refuse') {
        throw new VhdCorruptError('dynamic header', Number(layout.footer.dataOffset) + 56, timestampWarning);
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
      if (timestampWarning && options.parentTimestamp !== 'ignore') disk.warnings.push(timestampWarning);
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
    // The parent is taken once: a merge that re-links this disk meanwhile keeps the old
    // parent open until this read is done (see settleReads), so the read sees one chain.
    const reading = this.readSectors(start, out, this.parentDisk);
    this.inflightReads.add(reading);
    try {
      await reading;
    } finally {
      this.inflightReads.delete(reading);
    }
    return start === offset && end === offset + length
      ? out
      : out.subarray(offset - start, offset - start + length);
  }

  /** Resolves once every read that had started by now has finished. */
  async settleReads(): Promise<void> {
    await Promise.allSettled([...this.inflightReads]);
  }

  /** Writes `data` at `offset` of the virtual disk. Durable after flush(). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkOpen();
    if (this.readOnly) throw new VhdOperationError(`${this.path} is open read-only`);
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    await this.exclusive(() =>
      this.noSpace(async () => {
        if (this.layout.footer.diskType === DiskType.Fixed) {
          await this.storage.write(offset, data);
        } else {
          await this.writeSparse(offset, data);
        }
        if (this.cacheMode === 'writethrough') await this.commit();
      }),
    );
  }

  /** Runs `fn`, turning the file system's "disk full" into a VhdNoSpaceError. */
  private async noSpace<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (isNoSpace(err)) throw new VhdNoSpaceError(this.path, err);
      throw err;
    }
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
    await this.exclusive(() => this.noSpace(() => this.commit()));
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
    if (!this.layout.copyMatches) {
      // Only after an interrupted relinkParent: the copy a crash would fall back to must
      // name the parent in use before the old one may go.
      await this.storage.write(0, encodeFooter(this.layout.footer));
      await this.storage.flush();
      this.layout.copyMatches = true;
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
      if (this.parentDisk && this.ownsParent) await this.parentDisk.close();
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
      const generation = this.generation;
      load = this.storage.read(this.blockOffset(block), this.layout.bitmapSize).then((bm) => {
        // Loaded before a reload: it may predate bits set since; use it, never cache it.
        if (generation !== this.generation) return bm;
        this.bitmapLoads.delete(block);
        // A block allocated meanwhile already has its (newer) bitmap in the cache.
        if (!this.bitmaps.has(block)) this.bitmaps.set(block, bm);
        return this.bitmaps.get(block)!;
      });
      this.bitmapLoads.set(block, load);
    }
    return load;
  }

  /**
   * The parts of [offset, offset+length) whose data this file holds itself (not its
   * parent): everything for a fixed disk, the set bitmap bits of allocated blocks otherwise.
   * Sector-aligned; used by merges to copy only what a layer really holds.
   */
  async localRuns(offset: number, length: number): Promise<{ offset: number; length: number }[]> {
    this.checkOpen();
    this.checkRange(offset, length);
    if (this.layout.footer.diskType === DiskType.Fixed) return length > 0 ? [{ offset, length }] : [];
    const blockSize = this.layout.header!.blockSize;
    const runs: { offset: number; length: number }[] = [];
    const push = (at: number, n: number) => {
      const last = runs[runs.length - 1];
      if (last && last.offset + last.length === at) last.length += n;
      else runs.push({ offset: at, length: n });
    };
    let pos = Math.floor(offset / SECTOR_SIZE) * SECTOR_SIZE;
    const end = offset + length;
    while (pos < end) {
      const block = Math.floor(pos / blockSize);
      const blockStart = block * blockSize;
      const stop = Math.min(end, blockStart + blockSize);
      if (this.isAllocated(block)) {
        const bitmap = await this.blockBitmap(block);
        let s = (pos - blockStart) / SECTOR_SIZE;
        const last = Math.ceil((stop - blockStart) / SECTOR_SIZE);
        while (s < last) {
          const n = runLength(bitmap, s, last - s);
          if (getBit(bitmap, s)) push(blockStart + s * SECTOR_SIZE, n * SECTOR_SIZE);
          s += n;
        }
      }
      pos = stop;
    }
    return runs;
  }

  /**
   * Merge into child, one block: copies into this disk the sectors of `block` that its
   * parent holds itself and this disk does not, so that afterwards this disk no longer
   * needs that parent for them (only the grandparent). It is what a guest write of the
   * same bytes would do, so the chain reads the same at every moment; it runs under the
   * write lock, so a guest write to the same sectors is never overwritten with old data.
   * Durable after flush(). Returns the bytes copied.
   */
  async absorbParentBlock(block: number): Promise<number> {
    this.checkOpen();
    if (this.readOnly) throw new VhdOperationError(`${this.path} is open read-only`);
    const parent = this.parentDisk;
    if (!parent) throw new VhdOperationError(`${this.path} has no parent to absorb`);
    return this.exclusive(() =>
      this.noSpace(async () => {
        const blockSize = this.layout.header!.blockSize;
        const start = block * blockSize;
        const end = Math.min(start + blockSize, this.virtualSize, parent.virtualSize);
        if (start >= end) return 0;
        let copied = 0;
        for (const run of await parent.localRuns(start, end - start)) {
          let s = (run.offset - start) / SECTOR_SIZE;
          const last = s + run.length / SECTOR_SIZE;
          while (s < last) {
            const bitmap = this.isAllocated(block) ? await this.blockBitmap(block) : undefined;
            const n = bitmap ? runLength(bitmap, s, last - s) : last - s;
            if (!bitmap || !getBit(bitmap, s)) {
              const data = await parent.read(start + s * SECTOR_SIZE, n * SECTOR_SIZE);
              await this.writeInBlock(block, s * SECTOR_SIZE, data);
              copied += data.length;
            }
            s += n;
          }
        }
        return copied;
      }),
    );
  }

  /**
   * Points this differencing disk at another parent (or at none: it becomes a dynamic
   * disk), rewriting the parent unique id, timestamp, name and locators. Only safe when
   * the chain reads the same through either parent, which a merge guarantees first.
   *
   * Crash-safe without ever overwriting the header in use: the new locators and header go
   * after the last block (where the footer is), fsync; then a footer pointing at the new
   * header goes after them, fsync; then its copy at offset 0, fsync. Until the end
   * footer is durable a reader falls back to the copy at 0, which still points at the old
   * header; a writable open then cuts the unreferenced new header off.
   * Returns the old parent; `ownsNewParent` says whether close() closes the new one.
   */
  async relinkParent(newParent: VhdDisk | undefined, ownsNewParent: boolean): Promise<VhdDisk | undefined> {
    this.checkOpen();
    if (this.readOnly) throw new VhdOperationError(`${this.path} is open read-only`);
    if (this.layout.footer.diskType !== DiskType.Differencing) {
      throw new VhdOperationError(
        `${this.path} is a ${this.type} disk: only differencing disks have a parent`,
      );
    }
    if (newParent && newParent.virtualSize !== this.virtualSize) {
      throw new VhdOperationError(
        `${newParent.path} is ${newParent.virtualSize} bytes, ${this.path} is ${this.virtualSize}: a parent has its child's size`,
      );
    }
    return this.exclusive(() =>
      this.noSpace(async () => {
        await this.commit();
        const old = this.layout;
        let at = old.nextFreeOffset;
        let committed = false;
        try {
          const parentLocators = [];
          for (const l of newParent ? buildParentLocators(this.path, newParent.path) : []) {
            const sectors = locatorSectors(l.data.length);
            const padded = Buffer.alloc(sectors * SECTOR_SIZE);
            l.data.copy(padded);
            await this.storage.write(at, padded);
            parentLocators.push({
              platformCode: l.platformCode,
              dataSpace: sectors,
              dataLength: l.data.length,
              dataOffset: at,
            });
            at += padded.length;
          }
          const header: DynamicHeader = {
            ...old.header!,
            parentUniqueId: newParent ? Buffer.from(newParent.uniqueId) : Buffer.alloc(16),
            parentTimestamp: newParent ? newParent.footer.timestamp : 0,
            parentName: newParent ? newParent.path.slice(-256) : '',
            parentLocators,
          };
          const headerOffset = at;
          await this.storage.write(headerOffset, encodeDynamicHeader(header));
          at += DYNAMIC_HEADER_SIZE;
          await this.storage.flush();
          const footer: Footer = {
            ...old.footer,
            dataOffset: BigInt(headerOffset),
            diskType: newParent ? DiskType.Differencing : DiskType.Dynamic,
          };
          const encoded = encodeFooter(footer);
          await this.storage.write(at, encoded);
          await this.storage.flush();
          // The commit point: the end footer names the new header.
          committed = true;
          this.layout = {
            ...old,
            fileSize: at + FOOTER_SIZE,
            footer,
            header,
            footerSource: 'end',
            copyMatches: false,
            nextFreeOffset: at,
            metadataEnd: at,
          };
          const previous = this.parentDisk;
          this.parentDisk = newParent;
          this.ownsParent = ownsNewParent;
          await this.storage.write(0, encoded);
          await this.storage.flush();
          this.layout.copyMatches = true;
          return previous;
        } catch (err) {
          // Before the commit point the end footer may be gone: put it back and cut the
          // unreferenced new metadata off (best effort: if this fails too, the next open
          // falls back to the footer copy at offset 0 and repairs the same way).
          if (!committed) {
            try {
              await this.storage.write(old.nextFreeOffset, encodeFooter(old.footer));
              await this.storage.truncate(old.nextFreeOffset + FOOTER_SIZE);
              await this.storage.flush();
            } catch {
              this.footerMoved = true;
            }
          }
          throw err;
        }
      }),
    );
  }

  /**
   * For a read-only instance of a file another instance has changed (a merge's writer):
   * re-reads the metadata, drops cached bitmaps and takes `parent` as its parent.
   * Reads already running finish with what they started with. Returns the old parent.
   */
  async reload(parent: VhdDisk | undefined, ownsParent: boolean): Promise<VhdDisk | undefined> {
    this.checkOpen();
    const fresh = await readLayout(this.storage);
    if (!isLayout(fresh)) {
      const first = fresh.issues.find((i) => i.fatal)!;
      throw new VhdCorruptError(first.structure, first.offset, first.message);
    }
    if (fresh.footer.diskType === DiskType.Differencing) {
      if (!parent || !parent.uniqueId.equals(fresh.header!.parentUniqueId)) {
        throw new VhdOperationError(`${this.path}: reload with a parent that is not the one the file names`);
      }
    } else if (parent) {
      throw new VhdOperationError(
        `${this.path} is a ${diskKind(fresh.footer.diskType)} disk, it has no parent`,
      );
    }
    this.generation++;
    this.bitmaps.clear();
    this.bitmapLoads.clear();
    this.layout = fresh;
    const previous = this.parentDisk;
    this.parentDisk = parent;
    this.ownsParent = ownsParent;
    return previous;
  }

  /** Stops close() from closing the parent (someone else took it over). Returns it. */
  releaseParent(): VhdDisk | undefined {
    this.ownsParent = false;
    return this.parentDisk;
  }

  /** Whether close() also closes the parent. */
  get ownsItsParent(): boolean {
    return this.ownsParent;
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

  private async readSectors(start: number, out: Buffer, parent: VhdDisk | undefined): Promise<void> {
    await this.forEachBlockPart(start, out, (block, inBlock, part) =>
      this.readInBlock(block, inBlock, part, parent),
    );
  }

  /**
   * Cuts `buf`, which stands for the disk bytes from `start` on, at block boundaries and
   * hands each piece to `fn` with its block and its offset in that block, one after another.
   */
  private async forEachBlockPart(
    start: number,
    buf: Buffer,
    fn: (block: number, inBlock: number, part: Buffer) => Promise<void>,
  ): Promise<void> {
    const blockSize = this.layout.header!.blockSize;
    let done = 0;
    while (done < buf.length) {
      const pos = start + done;
      const block = Math.floor(pos / blockSize);
      const inBlock = pos - block * blockSize;
      const n = Math.min(buf.length - done, blockSize - inBlock);
      await fn(block, inBlock, buf.subarray(done, done + n));
      done += n;
    }
  }

  private async readInBlock(
    block: number,
    inBlock: number,
    target: Buffer,
    parent: VhdDisk | undefined,
  ): Promise<void> {
    const blockStart = block * this.layout.header!.blockSize;
    if (!this.isAllocated(block)) {
      await this.readFromParent(blockStart + inBlock, target, parent);
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
        await this.readFromParent(blockStart + (first + i) * SECTOR_SIZE, part, parent);
      }
      i += run;
    }
  }

  private async readFromParent(offset: number, target: Buffer, parent: VhdDisk | undefined): Promise<void> {
    if (!parent) return; // a dynamic disk's unwritten sectors read as zero; target is zeroed
    const available = Math.max(0, Math.min(target.length, parent.virtualSize - offset));
    if (available > 0) (await parent.read(offset, available)).copy(target);
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
      if (start !== offset) await this.readSectors(start, buf.subarray(0, SECTOR_SIZE), this.parentDisk);
      if (end !== offset + data.length)
        await this.readSectors(end - SECTOR_SIZE, buf.subarray(buf.length - SECTOR_SIZE), this.parentDisk);
      buf.set(data, offset - start);
    }
    await this.forEachBlockPart(start, buf, (block, inBlock, part) =>
      this.writeInBlock(block, inBlock, part),
    );
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
    this.layout.copyMatches = true;
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

/** A VHD timestamp (seconds since 2000-01-01 UTC) as an ISO date. */
export function vhdTime(seconds: number): string {
  return new Date((seconds + VHD_EPOCH_UNIX_SECONDS) * 1000).toISOString();
}

export function formatUuid(id: Buffer): string {
  const h = id.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
