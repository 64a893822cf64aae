/**
 * The snapshot tree and the files under it, as pure functions: which snapshots a deletion takes
 * and how the rest is re-linked, and which disk file to fold next once snapshots are gone. The
 * records and files themselves are the caller's (edge/checkpoints.ts, edge/snapshot-files.ts).
 */

/** What the tree needs of a snapshot. */
export interface TreeNode {
  id: string;
  parentId: string;
  createdAtMs: number;
}

/** Oldest first (ties by id): the order ListCheckpoints shows. */
export function treeOrder<T extends TreeNode>(nodes: readonly T[]): T[] {
  return [...nodes].sort((a, b) => a.createdAtMs - b.createdAtMs || a.id.localeCompare(b.id));
}

/** What deleting `target` (and with `subtree` everything below it) leaves. */
export interface Deletion<T extends TreeNode> {
  removed: Set<string>;
  /** Snapshots whose parent went: they hang on the deleted one's parent now. */
  relinked: T[];
  /** The snapshot the VM's state now descends from ('' for none). */
  currentId: string;
}

export function planDeletion<T extends TreeNode>(
  nodes: readonly T[],
  currentId: string,
  target: T,
  subtree: boolean,
): Deletion<T> {
  const removed = new Set([target.id]);
  for (let grew = subtree; grew;) {
    grew = false;
    for (const n of nodes) {
      if (!removed.has(n.id) && removed.has(n.parentId)) {
        removed.add(n.id);
        grew = true;
      }
    }
  }
  const relinked = nodes
    .filter((n) => !removed.has(n.id) && removed.has(n.parentId))
    .map((n) => ({ ...n, parentId: target.parentId }));
  return { removed, relinked, currentId: removed.has(currentId) ? target.parentId : currentId };
}

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

/** The files a running VM reads and writes: every file in the chains under its current disks. */
export function filesInUse(graph: FileGraph, currentDisks: readonly string[]): Set<string> {
  const inUse = new Set<string>();
  for (const top of currentDisks)
    for (let f: string | undefined = top; f; f = graph.parentOf.get(f)) inUse.add(f);
  return inUse;
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
 * An unowned file without children is removed.
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
