import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { invalidArgument, type Logger, type pb } from '@hyperfarm/api';
import type { VmConfig } from '../engine/validate.js';
import type { DiskFactory } from './disk.js';
import type { VmFolders } from './vm-folders.js';

const kindOf = (t: pb.DiskType__Output): 'fixed' | 'dynamic' =>
  t === 'DISK_TYPE_DYNAMIC' ? 'dynamic' : 'fixed';

/**
 * The disk files a configuration names, each confined (a relative path to the VM's folder, an
 * absolute one to an allowed root; INVALID_ARGUMENT naming `<prefix>.disks[i].path` otherwise).
 * Touches nothing.
 */
export function confineDisks(
  folders: VmFolders,
  vmId: string,
  config: VmConfig,
  prefix = 'config',
): string[] {
  return config.disks.map((d, i) => folders.diskPath(vmId, d.path, `${prefix}.disks[${i}].path`));
}

/** As confineDisks, and each file there already or with a size to create it. */
export function checkDiskFiles(folders: VmFolders, vmId: string, config: VmConfig, prefix = 'config'): void {
  confineDisks(folders, vmId, config, prefix).forEach((path, i) => {
    if (config.disks[i]!.createSizeBytes === 0 && !existsSync(path))
      throw invalidArgument(`${prefix}.disks[${i}].path`, 'names no file, and create_size_bytes is 0');
  });
}

/** Creates the disk files that do not exist yet, and checks that those that do are VHDs. */
export async function createDiskFiles(
  folders: VmFolders,
  factory: DiskFactory,
  vmId: string,
  config: VmConfig,
): Promise<void> {
  await mkdir(folders.vmDir(vmId), { recursive: true });
  for (const d of config.disks) {
    const path = folders.diskPath(vmId, d.path);
    if (existsSync(path)) {
      await (await factory.open(path)).close();
    } else {
      await mkdir(dirname(path), { recursive: true });
      await (await factory.create(path, d.createSizeBytes, kindOf(d.createType))).close();
    }
  }
}

/**
 * Disks of a VM that arrived by migration. Disk contents do not travel with a migration (Hyper-V
 * relies on shared storage for that): absolute paths are expected to be shared; a missing
 * relative disk is created empty at its size, or left missing (the VM's first write then makes
 * it RunningCritical, which says so).
 */
export async function prepareMigratedDisks(
  folders: VmFolders,
  factory: DiskFactory,
  vmId: string,
  config: VmConfig,
  logger: Logger,
): Promise<void> {
  await mkdir(folders.vmDir(vmId), { recursive: true });
  for (const d of config.disks) {
    const path = folders.diskPath(vmId, d.path);
    if (existsSync(path)) continue;
    if (d.createSizeBytes > 0)
      await (await factory.create(path, d.createSizeBytes, kindOf(d.createType))).close();
    else logger.warn({ vmId, path }, 'migrated VM refers to a disk this host does not have');
  }
}
