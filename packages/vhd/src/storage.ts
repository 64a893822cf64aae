import { constants as fsConstants, promises as fsp } from 'node:fs';
import * as path from 'node:path';

/**
 * The byte store under a VHD. Everything the library writes goes through these
 * five calls, so a test can put a store that crashes at a chosen point underneath.
 */
export interface Storage {
  /** Reads `length` bytes at `offset`; bytes past the end of the store read as zero. */
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every earlier write durable (fsync). */
  flush(): Promise<void>;
  size(): Promise<number>;
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Where disks live: opening, creating, renaming and removing them by path. The
 * library resolves a differencing disk's parent through this, so a whole chain can
 * live in memory in tests.
 */
export interface StorageProvider {
  open(filePath: string, mode: 'read' | 'readwrite'): Promise<Storage>;
  /** Creates a new empty store; fails if `filePath` exists. */
  create(filePath: string): Promise<Storage>;
  exists(filePath: string): Promise<boolean>;
  /** Atomically replaces `to` with `from`, durably (the directory is synced). */
  rename(from: string, to: string): Promise<void>;
  remove(filePath: string): Promise<void>;
  resolve(filePath: string): string;
}

/** A Storage over a node:fs file handle. */
export class FileStorage implements Storage {
  private constructor(private readonly handle: fsp.FileHandle) {}

  static async open(filePath: string, mode: 'read' | 'readwrite'): Promise<FileStorage> {
    const flags = mode === 'read' ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
    return new FileStorage(await fsp.open(filePath, flags));
  }

  static async create(filePath: string): Promise<FileStorage> {
    return new FileStorage(await fsp.open(filePath, 'wx+'));
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break; // end of file: the rest stays zero
      done += bytesRead;
    }
    return buf;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    await this.handle.sync();
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size;
  }

  async truncate(length: number): Promise<void> {
    await this.handle.truncate(length);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** The real file system. */
export class FileSystemProvider implements StorageProvider {
  open(filePath: string, mode: 'read' | 'readwrite'): Promise<Storage> {
    return FileStorage.open(filePath, mode);
  }

  create(filePath: string): Promise<Storage> {
    return FileStorage.create(filePath);
  }

  async exists(filePath: string): Promise<boolean> {
    try {
      await fsp.access(filePath);
      return true;
    } catch {
      return false;
    }
  }

  async rename(from: string, to: string): Promise<void> {
    await fsp.rename(from, to);
    // A rename is durable only once its directory is synced.
    const dir = await fsp.open(path.dirname(path.resolve(to)), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  async remove(filePath: string): Promise<void> {
    await fsp.rm(filePath);
  }

  resolve(filePath: string): string {
    return path.resolve(filePath);
  }
}
