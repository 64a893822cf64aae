import * as path from 'node:path';
import type { Storage, StorageProvider } from './storage.js';

/** Thrown by a MemoryFileSystem once its planned crash point has been reached. */
export class SimulatedCrash extends Error {
  constructor(readonly operation: number) {
    super(`simulated crash at storage operation ${operation}`);
    this.name = 'SimulatedCrash';
  }
}

/** How a planned crash behaves at the chosen operation. */
export interface CrashPlan {
  /** The 1-based count of mutating operations (write, truncate, flush, rename, remove) at which to crash. */
  atOperation: number;
  /** 'before': the operation does not happen. 'torn': a write lands only its first half. */
  mode: 'before' | 'torn';
}

/** A growable byte array with a logical length. */
class Bytes {
  buf: Buffer;
  length: number;
  constructor(initial?: Buffer) {
    this.buf = Buffer.alloc(Math.max(4096, initial?.length ?? 0));
    this.length = initial?.length ?? 0;
    initial?.copy(this.buf);
  }
  ensure(n: number): void {
    if (n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(n, this.buf.length * 2));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  write(offset: number, data: Uint8Array): void {
    this.ensure(offset + data.length);
    if (offset > this.length) this.buf.fill(0, this.length, offset);
    this.buf.set(data, offset);
    this.length = Math.max(this.length, offset + data.length);
  }
  truncate(n: number): void {
    this.ensure(n);
    if (n > this.length) this.buf.fill(0, this.length, n);
    this.length = n;
  }
  snapshot(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.length));
  }
}

/** One in-memory file: what a reader sees now, and what would survive a power cut. */
class MemoryFile {
  visible: Bytes;
  durable: Bytes;
  constructor(content?: Buffer) {
    this.visible = new Bytes(content);
    this.durable = new Bytes(content);
  }
}

/**
 * An in-memory file system whose mutating operations are counted, so a test can
 * crash it at the k-th one. After a crash every call throws; `survivors()` gives the
 * files as a power cut would leave them: only what was flushed ('durable'), or every
 * write that reached the store including a torn last one ('everything').
 */
export class MemoryFileSystem implements StorageProvider {
  private readonly files = new Map<string, MemoryFile>();
  private operations = 0;
  private plan: CrashPlan | undefined;
  private crashed = false;
  private capacity: number | undefined;

  /** Number of mutating operations so far (use it to enumerate crash points). */
  get operationCount(): number {
    return this.operations;
  }

  planCrash(plan: CrashPlan | undefined): void {
    this.plan = plan;
  }

  /**
   * Limits the bytes all files may hold together; a write or truncate that would grow
   * past it fails with ENOSPC, changing nothing. `undefined` removes the limit.
   */
  setCapacity(bytes: number | undefined): void {
    this.capacity = bytes;
  }

  /** Bytes held by all files (their visible length). */
  get usedBytes(): number {
    let n = 0;
    for (const f of this.files.values()) n += f.visible.length;
    return n;
  }

  /** Throws ENOSPC if growing by `growth` bytes would exceed the capacity. */
  checkSpace(growth: number): void {
    if (this.capacity === undefined || growth <= 0) return;
    if (this.usedBytes + growth > this.capacity) {
      const err = new Error('ENOSPC: no space left on device') as NodeJS.ErrnoException;
      err.code = 'ENOSPC';
      throw err;
    }
  }

  get hasCrashed(): boolean {
    return this.crashed;
  }

  /** A fresh file system holding what survives a crash now. */
  survivors(which: 'durable' | 'everything'): MemoryFileSystem {
    const out = new MemoryFileSystem();
    for (const [name, f] of this.files) {
      out.files.set(name, new MemoryFile((which === 'durable' ? f.durable : f.visible).snapshot()));
    }
    return out;
  }

  /** Adds or replaces a file with `content`, durable at once. */
  put(filePath: string, content: Buffer): void {
    this.files.set(this.resolve(filePath), new MemoryFile(content));
  }

  /** The current (visible) content of a file. */
  get(filePath: string): Buffer {
    return this.file(filePath).visible.snapshot();
  }

  list(): string[] {
    return [...this.files.keys()].sort();
  }

  async open(filePath: string, mode: 'read' | 'readwrite'): Promise<Storage> {
    this.checkAlive();
    return new MemoryStorage(this, this.file(filePath), mode === 'read');
  }

  async create(filePath: string): Promise<Storage> {
    this.checkAlive();
    const key = this.resolve(filePath);
    if (this.files.has(key)) throw new Error(`EEXIST: file already exists, '${filePath}'`);
    const f = new MemoryFile();
    this.files.set(key, f);
    return new MemoryStorage(this, f, false);
  }

  async exists(filePath: string): Promise<boolean> {
    return this.files.has(this.resolve(filePath));
  }

  async rename(from: string, to: string): Promise<void> {
    this.step(() => {
      const f = this.file(from);
      this.files.delete(this.resolve(from));
      // Renames are modelled as atomic and durable (the directory is synced).
      this.files.set(this.resolve(to), f);
    });
  }

  async remove(filePath: string): Promise<void> {
    this.step(() => {
      this.file(filePath);
      this.files.delete(this.resolve(filePath));
    });
  }

  resolve(filePath: string): string {
    return path.posix.resolve('/', filePath);
  }

  private file(filePath: string): MemoryFile {
    const f = this.files.get(this.resolve(filePath));
    if (!f) throw new Error(`ENOENT: no such file, '${filePath}'`);
    return f;
  }

  checkAlive(): void {
    if (this.crashed) throw new SimulatedCrash(this.operations);
  }

  /**
   * Runs one mutating operation, unless the crash plan says this is where the
   * machine dies. `torn` is the half-done version of the operation, if it has one.
   */
  step(op: () => void, torn?: () => void): void {
    this.checkAlive();
    this.operations++;
    if (this.plan && this.operations === this.plan.atOperation) {
      if (this.plan.mode === 'torn' && torn) torn();
      this.crashed = true;
      throw new SimulatedCrash(this.operations);
    }
    op();
  }
}

class MemoryStorage implements Storage {
  private closed = false;
  constructor(
    private readonly fs: MemoryFileSystem,
    private readonly file: MemoryFile,
    private readonly readOnly: boolean,
  ) {}

  async read(offset: number, length: number): Promise<Buffer> {
    this.fs.checkAlive();
    this.checkOpen();
    const out = Buffer.alloc(length);
    const v = this.file.visible;
    if (offset < v.length) v.buf.copy(out, 0, offset, Math.min(v.length, offset + length));
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable();
    this.fs.checkSpace(offset + data.length - this.file.visible.length);
    const copy = Buffer.from(data);
    this.fs.step(
      () => this.file.visible.write(offset, copy),
      () => this.file.visible.write(offset, copy.subarray(0, Math.floor(copy.length / 2))),
    );
  }

  async flush(): Promise<void> {
    this.checkOpen();
    this.fs.step(() => {
      this.file.durable = new Bytes(this.file.visible.snapshot());
    });
  }

  async size(): Promise<number> {
    this.fs.checkAlive();
    this.checkOpen();
    return this.file.visible.length;
  }

  async truncate(length: number): Promise<void> {
    this.checkWritable();
    this.fs.checkSpace(length - this.file.visible.length);
    this.fs.step(() => this.file.visible.truncate(length));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw new Error('storage is closed');
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) throw new Error('storage is open read-only');
  }
}
