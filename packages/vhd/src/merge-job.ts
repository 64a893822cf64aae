import { VhdDisk, formatUuid } from './disk.js';
import { VhdArgumentError, VhdNoSpaceError, VhdOperationError, isNoSpace } from './errors.js';
import { FileSystemProvider, type StorageProvider } from './storage.js';

/**
 * Which way a differencing disk and its parent become one file:
 * - 'parent': the child's sectors are copied into the parent, the child goes away;
 * - 'child': the parent's own sectors are copied into the child where the child has
 *   none, the child is re-linked to the grandparent (or becomes a dynamic disk when the
 *   parent was the base), the parent goes away. This is how Hyper-V deletes a snapshot
 *   whose disk has exactly one child.
 */
export type MergeDirection = 'parent' | 'child';

export type MergePhase = 'copy' | 'relink' | 'cleanup' | 'done';

/** Where a job is, in a form that survives a restart (JSON-safe). */
export interface MergeJobState {
  version: 1;
  direction: MergeDirection;
  childPath: string;
  parentPath: string;
  childUniqueId: string;
  parentUniqueId: string;
  phase: MergePhase;
  /** Every block before this one (in the child's block grid) is merged durably. */
  nextBlock: number;
  bytesCopied: number;
}

export interface MergeProgress {
  direction: MergeDirection;
  phase: MergePhase;
  /** Blocks of the child's grid in which the disk being merged away holds data. */
  blocksDone: number;
  blocksTotal: number;
  /** Bytes the disk being merged away holds in the blocks done / in all. */
  bytesDone: number;
  bytesTotal: number;
  /** Bytes actually written (a merge into the child skips sectors the child already has). */
  bytesCopied: number;
  paused: boolean;
}

export interface MergeJobOptions {
  /** The differencing disk of the pair, in both directions (the one whose parent it merges with). */
  childPath: string;
  into: MergeDirection;
  provider?: StorageProvider;
  /**
   * The running VM's top disk when the chain is in use: the job then works with the
   * chain's open instances, so guest reads and writes continue during the merge. The
   * child must be in this chain. Merging the top disk itself into its parent is refused
   * (its guest writes would have to follow it); merging its parent into it is fine.
   */
  live?: VhdDisk;
  /** Remove the file merged away at the end (default true). */
  deleteMerged?: boolean;
  /**
   * A file where the job keeps its state (written atomically after every durable step,
   * removed at the end). With it, opening a job again after a crash resumes where it was,
   * even after the re-link (when the child no longer names the parent).
   */
  stateFile?: string;
  /** Resume from a state kept elsewhere (e.g. the engine's store) instead of a state file. */
  resume?: MergeJobState;
  /** Called after every durable step with the state to keep. */
  onCheckpoint?: (state: MergeJobState) => void | Promise<void>;
}

export interface MergeResult {
  /** The file that holds the merged content. */
  targetPath: string;
  /** The file merged away (removed unless deleteMerged is false). */
  mergedPath: string;
  /** Kept from the older API: the parent of the pair. */
  parentPath: string;
  blocksMerged: number;
  bytesMerged: number;
}

/** One block of work: its number in the child's grid and the bytes the source holds there. */
interface WorkItem {
  block: number;
  bytes: number;
}

/**
 * A merge done in bounded steps: each step() merges one block and makes it durable, so
 * a running VM only ever waits for one block, progress is exact, and the job can stop
 * (pause, crash, ENOSPC) between any two steps and go on later.
 *
 * Why each step is safe to interrupt and to redo:
 * - into the parent: the parent changes only under sectors the child overrides, so the
 *   chain reads the same; copying a block again writes the same bytes;
 * - into the child: the child gets exactly the bytes the chain already reads there (only
 *   where its bitmap bit is clear, under its write lock); a block done again copies nothing.
 * The re-link is one crash-safe metadata switch (see VhdDisk.relinkParent); the file merged
 * away is removed only after it.
 */
export class MergeJob {
  private phase: MergePhase;
  private index = 0;
  private bytesCopied: number;
  private pausedFlag = false;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly blockSize: number;
  private readonly bytesTotal: number;
  private bytesDone = 0;

