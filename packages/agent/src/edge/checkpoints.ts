import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, rm, stat, writeFile, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { createVhd, type VhdDisk } from '@hyperfarm/vhd';
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  resourceExhausted,
  type pb,
} from '@hyperfarm/api';
import type { VmConfig } from '../engine/validate.js';
import type { VmState } from '../engine/states.js';
import { stateName } from '../engine/states.js';
import type { AgentHost } from './agent-host.js';
import { writeSavedState } from './saved-state.js';
import { nextCleanupStep, readFileGraph, type CleanupStep } from './snapshot-files.js';
import { SnapshotMerges } from './snapshot-merges.js';

/**
 * VM snapshots (Hyper-V 1.0's name; later versions say checkpoints), laid out as Hyper-V does:
 * - taking one freezes each of the VM's current disk files (the snapshot now owns them) and gives
 *   the VM a new differencing disk (.avhd) on top; a Running or Paused VM's memory and device
 *   state go to `checkpoints/<id>.state` (the guest's I/O waits only while the disks switch);
 * - applying one gives the VM fresh differencing disks on top of the snapshot's frozen files, its
 *   configuration, and its memory (the VM is then Saved) or none (Off);
 * - deleting one drops its record and memory file; its frozen files, now unowned, are folded by
 *   `SnapshotMerges` (see `nextCleanupStep`): at once for an Off or Saved VM, online for one that
 *   runs.
 */
export interface CheckpointRecord {
  id: string;
  vmId: string;
  name: string;
  parentId: string;
  createdAtMs: number;
  includesMemory: boolean;
  vmState: VmState;
  /** The configuration at the snapshot; its disk paths are the frozen files. */
  config: VmConfig;
  savedHash: string;
  /** Written pages in the memory file (0 without memory). */
  savedPages?: number;
  /** How long the guest's disk I/O was held while the snapshot was taken, ms. */
  pauseMs?: number;
}

/** Hyper-V's limit: 50 snapshots per VM. */
export const MAX_CHECKPOINTS_PER_VM = 50;
const MAX_NAME = 100;
const key = (vmId: string, id: string): string => `ckpt/${vmId}/${id}`;
const currentKey = (vmId: string): string => `ckptcur/${vmId}`;
const CREATED_DIFF = /_[A-Za-z0-9.-]+\.avhd$/;
const OFFLINE: readonly VmState[] = ['VM_STATE_OFF', 'VM_STATE_SAVED'];

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

export class Checkpoints {
  /** One snapshot operation per VM at a time. */
  private readonly queues = new Map<string, Promise<unknown>>();
  private sequence = 0;
  readonly merges: SnapshotMerges;

  constructor(private readonly host: AgentHost) {
    this.merges = new SnapshotMerges(host, {
      plan: (vmId) => this.plan(vmId),
      replaceReferences: (vmId, from, to) => this.replaceReferences(vmId, from, to),
      liveDiskFor: (vmId, path) => this.liveDiskFor(vmId, path),
    });
    host.beforeStop(() => this.merges.stop());
  }

  private serial<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(vmId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.queues.set(
      vmId,
      next.catch(() => undefined),
    );
    return next;
  }

  private statePath(vmId: string, id: string): string {
    return join(this.host.vmDir(vmId), 'checkpoints', `${id}.state`);
  }

  private abs(vmId: string, path: string): string {
    return this.host.folders.diskPath(vmId, path);
  }

  /** A path as the config keeps it: relative to the VM's folder when inside it. */
  private rel(vmId: string, path: string): string {
    const r = relative(this.host.vmDir(vmId), path);
    return r.startsWith('..') || isAbsolute(r) ? path : r;
  }

