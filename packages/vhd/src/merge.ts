import { getBit, runLength } from './bitmap.js';
import { SECTOR_SIZE } from './constants.js';
import { VhdDisk } from './disk.js';
import { VhdOperationError } from './errors.js';
import { FileSystemProvider, type StorageProvider } from './storage.js';

export interface MergeOptions {
  provider?: StorageProvider;
  /** Remove the child once merged, as Hyper-V's Merge-VHD does (default true). */
  deleteChild?: boolean;
  /** Called after each block with bytes merged so far and the total to merge. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface MergeResult {
  parentPath: string;
  blocksMerged: number;
  bytesMerged: number;
}

/**
 * Copies every sector a differencing disk holds into its parent, then flushes the
 * parent and removes the child. A crash midway leaves the chain reading as before
 * (the parent changed only under sectors the child overrides), and merging again
 * finishes the job. Other children of the same parent are not updated: merge only a
 * parent's single child.
 */
export async function mergeVhd(childPath: string, options: MergeOptions = {}): Promise<MergeResult> {
  const provider = options.provider ?? new FileSystemProvider();
  const probe = await VhdDisk.open(childPath, { provider, readOnly: true });
  const parentPath = probe.parent?.path;
  const type = probe.type;
  await probe.close();
  if (!parentPath)
    throw new VhdOperationError(`${probe.path} is a ${type} disk: only differencing disks merge`);

  const parent = await VhdDisk.open(parentPath, { provider });
  let blocksMerged = 0;
  let bytesMerged = 0;
  try {
    const child = await VhdDisk.open(childPath, { provider, readOnly: true, parent });
    try {
      const layout = child.layoutForTools;
      const blockSize = layout.header!.blockSize;
      const storage = child.storageForTools;
      const blocks: number[] = [];
      for (let b = 0; b < layout.bat!.length; b++) if (child.isAllocated(b)) blocks.push(b);
      const total = blocks.length * blockSize;
      const sectorsPerBlock = blockSize / SECTOR_SIZE;
      for (const b of blocks) {
        const bitmap = await child.blockBitmap(b);
        const dataStart = child.blockOffset(b) + layout.bitmapSize;
        const limit = Math.min(sectorsPerBlock, Math.ceil((child.virtualSize - b * blockSize) / SECTOR_SIZE));
        let s = 0;
        while (s < limit) {
          const run = runLength(bitmap, s, limit - s);
          if (getBit(bitmap, s)) {
            const data = await storage.read(dataStart + s * SECTOR_SIZE, run * SECTOR_SIZE);
            const at = b * blockSize + s * SECTOR_SIZE;
            const len = Math.min(data.length, parent.virtualSize - at);
            if (len > 0) await parent.write(at, data.subarray(0, len));
            bytesMerged += Math.max(0, len);
          }
          s += run;
        }
        blocksMerged++;
        options.onProgress?.(blocksMerged * blockSize, total);
      }
      await parent.flush();
    } finally {
      await child.close();
    }
  } finally {
    await parent.close();
  }
  if (options.deleteChild ?? true) await provider.remove(provider.resolve(childPath));
  return { parentPath, blocksMerged, bytesMerged };
}