  private constructor(
    private readonly options: MergeJobOptions,
    private readonly provider: StorageProvider,
    /**
     * The open disks, absent once only the removal is left: `writer` is the instance the
     * data moves into (the child, or an instance of the parent file), `child` and
     * `parent` the pair as the chain (or this job) opened them.
     */
    private readonly pair: { writer: VhdDisk; child: VhdDisk; parent: VhdDisk } | undefined,
    private readonly work: WorkItem[],
    private readonly identity: {
      childPath: string;
      parentPath: string;
      childUniqueId: string;
      parentUniqueId: string;
    },
    /** Handles this job opened itself and closes at the end (in this order). */
    private readonly owned: VhdDisk[],
    state: MergeJobState | undefined,
  ) {
    this.blockSize = pair?.child.blockSize ?? 0;
    this.phase = pair ? (state?.phase ?? 'copy') : 'cleanup';
    this.bytesCopied = state?.bytesCopied ?? 0;
    this.bytesTotal = work.reduce((n, w) => n + w.bytes, 0);
    if (state) {
      while (this.index < work.length && work[this.index]!.block < state.nextBlock) {
        this.bytesDone += work[this.index]!.bytes;
        this.index++;
      }
    }
  }

  /** Opens the pair, works out the blocks to merge, and resumes from a saved state if any. */
  static async open(options: MergeJobOptions): Promise<MergeJob> {
    const provider = options.provider ?? new FileSystemProvider();
    if (options.into !== 'parent' && options.into !== 'child') {
      throw new VhdArgumentError('into', `must be parent or child, got ${JSON.stringify(options.into)}`);
    }
    const childPath = provider.resolve(options.childPath);
    let state = options.resume;
    if (!state && options.stateFile && (await provider.exists(options.stateFile))) {
      state = await readState(provider, options.stateFile);
    }
    if (state) {
      if (state.childPath !== childPath || state.direction !== options.into) {
        throw new VhdArgumentError(
          'resume',
          `the saved job merges ${state.childPath} into its ${state.direction}, not ${childPath} into its ${options.into}`,
        );
      }
      if (state.phase === 'cleanup' || state.phase === 'done') {
        return new MergeJob(options, provider, undefined, [], identityOf(state), [], state);
      }
    }

    const owned: VhdDisk[] = [];
    try {
      let child: VhdDisk;
      let writer: VhdDisk;
      let parent: VhdDisk;
      if (options.live) {
        const found = chainMember(options.live, childPath);
        if (state && (!found || !found.parent)) {
          // After a restart the chain was opened anew: a child gone from it (merged into its
          // parent and re-linked around) or without a parent (it absorbed the base) means
          // the data work is done; only the removal is left.
          return new MergeJob(options, provider, undefined, [], identityOf(state), [], state);
        }
        child = findInChain(options.live, childPath);
        if (!child.parent)
          throw new VhdOperationError(`${childPath} is a ${child.type} disk: only differencing disks merge`);
        parent = child.parent;
        if (options.into === 'child') {
          if (child.readOnly) {
            // Inside the chain: write through an instance of our own; the chain's read-only
            // instance still reads right (merged bytes equal what it reads) and is reloaded
            // at the re-link.
            writer = await VhdDisk.open(childPath, { provider, parent });
            owned.push(writer);
          } else {
            writer = child;
          }
        } else {
          if (child === options.live) {
            throw new VhdOperationError(
              `${childPath} is the disk the VM writes to: merge its parent into it (--into child), or merge it once the VM is off`,
            );
          }
          writer = await VhdDisk.open(parent.path, {
            provider,
            ...(parent.parent ? { parent: parent.parent } : {}),
          });
          owned.push(writer);
        }
      } else if (options.into === 'child') {
        writer = child = await VhdDisk.open(childPath, { provider });
        owned.push(writer);
        if (state && !child.parent) {
          // Re-linked to no parent at all (the parent was the base): only the removal is left.
          await closeAll(owned);
          return new MergeJob(options, provider, undefined, [], identityOf(state), [], state);
        }
        if (!child.parent) {
          throw new VhdOperationError(`${childPath} is a ${child.type} disk: only differencing disks merge`);
        }
        parent = child.parent;
      } else {
        const probe = await VhdDisk.open(childPath, { provider, readOnly: true });
        const parentPath = probe.parent?.path;
        const type = probe.type;
        await probe.close();
        if (!parentPath)
          throw new VhdOperationError(`${childPath} is a ${type} disk: only differencing disks merge`);
        writer = parent = await VhdDisk.open(parentPath, { provider });
        owned.push(writer);
        child = await VhdDisk.open(childPath, { provider, readOnly: true, parent });
        owned.unshift(child);
      }

      const identity = {
        childPath,
        parentPath: parent.path,
        childUniqueId: formatUuid(child.uniqueId),
        parentUniqueId: formatUuid(parent.uniqueId),
      };
      if (state) {
        if (state.childUniqueId !== identity.childUniqueId) {
          throw new VhdOperationError(
            `${childPath} is not the disk the saved job was merging (unique id changed)`,
          );
        }
        if (state.parentUniqueId !== identity.parentUniqueId) {
          // Into child: the re-link happened but the state saved before it did not say so.
          if (options.into === 'child') {
            await closeAll(owned);
            return new MergeJob(options, provider, undefined, [], identityOf(state), [], state);
          }
          throw new VhdOperationError(
            `the parent of ${childPath} is not the one the saved job was merging into`,
          );
        }
      }
      const source = options.into === 'child' ? parent : child;
      const work = await planWork(child, source);
      return new MergeJob(options, provider, { writer, child, parent }, work, identity, owned, state);
    } catch (err) {
      await closeAll(owned);
      throw err;
    }
  }

