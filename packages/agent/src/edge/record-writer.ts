import { unavailable, type Logger } from '@hyperfarm/api';
import type { VmRecord } from '../engine/engine.js';
import type { VmStore } from './store.js';

/**
 * Group commit of VM records: changes wait in `pending`, and one synced LevelDB batch at a time
 * takes all of them, so concurrent calls share a batch. `persisted()` resolves once everything
 * enqueued before it is on disk: a call answers only after its change is, and fails (UNAVAILABLE)
 * when the batch could not be written.
 */
export class RecordWriter {
  private readonly pending = { records: new Map<string, VmRecord>(), deleted: new Set<string>() };
  private enqueued = 0;
  private written = 0;
  private writer: Promise<void> | undefined;
  private waiters: { seq: number; resolve: () => void; reject: (err: Error) => void }[] = [];

  constructor(
    private readonly store: VmStore,
    private readonly logger: Logger,
  ) {}

  enqueue(records: readonly VmRecord[], deleted: readonly string[]): void {
    if (records.length === 0 && deleted.length === 0) return;
    for (const r of records) {
      this.pending.records.set(r.id, r);
      this.pending.deleted.delete(r.id);
    }
    for (const id of deleted) {
      this.pending.records.delete(id);
      this.pending.deleted.add(id);
    }
    this.enqueued++;
    this.writer ??= this.writeLoop();
  }

  /** Resolves once every change enqueued so far is synced. */
  persisted(): Promise<void> {
    const seq = this.enqueued;
    if (this.written >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
  }

  private async writeLoop(): Promise<void> {
    while (this.pending.records.size > 0 || this.pending.deleted.size > 0) {
      const target = this.enqueued;
      const records = [...this.pending.records.values()];
      const deleted = [...this.pending.deleted];
      this.pending.records.clear();
      this.pending.deleted.clear();
      let failure: Error | undefined;
      try {
        await this.store.write(records, deleted);
      } catch (err) {
        this.logger.error({ err }, 'could not persist VM records');
        failure = unavailable(`could not persist the change: ${(err as Error).message}`);
        // What was not written waits for the next batch, unless something newer replaced it.
        for (const r of records)
          if (!this.pending.records.has(r.id) && !this.pending.deleted.has(r.id))
            this.pending.records.set(r.id, r);
        for (const id of deleted) if (!this.pending.records.has(id)) this.pending.deleted.add(id);
      }
      this.written = target;
      this.waiters = this.waiters.filter((w) => {
        if (w.seq > target) return true;
        if (failure) w.reject(failure);
        else w.resolve();
        return false;
      });
      if (failure) break; // the next change tries again
    }
    this.writer = undefined;
  }
}
