import { crc32 } from 'node:zlib';
import { type ConfState, type Entry, EntryType, type HardState, type SnapshotMeta } from '../types.js';

/**
 * The on-disk layout of the Raft log in LevelDB. Keys are short ASCII prefixes; entry keys end in
 * the index as 8 bytes big-endian, so LevelDB's byte order is index order and a range scan
 * returns the log in sequence.
 *
 *   h            hard state (JSON)
 *   c            membership (JSON)
 *   s            snapshot metadata (JSON: index, term, conf, file, crc)
 *   e/<u64 BE>   entry: crc32 (4) | term (8) | type (1) | data
 *
 * The CRC covers the index too, so an entry copied under the wrong key is caught as corrupt.
 */

export const HARD_STATE_KEY = Buffer.from('h');
export const CONF_KEY = Buffer.from('c');
export const SNAPSHOT_KEY = Buffer.from('s');
const ENTRY_PREFIX = Buffer.from('e/');
const ENTRY_HEADER_BYTES = 4 + 8 + 1;

export function entryKey(index: number): Buffer {
  const key = Buffer.alloc(ENTRY_PREFIX.length + 8);
  ENTRY_PREFIX.copy(key, 0);
  key.writeBigUInt64BE(BigInt(index), ENTRY_PREFIX.length);
  return key;
}

/** The smallest and just-past-largest entry keys, for range scans and range deletes. */
export const ENTRY_KEY_MIN = entryKey(0);
/** Sorts after every 'e/…' key ('0' follows '/'). */
export const ENTRY_KEY_END = Buffer.from('e0');

export function indexOfEntryKey(key: Uint8Array): number {
  const buf = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  if (buf.length !== ENTRY_PREFIX.length + 8 || !buf.subarray(0, ENTRY_PREFIX.length).equals(ENTRY_PREFIX)) {
    throw new Error(`not an entry key: ${buf.toString('hex')}`);
  }
  return Number(buf.readBigUInt64BE(ENTRY_PREFIX.length));
}

function checksum(index: number, body: Uint8Array): number {
  const indexBytes = Buffer.alloc(8);
  indexBytes.writeBigUInt64BE(BigInt(index));
  return crc32(body, crc32(indexBytes));
}

export function encodeEntry(entry: Entry): Buffer {
  const value = Buffer.alloc(ENTRY_HEADER_BYTES + entry.data.byteLength);
  value.writeBigUInt64BE(BigInt(entry.term), 4);
  value.writeUInt8(entry.type, 12);
  value.set(entry.data, ENTRY_HEADER_BYTES);
  value.writeUInt32BE(checksum(entry.index, value.subarray(4)), 0);
  return value;
}

/** Thrown when the stored log cannot be trusted; the node must not start on it. */
export class CorruptLogError extends Error {
  constructor(
    readonly index: number,
    reason: string,
  ) {
    super(
      `raft log entry ${index} is unusable: ${reason}; refusing to start (restore this node from a peer)`,
    );
    this.name = 'CorruptLogError';
  }
}

export function decodeEntry(index: number, value: Uint8Array): Entry {
  const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (buf.length < ENTRY_HEADER_BYTES) {
    throw new CorruptLogError(
      index,
      `value is ${buf.length} bytes, shorter than the ${ENTRY_HEADER_BYTES}-byte header`,
    );
  }
  const stored = buf.readUInt32BE(0);
  const actual = checksum(index, buf.subarray(4));
  if (stored !== actual) {
    throw new CorruptLogError(
      index,
      `CRC mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`,
    );
  }
  const type = buf.readUInt8(12);
  if (!(type in EntryType)) throw new CorruptLogError(index, `unknown entry type ${type}`);
  return {
    index,
    term: Number(buf.readBigUInt64BE(4)),
    type: type as EntryType,
    // A copy: LevelDB may reuse the buffer it handed out.
    data: new Uint8Array(buf.subarray(ENTRY_HEADER_BYTES)),
  };
}

export const encodeJson = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

export function decodeJson<T>(what: string, value: Uint8Array): T {
  try {
    return JSON.parse(Buffer.from(value).toString('utf8')) as T;
  } catch (err) {
    throw new Error(`stored ${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/** What LevelDB records about the snapshot on disk. */
export interface StoredSnapshotMeta extends SnapshotMeta {
  /** File name inside the snapshot folder. */
  file: string;
  /** CRC32 of the file's contents. */
  crc: number;
  bytes: number;
}

export const EMPTY_HARD_STATE: HardState = { term: 0, vote: '', commit: 0 };
export const EMPTY_CONF: ConfState = { voters: [], learners: [] };
