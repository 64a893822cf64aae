import { BAT_UNALLOCATED, SECTOR_SIZE } from './constants.js';
import type { VhdDisk } from './disk.js';
import type { Footer } from './footer.js';
import { sparseImage } from './create.js';
import type { StorageProvider } from './storage.js';

/**
 * Writes a fresh copy of a dynamic or differencing disk next to it, keeping the blocks
 * `keep` accepts, packed in block order, ready to be renamed over the original.
 * The unique id stays, so children still recognise their parent. The caller closes the
 * disk and renames `temporary` over it. Used by compact and by growing past the BAT.
 */
export async function rewriteSparse(
  disk: VhdDisk,
  provider: StorageProvider,
  options: {
    footer: Footer;
    maxTableEntries: number;
    keep: (block: number) => Promise<boolean>;
  },
): Promise<{ blocksKept: number; fileSize: number; temporary: string }> {
  const layout = disk.layoutForTools;
  const source = disk.storageForTools;
  const header = { ...layout.header!, parentUniqueId: Buffer.from(layout.header!.parentUniqueId) };
  const locators = [];
  for (const l of layout.header!.parentLocators) {
    locators.push({ platformCode: l.platformCode, data: await source.read(l.dataOffset, l.dataLength) });
  }
  const bat = new Uint32Array(options.maxTableEntries).fill(BAT_UNALLOCATED);
  const blockBytes = layout.bitmapSize + layout.header!.blockSize;

  // Lay out metadata first (with an empty BAT) to learn where blocks start.
  const empty = sparseImage(options.footer, header, locators, bat);
  let at = empty.dataStart;
  const temporary = `${disk.path}.rewriting`;
  if (await provider.exists(temporary)) await provider.remove(temporary);
  const target = await provider.create(temporary);
  let blocksKept = 0;
  try {
    for (let b = 0; b < layout.bat!.length && b < bat.length; b++) {
      if (!disk.isAllocated(b) || !(await options.keep(b))) continue;
      const data = await source.read(disk.blockOffset(b), blockBytes);
      await target.write(at, data);
      bat[b] = at / SECTOR_SIZE;
      at += blockBytes;
      blocksKept++;
    }
    const image = sparseImage(options.footer, header, locators, bat);
    for (const piece of image.pieces) {
      // The trailing footer goes after the copied blocks, not where an empty disk would have it.
      await target.write(piece.offset === image.dataStart ? at : piece.offset, piece.data);
    }
    await target.truncate(at + SECTOR_SIZE);
    await target.flush();
  } finally {
    await target.close();
  }
  return { blocksKept, fileSize: at + SECTOR_SIZE, temporary };
}
