import { createVhd, isNoSpace, VhdDisk, VhdNoSpaceError, type StorageProvider } from '@hyperfarm/vhd';

/**
 * The narrow interface through which the storage VSP reaches a virtual disk. The VHD library
 * (@hyperfarm/vhd, `vhdLibraryFactory`) provides fixed and dynamic disks behind it; the format
 * itself (footer, CHS geometry, checksums) lives only there.
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

/**
 * How a failed disk call shows to the guest: the disk is full, or it failed. The VHD library
 * reports a full file system as its own VhdNoSpaceError (which carries no errno code); a backend
 * of another kind may throw the file system's ENOSPC or EDQUOT as it is.
 */
export function storageFailureKind(err: unknown): 'full' | 'failed' {
  return err instanceof VhdNoSpaceError || isNoSpace(err) ? 'full' : 'failed';
}

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
