import { VhdDisk } from '@hyperfarm/vhd';
import type { DiskBackend, DiskFactory } from './disk.js';

interface OpenDisk {
  disk: DiskBackend;
  /** The VhdDisk under it (before any test wrapper), for live snapshot merges. */
  vhd: VhdDisk | undefined;
}

/**
 * The open disk files of the VMs: one handle per disk, shared by every caller (two instances of
 * one file would not see each other's metadata), and the gate that holds a VM's guest I/O back
 * while its files change (a snapshot switches them).
 */
export class DiskPool {
  private readonly open = new Map<string, Map<number, OpenDisk>>();
  private readonly opening = new Map<string, Promise<OpenDisk>>();
  /** VMs with a batch of guest writes under way. */
  private readonly busy = new Map<string, Promise<void>>();
  /** VMs whose guest I/O is held back. */
  private readonly held = new Set<string>();

  constructor(
    private readonly factory: DiskFactory,
    /** The file of a VM's disk, as its configuration names it now. */
    private readonly pathOf: (vmId: string, index: number) => string,
    /** Wraps each disk as it is opened: how tests inject a failing backend. */
    private readonly wrap?: (vmId: string, index: number, disk: DiskBackend) => DiskBackend,
    /** Checks before a VM's files are opened (who owns them on cluster storage). */
    private readonly beforeOpen?: (vmId: string) => Promise<void>,
  ) {}

  async disk(vmId: string, index: number): Promise<DiskBackend> {
    return (await this.get(vmId, index)).disk;
  }

  /**
   * The open VhdDisk of a VM's disk, opened as the guest's I/O would: a snapshot merge of a
   * running VM works through this instance, so guest reads and writes go on during it.
   */
  async vhd(vmId: string, index: number): Promise<VhdDisk | undefined> {
    return (await this.get(vmId, index)).vhd;
  }

  private get(vmId: string, index: number): Promise<OpenDisk> {
    const cached = this.open.get(vmId)?.get(index);
    if (cached) return Promise.resolve(cached);
    const key = `${vmId}\u0000${index}`;
    let pending = this.opening.get(key);
    if (!pending) {
      pending = this.openNow(vmId, index).finally(() => this.opening.delete(key));
      this.opening.set(key, pending);
    }
    return pending;
  }

  private async openNow(vmId: string, index: number): Promise<OpenDisk> {
    await this.beforeOpen?.(vmId);
    const raw = await this.factory.open(this.pathOf(vmId, index));
    const entry = {
      disk: this.wrap ? this.wrap(vmId, index, raw) : raw,
      vhd: raw instanceof VhdDisk ? raw : undefined,
    };
    let disks = this.open.get(vmId);
    if (!disks) this.open.set(vmId, (disks = new Map()));
    disks.set(index, entry);
    return entry;
  }

  /**
   * Runs a batch of guest I/O for a VM, unless its I/O is held or a batch is still under way
   * (the model has accounted the writes either way; the files see the next batch).
   */
  guestIo(vmId: string, batch: () => Promise<void>): Promise<void> | undefined {
    if (this.busy.has(vmId) || this.held.has(vmId)) return undefined;
    const run = batch().finally(() => this.busy.delete(vmId));
    this.busy.set(vmId, run);
    return run;
  }

  /**
   * Holds a VM's guest I/O back, waits for the batch under way and closes its files, so they can
   * be swapped. Returns the function that lets I/O go on.
   */
  async hold(vmId: string): Promise<() => void> {
    this.held.add(vmId);
    await this.busy.get(vmId)?.catch(() => undefined);
    await this.close(vmId);
    return () => this.held.delete(vmId);
  }

  /** Makes a VM's guest writes durable (a save must not outlive the data it describes). */
  async flush(vmId: string): Promise<void> {
    const disks = this.open.get(vmId);
    if (disks) await Promise.all([...disks.values()].map((d) => d.disk.flush()));
  }

  async close(vmId: string): Promise<void> {
    const disks = this.open.get(vmId);
    this.open.delete(vmId);
    if (disks) await Promise.allSettled([...disks.values()].map((d) => d.disk.close()));
  }

  async closeAll(): Promise<void> {
    for (const id of [...this.open.keys()]) await this.close(id);
  }
}
