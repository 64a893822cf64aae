import { VhdOperationError } from './errors.js';
import type { Layout } from './layout.js';
import { locatorPreference, locatorToPath, platformName } from './parent-locator.js';
import type { Storage, StorageProvider } from './storage.js';
import { VhdDisk } from './disk.js';

/**
 * Finds and opens (read-only) the parent of the differencing disk at `childPath`,
 * trying its locators relative path first, then absolute ones, then the parent name.
 */
export async function resolveParent(
  childPath: string,
  layout: Layout,
  storage: Storage,
  provider: StorageProvider,
): Promise<VhdDisk> {
  const header = layout.header!;
  const candidates: string[] = [];
  const locators = [...header.parentLocators].sort(
    (a, b) => locatorPreference(a.platformCode) - locatorPreference(b.platformCode),
  );
  for (const l of locators) {
    if (l.dataLength === 0 || l.dataOffset + l.dataLength > layout.fileSize) continue;
    const data = await storage.read(l.dataOffset, l.dataLength);
    const p = locatorToPath(l.platformCode, data, childPath);
    if (p && !candidates.includes(p)) candidates.push(p);
  }
  if (header.parentName) {
    const p = locatorToPath(0x57326b75, Buffer.from(header.parentName, 'utf16le'), childPath);
    if (p && !candidates.includes(p)) candidates.push(p);
  }
  for (const p of candidates) {
    if (await provider.exists(p)) return VhdDisk.open(p, { provider, readOnly: true });
  }
  const tried = header.parentLocators.map((l) => platformName(l.platformCode)).join(', ');
  throw new VhdOperationError(
    `parent of ${childPath} not found (locators ${tried || 'none'}; tried ${candidates.join(', ') || 'no usable path'})`,
  );
}
