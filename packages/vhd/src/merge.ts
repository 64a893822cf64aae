import { type MergeDirection, MergeJob, type MergeProgress, type MergeResult } from './merge-job.js';
import type { StorageProvider } from './storage.js';

export interface MergeOptions {
  provider?: StorageProvider;
  /** Remove the child once merged, as Hyper-V's Merge-VHD does (default true). */
  deleteChild?: boolean;
  /** Called after each block with the child's bytes merged so far and in all. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/**
 * Copies every sector a differencing disk holds into its parent, then flushes the
 * parent and removes the child. A crash midway leaves the chain reading as before
 * (the parent changed only under sectors the child overrides), and merging again
 * finishes the job. Other children of the same parent are not updated: merge only a
 * parent's single child.
 */
export async function mergeVhd(childPath: string, options: MergeOptions = {}): Promise<MergeResult> {
  return runMerge(childPath, 'parent', {
    ...(options.provider ? { provider: options.provider } : {}),
    deleteMerged: options.deleteChild ?? true,
    ...(options.onProgress ? { onProgress: afterEachBlock(options.onProgress) } : {}),
  });
}

/** Reports (bytesDone, bytesTotal) once per merged block, as this API always has. */
function afterEachBlock(report: (done: number, total: number) => void): (p: MergeProgress) => void {
  let blocks = 0;
  return (p) => {
    if (p.blocksDone === blocks) return;
    blocks = p.blocksDone;
    report(p.bytesDone, p.bytesTotal);
  };
}

export interface MergeIntoChildOptions {
  provider?: StorageProvider;
  /** Remove the parent once merged (default true). Only right when this child is its only one. */
  deleteParent?: boolean;
  /** Keep the job's state here so a run interrupted by a crash resumes (see MergeJob). */
  stateFile?: string;
  onProgress?: (progress: MergeProgress) => void;
}

/**
 * Merges the parent of the differencing disk at `childPath` into it: the child gets every
 * sector its parent holds that it does not, then names the grandparent as its parent (or
 * becomes a dynamic disk when the parent was the base), then the parent is removed. This
 * is how Hyper-V deletes a snapshot whose disk has exactly one child.
 */
export async function mergeIntoChildVhd(
  childPath: string,
  options: MergeIntoChildOptions = {},
): Promise<MergeResult> {
  return runMerge(childPath, 'child', {
    ...(options.provider ? { provider: options.provider } : {}),
    deleteMerged: options.deleteParent ?? true,
    ...(options.stateFile ? { stateFile: options.stateFile } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
}

async function runMerge(
  childPath: string,
  into: MergeDirection,
  options: {
    provider?: StorageProvider;
    deleteMerged: boolean;
    stateFile?: string;
    onProgress?: (p: MergeProgress) => void;
  },
): Promise<MergeResult> {
  const job = await MergeJob.open({
    childPath,
    into,
    deleteMerged: options.deleteMerged,
    ...(options.provider ? { provider: options.provider } : {}),
    ...(options.stateFile ? { stateFile: options.stateFile } : {}),
  });
  try {
    await job.run(options.onProgress);
    return job.result();
  } finally {
    await job.close();
  }
}