  async list(vmId: string): Promise<{ checkpoints: CheckpointRecord[]; currentId: string }> {
    const checkpoints = await this.host.store.list<CheckpointRecord>(`ckpt/${vmId}/`);
    const current = await this.host.store.get<{ id: string }>(currentKey(vmId));
    return {
      checkpoints: checkpoints.sort((a, b) => a.createdAtMs - b.createdAtMs || a.id.localeCompare(b.id)),
      currentId: current?.id ?? '',
    };
  }

  private async find(checkpointId: string): Promise<CheckpointRecord> {
    if (!checkpointId) throw invalidArgument('checkpoint_id', 'is required');
    for (const r of await this.host.store.list<CheckpointRecord>('ckpt/'))
      if (r.id === checkpointId) return r;
    throw notFound('checkpoint', checkpointId);
  }

  /** Snapshot operations wait for no merge: they are refused while one folds the VM's disks. */
  private noMerge(vmId: string, what: string): void {
    const m = this.merges.activeOn(vmId);
    if (m) {
      const name = this.host.read((e) => e.getVm(vmId)).config!.name;
      throw failedPrecondition(
        `cannot ${what} VM '${name}': merge ${m.id} is folding its snapshot disks (${m.state}); retry once GetMerge says completed`,
      );
    }
  }

  /** Fresh differencing disks on top of `parents` (absolute), named after `token`. */
  private async newDiffs(vmId: string, parents: readonly string[], token: string): Promise<string[]> {
    const made: string[] = [];
    const provider = this.host.storageProvider;
    try {
      for (const parent of parents) {
        const stem = basename(parent)
          .replace(CREATED_DIFF, '')
          .replace(/\.a?vhd$/i, '');
        const path = join(this.host.vmDir(vmId), `${stem}_${token}.avhd`);
        await (
          await createVhd(path, {
            type: 'differencing',
            parentPath: parent,
            now: () => new Date(this.host.now()),
            ...(provider ? { provider } : {}),
          })
        ).close();
        made.push(path);
      }
    } catch (err) {
      for (const p of made) await rm(p, { force: true });
      throw err;
    }
    return made;
  }

  create(vmId: string, name: string, generation: number, wantedId: string): Promise<pb.Checkpoint> {
    const id = this.host.read((e) => e.getVm(vmId)).id;
    return this.serial(id, async () => this.view(await this.createNow(id, name, generation, wantedId)));
  }

