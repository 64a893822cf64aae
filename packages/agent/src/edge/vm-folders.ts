import { join } from 'node:path';
import { confine } from './confine.js';

/**
 * Where a host keeps its files, and the rule for every path a request names:
 *
 *   <dataDir>/state.db                       VM records, snapshots and merges (LevelDB)
 *   <dataDir>/vms/<vm-id>/                   a VM's disks (relative paths), saved state, snapshots
 *   <dataDir>/exports/                       where ExportVmToFolder and ImportVmFromFolder work
 *
 * With cluster storage, VM folders live there instead, `<cluster>/vms/<vm-id>/`, shared by every
 * host (see cluster-storage.ts for who may use them).
 *
 * A VM's relative disk paths stay inside its folder. An absolute disk path, or an export folder
 * elsewhere, must lie inside one of `allowedRoots` (the cluster storage path, and the folders the
 * configuration allows): everything else is refused before a file is touched.
 */
export class VmFolders {
  readonly vms: string;
  readonly exports: string;

  constructor(
    readonly dataDir: string,
    readonly allowedRoots: readonly string[],
    /** The shared folder of VM folders on cluster storage, when there is one. */
    sharedVms?: string,
  ) {
    this.vms = sharedVms ?? join(dataDir, 'vms');
    this.exports = join(dataDir, 'exports');
  }

  /** Whether VM folders are on cluster storage, shared with other hosts. */
  get shared(): boolean {
    return this.vms !== join(this.dataDir, 'vms');
  }

  vmDir(vmId: string): string {
    return confine([this.vms], vmId, 'vm_id');
  }

  savedStatePath(vmId: string): string {
    return join(this.vmDir(vmId), 'saved.state');
  }

  checkpointStatePath(vmId: string, checkpointId: string): string {
    return confine([this.vmDir(vmId)], join('checkpoints', `${checkpointId}.state`), 'checkpoint_id');
  }

  /** A disk of a VM: relative to its folder and inside it, or absolute inside an allowed root. */
  diskPath(vmId: string, path: string, field = 'path'): string {
    return confine([this.vmDir(vmId), ...this.allowedRoots], path, field);
  }

  /** A folder for export or import: relative to `exports`, or absolute inside an allowed root. */
  transferFolder(folder: string, field = 'folder'): string {
    return confine([this.exports, ...this.allowedRoots], folder, field);
  }
}
