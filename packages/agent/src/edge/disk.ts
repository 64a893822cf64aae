import { randomUUID } from 'node:crypto';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { createVhd, VhdDisk, type StorageProvider } from '@hyperfarm/vhd';

/**
 * The narrow interface through which the storage VSP reaches a virtual disk. The VHD library
 * (@hyperfarm/vhd, `vhdLibraryFactory`) provides fixed and dynamic disks behind it; the agent's
 * own fixed-size backend (`fixedVhdFactory`) remains for tests and as a fallback.
 */
export interface DiskBackend {
  /** Virtual size seen by the guest, in bytes. */
  readonly sizeBytes: number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export type DiskKind = 'fixed' | 'dynamic';

export interface DiskFactory {
  create(path: string, sizeBytes: number, kind: DiskKind): Promise<DiskBackend>;
  open(path: string): Promise<DiskBackend>;
}

/** Disks through @hyperfarm/vhd: fixed and dynamic VHDs per Microsoft's specification. */
export const vhdLibraryFactory = (clock: () => number, provider?: StorageProvider): DiskFactory => ({
  create: (path, size, kind) =>
    createVhd(path, { type: kind, size, now: () => new Date(clock()), ...(provider ? { provider } : {}) }),
  open: (path) => VhdDisk.open(path, provider ? { provider } : {}),
});

/** How a failed disk call shows to the guest: the disk is full, or it failed. */
export function storageFailureKind(err: unknown): 'full' | 'failed' {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' ? 'full' : 'failed';
}

const FOOTER_SIZE = 512;
/** Seconds between the Unix epoch and the VHD epoch (2000-01-01 UTC). */
const VHD_EPOCH_OFFSET = 946_684_800;

/** CHS geometry as the VHD specification computes it from the sector count. */
function geometry(totalSectors: number): { c: number; h: number; s: number } {
  const sectors = Math.min(totalSectors, 65535 * 16 * 255);
  let spt: number;
  let heads: number;
  let cylTimesHeads: number;
  if (sectors >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cylTimesHeads = Math.floor(sectors / spt);
  } else {
    spt = 17;
    cylTimesHeads = Math.floor(sectors / spt);
    heads = Math.max(4, Math.floor((cylTimesHeads + 1023) / 1024));
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cylTimesHeads = Math.floor(sectors / spt);
    }
    if (cylTimesHeads >= heads * 1024) {
      spt = 63;
      heads = 16;
      cylTimesHeads = Math.floor(sectors / spt);
    }
  }
  return { c: Math.floor(cylTimesHeads / heads), h: heads, s: spt };
}

/** The 512-byte footer of a fixed VHD (Microsoft's VHD format specification, "Hard Disk Footer"). */
export function fixedVhdFooter(sizeBytes: number, nowUnixMs: number): Buffer {
  const f = Buffer.alloc(FOOTER_SIZE);
  f.write('conectix', 0, 'ascii');
  f.writeUInt32BE(2, 8); // features: reserved bit always set
  f.writeUInt32BE(0x00010000, 12); // format version 1.0
  f.writeBigUInt64BE(0xffffffffffffffffn, 16); // data offset: none for fixed disks
  f.writeUInt32BE(Math.max(0, Math.floor(nowUnixMs / 1000) - VHD_EPOCH_OFFSET), 24);
  f.write('hyfm', 28, 'ascii'); // creator application
  f.writeUInt32BE(0x00010000, 32); // creator version
  f.write('Wi2k', 36, 'ascii'); // creator host OS, as Hyper-V writes it
  f.writeBigUInt64BE(BigInt(sizeBytes), 40); // original size
  f.writeBigUInt64BE(BigInt(sizeBytes), 48); // current size
  const g = geometry(Math.floor(sizeBytes / 512));
  f.writeUInt16BE(g.c, 56);
  f.writeUInt8(g.h, 58);
  f.writeUInt8(g.s, 59);
  f.writeUInt32BE(2, 60); // disk type: fixed
  Buffer.from(randomUUID().replace(/-/g, ''), 'hex').copy(f, 68);
  let sum = 0;
  for (const b of f) sum += b;
  f.writeUInt32BE(~sum >>> 0, 64);
  return f;
}

