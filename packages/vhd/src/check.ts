import { getBit } from './bitmap.js';
import { DiskType, SECTOR_SIZE } from './constants.js';
import { VhdDisk } from './disk.js';
import { type Issue, isLayout, readLayout } from './layout.js';
import { FileSystemProvider, type StorageProvider } from './storage.js';

export interface CheckReport {
  path: string;
  /** True when no inconsistency of any kind was found. */
  ok: boolean;
  issues: Issue[];
}

/**
 * Lists every inconsistency of a VHD without changing it: bad checksums, a missing or
 * differing footer, BAT entries that overlap or point past the end, bitmap bits over
 * sectors past the virtual size or past the end of the file, an unreachable or changed
 * parent.
 */
export async function checkVhd(
  filePath: string,
  options: { provider?: StorageProvider } = {},
): Promise<CheckReport> {
  const provider = options.provider ?? new FileSystemProvider();
  const resolved = provider.resolve(filePath);
  const storage = await provider.open(resolved, 'read');
  const issues: Issue[] = [];
  try {
    const layout = await readLayout(storage);
    issues.push(...layout.issues);
    if (isLayout(layout) && layout.header && layout.bat) {
      const blockSize = layout.header.blockSize;
      const sectorsPerBlock = blockSize / SECTOR_SIZE;
      for (let b = 0; b < layout.bat.length; b++) {
        const entry = layout.bat[b] as number;
        if (entry === 0xffffffff) continue;
        const start = entry * SECTOR_SIZE;
        const bitmap = await storage.read(start, layout.bitmapSize);
        const dataStart = start + layout.bitmapSize;
        const validSectors = Math.max(
          0,
          Math.min(sectorsPerBlock, (layout.footer.currentSize - b * blockSize) / SECTOR_SIZE),
        );
        for (let s = 0; s < sectorsPerBlock; s++) {
          if (!getBit(bitmap, s)) continue;
          if (s >= validSectors) {
            issues.push({
              structure: 'sector bitmap',
              offset: start,
              message: `block ${b} marks sector ${s} present, past the virtual size`,
              fatal: false,
            });
            break;
          }
          if (dataStart + (s + 1) * SECTOR_SIZE > layout.fileSize) {
            issues.push({
              structure: 'sector bitmap',
              offset: start,
              message: `block ${b} marks sector ${s} present but its data lies past the end of the file`,
              fatal: false,
            });
            break;
          }
        }
      }
    }
    if (isLayout(layout) && layout.footer.diskType === DiskType.Differencing) {
      try {
        const disk = await VhdDisk.open(resolved, { provider, readOnly: true });
        for (const message of disk.warnings) {
          issues.push({
            structure: 'parent timestamp',
            offset: Number(layout.footer.dataOffset) + 56,
            message,
            fatal: false,
          });
        }
        await disk.close();
      } catch (err) {
        issues.push({
          structure: 'parent',
          offset: Number(layout.footer.dataOffset),
          message: (err as Error).message,
          fatal: true,
        });
      }
    }
  } finally {
    await storage.close();
  }
  return { path: resolved, ok: issues.length === 0, issues };
}
