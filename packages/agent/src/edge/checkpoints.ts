import { copyFile, mkdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative } from 'node:path';
import { createVhd, mergeVhd, VhdDisk } from '@hyperfarm/vhd';
import { alreadyExists, failedPrecondition, invalidArgument, notFound, type pb } from '@hyperfarm/api';
import type { VmConfig } from '../engine/validate.js';
import type { VmState } from '../engine/states.js';
import { stateName } from '../engine/states.js';
import type { AgentHost } from './agent-host.js';
import { writeSavedState } from './saved-state.js';

/**
 * VM checkpoints (Hyper-V 1.0's snapshots), as Hyper-V lays them out on disk:
 * - taking one freezes each of the VM's current disk files and gives the VM a new differencing
 *   disk (.avhd) on top; a Running or Paused VM's memory and device state are written beside it
 *   (the guest goes on running);
 * - applying one gives the VM fresh differencing disks on top of the checkpoint's frozen files,
 *   its configuration, and its memory (the VM is then Saved) or none (Off);
 * - deleting one drops its memory file and merges its frozen disk into the one differencing
 *   disk below it when that is the Off VM's current disk, as Hyper-V 1.0 merged at power-off;
 *   otherwise the file stays in the chain (a later delete or apply frees it).
 */
export interface CheckpointRecord {
  id: string;
  vmId: string;
  name: string;
  parentId: string;
  createdAtMs: number;
  includesMemory: boolean;
  vmState: VmState;
  /** The configuration at the checkpoint; its disk paths are the frozen files. */
  config: VmConfig;
  savedHash: string;
  /** Written pages in the memory file (0 without memory). */
  savedPages?: number;
}

const key = (vmId: string, id: string): string => `ckpt/${vmId}/${id}`;
const currentKey = (vmId: string): string => `ckptcur/${vmId}`;
const CREATED_DIFF = /_[A-Za-z0-9.-]+\.avhd$/;

export class Checkpoints {
  /** One checkpoint operation per VM at a time. */
  private readonly queues = new Map<string, Promise<unknown>>();
  private sequence = 0;