  private async createNow(
    vmId: string,
    name: string,
    generation: number,
    wantedId: string,
  ): Promise<CheckpointRecord> {
    const vm = this.host.read((e) => e.checkCommand(vmId, generation, 'checkpoint'));
    const { checkpoints, currentId } = await this.list(vm.id);
    const id =
      wantedId || `${vm.id.replace(/_/g, '-')}.ckpt-${++this.sequence}-${randomBytes(3).toString('hex')}`;
    if (!/^[A-Za-z0-9.-]{1,128}$/.test(id))
      throw invalidArgument('checkpoint_id', `'${id}' must be 1 to 128 letters, digits, '-' or '.'`);
    const same = checkpoints.find((c) => c.id === id);
    if (same) return same; // a repeated create is harmless
    const elsewhere = (await this.host.store.list<CheckpointRecord>('ckpt/')).find((c) => c.id === id);
    if (elsewhere) throw alreadyExists('checkpoint', id);
    if (name) checkName('name', name);
    if (checkpoints.length >= MAX_CHECKPOINTS_PER_VM) {
      throw resourceExhausted(
        `cannot take a snapshot of VM '${vm.config!.name}': it has ${checkpoints.length} snapshots, the most a VM may have (${MAX_CHECKPOINTS_PER_VM}); delete one first`,
      );
    }
    this.noMerge(vm.id, 'take a snapshot of');
    const label = name || `${vm.config!.name} - (${new Date(this.host.now()).toISOString()})`;
    const held = process.hrtime.bigint();
    const resume = await this.host.quiesceDisks(vm.id);
    const made: string[] = [];
    let pauseMs = 0;
    const release = () => {
      if (pauseMs === 0) pauseMs = Number(process.hrtime.bigint() - held) / 1e6;
      resume();
    };
    try {
      // The instant of the snapshot: memory copied, disks switched, with guest I/O held.
      const capture = this.host.read((e) => e.captureForCheckpoint(vm.id));
      const frozen = capture.config.disks.map((d) => this.abs(vm.id, d.path));
      made.push(...(await this.newDiffs(vm.id, frozen, id)));
      await this.host.mutate((e) =>
        e.setDiskPaths(
          vm.id,
          made.map((p) => this.rel(vm.id, p)),
        ),
      );
      release();
      let savedHash = '';
      let savedPages = 0;
      await mkdir(dirname(this.statePath(vm.id, id)), { recursive: true });
      if (capture.memory && capture.deviceState) {
        const saved = await writeSavedState(this.statePath(vm.id, id), capture.memory, capture.deviceState);
        savedHash = saved.sha256;
        savedPages = saved.pages;
      } else if (capture.state === 'VM_STATE_SAVED') {
        await copyFile(this.host.savedStatePath(vm.id), this.statePath(vm.id, id));
        const saved = this.host.read((e) => e.stateHash(vm.id));
        savedHash = saved.sha256;
        savedPages = saved.residentPages;
      }
      const record: CheckpointRecord = {
        id,
        vmId: vm.id,
        name: label,
        parentId: currentId,
        createdAtMs: this.host.now(),
        includesMemory: savedHash !== '',
        vmState: capture.state,
        config: capture.config,
        savedHash,
        savedPages,
        pauseMs,
      };
      await this.host.store.apply([
        [key(vm.id, id), record],
        [currentKey(vm.id), { id }],
      ]);
      this.host.logger.info(
        { vmId: vm.id, checkpoint: id, memory: record.includesMemory, pauseMs },
        'snapshot taken',
      );
      return record;
    } catch (err) {
      release();
      // The VM goes back to the files it had, and the new ones go.
      if (made.length > 0) {
        const vmNow = this.host.read((e) => e.getVm(vm.id));
        const onNew = vmNow.config!.disks.some((d) => made.includes(this.abs(vm.id, d.path)));
        if (onNew) {
          const resume2 = await this.host.quiesceDisks(vm.id);
          await this.host.mutate((e) =>
            e.setDiskPaths(
              vm.id,
              vm.config!.disks.map((d) => d.path),
            ),
          );
          resume2();
        }
      }
      for (const p of made) await rm(p, { force: true });
      throw err;
    }
  }

  apply(
    checkpointId: string,
    generation: number,
    turnOffFirst: boolean,
    saveCurrentFirst: boolean,
  ): Promise<pb.Vm> {
    return this.find(checkpointId).then((record) =>
      this.serial(record.vmId, async () => {
        const vmId = record.vmId;
        let vm = this.host.read((e) => e.checkCommand(vmId, generation, 'apply a snapshot to'));
        const state = vm.status!.state;
        if (!OFFLINE.includes(state) && !turnOffFirst) {
          throw failedPrecondition(
            `cannot apply snapshot '${record.name}' to VM '${vm.config!.name}': it is ${stateName(state)}; turn it off first, or set turn_off_first`,
          );
        }
        this.noMerge(vmId, 'apply a snapshot to');
        if (saveCurrentFirst) await this.createNow(vmId, `Before applying '${record.name}'`, generation, '');
        vm = this.host.read((e) => e.getVm(vmId));
        if (!OFFLINE.includes(vm.status!.state)) {
          await this.host.mutate((e) => e.changeState(vmId, 'VM_ACTION_TURN_OFF', generation));
        }
        const resume = await this.host.quiesceDisks(vmId);
        let result: pb.Vm;
        try {
          const parents = record.config.disks.map((d) => this.abs(vmId, d.path));
          const fresh = await this.newDiffs(vmId, parents, `${record.id}-a${randomBytes(3).toString('hex')}`);
          await rm(this.host.savedStatePath(vmId), { force: true });
          let savedHash: string | undefined;
          if (record.includesMemory) {
            await mkdir(this.host.vmDir(vmId), { recursive: true });
            await copyFile(this.statePath(vmId, record.id), this.host.savedStatePath(vmId));
            savedHash = record.savedHash;
          }
          const config: VmConfig = structuredClone(record.config);
          config.disks.forEach((d, i) => (d.path = this.rel(vmId, fresh[i]!)));
          result = await this.host.mutate((e) =>
            e.revertToCheckpoint(vmId, config, savedHash, record.savedPages ?? 0, record.name),
          );
          await this.host.store.apply([[currentKey(vmId), { id: record.id }]]);
        } finally {
          resume();
        }
        // The state left behind is no one's now: its files go (the VM is Off or Saved).
        await this.merges.start(vmId, false);
        return this.host.read((e) => e.getVm(vmId)) ?? result;
      }),
    );
  }

