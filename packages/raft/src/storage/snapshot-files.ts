import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';

/**
 * Snapshot files, written so that a crash at any moment leaves either the old file or the new
 * one, never a torn one: write a temp file and fsync it, rename it into place, then fsync the
 * folder so the rename itself is durable.
 */

/** The steps of an atomic write, in order; tests record them to check the order. */
export type FileStep = 'write-temp' | 'fsync-file' | 'rename' | 'fsync-dir';

export interface FileOps {
  onStep?: (step: FileStep, path: string) => void;
}

export function snapshotFileName(term: number, index: number): string {
  // Fixed width so names sort by position in the log.
  return `${term.toString(16).padStart(16, '0')}-${index.toString(16).padStart(16, '0')}.snap`;
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes `data` to `dir/name` atomically and durably; returns its CRC32. Asynchronous, so a
 * large snapshot does not stall the node's event loop (heartbeats, client requests) while it
 * is written and synced.
 */
export async function writeFileDurably(
  dir: string,
  name: string,
  data: Uint8Array,
  ops: FileOps = {},
): Promise<number> {
  const finalPath = join(dir, name);
  const tempPath = join(dir, `.${name}.tmp`);
  const handle = await open(tempPath, 'w');
  try {
    ops.onStep?.('write-temp', tempPath);
    await handle.writeFile(data);
    ops.onStep?.('fsync-file', tempPath);
    await handle.sync();
  } finally {
    await handle.close();
  }
  ops.onStep?.('rename', finalPath);
  await rename(tempPath, finalPath);
  ops.onStep?.('fsync-dir', dir);
  await fsyncDir(dir);
  return crc32(data);
}

export function readSnapshotFile(dir: string, name: string, expectedCrc: number): Uint8Array {
  const path = join(dir, name);
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new Error(`snapshot file ${path} cannot be read: ${(err as Error).message}`);
  }
  const actual = crc32(data);
  if (actual !== expectedCrc) {
    throw new Error(
      `snapshot file ${path} is corrupt: CRC ${actual.toString(16)} does not match the recorded ${expectedCrc.toString(16)}`,
    );
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Removes every snapshot file and leftover temp file except `keep`. */
export function removeOtherSnapshots(dir: string, keep: string): void {
  for (const name of readdirSync(dir)) {
    if (name !== keep && (name.endsWith('.snap') || name.endsWith('.snap.tmp'))) {
      rmSync(join(dir, name), { force: true });
    }
  }
}
