import { vhdChecksum } from './checksum.js';
import {
  DYNAMIC_HEADER_COOKIE,
  DYNAMIC_HEADER_SIZE,
  DYNAMIC_HEADER_VERSION,
  NO_DATA_OFFSET,
} from './constants.js';
import { hex } from './footer.js';

/** One of the eight parent locator entries of a dynamic header. */
export interface ParentLocatorEntry {
  platformCode: number;
  /** Space reserved for the locator's data, in 512-byte sectors (as the spec says). */
  dataSpace: number;
  /** Length of the locator's data in bytes. */
  dataLength: number;
  /** Absolute file offset of the locator's data. */
  dataOffset: number;
}

/** The 1024-byte dynamic disk header ("cxsparse"), at the footer's data offset. */
export interface DynamicHeader {
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Buffer;
  parentTimestamp: number;
  /** The parent's name, stored UTF-16BE in 512 bytes. */
  parentName: string;
  parentLocators: ParentLocatorEntry[];
}

const CHECKSUM_OFFSET = 36;
const LOCATORS_OFFSET = 576;
const LOCATOR_ENTRY_SIZE = 24;
const LOCATOR_COUNT = 8;

export function encodeDynamicHeader(h: DynamicHeader): Buffer {
  const b = Buffer.alloc(DYNAMIC_HEADER_SIZE);
  b.write(DYNAMIC_HEADER_COOKIE, 0, 'latin1');
  b.writeBigUInt64BE(NO_DATA_OFFSET, 8);
  b.writeBigUInt64BE(BigInt(h.tableOffset), 16);
  b.writeUInt32BE(h.headerVersion, 24);
  b.writeUInt32BE(h.maxTableEntries, 28);
  b.writeUInt32BE(h.blockSize, 32);
  h.parentUniqueId.copy(b, 40, 0, 16);
  b.writeUInt32BE(h.parentTimestamp >>> 0, 56);
  const name = encodeUtf16Be(h.parentName);
  name.copy(b, 64, 0, Math.min(name.length, 512));
  if (h.parentLocators.length > LOCATOR_COUNT) throw new RangeError('at most 8 parent locators');
  h.parentLocators.forEach((l, i) => {
    const at = LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE;
    b.writeUInt32BE(l.platformCode, at);
    b.writeUInt32BE(l.dataSpace, at + 4);
    b.writeUInt32BE(l.dataLength, at + 8);
    b.writeBigUInt64BE(BigInt(l.dataOffset), at + 16);
  });
  const checksum = vhdChecksum(b, CHECKSUM_OFFSET);
  b.writeUInt32BE(checksum, CHECKSUM_OFFSET);
  h.checksum = checksum;
  return b;
}

export type DynamicHeaderParse = { ok: true; header: DynamicHeader } | { ok: false; reason: string };

export function decodeDynamicHeader(b: Buffer): DynamicHeaderParse {
  const cookie = b.toString('latin1', 0, 8);
  if (cookie !== DYNAMIC_HEADER_COOKIE) {
    return { ok: false, reason: `cookie is ${JSON.stringify(cookie)}, expected "cxsparse"` };
  }
  const stored = b.readUInt32BE(CHECKSUM_OFFSET);
  const computed = vhdChecksum(b.subarray(0, DYNAMIC_HEADER_SIZE), CHECKSUM_OFFSET);
  if (stored !== computed) {
    return { ok: false, reason: `checksum mismatch: stored 0x${hex(stored)}, computed 0x${hex(computed)}` };
  }
  const blockSize = b.readUInt32BE(32);
  if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) {
    return { ok: false, reason: `block size ${blockSize} is not a power of two of at least 512` };
  }
  const locators: ParentLocatorEntry[] = [];
  for (let i = 0; i < LOCATOR_COUNT; i++) {
    const at = LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE;
    locators.push({
      platformCode: b.readUInt32BE(at),
      dataSpace: b.readUInt32BE(at + 4),
      dataLength: b.readUInt32BE(at + 8),
      dataOffset: Number(b.readBigUInt64BE(at + 16)),
    });
  }
  return {
    ok: true,
    header: {
      tableOffset: Number(b.readBigUInt64BE(16)),
      headerVersion: b.readUInt32BE(24),
      maxTableEntries: b.readUInt32BE(28),
      blockSize,
      checksum: stored,
      parentUniqueId: Buffer.from(b.subarray(40, 56)),
      parentTimestamp: b.readUInt32BE(56),
      parentName: decodeUtf16Be(b.subarray(64, 576)),
      parentLocators: locators.filter((l) => l.platformCode !== 0),
    },
  };
}

export function newDynamicHeader(fields: {
  tableOffset: number;
  maxTableEntries: number;
  blockSize: number;
}): DynamicHeader {
  return {
    tableOffset: fields.tableOffset,
    headerVersion: DYNAMIC_HEADER_VERSION,
    maxTableEntries: fields.maxTableEntries,
    blockSize: fields.blockSize,
    checksum: 0,
    parentUniqueId: Buffer.alloc(16),
    parentTimestamp: 0,
    parentName: '',
    parentLocators: [],
  };
}

export function encodeUtf16Be(s: string): Buffer {
  const le = Buffer.from(s, 'utf16le');
  return le.swap16();
}

export function decodeUtf16Be(b: Buffer): string {
  const copy = Buffer.from(b.subarray(0, b.length & ~1));
  const s = copy.swap16().toString('utf16le');
  const nul = s.indexOf('\0');
  return nul === -1 ? s : s.slice(0, nul);
}
