import { open, rename, rm } from 'node:fs/promises';
import { fillPage, GuestMemory, holdsPage, holdsPageV1, PAGE_SIZE, StateHasher } from '../engine/memory.js';
import { decodeDeviceState, type DeviceStateModel } from '../engine/partition.js';

/**
 * The saved-state file of a VM (its ".vsv"/".bin" pair in Hyper-V, one file here):
 *
 *   "HFSAVE02" | u32 total pages | u32 device-state length | device state
 *   then per written page, ascending: u32 page | u32 version | 4096 bytes of content
 *   then u32 0xFFFFFFFF | 32-byte SHA-256 state hash
 *
 * Zero pages (never written) are skipped. "HFSAVE01" files, written before page contents version 2
 * (engine/memory.ts), are read too: their contents are checked against version 1. Written through a temporary file, fsynced and renamed,
 * so a crash leaves either the old file or the new one, never half of one.
 */
const MAGIC = Buffer.from('HFSAVE02', 'ascii');
const MAGIC_V1 = Buffer.from('HFSAVE01', 'ascii');
const RECORD = 8 + PAGE_SIZE;
const END = 0xffffffff;
const BATCH_RECORDS = 256; // ~1 MiB per write

export interface SaveResult {
  sha256: string;
  bytes: number;
  pages: number;
}

export async function writeSavedState(
  path: string,
  memory: GuestMemory,
  deviceState: Buffer,
): Promise<SaveResult> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w');
  const h = new StateHasher(memory.seed, memory.totalPages);
  let position = 0;
  let pages = 0;
  try {
    const head = Buffer.alloc(16);
    MAGIC.copy(head, 0);
    head.writeUInt32BE(memory.totalPages, 8);
    head.writeUInt32BE(deviceState.length, 12);
    await fh.write(head, 0, head.length, position);
    position += head.length;
    await fh.write(deviceState, 0, deviceState.length, position);
    position += deviceState.length;

    // Two buffers: the next batch is generated while the previous one is being written.
    const buffers = [Buffer.allocUnsafe(BATCH_RECORDS * RECORD), Buffer.allocUnsafe(BATCH_RECORDS * RECORD)];
    let current = 0;
    let buf = buffers[0]!;
    let n = 0;
    let writing: Promise<unknown> = Promise.resolve();
    const flush = async () => {
      await writing;
      writing = fh.write(buf, 0, n * RECORD, position);
      position += n * RECORD;
      n = 0;
      current ^= 1;
      buf = buffers[current]!;
    };
    for (const page of memory.residentPageNumbers()) {
      const version = memory.versionOf(page);
      const at = n * RECORD;
      buf.writeUInt32BE(page, at);
      buf.writeUInt32BE(version, at + 4);
      fillPage(memory.seed, page, version, buf, at + 8);
      h.addPage(page, version);
      pages++;
      if (++n === BATCH_RECORDS) await flush();
    }
    if (n > 0) await flush();
    await writing;
    const sha256 = h.finish(deviceState);
    const tail = Buffer.alloc(36);
    tail.writeUInt32BE(END, 0);
    Buffer.from(sha256, 'hex').copy(tail, 4);
    await fh.write(tail, 0, tail.length, position);
    position += tail.length;
    await fh.sync();
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await rename(tmp, path);
  return { sha256: (await readHashOnly(path))!, bytes: position, pages };
}

/** The hash stored in a saved-state file's trailer. */
async function readHashOnly(path: string): Promise<string | undefined> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const tail = Buffer.alloc(32);
    await fh.read(tail, 0, 32, size - 32);
    return tail.toString('hex');
  } finally {
    await fh.close();
  }
}

export interface RestoreResult {
  memory: GuestMemory;
  device: DeviceStateModel;
  deviceState: Buffer;
  sha256: string;
  bytes: number;
}

/**
 * Reads a saved state back. Every page's bytes are checked against the (VM, page, version)
 * derivation and the whole against the trailer's hash, so a torn or altered file is refused.
 */
export async function readSavedState(path: string, vmId: string): Promise<RestoreResult> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const head = Buffer.alloc(16);
    await fh.read(head, 0, 16, 0);
    const v1 = head.subarray(0, 8).equals(MAGIC_V1);
    if (!v1 && !head.subarray(0, 8).equals(MAGIC)) throw new Error(`${path} is not a saved-state file`);
    const holds = v1 ? holdsPageV1 : holdsPage;
    const totalPages = head.readUInt32BE(8);
    const deviceLength = head.readUInt32BE(12);
    const deviceState = Buffer.alloc(deviceLength);
    await fh.read(deviceState, 0, deviceLength, 16);
    const device = decodeDeviceState(deviceState);
    const memory = new GuestMemory(vmId, totalPages);
    const h = new StateHasher(memory.seed, totalPages);
    const buf = Buffer.allocUnsafe(BATCH_RECORDS * RECORD);
    let position = 16 + deviceLength;
    const recordsEnd = size - 36;
    if ((recordsEnd - position) % RECORD !== 0 || recordsEnd < position)
      throw new Error(`${path} is truncated`);
    while (position < recordsEnd) {
      const want = Math.min(buf.length, recordsEnd - position);
      const { bytesRead } = await fh.read(buf, 0, want, position);
      if (bytesRead !== want) throw new Error(`${path} is truncated`);
      for (let at = 0; at < want; at += RECORD) {
        const page = buf.readUInt32BE(at);
        const version = buf.readUInt32BE(at + 4);
        if (!holds(memory.seed, page, version, buf, at + 8))
          throw new Error(`${path}: page ${page} does not hold version ${version}'s content`);
        memory.install(page, version);
        h.addPage(page, version);
      }
      position += want;
    }
    const tail = Buffer.alloc(36);
    await fh.read(tail, 0, 36, recordsEnd);
    if (tail.readUInt32BE(0) !== END) throw new Error(`${path} has no end marker`);
    const sha256 = h.finish(deviceState);
    if (sha256 !== tail.subarray(4).toString('hex')) throw new Error(`${path}: state hash mismatch`);
    return { memory, device, deviceState, sha256, bytes: size };
  } finally {
    await fh.close();
  }
}
