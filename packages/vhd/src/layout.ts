import { bitmapSizeFor } from './bitmap.js';
import {
  BAT_UNALLOCATED,
  DYNAMIC_HEADER_SIZE,
  DiskType,
  FOOTER_SIZE,
  NO_DATA_OFFSET,
  SECTOR_SIZE,
} from './constants.js';
import { type DynamicHeader, decodeDynamicHeader } from './dynamic-header.js';
import { type Footer, decodeFooter } from './footer.js';
import { locatorSectors } from './parent-locator.js';
import type { Storage } from './storage.js';

/** One problem found in a VHD file. `fatal` ones make the disk unusable. */
export interface Issue {
  structure: string;
  offset: number;
  message: string;
  fatal: boolean;
}

/** Everything read from a VHD's metadata, before any data is touched. */
export interface Layout {
  fileSize: number;
  footer: Footer;
  /** Where the footer in use came from: the end of the file, or the copy at offset 0. */
  footerSource: 'end' | 'copy';
  /** Dynamic disks: whether the copy at offset 0 equals the footer in use. */
  copyMatches: boolean;
  /** Dynamic and differencing disks only. */
  header?: DynamicHeader;
  bat?: Uint32Array;
  bitmapSize: number;
  /** Where the next block goes, which is where the footer belongs. */
  nextFreeOffset: number;
  /** End of the header, BAT and locators: no block may start before it. */
  metadataEnd: number;
  issues: Issue[];
}

export const roundUpToSector = (n: number): number => Math.ceil(n / SECTOR_SIZE) * SECTOR_SIZE;

/**
 * Reads and validates a VHD's footer, dynamic header and BAT. Never throws for a bad
 * file: problems are returned as issues, the fatal ones first in the order found, so
 * `open` can refuse with the first and `check` can list them all.
 */
