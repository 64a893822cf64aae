import { rm } from 'node:fs/promises';
import {
  MergeJob,
  VhdNoSpaceError,
  isNoSpace,
  type MergeJobState,
  type MergeProgress,
  type VhdDisk,
} from '@hyperfarm/vhd';
import { notFound, type pb } from '@hyperfarm/api';
import type { AgentHost } from './agent-host.js';
import type { CleanupStep } from '../engine/snapshot-tree.js';

/**
 * A snapshot disk merge as the store keeps it: which files it still folds, and the exact
 * MergeJob state of the one in progress, so that a merge interrupted by a crash resumes at the
 * next block after a restart.
 */
export interface MergeRecord {
  id: string;
  vmId: string;
  state: 'running' | 'waiting_for_space' | 'completed' | 'failed';
  message: string;
  filesDone: number;
  bytesCopied: number;
  startedAtMs: number;
  finishedAtMs?: number;
  /** The pair being merged now; absent between two files. */
  job?: Extract<CleanupStep, { kind: 'merge' }> & { state?: MergeJobState };
}

export const mergeKey = (id: string): string => `merge/${id}`;

/** What the merge loop needs from the snapshot manager: the next step, and reference updates. */
export interface MergeDriver {
  /** The next clean-up step of the VM's files, or undefined when nothing is left to fold. */
  plan(vmId: string): Promise<CleanupStep | undefined>;
  /** Makes everything that named `from` name `to` (after a merge into the parent). */
  replaceReferences(vmId: string, from: string, to: string): Promise<void>;
  /** The open top disk whose chain holds `path`, when the VM runs (the live merge's instance). */
  liveDiskFor(vmId: string, path: string): Promise<VhdDisk | undefined>;
}

const RETRY_FULL_MS = 250;
const PROGRESS_EVERY_MS = 200;

/**
 * Runs snapshot merges, one per VM at a time: in the caller's await for an Off VM, in the
 * background for a running one. A full volume parks the merge (`waiting_for_space`, the VM
 * RunningCritical) and it retries until there is space again.
 */
type Entry = { record: MergeRecord; job?: MergeJob; done: Promise<void>; waiting: boolean };

export class SnapshotMerges {
  private readonly active = new Map<string, Entry>();
  private stopping = false;
  private sequence = 0;
  /** Wakes every merge waiting on the timer: set by `stop()`. */
  private wake!: () => void;
  private readonly stopped = new Promise<void>((r) => (this.wake = r));
  private readonly quietWaiters: (() => void)[] = [];

  constructor(
    private readonly host: AgentHost,
    private readonly driver: MergeDriver,
  ) {}

  /** The merge in progress on a VM, if any. */
  activeOn(vmId: string): MergeRecord | undefined {
    for (const a of this.active.values()) if (a.record.vmId === vmId) return a.record;
    return undefined;
  }

  async get(id: string): Promise<pb.Merge__Output> {
    const live = this.active.get(id);
    const record = live?.record ?? (await this.host.store.get<MergeRecord>(mergeKey(id)));
    if (!record) throw notFound('merge', id);
    return this.view(record, live?.job?.progress());
  }

  /**
   * Folds every file the VM no longer needs. `background`: returns the merge id at once and
   * merges behind it (empty id when there was nothing to merge). Otherwise waits for the end, or
   * for the first time the volume is full (the merge then goes on in the background).
   */
  async start(vmId: string, background: boolean): Promise<string> {
    const first = await this.driver.plan(vmId);
    if (!first) return '';
    const id = `${vmId.replace(/[^A-Za-z0-9.-]/g, '-')}.merge-${this.host.now().toString(36)}-${++this.sequence}`;
    const record: MergeRecord = {
      id,
      vmId,
      state: 'running',
      message: '',
      filesDone: 0,
      bytesCopied: 0,
      startedAtMs: this.host.now(),
    };
    await this.host.store.apply([[mergeKey(id), record]]);
    const parked = this.launch(record);
    if (background) return id;
    const outcome = await parked;
    if (outcome === 'parked') return id;
    // Done inside the caller's call: nobody will ask for it, so the store does not keep it.
    if (record.state === 'completed') await this.host.store.apply([[mergeKey(id), undefined]]);
    return '';
  }

