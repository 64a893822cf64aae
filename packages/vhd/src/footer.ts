import { vhdChecksum } from './checksum.js';
import {
  DiskType,
  FEATURES_RESERVED,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  FORMAT_VERSION,
  NO_DATA_OFFSET,
} from './constants.js';
import type { Geometry } from './geometry.js';

/** The 512-byte hard disk footer, at the end of every VHD (and copied at offset 0 of dynamic ones). */
export interface Footer {
  features: number;
  formatVersion: number;
  /** Offset of the dynamic header; NO_DATA_OFFSET for fixed disks. */
  dataOffset: bigint;
  /** Seconds since 2000-01-01 00:00:00 UTC. */
  timestamp: number;
  creatorApplication: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: number;
  currentSize: number;
  geometry: Geometry;
  diskType: DiskType;
  checksum: number;
  uniqueId: Buffer;
  savedState: boolean;
}

const CHECKSUM_OFFSET = 64;

export function encodeFooter(f: Footer): Buffer {
  const b = Buffer.alloc(FOOTER_SIZE);
  b.write(FOOTER_COOKIE, 0, 'latin1');
  b.writeUInt32BE(f.features, 8);
  b.writeUInt32BE(f.formatVersion, 12);
  b.writeBigUInt64BE(f.dataOffset, 16);
  b.writeUInt32BE(f.timestamp >>> 0, 24);
  b.write(f.creatorApplication.padEnd(4, '\0').slice(0, 4), 28, 'latin1');
  b.writeUInt32BE(f.creatorVersion, 32);
  b.write(f.creatorHostOs.padEnd(4, '\0').slice(0, 4), 36, 'latin1');
  b.writeBigUInt64BE(BigInt(f.originalSize), 40);
  b.writeBigUInt64BE(BigInt(f.currentSize), 48);
  b.writeUInt16BE(f.geometry.cylinders, 56);
  b.writeUInt8(f.geometry.heads, 58);
  b.writeUInt8(f.geometry.sectorsPerTrack, 59);
  b.writeUInt32BE(f.diskType, 60);
  f.uniqueId.copy(b, 68, 0, 16);
  b.writeUInt8(f.savedState ? 1 : 0, 84);
  const checksum = vhdChecksum(b, CHECKSUM_OFFSET);
  b.writeUInt32BE(checksum, CHECKSUM_OFFSET);
  f.checksum = checksum;
  return b;
}

/** Result of decoding: either a footer or the reason these 512 bytes are not a valid one. */
export type FooterParse = { ok: true; footer: Footer } | { ok: false; reason: string };

export function decodeFooter(b: Buffer): FooterParse {
  if (b.length < FOOTER_SIZE)
    return { ok: false, reason: `only ${b.length} bytes, a footer needs ${FOOTER_SIZE}` };
  const cookie = b.toString('latin1', 0, 8);
  if (cookie !== FOOTER_COOKIE)
    return { ok: false, reason: `cookie is ${JSON.stringify(cookie)}, expected "conectix"` };
  const stored = b.readUInt32BE(CHECKSUM_OFFSET);
  const computed = vhdChecksum(b.subarray(0, FOOTER_SIZE), CHECKSUM_OFFSET);
  if (stored !== computed) {
    return { ok: false, reason: `checksum mismatch: stored 0x${hex(stored)}, computed 0x${hex(computed)}` };
  }
  const diskType = b.readUInt32BE(60);
  if (diskType !== DiskType.Fixed && diskType !== DiskType.Dynamic && diskType !== DiskType.Differencing) {
    return { ok: false, reason: `disk type ${diskType} is not fixed (2), dynamic (3) or differencing (4)` };
  }
  const formatVersion = b.readUInt32BE(12);
  if (formatVersion >>> 16 !== 1) {
    return { ok: false, reason: `format version 0x${hex(formatVersion)} is not 1.x` };
  }
  const currentSize = Number(b.readBigUInt64BE(48));
  if (currentSize % 512 !== 0) {
    return { ok: false, reason: `current size ${currentSize} is not a multiple of 512` };
  }
  return {
    ok: true,
    footer: {
      features: b.readUInt32BE(8),
      formatVersion,
      dataOffset: b.readBigUInt64BE(16),
      timestamp: b.readUInt32BE(24),
      creatorApplication: b.toString('latin1', 28, 32),
      creatorVersion: b.readUInt32BE(32),
      creatorHostOs: b.toString('latin1', 36, 40),
      originalSize: Number(b.readBigUInt64BE(40)),
      currentSize,
      geometry: { cylinders: b.readUInt16BE(56), heads: b.readUInt8(58), sectorsPerTrack: b.readUInt8(59) },
      diskType,
      checksum: stored,
      uniqueId: Buffer.from(b.subarray(68, 84)),
      savedState: b.readUInt8(84) !== 0,
    },
  };
}

export function newFooter(fields: {
  diskType: DiskType;
  size: number;
  geometry: Geometry;
  timestamp: number;
  uniqueId: Buffer;
  creatorApplication: string;
}): Footer {
  return {
    features: FEATURES_RESERVED,
    formatVersion: FORMAT_VERSION,
    dataOffset: fields.diskType === DiskType.Fixed ? NO_DATA_OFFSET : 512n,
    timestamp: fields.timestamp,
    creatorApplication: fields.creatorApplication,
    creatorVersion: 0x00010000,
    // The spec defines only 'Wi2k' and 'Mac '; Windows hosts are what every reader expects.
    creatorHostOs: 'Wi2k',
    originalSize: fields.size,
    currentSize: fields.size,
    geometry: fields.geometry,
    diskType: fields.diskType,
    checksum: 0,
    uniqueId: fields.uniqueId,
    savedState: false,
  };
}

export function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}
