import { anyBitSet } from './bitmap.js';
import { BAT_UNALLOCATED, FOOTER_SIZE, SECTOR_SIZE } from './constants.js';
import { checkSize } from './create.js';
import { VhdDisk } from './disk.js';
import { VhdOperationError } from './errors.js';
import { encodeFooter } from './footer.js';
import { encodeDynamicHeader } from './dynamic-header.js';
import { roundUpToSector } from './layout.js';
import { FileSystemProvider, type StorageProvider } from './storage.js';

export interface ResizeOptions {
  provider?: StorageProvider;
  /** Keep the size exactly instead of rounding up to a CHS geometry (as create does). */
  exactSize?: boolean;
}

/**
 * Changes a fixed or dynamic disk's virtual size, in place. Growing always works; shrinking only
 * when nothing is stored past the new end (so never for a fixed disk, whose every byte
 * is allocated). Differencing disks take their parent's size and are not resized.
 * Resize a disk that has no differencing children: they would keep the old size.
 */
export async function resizeVhd(
  filePath: string,
  requestedSize: number,
  options: ResizeOptions = {},
): Promise<{ oldSize: number; newSize: number }> {
  const provider = options.provider ?? new FileSystemProvider();
  const { size, geometry } = checkSize(requestedSize, options.exactSize ?? false);
  const disk = await VhdDisk.open(filePath, { provider });
  const oldSize = disk.virtualSize;
  try {
    if (disk.type === 'differencing') {
      throw new VhdOperationError(
        `${disk.path} is a differencing disk: resize the base of its chain instead`,
      );
    }
    if (size === oldSize) return { oldSize, newSize: size };
    await disk.flush();
    const layout = disk.layoutForTools;
    const storage = disk.storageForTools;
    const footer = layout.footer;

    if (disk.type === 'fixed') {
      if (size < oldSize) {
        throw new VhdOperationError(`${disk.path} is fixed: every byte is allocated, so it cannot shrink`);
      }
      footer.currentSize = size;
      footer.geometry = geometry;
      // New footer first: until the old one is zeroed it merely sits in the new, unused tail.
      await storage.write(size, encodeFooter(footer));
      await storage.flush();
      await storage.write(oldSize, Buffer.alloc(FOOTER_SIZE));
      await storage.flush();
      return { oldSize, newSize: size };
    }

    const header = layout.header!;
    const blockSize = header.blockSize;
    if (size < oldSize) {
      const firstGone = Math.floor(size / blockSize);
      for (let b = firstGone; b < layout.bat!.length; b++) {
        if (!disk.isAllocated(b)) continue;
        const bitmap = await disk.blockBitmap(b);
        const keepSectors = Math.max(0, (size - b * blockSize) / SECTOR_SIZE);
        if (anyBitSet(bitmap, keepSectors, blockSize / SECTOR_SIZE - keepSectors)) {
          throw new VhdOperationError(
            `cannot shrink ${disk.path} to ${size} bytes: block ${b} holds data past the new end`,
          );
        }
      }
    }
    const needed = Math.ceil(size / blockSize);
    if (needed > header.maxTableEntries) await growTable(disk, needed);
    footer.currentSize = size;
    footer.geometry = geometry;
    const bytes = encodeFooter(footer);
    // The end footer is the one readers trust; the copy follows it.
    await storage.write(layout.nextFreeOffset, bytes);
    await storage.flush();
    await storage.write(0, bytes);
    await storage.flush();
    return { oldSize, newSize: size };
  } finally {
    await disk.close();
  }
}

/**
 * Makes room for `entries` BAT entries without moving any block. If the table's last
 * sector has spare slots they are used; otherwise a larger copy of the table goes after
 * the last block (where the footer is) and the header is pointed at it. Each step is
 * synced before the next makes it reachable, so a crash leaves the old table or the new.
 */
async function growTable(disk: VhdDisk, entries: number): Promise<void> {
  const layout = disk.layoutForTools;
  const storage = disk.storageForTools;
  const header = layout.header!;
  const old = header.maxTableEntries;
  const bat = new Uint32Array(entries).fill(BAT_UNALLOCATED);
  bat.set(layout.bat!);
  if (entries * 4 <= roundUpToSector(old * 4)) {
    // Other writers may leave the padding as zeros: make the new slots "unallocated" first.
    await storage.write(header.tableOffset + old * 4, Buffer.alloc((entries - old) * 4, 0xff));
    await storage.flush();
  } else {
    const table = Buffer.alloc(roundUpToSector(entries * 4), 0xff);
    for (let i = 0; i < old; i++) table.writeUInt32BE(bat[i]!, i * 4);
    const at = layout.nextFreeOffset;
    await storage.write(at, table);
    await storage.flush();
    header.tableOffset = at;
    layout.nextFreeOffset = at + table.length;
  }
  header.maxTableEntries = entries;
  await storage.write(Number(layout.footer.dataOffset), encodeDynamicHeader(header));
  await storage.flush();
  layout.bat = bat;
}