  /** Resumes the merges a crash or a shutdown interrupted; waits for those that can finish. */
  async resumeAll(): Promise<void> {
    const records = await this.host.store.list<MergeRecord>('merge/');
    for (const r of records) {
      if (r.state !== 'running' && r.state !== 'waiting_for_space') continue;
      if (!this.host.engine.vms.has(r.vmId)) {
        await this.host.store.apply([[mergeKey(r.id), { ...r, state: 'failed', message: 'the VM is gone' }]]);
        continue;
      }
      this.host.logger.info({ vmId: r.vmId, merge: r.id }, 'resuming an interrupted snapshot merge');
      await this.launch({ ...r, state: 'running' });
    }
  }

  /** Stops every merge after its current block; the store keeps where each one was. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake();
    await Promise.allSettled([...this.active.values()].map((a) => a.done));
  }

  /**
   * Resolves once no merge can move before the host's timer does: each one in progress waits on
   * it (a throttle, a full volume) or has ended. What a test on a virtual clock awaits before it
   * moves time, instead of sleeping.
   */
  whenQuiet(): Promise<void> {
    return new Promise((resolve) => {
      this.quietWaiters.push(resolve);
      this.checkQuiet();
    });
  }

  private checkQuiet(): void {
    for (const a of this.active.values()) if (!a.waiting) return;

    for (const resolve of this.quietWaiters.splice(0)) resolve();
  }

  /** Waits on the host's timer; `stop()` cuts the wait short. */
  private async pause(entry: Entry, ms: number): Promise<void> {
    entry.waiting = true;
    this.checkQuiet();
    try {
      await Promise.race([this.host.sleep(ms), this.stopped]);
    } finally {
      entry.waiting = false;
    }
  }

  /** Starts the loop; resolves 'done' when it ends, or 'parked' when it first waits for space. */
  private launch(record: MergeRecord): Promise<'done' | 'parked'> {
    let signal!: (v: 'done' | 'parked') => void;
    const first = new Promise<'done' | 'parked'>((r) => (signal = r));
    const entry: Entry = { record, done: Promise.resolve(), waiting: false };
    this.active.set(record.id, entry);
    entry.done = this.loop(entry, () => signal('parked'))
      .then(
        () => undefined,
        async (err: unknown) => {
          this.host.logger.error({ err, vmId: record.vmId, merge: record.id }, 'snapshot merge failed');
          record.state = 'failed';
          record.message = (err as Error).message;
          record.finishedAtMs = this.host.now();
          await this.persist(record).catch(() => undefined);
          if (this.host.engine.vms.has(record.vmId))
            await this.host
              .mutate((e) => e.health.setMergeBlocked(record.vmId, undefined))
              .catch(() => undefined);
          this.event(record, 'merge_failed', `merge ${record.id} failed: ${record.message}`);
        },
      )
      .finally(() => {
        this.active.delete(record.id);
        this.checkQuiet();
        signal('done');
      });
    return first;
  }

  private async loop(entry: Entry, parked: () => void): Promise<void> {
    const record = entry.record;
    for (;;) {
      if (this.stopping) return;
      // On cluster storage, a host whose copy went stale must not fold files the VM now uses.
      await this.host.claimFiles(record.vmId, 'merge the snapshot disks of');
      if (!record.job) {
        const step = await this.driver.plan(record.vmId);
        if (!step) break;
        if (step.kind === 'remove') {
          await rm(step.file, { force: true });
          continue;
        }
        record.job = step;
        await this.persist(record);
      }
      const finished = await this.runJob(entry, parked);
      if (!finished) return; // stopping: the record keeps the job's state
      const job = record.job;
      if (job.replace) await this.driver.replaceReferences(record.vmId, job.replace.from, job.replace.to);
      record.job = undefined;
      record.filesDone++;
      await this.persist(record);
    }
    // GetMerge says completed only once the store does, and the event goes out with it.
    const finished = {
      state: 'completed' as const,
      message: `${record.filesDone} file(s) merged`,
      finishedAtMs: this.host.now(),
    };
    await this.persist({ ...record, ...finished });
    Object.assign(record, finished);
    this.event(record, 'merge_completed', `merge ${record.id} completed: ${record.message}`);
  }

