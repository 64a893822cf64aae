import { copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  ApiError,
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  status,
  type pb,
} from '@hyperfarm/api';
import { stateName, type VmState } from '../engine/states.js';
import { checkId, checkName, normalizeConfig, validateConfig, type VmConfig } from '../engine/validate.js';
import type { AgentHost } from './agent-host.js';
import { checkpointKey, currentKey, type CheckpointRecord, type Checkpoints } from './checkpoints.js';
import { confine } from './confine.js';
import { confineDisks } from './disk-files.js';

/** The manifest ExportVmToFolder writes next to the files. */
interface ExportManifest {
  format: 'hyperfarm-vm-export/1';
  vmId: string;
  config: VmConfig;
  state: VmState;
  savedHash: string;
  savedPages: number;
  currentId: string;
  checkpoints: CheckpointRecord[];
  files: string[];
}

const FORMAT = 'hyperfarm-vm-export/1';
const OFFLINE: readonly VmState[] = ['VM_STATE_OFF', 'VM_STATE_SAVED'];

/**
 * ExportVmToFolder and ImportVmFromFolder: a VM with its snapshot tree, disks and memory, copied
 * to a folder with a manifest, and back. The folder is relative to `<dataDir>/exports`, or
 * absolute inside an allowed root. An import trusts nothing in the folder: the manifest is
 * checked whole, and every file it names confined to the folder and to the VM's new folder,
 * before anything is written.
 */
export class VmTransfer {
  constructor(
    private readonly host: AgentHost,
    private readonly checkpoints: Checkpoints,
  ) {}

  async exportToFolder(vmIdOrName: string, folder: string): Promise<pb.ExportVmToFolderResponse> {
    const target = this.host.folders.transferFolder(folder);
    const vmId = this.host.read((e) => e.vms.get(vmIdOrName)).id;
    return this.checkpoints.serial(vmId, async () => {
      const facts = await this.checkpoints.facts(vmId);
      const vm = this.host.read((e) => e.snapshots.check(vmId, 0, 'export', facts));
      const state = vm.status!.state;
      if (!OFFLINE.includes(state))
        throw failedPrecondition(
          `cannot export VM '${vm.config!.name}': it is ${stateName(state)}; turn it off or save it first`,
        );
      await emptyFolder(target);
      const { checkpoints, currentId } = await this.checkpoints.list(vmId);
      const dir = this.host.vmDir(vmId);
      for (const c of [vm.config!, ...checkpoints.map((x) => x.config)])
        for (const d of c.disks)
          if (!this.host.folders.diskPath(vmId, d.path).startsWith(`${dir}/`))
            throw failedPrecondition(`cannot export VM '${vm.config!.name}': a disk is outside its folder`);
      const resume = await this.host.quiesceDisks(vmId);
      const files: string[] = [];
      let bytes = 0;
      try {
        await fsCall('folder', () => mkdir(target, { recursive: true }));
        for (const rel of await walk(dir)) {
          if (rel.endsWith('.tmp') || rel.endsWith('.merge-state')) continue;
          const to = join(target, rel);
          await fsCall('folder', async () => {
            await mkdir(dirname(to), { recursive: true });
            await copyFile(join(dir, rel), to);
          });
          bytes += (await stat(to)).size;
          files.push(rel);
        }
        const hash = state === 'VM_STATE_SAVED' ? this.host.read((e) => e.vms.stateHash(vmId)) : undefined;
        const manifest: ExportManifest = {
          format: FORMAT,
          vmId,
          config: structuredClone(vm.config!) as VmConfig,
          state,
          savedHash: hash?.sha256 ?? '',
          savedPages: hash?.residentPages ?? 0,
          currentId,
          checkpoints,
          files,
        };
        await fsCall('folder', () =>
          writeFile(join(target, 'manifest.json'), JSON.stringify(manifest, null, 2)),
        );
        files.push('manifest.json');
      } finally {
        resume();
      }
      return { files, bytes };
    });
  }

  async importFromFolder(folder: string, wantedId: string, name: string, generation: number): Promise<pb.Vm> {
    if (wantedId) checkId('vm_id', wantedId);
    if (name) checkName('name', name);
    const source = this.host.folders.transferFolder(folder);
    const manifest = await this.readManifest(source);
    const vmId = manifest.vmId;
    if (wantedId && wantedId !== vmId)
      throw invalidArgument(
        'vm_id',
        "must be empty or the exported VM's id: guest memory is derived from the VM id, so an import keeps it",
      );
    if (this.host.engine.vms.has(vmId)) throw alreadyExists('VM', vmId);
    for (const c of manifest.checkpoints)
      if (await this.checkpoints.exists(c.id)) throw alreadyExists('checkpoint', c.id);
    // Every file, where it comes from and where it goes, before the first one is written.
    const dir = this.host.vmDir(vmId);
    const copies = manifest.files.map((rel) => ({
      from: confine([source], rel, 'folder'),
      to: confine([dir], rel, 'folder'),
    }));
    const config = { ...manifest.config, name: name || manifest.config.name };
    await rm(dir, { recursive: true, force: true });
    try {
      for (const c of copies) {
        await fsCall('folder', async () => {
          await mkdir(dirname(c.to), { recursive: true });
          await copyFile(c.from, c.to);
        });
      }
      await this.host.createVm(vmId, config, generation);
      if (manifest.state === 'VM_STATE_SAVED') {
        await this.host.mutate((e) =>
          e.snapshots.revert(vmId, config, manifest.savedHash, manifest.savedPages, 'imported'),
        );
      }
    } catch (err) {
      if (!this.host.engine.vms.has(vmId)) await rm(dir, { recursive: true, force: true });
      throw err;
    }
    await this.host.store.apply([
      ...manifest.checkpoints.map((c) => [checkpointKey(vmId, c.id), c] as const),
      ...(manifest.currentId ? [[currentKey(vmId), { id: manifest.currentId }] as const] : []),
    ]);
    return this.host.read((e) => e.vms.get(vmId));
  }

