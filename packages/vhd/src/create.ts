import { randomBytes } from 'node:crypto';
import {
  BAT_UNALLOCATED,
  DEFAULT_BLOCK_SIZE,
  DYNAMIC_HEADER_SIZE,
  type DiskKind,
  DiskType,
  FOOTER_SIZE,
  MAX_VIRTUAL_SIZE,
  SECTOR_SIZE,
  VHD_EPOCH_UNIX_SECONDS,
} from './constants.js';
import { type CacheMode, VhdDisk } from './disk.js';
import { type DynamicHeader, encodeDynamicHeader, newDynamicHeader } from './dynamic-header.js';
import { VhdArgumentError, VhdOperationError } from './errors.js';
import { type Footer, encodeFooter, newFooter } from './footer.js';
import { geometryForSectors, roundSizeToGeometry } from './geometry.js';
import { roundUpToSector } from './layout.js';
import { buildParentLocators, locatorSectors } from './parent-locator.js';
import { FileSystemProvider, type StorageProvider } from './storage.js';

export interface CreateOptions {
  type: DiskKind;
  /** Virtual size in bytes (fixed and dynamic). A differencing disk takes its parent's. */
  size?: number;
  /** Dynamic and differencing block size: a power of two, 512 B to 256 MiB; 2 MiB by default. */
  blockSize?: number;
  /** The parent of a differencing disk. */
  parentPath?: string;
  provider?: StorageProvider;
  cacheMode?: CacheMode;
  /** Keep `size` exactly instead of rounding it up to a whole CHS geometry (see geometry.ts). */
  exactSize?: boolean;
  /** Injected for deterministic files: the creation time and the unique id. */
  now?: () => Date;
  uniqueId?: Buffer;
  /** Four characters; "hyfm" by default. */
  creatorApplication?: string;
}

export const CREATOR_APPLICATION = 'hyfm';

const MIN_BLOCK = 512;
const MAX_BLOCK = 256 * 1024 * 1024;

/**
 * Creates a VHD and returns it open for writing. The file is written under a temporary
 * name, synced, then renamed into place, so a crash never leaves half a disk at `filePath`.
 */
export async function createVhd(filePath: string, options: CreateOptions): Promise<VhdDisk> {
  const provider = options.provider ?? new FileSystemProvider();
  const target = provider.resolve(filePath);
  if (!['fixed', 'dynamic', 'differencing'].includes(options.type)) {
    throw new VhdArgumentError(
      'type',
      `must be fixed, dynamic or differencing, got ${JSON.stringify(options.type)}`,
    );
  }
  if (await provider.exists(target)) throw new VhdOperationError(`${target} already exists`);
  const now = (options.now ?? (() => new Date()))();
  const timestamp = Math.max(0, Math.floor(now.getTime() / 1000) - VHD_EPOCH_UNIX_SECONDS);
  const uniqueId = options.uniqueId ?? randomBytes(16);
  if (uniqueId.length !== 16)
    throw new VhdArgumentError('uniqueId', `must be 16 bytes, got ${uniqueId.length}`);
  const creatorApplication = options.creatorApplication ?? CREATOR_APPLICATION;

  let image: { pieces: { offset: number; data: Buffer }[]; length: number };
  if (options.type === 'differencing') {
    if (!options.parentPath) throw new VhdArgumentError('parent', 'a differencing disk needs a parent');
    const parentPath = provider.resolve(options.parentPath);
    const parent = await VhdDisk.open(parentPath, { provider, readOnly: true });
    try {
      if (options.size !== undefined && options.size !== parent.virtualSize) {
        throw new VhdArgumentError(
          'size',
          `a differencing disk has its parent's size (${parent.virtualSize}), got ${options.size}`,
        );
      }
      const blockSize = checkBlockSize(options.blockSize ?? parent.blockSize ?? DEFAULT_BLOCK_SIZE);
      const footer = newFooter({
        diskType: DiskType.Differencing,
        size: parent.virtualSize,
        geometry: { ...parent.footer.geometry },
        timestamp,
        uniqueId,
        creatorApplication,
      });
      const header = newDynamicHeader({ tableOffset: 0, maxTableEntries: 0, blockSize });
      header.parentUniqueId = Buffer.from(parent.uniqueId);
      header.parentTimestamp = parent.footer.timestamp;
      header.parentName = parentPath.slice(-256);
      image = sparseImage(footer, header, buildParentLocators(target, parentPath));
    } finally {
      await parent.close();
    }
  } else {
    if (options.parentPath) throw new VhdArgumentError('parent', `only differencing disks have a parent`);
    const { size, geometry } = checkSize(options.size, options.exactSize ?? false);
    const diskType = options.type === 'fixed' ? DiskType.Fixed : DiskType.Dynamic;
    const footer = newFooter({ diskType, size, geometry, timestamp, uniqueId, creatorApplication });
    if (diskType === DiskType.Fixed) {
      if (options.blockSize !== undefined)
        throw new VhdArgumentError('blockSize', 'fixed disks have no blocks');
      image = { pieces: [{ offset: size, data: encodeFooter(footer) }], length: size + FOOTER_SIZE };
    } else {
      const blockSize = checkBlockSize(options.blockSize ?? DEFAULT_BLOCK_SIZE);
      image = sparseImage(footer, newDynamicHeader({ tableOffset: 0, maxTableEntries: 0, blockSize }), []);
    }
  }

  const temporary = `${target}.creating`;
  // A leftover from a crash during an earlier create: never visible as a disk, safe to drop.
  if (await provider.exists(temporary)) await provider.remove(temporary);
  const storage = await provider.create(temporary);
  try {
    await storage.truncate(image.length);
    for (const piece of image.pieces) await storage.write(piece.offset, piece.data);
    await storage.flush();
  } finally {
    await storage.close();
  }
  await provider.rename(temporary, target);
  return VhdDisk.open(target, { provider, cacheMode: options.cacheMode ?? 'writeback' });
}