  delete(checkpointId: string, generation: number, subtree: boolean): Promise<{ mergeId: string }> {
    return this.find(checkpointId).then((record) =>
      this.serial(record.vmId, async () => {
        const vmId = record.vmId;
        const vm = this.host.read((e) => e.checkCommand(vmId, generation, 'delete a snapshot of'));
        this.noMerge(vmId, 'delete a snapshot of');
        const { checkpoints, currentId } = await this.list(vmId);
        const victims = new Set([record.id]);
        if (subtree) {
          for (let grew = true; grew;) {
            grew = false;
            for (const c of checkpoints) {
              if (!victims.has(c.id) && victims.has(c.parentId)) {
                victims.add(c.id);
                grew = true;
              }
            }
          }
        }
        const changes: [string, unknown][] = [];
        for (const c of checkpoints) {
          if (victims.has(c.id)) changes.push([key(vmId, c.id), undefined]);
          else if (victims.has(c.parentId))
            changes.push([key(vmId, c.id), { ...c, parentId: record.parentId }]);
        }
        if (victims.has(currentId))
          changes.push([currentKey(vmId), record.parentId ? { id: record.parentId } : undefined]);
        await this.host.store.apply(changes);
        for (const id of victims) await rm(this.statePath(vmId, id), { force: true });
        this.host.logger.info({ vmId, checkpoints: [...victims] }, 'snapshots deleted');
        const online = !OFFLINE.includes(vm.status!.state);
        return { mergeId: await this.merges.start(vmId, online) };
      }),
    );
  }

  async rename(checkpointId: string, name: string, generation: number): Promise<pb.Checkpoint> {
    checkName('name', name);
    return this.find(checkpointId).then((record) =>
      this.serial(record.vmId, async () => {
        this.host.read((e) => e.checkCommand(record.vmId, generation, 'rename a snapshot of'));
        const fresh = await this.find(checkpointId);
        const renamed = { ...fresh, name };
        await this.host.store.apply([[key(record.vmId, record.id), renamed]]);
        return this.view(renamed);
      }),
    );
  }

  /** Forgets a deleted VM's snapshots (their files went with the VM's folder). */
  async forgetVm(vmId: string): Promise<void> {
    const { checkpoints } = await this.list(vmId);
    await this.host.store.apply([
      ...checkpoints.map((c) => [key(vmId, c.id), undefined] as const),
      [currentKey(vmId), undefined],
    ]);
  }

  async hasCheckpoints(vmId: string): Promise<boolean> {
    return (await this.list(vmId)).checkpoints.length > 0 || this.merges.activeOn(vmId) !== undefined;
  }

  // ---- merges: what the merge loop asks of the snapshot tree ------------------------------------

