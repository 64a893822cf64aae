import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { VhdDisk, type StorageProvider } from '@hyperfarm/vhd';

/**
 * The disk files of one VM with its snapshots, as a forest: each file and the file it is a
 * differencing disk of. A file is *owned* when the VM's current configuration or a snapshot names
 * it; every other file in a chain is left over from a deleted snapshot and waits to be merged away.
 */
export interface FileGraph {
  /** Absolute path to its parent's absolute path (undefined for a base disk). */
  parentOf: Map<string, string | undefined>;
  owned: Set<string>;
}

/** What to do next to get rid of one file no snapshot and no current state names. */
export type CleanupStep =
  | { kind: 'remove'; file: string }
  | {
      kind: 'merge';
      /** The differencing disk of the merging pair (MergeJob's childPath). */
      childPath: string;
      into: 'parent' | 'child';
      /** The file merged away. */
      removed: string;
      /** Into the parent: references to the child file then name the parent file. */
      replace?: { from: string; to: string };
    };

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

/**
 * The next clean-up step, or undefined when every file is owned or has several children (it then
 * stays until only one is left, as Hyper-V keeps a snapshot disk shared by two branches).
 *
 * For an unowned file F with exactly one child C:
 * - C is a leaf not in use by the running VM: C merges into F (into the parent) and what named C
 *   now names F; this is how an Off VM's current disk folds back into `boot.vhd`;
 * - otherwise F merges into C (into the child), C is re-linked to F's parent and F goes; for the
 *   running VM's chain this is the online merge, with the guest writing to C all along.
 * An unowned file without children is removed. Pure: decides from the graph only.
 */
export function nextCleanupStep(graph: FileGraph, inUse: ReadonlySet<string>): CleanupStep | undefined {
  const children = new Map<string, string[]>();
  for (const [file, parent] of graph.parentOf) {
    if (parent === undefined) continue;
    const list = children.get(parent) ?? [];
    list.push(file);
    children.set(parent, list);
  }
  // Deepest first: a leaf folds into its parent and keeps the parent's name (so an Off VM's chain
  // ends in its base `boot.vhd` again), and a running chain folds into the disk in use one file
  // at a time, each copying only its own data.
  const depth = (f: string): number => {
    let d = 0;
    for (
      let p = graph.parentOf.get(f);
      p !== undefined && d <= graph.parentOf.size;
      p = graph.parentOf.get(p)
    )
      d++;
    return d;
  };
  const files = [...graph.parentOf.keys()].sort((a, b) => depth(b) - depth(a) || a.localeCompare(b));
  for (const f of files) {
    if (graph.owned.has(f)) continue;
    const kids = children.get(f) ?? [];
    if (kids.length === 0) return { kind: 'remove', file: f };
    if (kids.length > 1) continue;
    const c = kids[0]!;
    const leaf = (children.get(c) ?? []).length === 0;
    if (leaf && !inUse.has(c)) {
      return { kind: 'merge', childPath: c, into: 'parent', removed: c, replace: { from: c, to: f } };
    }
    return { kind: 'merge', childPath: c, into: 'child', removed: f };
  }
  return undefined;
}