  /** One pair, block by block. Returns false when stopped before the end. */
  private async runJob(entry: Entry, parked: () => void): Promise<boolean> {
    const record = entry.record;
    const spec = record.job!;
    const provider = this.host.storageProvider;
    const live = await this.driver.liveDiskFor(record.vmId, spec.childPath);
    const job = await MergeJob.open({
      childPath: spec.childPath,
      into: spec.into,
      ...(provider ? { provider } : {}),
      ...(live ? { live } : {}),
      ...(spec.state ? { resume: spec.state } : {}),
      onCheckpoint: async (state) => {
        spec.state = state;
        await this.persist(record);
      },
    });
    entry.job = job;
    const base = record.bytesCopied - (spec.state?.bytesCopied ?? 0);
    let lastEvent = 0;
    try {
      while (!job.done) {
        if (this.stopping) return false;
        try {
          await job.step();
        } catch (err) {
          if (!(err instanceof VhdNoSpaceError) && !isNoSpace(err)) throw err;
          if (record.state !== 'waiting_for_space') {
            record.state = 'waiting_for_space';
            record.message = `the volume is full: ${(err as Error).message}`;
            await this.persist(record).catch(() => undefined);
            await this.host.mutate((e) => e.health.setMergeBlocked(record.vmId, record.message));
            this.event(record, 'merge_progress', `merge ${record.id} waits for space`, job.progress());
            parked();
          }
          await this.pause(entry, RETRY_FULL_MS);
          continue;
        }
        record.bytesCopied = base + job.progress().bytesCopied;
        if (record.state === 'waiting_for_space') {
          record.state = 'running';
          record.message = 'space is back';
          await this.persist(record);
          await this.host.mutate((e) => e.health.setMergeBlocked(record.vmId, undefined));
        }
        const now = this.host.now();
        if (now - lastEvent >= PROGRESS_EVERY_MS || job.done) {
          lastEvent = now;
          const p = job.progress();
          this.event(
            record,
            'merge_progress',
            `merge ${record.id}: ${p.blocksDone}/${p.blocksTotal} blocks`,
            p,
          );
        }
        const throttle = this.host.settings.mergeThrottleMs ?? 0;
        if (throttle > 0 && !job.done) await this.pause(entry, throttle);
      }
      return true;
    } finally {
      entry.job = undefined;
      await job.close();
    }
  }

  private persist(record: MergeRecord): Promise<void> {
    return this.host.store.apply([[mergeKey(record.id), record]]);
  }

  private event(record: MergeRecord, type: string, message: string, progress?: MergeProgress): void {
    const vm = this.host.engine.vms.has(record.vmId) ? this.host.engine.vms.get(record.vmId) : null;
    this.host.publish({ type, vmId: record.vmId, vm, message, merge: this.view(record, progress) });
  }

  view(r: MergeRecord, p?: MergeProgress): pb.Merge__Output {
    const total = p?.blocksTotal ?? 0;
    const done = p?.blocksDone ?? 0;
    return {
      id: r.id,
      vmId: r.vmId,
      state: r.state,
      filesRemaining: r.state === 'completed' ? 0 : r.job ? 1 : 0,
      blocksDone: done,
      blocksTotal: total,
      bytesCopied: r.bytesCopied,
      progressPercent: r.state === 'completed' ? 100 : total > 0 ? (100 * done) / total : 0,
      message: r.message,
    };
  }
}