  private async plan(vmId: string): Promise<CleanupStep | undefined> {
    if (!this.host.engine.hasVm(vmId)) return undefined;
    const vm = this.host.read((e) => e.getVm(vmId));
    const { checkpoints } = await this.list(vmId);
    const current = vm.config!.disks.map((d) => this.abs(vmId, d.path));
    const owned = [
      ...current,
      ...checkpoints.flatMap((c) => c.config.disks.map((d) => this.abs(vmId, d.path))),
    ];
    const graph = await readFileGraph(owned, this.host.vmDir(vmId), this.host.storageProvider);
    const inUse = new Set<string>();
    if (!OFFLINE.includes(vm.status!.state)) {
      for (const top of current)
        for (let f: string | undefined = top; f; f = graph.parentOf.get(f)) inUse.add(f);
    }
    return nextCleanupStep(graph, inUse);
  }

  private async replaceReferences(vmId: string, from: string, to: string): Promise<void> {
    const vm = this.host.read((e) => e.getVm(vmId));
    const current = vm.config!.disks.map((d) => this.abs(vmId, d.path));
    if (current.includes(from)) {
      const resume = await this.host.quiesceDisks(vmId);
      try {
        await this.host.mutate((e) =>
          e.setDiskPaths(
            vmId,
            current.map((p) => this.rel(vmId, p === from ? to : p)),
          ),
        );
      } finally {
        resume();
      }
    }
    const changes: [string, unknown][] = [];
    for (const c of (await this.list(vmId)).checkpoints) {
      if (!c.config.disks.some((d) => this.abs(vmId, d.path) === from)) continue;
      const config = structuredClone(c.config);
      for (const d of config.disks) if (this.abs(vmId, d.path) === from) d.path = this.rel(vmId, to);
      changes.push([key(vmId, c.id), { ...c, config }]);
    }
    await this.host.store.apply(changes);
  }

  /** The running VM's open top disk whose chain holds `path`; undefined when the VM is off. */
  private async liveDiskFor(vmId: string, path: string): Promise<VhdDisk | undefined> {
    const vm = this.host.read((e) => e.getVm(vmId));
    if (OFFLINE.includes(vm.status!.state)) {
      // Nothing may hold the files open while they change under it.
      const resume = await this.host.quiesceDisks(vmId);
      resume();
      return undefined;
    }
    for (let i = 0; i < vm.config!.disks.length; i++) {
      const top = await this.host.openVhd(vmId, i);
      for (let d: VhdDisk | undefined = top; d; d = d.parent) if (resolve(d.path) === path) return top;
    }
    return undefined;
  }

  // ---- export and import --------------------------------------------------------------------------

  async exportToFolder(vmIdOrName: string, folder: string): Promise<pb.ExportVmToFolderResponse> {
    if (!folder || !isAbsolute(folder)) throw invalidArgument('folder', 'must be an absolute path');
    const vmId = this.host.read((e) => e.getVm(vmIdOrName)).id;
    return this.serial(vmId, async () => {
      const vm = this.host.read((e) => e.getVm(vmId));
      const state = vm.status!.state;
      if (!OFFLINE.includes(state))
        throw failedPrecondition(
          `cannot export VM '${vm.config!.name}': it is ${stateName(state)}; turn it off or save it first`,
        );
      this.noMerge(vmId, 'export');
      if (existsSync(folder) && (await readdir(folder)).length > 0)
        throw invalidArgument('folder', `${folder} is not empty`);
      const { checkpoints, currentId } = await this.list(vmId);
      const dir = this.host.vmDir(vmId);
      for (const c of [vm.config!, ...checkpoints.map((x) => x.config)])
        for (const d of c.disks)
          if (this.rel(vmId, this.abs(vmId, d.path)) === this.abs(vmId, d.path))
            throw failedPrecondition(
              `cannot export VM '${vm.config!.name}': disk ${d.path} is outside its folder`,
            );
      const resume = await this.host.quiesceDisks(vmId);
      const files: string[] = [];
      let bytes = 0;
      try {
        await mkdir(folder, { recursive: true });
        for (const rel of await walk(dir)) {
          if (rel.endsWith('.tmp') || rel.endsWith('.merge-state')) continue;
          await mkdir(dirname(join(folder, rel)), { recursive: true });
          await copyFile(join(dir, rel), join(folder, rel));
          bytes += (await stat(join(folder, rel))).size;
          files.push(rel);
        }
        const hash = state === 'VM_STATE_SAVED' ? this.host.read((e) => e.stateHash(vmId)) : undefined;
        const manifest: ExportManifest = {
          format: 'hyperfarm-vm-export/1',
          vmId,
          config: structuredClone(vm.config!) as VmConfig,
          state,
          savedHash: hash?.sha256 ?? '',
          savedPages: hash?.residentPages ?? 0,
          currentId,
          checkpoints,
          files,
        };
        await writeFile(join(folder, 'manifest.json'), JSON.stringify(manifest, null, 2));
        files.push('manifest.json');
      } finally {
        resume();
      }
      return { files, bytes };
    });
  }