  constructor(private readonly host: AgentHost) {}

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
    return this.host.diskPath(vmId, path);
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
    for (const r of await this.host.store.list<CheckpointRecord>('ckpt/'))
      if (r.id === checkpointId) return r;
    throw notFound('checkpoint', checkpointId);
  }

  /** Fresh differencing disks on top of `parents` (absolute), named after `token`. */
  private async newDiffs(vmId: string, parents: readonly string[], token: string): Promise<string[]> {
    const made: string[] = [];
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
    return this.serial(id, () => this.createNow(id, name, generation, wantedId));
  }

  private async createNow(
    vmId: string,
    name: string,
    generation: number,
    wantedId: string,
  ): Promise<pb.Checkpoint> {
    const vm = this.host.read((e) => e.checkCommand(vmId, generation, 'checkpoint'));
    const { checkpoints, currentId } = await this.list(vm.id);
    const id =
      wantedId || `${vm.id.replace(/_/g, '-')}.ckpt-${++this.sequence}-${this.host.now().toString(36)}`;
    if (!/^[A-Za-z0-9.-]{1,128}$/.test(id))
      throw invalidArgument('checkpoint_id', `'${id}' must be 1 to 128 letters, digits, '-' or '.'`);
    if (checkpoints.some((c) => c.id === id)) {
      return this.view(checkpoints.find((c) => c.id === id)!); // a repeated create is harmless
    }
    const elsewhere = (await this.host.store.list<CheckpointRecord>('ckpt/')).find((c) => c.id === id);
    if (elsewhere) throw alreadyExists('checkpoint', id);
    const label = name || `${vm.config!.name} - checkpoint ${checkpoints.length + 1}`;
    const resume = await this.host.quiesceDisks(vm.id);
    const made: string[] = [];
    try {
      // The instant of the checkpoint: memory copied, disks switched, with guest I/O held.
      const capture = this.host.read((e) => e.captureForCheckpoint(vm.id));
      const frozen = capture.config.disks.map((d) => this.abs(vm.id, d.path));
      made.push(...(await this.newDiffs(vm.id, frozen, id)));
      await this.host.mutate((e) =>
        e.setDiskPaths(
          vm.id,
          made.map((p) => this.rel(vm.id, p)),
        ),
      );
      resume();
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
      };
      await this.host.store.apply([
        [key(vm.id, id), record],
        [currentKey(vm.id), { id }],
      ]);
      this.host.logger.info(
        { vmId: vm.id, checkpoint: id, memory: record.includesMemory },
        'checkpoint taken',
      );
      return this.view(record);
    } catch (err) {
      resume();
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
        let vm = this.host.read((e) => e.checkCommand(vmId, generation, 'apply a checkpoint to'));
        const state = vm.status!.state;
        if (state !== 'VM_STATE_OFF' && state !== 'VM_STATE_SAVED') {
          if (!turnOffFirst && !saveCurrentFirst) {
            throw failedPrecondition(
              `cannot apply checkpoint '${record.name}' to VM '${vm.config!.name}': it is ${stateName(state)}; turn it off first, or set turn_off_first or save_current_first`,
            );
          }
        }
        if (saveCurrentFirst) await this.createNow(vmId, `Before applying '${record.name}'`, generation, '');
        vm = this.host.read((e) => e.getVm(vmId));
        if (vm.status!.state !== 'VM_STATE_OFF' && vm.status!.state !== 'VM_STATE_SAVED') {
          await this.host.mutate((e) => e.changeState(vmId, 'VM_ACTION_TURN_OFF', generation));
        }
        const resume = await this.host.quiesceDisks(vmId);
        try {
          const { checkpoints } = await this.list(vmId);
          const frozen = new Set(
            checkpoints.flatMap((c) => c.config.disks.map((d) => this.abs(vmId, d.path))),
          );
          const current = vm.config!.disks.map((d) => this.abs(vmId, d.path));
          const parents = record.config.disks.map((d) => this.abs(vmId, d.path));
          const fresh = await this.newDiffs(vmId, parents, `${record.id}-a${this.host.now().toString(36)}`);
          await rm(this.host.savedStatePath(vmId), { force: true });
          let savedHash: string | undefined;
          if (record.includesMemory) {
            await mkdir(this.host.vmDir(vmId), { recursive: true });
            await copyFile(this.statePath(vmId, record.id), this.host.savedStatePath(vmId));
            savedHash = record.savedHash;
          }
          const config: VmConfig = structuredClone(record.config);
          config.disks.forEach((d, i) => (d.path = this.rel(vmId, fresh[i]!)));
          const result = await this.host.mutate((e) =>
            e.revertToCheckpoint(vmId, config, savedHash, record.savedPages ?? 0, record.name),
          );
          await this.host.store.apply([[currentKey(vmId), { id: record.id }]]);
          // Only now, with the VM on its new disks for good: the state left behind goes, unless a
          // checkpoint still needs its files.
          for (const path of current)
            if (CREATED_DIFF.test(path) && !frozen.has(path)) await rm(path, { force: true });
          return result;
        } finally {
          resume();
        }
      }),
    );
  }

  delete(
    checkpointId: string,
    generation: number,
    subtree: boolean,
  ): Promise<pb.AgentDeleteCheckpointResponse> {
    return this.find(checkpointId).then((record) =>
      this.serial(record.vmId, async () => {
        const vmId = record.vmId;
        this.host.read((e) => e.checkCommand(vmId, generation, 'delete a checkpoint of'));
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
        const survivors = checkpoints.filter((c) => !victims.has(c.id));
        // Deepest first, so a child's file is gone before its parent's children are counted.
        const ordered = checkpoints.filter((c) => victims.has(c.id)).reverse();
        for (const c of ordered) await this.reclaim(vmId, c, survivors);
        this.host.logger.info({ vmId, checkpoints: [...victims] }, 'checkpoints deleted');
        return { mergeId: '' };
      }),
    );
  }

  /** Forgets a deleted VM's checkpoints (their files went with the VM's folder). */
  async forgetVm(vmId: string): Promise<void> {
    const { checkpoints } = await this.list(vmId);
    await this.host.store.apply([
      ...checkpoints.map((c) => [key(vmId, c.id), undefined] as const),
      [currentKey(vmId), undefined],
    ]);
  }

  async hasCheckpoints(vmId: string): Promise<boolean> {
    return (await this.list(vmId)).checkpoints.length > 0;
  }

  /** Frees a deleted checkpoint's frozen files where that is safe now (see the class comment). */
  private async reclaim(
    vmId: string,
    victim: CheckpointRecord,
    survivors: readonly CheckpointRecord[],
  ): Promise<void> {
    const vm = this.host.read((e) => e.getVm(vmId));
    const offline = vm.status!.state === 'VM_STATE_OFF' || vm.status!.state === 'VM_STATE_SAVED';
    const resume = offline ? await this.host.quiesceDisks(vmId) : () => undefined;
    try {
      const current = vm.config!.disks.map((d) => this.abs(vmId, d.path));
      const others = survivors.flatMap((c) => c.config.disks.map((d) => this.abs(vmId, d.path)));
      const paths = [...current, ...others];
      const parentOf = new Map<string, string | undefined>();
      for (const p of paths) {
        if (!existsSync(p)) continue;
        const d = await VhdDisk.open(p, { readOnly: true });
        parentOf.set(p, d.parent?.path);
        await d.close();
      }
      const newPaths = [...current];
      let moved = false;
      for (const d of victim.config.disks) {
        const f = this.abs(vmId, d.path);
        if (others.includes(f) || current.includes(f)) continue;
        const children = paths.filter((p) => parentOf.get(p) === f);
        if (children.length === 0 && CREATED_DIFF.test(f)) {
          await rm(f, { force: true });
        } else if (offline && children.length === 1 && current.includes(children[0]!)) {
          await mergeVhd(children[0]!);
          newPaths[current.indexOf(children[0]!)] = f;
          moved = true;
        }
      }
      if (moved)
        await this.host.mutate((e) =>
          e.setDiskPaths(
            vmId,
            newPaths.map((p) => this.rel(vmId, p)),
          ),
        );
    } finally {
      resume();
    }
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
