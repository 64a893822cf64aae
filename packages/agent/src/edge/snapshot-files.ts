import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { VhdDisk, type StorageProvider } from '@hyperfarm/vhd';
import type { FileGraph } from '../engine/snapshot-tree.js';

/** Reads the parent links of every owned file's chain (and finds stray .avhd files in `dir`). */
export async function readFileGraph(
  owned: readonly string[],
  dir: string,
  provider?: StorageProvider,
): Promise<FileGraph> {
  const parentOf = new Map<string, string | undefined>();
  for (const top of owned.map((p) => resolve(p))) {
    if (parentOf.has(top)) continue;
    const disk = await VhdDisk.open(top, {
      readOnly: true,
      parentTimestamp: 'ignore',
      ...(provider ? { provider } : {}),
    });
    try {
      for (let d: VhdDisk | undefined = disk; d; d = d.parent) {
        const path = resolve(d.path);
        if (parentOf.has(path)) break;
        parentOf.set(path, d.parent ? resolve(d.parent.path) : undefined);
      }
    } finally {
      await disk.close();
    }
  }
  // A differencing disk left by a crash between its creation and its first reference.
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = resolve(join(dir, name));
    if (name.endsWith('.avhd') && !parentOf.has(path)) parentOf.set(path, undefined);
  }
  return { parentOf, owned: new Set(owned.map((p) => resolve(p))) };
}
