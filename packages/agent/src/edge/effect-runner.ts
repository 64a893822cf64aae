import { mkdir, rm } from 'node:fs/promises';
import type { Logger } from '@hyperfarm/api';
import type { Effect, HypervisorEngine } from '../engine/engine.js';
import { storageFailureKind } from './disk.js';
import type { DiskPool } from './disk-pool.js';
import { readSavedState, writeSavedState } from './saved-state.js';
import type { VmFolders } from './vm-folders.js';

export interface EffectContext {
  engine: HypervisorEngine;
  folders: VmFolders;
  disks: DiskPool;
  logger: Logger;
  clock: () => number;
  /** Advances the engine and carries out what it asks for next (completions change it). */
  pump(): void;
  /** Resolves once the engine's record changes so far are on disk. */
  persisted(): Promise<void>;
  /**
   * A VM's saved state was written (with its hash and pages) or is about to be left behind
   * (null): recorded beside the VM's files on cluster storage before the VM says so.
   */
  savedStateChanged(vmId: string, saved: { sha256: string; pages: number } | null): Promise<void>;
}

/**
 * Carries out what the engine asks (saves, restores, deletions, guest disk writes) and reports
 * the outcome back to it. Each effect runs in the background; `settle()` waits for all of them.
 */
export class EffectRunner {
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(private readonly c: EffectContext) {}

  run(effect: Effect): void {
    switch (effect.kind) {
      case 'save':
        return this.track(this.save(effect));
      case 'restore':
        return this.track(this.restore(effect));
      case 'delete-saved-state':
        return this.track(rm(this.c.folders.savedStatePath(effect.vmId), { force: true }));
      case 'delete-vm-files':
        return this.track(this.deleteVmFiles(effect.vmId, effect.keepShared === true));
      case 'disk-writes': {
        const batch = this.c.disks.guestIo(effect.vmId, () => this.diskWrites(effect));
        // Pumped once the batch is over, so the next one can go.
        if (batch) this.track(batch.then(() => this.c.pump()));
        return;
      }
    }
  }

  /** Waits for every save, restore and write in flight, and what they set off. */
  async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  private track(p: Promise<unknown>): void {
    const tracked = p.finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }

  private async save(effect: Extract<Effect, { kind: 'save' }>): Promise<void> {
    const { folders, logger } = this.c;
    const started = this.c.clock();
    try {
      await this.c.disks.flush(effect.vmId);
      await mkdir(folders.vmDir(effect.vmId), { recursive: true });
      const r = await writeSavedState(folders.savedStatePath(effect.vmId), effect.memory, effect.deviceState);
      logger.info(
        { vmId: effect.vmId, bytes: r.bytes, pages: r.pages, ms: this.c.clock() - started },
        'saved',
      );
      await this.c.savedStateChanged(effect.vmId, { sha256: r.sha256, pages: r.pages });
      effect.saved(r.sha256);
    } catch (err) {
      logger.error({ err, vmId: effect.vmId }, 'save failed');
      effect.failed((err as Error).message);
    }
    this.c.pump();
  }

  private async restore(effect: Extract<Effect, { kind: 'restore' }>): Promise<void> {
    const path = this.c.folders.savedStatePath(effect.vmId);
    let restored;
    try {
      restored = await readSavedState(path, effect.vmId);
    } catch (err) {
      this.c.logger.error({ err, vmId: effect.vmId }, 'restore failed');
      effect.failed((err as Error).message);
      this.c.pump();
      return;
    }
    try {
      await this.c.savedStateChanged(effect.vmId, null);
    } catch (err) {
      this.c.logger.error({ err, vmId: effect.vmId }, 'restore failed: the manifest could not be written');
      effect.failed((err as Error).message);
      this.c.pump();
      return;
    }
    effect.restored(restored.memory, restored.device);
    this.c.pump();
    await this.c.persisted();
    // Hyper-V discards the saved state once the VM runs from it.
    await rm(path, { force: true });
  }

  private async deleteVmFiles(vmId: string, keepShared: boolean): Promise<void> {
    await this.c.disks.close(vmId);
    // On cluster storage the files of a VM that lives on elsewhere are its own, not this host's.
    if (keepShared && this.c.folders.shared) return;
    await rm(this.c.folders.vmDir(vmId), { recursive: true, force: true });
  }

  /** Guest writes through the storage VSP into the VM's disk files. */
  private async diskWrites(effect: Extract<Effect, { kind: 'disk-writes' }>): Promise<void> {
    const { engine, disks } = this.c;
    try {
      for (const w of effect.writes) {
        const disk = await disks.disk(effect.vmId, w.disk);
        const blocks = Math.max(1, Math.floor(disk.sizeBytes / effect.writeBytes));
        const offset = (w.seed % blocks) * effect.writeBytes;
        await disk.write(offset, Buffer.alloc(Math.min(effect.writeBytes, disk.sizeBytes), w.seed & 0xff));
      }
      engine.health.reportStorage(effect.vmId, 'ok');
    } catch (err) {
      engine.health.reportStorage(effect.vmId, storageFailureKind(err), (err as Error).message);
    }
  }
}