/**
 * The metadata of an empty dynamic or differencing disk: footer copy, header, BAT, then
 * the parent locators' data, then the footer where the first block will go.
 */
export function sparseImage(
  footer: Footer,
  header: DynamicHeader,
  locators: { platformCode: number; data: Buffer }[],
  bat?: Uint32Array,
): { pieces: { offset: number; data: Buffer }[]; length: number; dataStart: number } {
  const maxTableEntries = bat?.length ?? Math.ceil(footer.currentSize / header.blockSize);
  const tableOffset = SECTOR_SIZE + DYNAMIC_HEADER_SIZE;
  const batBytes = roundUpToSector(maxTableEntries * 4);
  header.tableOffset = tableOffset;
  header.maxTableEntries = maxTableEntries;
  let at = tableOffset + batBytes;
  const pieces: { offset: number; data: Buffer }[] = [];
  header.parentLocators = locators.map((l) => {
    const sectors = locatorSectors(l.data.length);
    const entry = {
      platformCode: l.platformCode,
      dataSpace: sectors,
      dataLength: l.data.length,
      dataOffset: at,
    };
    pieces.push({ offset: at, data: l.data });
    at += sectors * SECTOR_SIZE;
    return entry;
  });
  const batBuf = Buffer.alloc(batBytes, 0xff);
  if (bat) for (let i = 0; i < bat.length; i++) batBuf.writeUInt32BE(bat[i] ?? BAT_UNALLOCATED, i * 4);
  footer.dataOffset = BigInt(SECTOR_SIZE);
  const footerBytes = encodeFooter(footer);
  pieces.push({ offset: 0, data: footerBytes });
  pieces.push({ offset: SECTOR_SIZE, data: encodeDynamicHeader(header) });
  pieces.push({ offset: tableOffset, data: batBuf });
  pieces.push({ offset: at, data: footerBytes });
  return { pieces, length: at + FOOTER_SIZE, dataStart: at };
}

export function checkBlockSize(blockSize: number): number {
  if (
    !Number.isInteger(blockSize) ||
    blockSize < MIN_BLOCK ||
    blockSize > MAX_BLOCK ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new VhdArgumentError('blockSize', `must be a power of two from 512 B to 256 MiB, got ${blockSize}`);
  }
  return blockSize;
}

/** Validates a requested virtual size and applies the CHS rounding policy. */
export function checkSize(
  size: number | undefined,
  exact: boolean,
): { size: number; geometry: ReturnType<typeof geometryForSectors> } {
  if (size === undefined) throw new VhdArgumentError('size', 'is required for fixed and dynamic disks');
  if (!Number.isSafeInteger(size) || size <= 0)
    throw new VhdArgumentError('size', `must be a positive integer, got ${size}`);
  if (size > MAX_VIRTUAL_SIZE)
    throw new VhdArgumentError(
      'size',
      `${size} exceeds the VHD limit of ${MAX_VIRTUAL_SIZE} bytes (2040 GiB)`,
    );
  if (exact) {
    if (size % SECTOR_SIZE !== 0)
      throw new VhdArgumentError('size', `must be a multiple of 512 bytes, got ${size}`);
    return { size, geometry: geometryForSectors(size / SECTOR_SIZE) };
  }
  return roundSizeToGeometry(size);
}