export async function readLayout(storage: Storage): Promise<Layout | { issues: Issue[] }> {
  const issues: Issue[] = [];
  const fatal = (structure: string, offset: number, message: string) => {
    issues.push({ structure, offset, message, fatal: true });
    return { issues };
  };
  const warn = (structure: string, offset: number, message: string) =>
    issues.push({ structure, offset, message, fatal: false });

  const fileSize = await storage.size();
  if (fileSize < FOOTER_SIZE) return fatal('footer', 0, `file is ${fileSize} bytes, smaller than a footer`);

  const endOffset = fileSize - FOOTER_SIZE;
  const endBytes = await storage.read(endOffset, FOOTER_SIZE);
  const atEnd = decodeFooter(endBytes);
  const copyBytes = await storage.read(0, FOOTER_SIZE);
  const copy = decodeFooter(copyBytes);

  let footer: Footer;
  let footerSource: 'end' | 'copy';
  if (atEnd.ok) {
    footer = atEnd.footer;
    footerSource = 'end';
  } else if (copy.ok && copy.footer.diskType !== DiskType.Fixed) {
    // The spec keeps a copy at offset 0 of dynamic disks precisely for this case.
    footer = copy.footer;
    footerSource = 'copy';
    warn('footer', endOffset, `${atEnd.reason}; using the footer copy at offset 0`);
  } else {
    return fatal('footer', endOffset, atEnd.reason);
  }

  if (footer.diskType === DiskType.Fixed) {
    if (endOffset < footer.currentSize) {
      return fatal(
        'footer',
        endOffset,
        `a fixed disk of ${footer.currentSize} bytes needs a ${footer.currentSize + FOOTER_SIZE}-byte file, this one has ${fileSize}`,
      );
    }
    if (endOffset > footer.currentSize) {
      warn('footer', endOffset, `${endOffset - footer.currentSize} bytes between the data and the footer`);
    }
    return {
      fileSize,
      footer,
      footerSource,
      copyMatches: true,
      bitmapSize: 0,
      nextFreeOffset: endOffset,
      metadataEnd: 0,
      issues,
    };
  }

  let copyMatches = true;
  if (footerSource === 'end') {
    copyMatches = copy.ok && copyBytes.equals(endBytes);
    if (!copy.ok) warn('footer copy', 0, copy.reason);
    else if (!copyMatches) warn('footer copy', 0, `differs from the footer at offset ${endOffset}`);
  }

  if (
    footer.dataOffset === NO_DATA_OFFSET ||
    footer.dataOffset + BigInt(DYNAMIC_HEADER_SIZE) > BigInt(fileSize)
  ) {
    return fatal(
      'footer',
      endOffset,
      `data offset ${footer.dataOffset} does not point at a header inside the file`,
    );
  }
  const headerOffset = Number(footer.dataOffset);
  const parsed = decodeDynamicHeader(await storage.read(headerOffset, DYNAMIC_HEADER_SIZE));
  if (!parsed.ok) return fatal('dynamic header', headerOffset, parsed.reason);
  const header = parsed.header;

  if (header.maxTableEntries * header.blockSize < footer.currentSize) {
    return fatal(
      'dynamic header',
      headerOffset,
      `${header.maxTableEntries} BAT entries of ${header.blockSize} bytes cannot hold a ${footer.currentSize}-byte disk`,
    );
  }
  const batBytes = roundUpToSector(header.maxTableEntries * 4);
  if (header.tableOffset + header.maxTableEntries * 4 > fileSize) {
    return fatal(
      'BAT',
      header.tableOffset,
      `${batBytes} bytes of table run past the end of the ${fileSize}-byte file`,
    );
  }
  if (footer.diskType === DiskType.Differencing && header.parentLocators.length === 0) {
    warn('dynamic header', headerOffset, 'differencing disk without parent locators');
  }

  const raw = await storage.read(header.tableOffset, header.maxTableEntries * 4);
  const bat = new Uint32Array(header.maxTableEntries);
  for (let i = 0; i < bat.length; i++) bat[i] = raw.readUInt32BE(i * 4);

  // The metadata regions no block may overlap.
  const regions: { name: string; start: number; end: number }[] = [
    { name: 'footer copy', start: 0, end: FOOTER_SIZE },
    { name: 'dynamic header', start: headerOffset, end: headerOffset + DYNAMIC_HEADER_SIZE },
    { name: 'BAT', start: header.tableOffset, end: header.tableOffset + batBytes },
  ];
  header.parentLocators.forEach((l, i) => {
    const space = Math.max(locatorSectors(l.dataLength) * SECTOR_SIZE, roundUpToSector(l.dataLength));
    if (l.dataOffset + l.dataLength > fileSize) {
      warn(
        'parent locator',
        headerOffset + 576 + i * 24,
        `its data at ${l.dataOffset} runs past the end of the file`,
      );
    } else {
      regions.push({ name: `parent locator ${i}`, start: l.dataOffset, end: l.dataOffset + space });
    }
  });
  const metadataEnd = roundUpToSector(Math.max(...regions.map((r) => r.end)));

  const bitmapSize = bitmapSizeFor(header.blockSize);
  const blockBytes = bitmapSize + header.blockSize;
  const blocks: { index: number; start: number; end: number }[] = [];
  for (let i = 0; i < bat.length; i++) {
    const entry = bat[i] as number;
    if (entry === BAT_UNALLOCATED) continue;
    const start = entry * SECTOR_SIZE;
    const at = header.tableOffset + i * 4;
    if (start + bitmapSize > fileSize) {
      return fatal(
        'BAT',
        at,
        `entry ${i} points at offset ${start}, past the end of the ${fileSize}-byte file`,
      );
    }
    const hit = regions.find((r) => start < r.end && r.start < start + blockBytes);
    if (hit)
      return fatal('BAT', at, `entry ${i} (block at ${start}) overlaps the ${hit.name} at ${hit.start}`);
    if (footerSource === 'end' && start + blockBytes > endOffset) {
      return fatal('BAT', at, `entry ${i} (block at ${start}) runs past the footer at ${endOffset}`);
    }
    if (i * header.blockSize >= footer.currentSize) {
      warn('BAT', at, `entry ${i} is allocated but lies beyond the virtual size`);
    }
    blocks.push({ index: i, start, end: start + blockBytes });
  }
  blocks.sort((a, b) => a.start - b.start);
  for (let k = 1; k < blocks.length; k++) {
    const prev = blocks[k - 1]!;
    const cur = blocks[k]!;
    if (cur.start < prev.end) {
      return fatal(
        'BAT',
        header.tableOffset + cur.index * 4,
        `entry ${cur.index} (block at ${cur.start}) overlaps entry ${prev.index} (block at ${prev.start})`,
      );
    }
  }
  const lastBlockEnd = blocks.length > 0 ? blocks[blocks.length - 1]!.end : 0;
  let nextFreeOffset = Math.max(metadataEnd, lastBlockEnd);
  if (footerSource === 'end') nextFreeOffset = Math.max(nextFreeOffset, endOffset);

  return {
    fileSize,
    footer,
    footerSource,
    copyMatches,
    header,
    bat,
    bitmapSize,
    nextFreeOffset,
    metadataEnd,
    issues,
  };
}

export function isLayout(x: Layout | { issues: Issue[] }): x is Layout {
  return 'footer' in x;
}
