import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { failedPrecondition } from '@hyperfarm/api';
import type { VmRecord } from '../engine/engine.js';
import type { CheckpointRecord } from './checkpoints.js';

/**
 * A VM's folder on cluster storage (`<cluster>/vms/<vm-id>/`, which every host reaches) holds,
 * beside its disks, snapshot chains and saved state, two small files:
 *
 *   owner.json   who may open the files: { vmId, hostId, generation }. A host opens a VM's disks,
 *                starts it or changes its files only while the record names it at the VM's
 *                generation, or an older one (which it then replaces): a host holding an older
 *                generation than the record refuses, as Failover Clustering's disk reservations
 *                keep two nodes off one disk. The daemon's generation bump (a failover, a
 *                migration's handover) is what moves the record.
 *   vm.json      the manifest: the VM's configuration (with its current disk files), its
 *                snapshot records and whether it is Saved, written by the owner whenever they
 *                change, so the next owner adopts the VM as it was (a failover, a move).
 *
 * Both are written through a temporary file and a rename, so a reader sees one whole version.
 * The record is checked whenever a host opens the files, not on every write: between two hosts
 * the daemon's fencing (leases, the handover decided in its log) already orders who runs the VM;
 * the record is what stops a host that missed the news (back from a crash or a partition).
 */
export interface OwnerRecord {
  vmId: string;
  hostId: string;
  generation: number;
}

export interface VmManifest {
  format: 1;
  vmId: string;
  generation: number;
  /** The host that wrote it. */
  hostId: string;
  config: VmRecord['config'];
  createdAtMs: number;
  /** Set when the VM is Saved: its saved state's hash and written pages. */
  saved: { sha256: string; pages: number } | null;
  checkpoints: CheckpointRecord[];
  currentId: string;
}

const OWNER = 'owner.json';
const MANIFEST = 'vm.json';

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

let writes = 0;

async function writeJson(path: string, value: unknown): Promise<void> {
  // Several hosts may share this process (multi-host mode): each write has its own file.
  const tmp = `${path}.${process.pid}.${++writes}.tmp`;
  await writeFile(tmp, JSON.stringify(value));
  await rename(tmp, path);
}

/** The ownership records and manifests of the VM folders under one cluster storage root. */
export class ClusterStorage {
  constructor(
    /** The hosts' shared folder of VM folders: `<cluster>/vms`. */
    readonly vmsRoot: string,
    readonly hostId: string,
  ) {}

  private dir(vmId: string): string {
    return join(this.vmsRoot, vmId);
  }

  owner(vmId: string): Promise<OwnerRecord | undefined> {
    return readJson<OwnerRecord>(join(this.dir(vmId), OWNER));
  }

  /**
   * Whether this host may use the VM's files at `generation`: refused (FAILED_PRECONDITION) when
   * the record names a newer generation, or another host at the same one. An older record (or
   * none) is replaced by this host's claim.
   */
  async claim(vmId: string, generation: number, what: string): Promise<void> {
    const rec = await this.owner(vmId);
    if (
      rec &&
      (rec.generation > generation || (rec.generation === generation && rec.hostId !== this.hostId))
    ) {
      throw failedPrecondition(
        `cannot ${what} VM ${vmId}: its files on cluster storage belong to host '${rec.hostId}' at generation ${rec.generation}, and this host holds generation ${generation}`,
      );
    }
    if (rec?.generation === generation && rec.hostId === this.hostId) return;
    await mkdir(this.dir(vmId), { recursive: true });
    await writeJson(join(this.dir(vmId), OWNER), { vmId, hostId: this.hostId, generation });
  }

  manifest(vmId: string): Promise<VmManifest | undefined> {
    return readJson<VmManifest>(join(this.dir(vmId), MANIFEST));
  }

  /** Writes the manifest, if this host still owns the VM at the manifest's generation. */
  async writeManifest(m: VmManifest): Promise<boolean> {
    const rec = await this.owner(m.vmId);
    if (rec && (rec.hostId !== this.hostId || rec.generation !== m.generation)) return false;
    await mkdir(this.dir(m.vmId), { recursive: true });
    await writeJson(join(this.dir(m.vmId), MANIFEST), m);
    return true;
  }
}