  /** The manifest, checked whole; any fault is INVALID_ARGUMENT on `folder`, saying where. */
  private async readManifest(source: string): Promise<ExportManifest> {
    const bad = (why: string) => invalidArgument('folder', `manifest.json: ${why}`);
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(await readFile(join(source, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw invalidArgument(
        'folder',
        `no readable manifest.json (${(err as NodeJS.ErrnoException).code ?? 'not JSON'})`,
      );
    }
    if (typeof m !== 'object' || m === null || m['format'] !== FORMAT) throw bad(`format is not ${FORMAT}`);
    const vmId = m['vmId'];
    if (typeof vmId !== 'string') throw bad('vmId is missing');
    try {
      checkId('manifest.vmId', vmId);
    } catch (err) {
      throw bad((err as Error).message);
    }
    const limits = this.host.settings.limits;
    const config = configOf(m['config'], limits, 'config');
    const state = m['state'];
    if (state !== 'VM_STATE_OFF' && state !== 'VM_STATE_SAVED') throw bad('state must be Off or Saved');
    if (
      state === 'VM_STATE_SAVED' &&
      (typeof m['savedHash'] !== 'string' || !Number.isSafeInteger(m['savedPages']))
    )
      throw bad('a Saved VM needs savedHash and savedPages');
    const files = m['files'];
    if (!Array.isArray(files) || !files.every((f) => typeof f === 'string'))
      throw bad('files must be a list of paths');
    const records = m['checkpoints'];
    if (!Array.isArray(records)) throw bad('checkpoints must be a list');
    const checkpoints = records.map((r: unknown, i) => {
      const c = r as Partial<CheckpointRecord> | null;
      const at = `checkpoints[${i}]`;
      if (typeof c !== 'object' || c === null || c.vmId !== vmId) throw bad(`${at} belongs to another VM`);
      if (typeof c.id !== 'string' || !/^[A-Za-z0-9-][A-Za-z0-9.-]{0,127}$/.test(c.id))
        throw bad(`${at}.id is not a snapshot id`);
      if (typeof c.parentId !== 'string' || typeof c.name !== 'string' || typeof c.savedHash !== 'string')
        throw bad(`${at} needs parentId, name and savedHash`);
      if (!Number.isFinite(c.createdAtMs) || typeof c.includesMemory !== 'boolean')
        throw bad(`${at} needs createdAtMs and includesMemory`);
      return { ...c, config: configOf(c.config, limits, `${at}.config`) } as CheckpointRecord;
    });
    const ids = new Set(checkpoints.map((c) => c.id));
    const currentId = m['currentId'];
    if (typeof currentId !== 'string' || (currentId !== '' && !ids.has(currentId)))
      throw bad('currentId names no snapshot');
    if (checkpoints.some((c) => c.parentId !== '' && !ids.has(c.parentId)))
      throw bad('a parentId names no snapshot');
    // Disk paths stay inside the VM's folder (an export never holds others).
    for (const c of [config, ...checkpoints.map((x) => x.config)]) {
      try {
        confineDisks(this.host.folders, vmId, c);
        if (c.disks.some((d) => d.path.startsWith('/'))) throw bad('a disk path is absolute');
      } catch (err) {
        throw err instanceof ApiError && err.field !== 'folder' ? bad(err.message) : err;
      }
    }
    return {
      ...(m as unknown as ExportManifest),
      vmId,
      config,
      checkpoints,
      currentId,
      files: files as string[],
    };
  }
}

/** A VM configuration from a manifest, normalized and checked as CreateVm checks it. */
function configOf(value: unknown, limits: pb.LimitsProfile__Output, at: string): VmConfig {
  try {
    if (typeof value !== 'object' || value === null) throw new Error(`${at} is missing`);
    const config = normalizeConfig(value as pb.VmConfig);
    validateConfig(config, limits, at);
    return config;
  } catch (err) {
    throw invalidArgument('folder', `manifest.json: ${(err as Error).message}`);
  }
}

/** The export folder must be missing or empty, and a folder. */
async function emptyFolder(path: string): Promise<void> {
  const s = await stat(path).catch(() => undefined);
  if (!s) return;
  if (!s.isDirectory()) throw invalidArgument('folder', 'names a file, not a folder');
  if ((await readdir(path)).length > 0) throw invalidArgument('folder', 'is not empty');
}

/**
 * A file system call on a path the caller named: what the file system says about that path
 * (a file where a folder should be, a name too long, no space, no permission) is the caller's
 * to fix, and comes back as such; anything else is unexpected.
 */
async function fsCall<T>(field: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    switch (code) {
      case 'ENOTDIR':
      case 'EEXIST':
      case 'EISDIR':
      case 'ENAMETOOLONG':
      case 'ELOOP':
      case 'ENOENT':
        throw invalidArgument(field, `cannot be written (${code})`);
      case 'ENOSPC':
      case 'EDQUOT':
        throw new ApiError(status.RESOURCE_EXHAUSTED, `no space left under ${field} (${code})`);
      case 'EACCES':
      case 'EPERM':
      case 'EROFS':
        throw new ApiError(status.PERMISSION_DENIED, `the agent may not write under ${field} (${code})`);
      default:
        throw err;
    }
  }
}

/** Files under `dir`, relative to it. */
async function walk(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? join(prefix, entry.name) : entry.name;
    if (entry.isDirectory()) out.push(...(await walk(dir, rel)));
    else out.push(rel);
  }
  return out.sort();
}