  get done(): boolean {
    return this.phase === 'done';
  }

  get paused(): boolean {
    return this.pausedFlag;
  }

  /** Makes run() return after the step in progress. */
  pause(): void {
    this.pausedFlag = true;
  }

  progress(): MergeProgress {
    return {
      direction: this.options.into,
      phase: this.phase,
      blocksDone: this.index,
      blocksTotal: this.work.length,
      bytesDone: this.bytesDone,
      bytesTotal: this.bytesTotal,
      bytesCopied: this.bytesCopied,
      paused: this.pausedFlag,
    };
  }

  state(): MergeJobState {
    return {
      version: 1,
      direction: this.options.into,
      ...this.identity,
      phase: this.phase,
      nextBlock: this.index < this.work.length ? this.work[this.index]!.block : Number.MAX_SAFE_INTEGER,
      bytesCopied: this.bytesCopied,
    };
  }

  /**
   * Does one bounded piece of work (one block, or the re-link, or the removal) and makes
   * it durable. Returns true while there is more to do. A full file system surfaces as
   * VhdNoSpaceError with nothing lost: call step() again once there is space.
   */
  step(): Promise<boolean> {
    const run = this.queue.then(() => this.stepNow());
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Steps until done or paused (clears an earlier pause). */
  async run(onProgress?: (p: MergeProgress) => void): Promise<MergeProgress> {
    this.pausedFlag = false;
    onProgress?.(this.progress());
    while (!this.done && !this.pausedFlag) {
      await this.step();
      onProgress?.(this.progress());
    }
    return this.progress();
  }

  result(): MergeResult {
    const into = this.options.into;
    return {
      targetPath: into === 'child' ? this.identity.childPath : this.identity.parentPath,
      mergedPath: into === 'child' ? this.identity.parentPath : this.identity.childPath,
      parentPath: this.identity.parentPath,
      blocksMerged: this.index,
      bytesMerged: this.bytesCopied,
    };
  }

  /** Releases what the job opened, finished or not (a later open resumes). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await closeAll(this.owned.splice(0));
  }

  private async stepNow(): Promise<boolean> {
    if (this.closed) throw new VhdOperationError('the merge job is closed');
    try {
      switch (this.phase) {
        case 'copy':
          if (this.index < this.work.length) {
            await this.copyBlock(this.work[this.index]!.block);
            this.bytesDone += this.work[this.index]!.bytes;
            this.index++;
          } else {
            this.phase = 'relink';
          }
          break;
        case 'relink':
          await this.relink();
          this.phase = 'cleanup';
          break;
        case 'cleanup':
          await this.cleanup();
          this.phase = 'done';
          return false;
        case 'done':
          return false;
      }
      await this.checkpoint();
      return true;
    } catch (err) {
      if (isNoSpace(err)) throw new VhdNoSpaceError(this.pair?.writer.path ?? this.identity.childPath, err);
      throw err;
    }
  }

  private async copyBlock(block: number): Promise<void> {
    const { writer, child } = this.pair!;
    if (this.options.into === 'child') {
      this.bytesCopied += await writer.absorbParentBlock(block);
    } else {
      const start = block * this.blockSize;
      const end = Math.min(start + this.blockSize, child.virtualSize, writer.virtualSize);
      if (start < end) {
        for (const run of await child.localRuns(start, end - start)) {
          // These sectors are the child's own: reading them never reaches the parent.
          const data = await child.read(run.offset, run.length);
          await writer.write(run.offset, data);
          this.bytesCopied += data.length;
        }
      }
    }
    await writer.flush();
  }

  private async relink(): Promise<void> {
    if (this.options.into === 'child') await this.relinkChild();
    else await this.relinkAroundChild();
  }

  /** Into child: the child now holds everything of the parent's, so it can skip it. */
  private async relinkChild(): Promise<void> {
    const { writer, parent } = this.pair!;
    const grand = parent.parent;
    const holder = this.options.live ? findInChain(this.options.live, this.identity.childPath) : writer;
    // The instance that opened the parent takes over the grandparent the parent opened.
    const takeOver = holder.ownsItsParent && parent.ownsItsParent;
    if (writer.parent === parent) {
      await writer.relinkParent(grand, writer === holder ? takeOver : false);
    } else {
      await writer.flush(); // an earlier attempt got past its commit point: finish the footer copy
    }
    if (writer !== holder) {
      await writer.close();
      this.owned.splice(this.owned.indexOf(writer), 1);
      await holder.reload(grand, takeOver);
    }
    if (takeOver) {
      parent.releaseParent();
      // Reads that started through the old parent keep using it until they are done.
      await (this.options.live ?? holder).settleReads();
      await parent.close();
    }
  }

  /** Into parent: the disk above the child (live chain only) now points at the parent. */
  private async relinkAroundChild(): Promise<void> {
    const { writer, child, parent } = this.pair!;
    const live = this.options.live;
    // Our writer on the parent file is done: the chain's instance re-reads what it wrote.
    if (this.owned.includes(writer)) {
      await writer.close();
      this.owned.splice(this.owned.indexOf(writer), 1);
    }
    if (!live) return;
    await parent.reload(parent.parent, parent.ownsItsParent);
    const above = findAbove(live, child);
    const takeOver = above.ownsItsParent && child.ownsItsParent;
    if (above.readOnly) {
      const relinker = await VhdDisk.open(above.path, { provider: this.provider, parent: child });
      try {
        await relinker.relinkParent(parent, false);
      } finally {
        await relinker.close();
      }
      await above.reload(parent, takeOver);
    } else {
      await above.relinkParent(parent, takeOver);
    }
    if (takeOver) {
      child.releaseParent();
      await live.settleReads();
      await child.close();
    }
  }

  private async cleanup(): Promise<void> {
    await closeAll(this.owned.splice(0));
    const merged = this.options.into === 'child' ? this.identity.parentPath : this.identity.childPath;
    if ((this.options.deleteMerged ?? true) && (await this.provider.exists(merged))) {
      await this.provider.remove(merged);
    }
    if (this.options.stateFile && (await this.provider.exists(this.options.stateFile))) {
      await this.provider.remove(this.options.stateFile);
    }
  }

  private async checkpoint(): Promise<void> {
    const state = this.state();
    if (this.options.stateFile) await writeState(this.provider, this.options.stateFile, state);
    await this.options.onCheckpoint?.(state);
  }
}

/** The blocks (child's grid) in which `source` holds data of its own, with how much. */
async function planWork(child: VhdDisk, source: VhdDisk): Promise<WorkItem[]> {
  const blockSize = child.blockSize!;
  const size = Math.min(child.virtualSize, source.virtualSize);
  const work: WorkItem[] = [];
  for (let block = 0; block * blockSize < size; block++) {
    const start = block * blockSize;
    const runs = await source.localRuns(start, Math.min(blockSize, size - start));
    const bytes = runs.reduce((n, r) => n + r.length, 0);
    if (bytes > 0) work.push({ block, bytes });
  }
  return work;
}

function chainMember(top: VhdDisk, path: string): VhdDisk | undefined {
  for (let d: VhdDisk | undefined = top; d; d = d.parent) if (d.path === path) return d;
  return undefined;
}

function findInChain(top: VhdDisk, path: string): VhdDisk {
  const found = chainMember(top, path);
  if (found) return found;
  throw new VhdOperationError(`${path} is not in the chain of ${top.path}`);
}

function findAbove(top: VhdDisk, disk: VhdDisk): VhdDisk {
  for (let d: VhdDisk | undefined = top; d; d = d.parent) if (d.parent === disk) return d;
  throw new VhdOperationError(`${disk.path} has no child in the chain of ${top.path}`);
}

function identityOf(state: MergeJobState) {
  return {
    childPath: state.childPath,
    parentPath: state.parentPath,
    childUniqueId: state.childUniqueId,
    parentUniqueId: state.parentUniqueId,
  };
}

async function closeAll(disks: VhdDisk[]): Promise<void> {
  for (const d of disks) await d.close();
}

async function readState(provider: StorageProvider, file: string): Promise<MergeJobState> {
  const storage = await provider.open(file, 'read');
  try {
    const text = (await storage.read(0, await storage.size())).toString('utf8');
    const state = JSON.parse(text) as MergeJobState;
    if (state.version !== 1) throw new Error(`unknown version ${String(state.version)}`);
    return state;
  } catch (err) {
    throw new VhdOperationError(`merge state ${file} is unreadable: ${(err as Error).message}`);
  } finally {
    await storage.close();
  }
}

/** Written as a new file, synced, renamed over the old: a crash leaves the old or the new. */
async function writeState(provider: StorageProvider, file: string, state: MergeJobState): Promise<void> {
  const temporary = `${file}.new`;
  if (await provider.exists(temporary)) await provider.remove(temporary);
  const storage = await provider.create(temporary);
  try {
    await storage.write(0, Buffer.from(JSON.stringify(state)));
    await storage.flush();
  } finally {
    await storage.close();
  }
  await provider.rename(temporary, file);
}