/** Reads a fixed VHD's footer; throws if the file is not one. */
export function parseFixedFooter(f: Buffer): { sizeBytes: number } {
  if (f.length !== FOOTER_SIZE || f.toString('ascii', 0, 8) !== 'conectix')
    throw new Error('not a VHD file (no footer cookie)');
  const stored = f.readUInt32BE(64);
  const copy = Buffer.from(f);
  copy.writeUInt32BE(0, 64);
  let sum = 0;
  for (const b of copy) sum += b;
  if (~sum >>> 0 !== stored) throw new Error('VHD footer checksum mismatch');
  const type = f.readUInt32BE(60);
  if (type !== 2)
    throw new Error(
      `VHD disk type ${type} is not fixed (2); dynamic and differencing disks need @hyperfarm/vhd`,
    );
  return { sizeBytes: Number(f.readBigUInt64BE(48)) };
}

/** A fixed VHD: the guest's bytes as they are, then the footer. */
export class FixedVhdDisk implements DiskBackend {
  private constructor(
    private readonly fh: FileHandle,
    readonly sizeBytes: number,
  ) {}

  static async create(path: string, sizeBytes: number, nowUnixMs: number): Promise<FixedVhdDisk> {
    const fh = await open(path, 'wx');
    try {
      await fh.truncate(sizeBytes);
      await fh.write(fixedVhdFooter(sizeBytes, nowUnixMs), 0, FOOTER_SIZE, sizeBytes);
      await fh.sync();
    } catch (err) {
      await fh.close();
      throw err;
    }
    return new FixedVhdDisk(fh, sizeBytes);
  }

  static async open(path: string): Promise<FixedVhdDisk> {
    const { size } = await stat(path);
    const fh = await open(path, 'r+');
    try {
      const footer = Buffer.alloc(FOOTER_SIZE);
      await fh.read(footer, 0, FOOTER_SIZE, size - FOOTER_SIZE);
      const { sizeBytes } = parseFixedFooter(footer);
      if (sizeBytes + FOOTER_SIZE !== size)
        throw new Error(`${path}: footer says ${sizeBytes} bytes but the file holds ${size - FOOTER_SIZE}`);
      return new FixedVhdDisk(fh, sizeBytes);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private check(offset: number, length: number): void {
    if (offset < 0 || offset + length > this.sizeBytes || offset % 512 !== 0) {
      throw new RangeError(
        `I/O at ${offset}+${length} outside the ${this.sizeBytes}-byte disk or not sector-aligned`,
      );
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check(offset, length);
    const buf = Buffer.alloc(length);
    await this.fh.read(buf, 0, length, offset);
    return buf;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.check(offset, data.length);
    await this.fh.write(data, 0, data.length, offset);
  }

  flush(): Promise<void> {
    return this.fh.datasync();
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/** The agent's own fixed-only backend; a dynamic disk asked of it is refused. */
export const fixedVhdFactory = (clock: () => number): DiskFactory => ({
  create: (path, size, kind) => {
    if (kind !== 'fixed') return Promise.reject(new Error('this disk backend creates fixed disks only'));
    return FixedVhdDisk.create(path, size, clock());
  },
  open: (path) => FixedVhdDisk.open(path),
});

/**
 * A disk that can be told to fail, for tests and drills: 'full' answers ENOSPC, 'failed' EIO,
 * both on writes only (the guest notices when it writes).
 */
export class FaultyDisk implements DiskBackend {
  fault: 'full' | 'failed' | undefined;
  constructor(private readonly inner: DiskBackend) {}
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  read(offset: number, length: number): Promise<Buffer> {
    return this.inner.read(offset, length);
  }
  async write(offset: number, data: Buffer): Promise<void> {
    if (this.fault) {
      throw Object.assign(
        new Error(this.fault === 'full' ? 'no space left on device' : 'input/output error'),
        {
          code: this.fault === 'full' ? 'ENOSPC' : 'EIO',
        },
      );
    }
    return this.inner.write(offset, data);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