  async importFromFolder(folder: string, wantedId: string, name: string, generation: number): Promise<pb.Vm> {
    if (!folder || !isAbsolute(folder)) throw invalidArgument('folder', 'must be an absolute path');
    let manifest: ExportManifest;
    try {
      manifest = JSON.parse(await readFile(join(folder, 'manifest.json'), 'utf8')) as ExportManifest;
    } catch (err) {
      throw invalidArgument('folder', `no readable manifest.json: ${(err as Error).message}`);
    }
    if (manifest.format !== 'hyperfarm-vm-export/1')
      throw invalidArgument(
        'folder',
        `manifest format ${String(manifest.format)} is not hyperfarm-vm-export/1`,
      );
    const vmId = manifest.vmId;
    if (wantedId && wantedId !== vmId)
      throw invalidArgument(
        'vm_id',
        `must be empty or '${vmId}': guest memory is derived from the VM id, so an import keeps it`,
      );
    if (this.host.engine.hasVm(vmId)) throw alreadyExists('VM', vmId);
    for (const c of manifest.checkpoints)
      if ((await this.host.store.list<CheckpointRecord>('ckpt/')).some((x) => x.id === c.id))
        throw alreadyExists('checkpoint', c.id);
    const dir = this.host.vmDir(vmId);
    await rm(dir, { recursive: true, force: true });
    for (const rel of manifest.files) {
      await mkdir(dirname(join(dir, rel)), { recursive: true });
      await copyFile(join(folder, rel), join(dir, rel));
    }
    const config = { ...manifest.config, name: name || manifest.config.name } as VmConfig;
    try {
      await this.host.createVm(vmId, config as unknown as pb.VmConfig, generation);
      if (manifest.state === 'VM_STATE_SAVED') {
        await this.host.mutate((e) =>
          e.revertToCheckpoint(vmId, config, manifest.savedHash, manifest.savedPages, 'imported'),
        );
      }
    } catch (err) {
      if (!this.host.engine.hasVm(vmId)) await rm(dir, { recursive: true, force: true });
      throw err;
    }
    await this.host.store.apply([
      ...manifest.checkpoints.map((c) => [key(vmId, c.id), c] as const),
      ...(manifest.currentId ? [[currentKey(vmId), { id: manifest.currentId }] as const] : []),
    ]);
    return this.host.read((e) => e.getVm(vmId));
  }

  view(r: CheckpointRecord): pb.Checkpoint {
    return {
      id: r.id,
      vmId: r.vmId,
      name: r.name,
      parentId: r.parentId,
      createdAtMs: r.createdAtMs,
      includesMemory: r.includesMemory,
      vmState: r.vmState,
    };
  }
}

function checkName(field: string, name: string): void {
  if (name.length === 0 || name.length > MAX_NAME)
    throw invalidArgument(field, `must be 1 to ${MAX_NAME} characters, got ${name.length}`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw invalidArgument(field, 'must not contain control characters');
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
