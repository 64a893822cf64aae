import { VhdDisk } from './disk.js';
import { VhdOperationError } from './errors.js';
import { rewriteSparse } from './rewrite.js';
import { FileSystemProvider, type StorageProvider } from './storage.js';

export interface CompactResult {
  blocksBefore: number;
  blocksAfter: number;
  fileSizeBefore: number;
  fileSizeAfter: number;
}

/**
 * Drops the blocks that hold nothing — all-zero blocks of a dynamic disk, blocks with
 * an empty bitmap of a differencing one (a zero sector there still hides the parent's)
 * — and packs the rest. The new file replaces the old by an atomic rename.
 */
export async function compactVhd(
  filePath: string,
  options: { provider?: StorageProvider } = {},
): Promise<CompactResult> {
  const provider = options.provider ?? new FileSystemProvider();
  const disk = await VhdDisk.open(filePath, { provider, readOnly: true });
  let result: CompactResult;
  let temporary: string;
  try {
    if (disk.type === 'fixed')
      throw new VhdOperationError(`${disk.path} is fixed: only dynamic and differencing disks compact`);
    const layout = disk.layoutForTools;
    const blockSize = layout.header!.blockSize;
    const blocksBefore = layout.bat!.filter((_, b) => disk.isAllocated(b)).length;
    const fileSizeBefore = await disk.storageForTools.size();
    const rewritten = await rewriteSparse(disk, provider, {
      footer: { ...layout.footer },
      maxTableEntries: layout.header!.maxTableEntries,
      keep: async (b) => {
        const bitmap = await disk.blockBitmap(b);
        if (bitmap.every((x) => x === 0)) return false;
        if (disk.type === 'differencing') return true;
        const start = b * blockSize;
        const content = await disk.read(start, Math.min(blockSize, disk.virtualSize - start));
        return content.some((x) => x !== 0);
      },
    });
    temporary = rewritten.temporary;
    result = {
      blocksBefore,
      blocksAfter: rewritten.blocksKept,
      fileSizeBefore,
      fileSizeAfter: rewritten.fileSize,
    };
  } finally {
    await disk.close();
  }
  await provider.rename(temporary, disk.path);
  return result;
}
