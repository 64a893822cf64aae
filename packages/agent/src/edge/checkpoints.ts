import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { basename, dirname, isAbsolute, relative, resolve } from 'node:path';
import { createVhd, type VhdDisk } from '@hyperfarm/vhd';
import { alreadyExists, invalidArgument, notFound, type pb } from '@hyperfarm/api';
import type { SnapshotFacts } from '../engine/engine.js';
import {
  filesInUse,
  nextCleanupStep,
  planDeletion,
  treeOrder,
  type CleanupStep,
} from '../engine/snapshot-tree.js';
import type { VmState } from '../engine/states.js';
import type { VmConfig } from '../engine/validate.js';
import type { AgentHost } from './agent-host.js';
import { writeSavedState } from './saved-state.js';
import { readFileGraph } from './snapshot-files.js';
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
 * The rules are the engine's (engine/snapshots.ts), the tree's shape a pure module of its own
 * (engine/snapshot-tree.ts); this class keeps the records and the files.
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

const MAX_NAME = 100;
export const checkpointKey = (vmId: string, id: string): string => `ckpt/${vmId}/${id}`;
export const currentKey = (vmId: string): string => `ckptcur/${vmId}`;
const CREATED_DIFF = /_[A-Za-z0-9.-]+\.avhd$/;
/** Snapshot ids name files and sit in differencing disk names after a '_': no '_' in them. */
const CHECKPOINT_ID = /^[A-Za-z0-9-][A-Za-z0-9.-]{0,127}$/;

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

  /**
   * Runs `fn` after every snapshot operation already queued on the VM, once this host is known
   * to own the VM's files (on cluster storage, a stale copy must not touch them).
   */
  serial<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(vmId) ?? Promise.resolve();
    const run = async () => {
      await this.host.claimFiles(vmId, 'change the snapshots or files of');
      return fn();
    };
    const next = prev.then(run, run);
    this.queues.set(
      vmId,
      next.catch(() => undefined),
    );
    return next;
  }

  private statePath(vmId: string, id: string): string {
    return this.host.folders.checkpointStatePath(vmId, id);
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
    return { checkpoints: treeOrder(checkpoints), currentId: current?.id ?? '' };
  }

  /** What the engine's rules need to know of a VM's snapshots. */
  async facts(vmId: string): Promise<SnapshotFacts> {
    const merge = this.merges.activeOn(vmId);
    return {
      snapshots: (await this.list(vmId)).checkpoints.length,
      merging: merge && { id: merge.id, state: merge.state },
    };
  }

  /** Whether a snapshot with this id exists on any VM of this host. */
  async exists(checkpointId: string): Promise<boolean> {
    return (await this.host.store.list<CheckpointRecord>('ckpt/')).some((r) => r.id === checkpointId);
  }

  private async find(checkpointId: string): Promise<CheckpointRecord> {
    if (!checkpointId) throw invalidArgument('checkpoint_id', 'is required');
    for (const r of await this.host.store.list<CheckpointRecord>('ckpt/'))
      if (r.id === checkpointId) return r;
    throw notFound('checkpoint', checkpointId);
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
        const path = this.abs(vmId, `${stem}_${token}.avhd`);
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

  async create(vmId: string, name: string, generation: number, wantedId: string): Promise<pb.Checkpoint> {
    if (wantedId && !CHECKPOINT_ID.test(wantedId))
      throw invalidArgument(
        'checkpoint_id',
        "must be 1 to 128 letters, digits, '-' or '.', not starting with '.'",
      );
    if (name) checkName('name', name);
    const id = this.host.read((e) => e.vms.get(vmId)).id;
    return this.serial(id, async () => this.view(await this.createNow(id, name, generation, wantedId)));
  }

  private async createNow(
    vmId: string,
    name: string,
    generation: number,
    wantedId: string,
  ): Promise<CheckpointRecord> {
    const facts = await this.facts(vmId);
    const vm = this.host.read((e) => e.snapshots.checkTake(vmId, generation, facts));
    const { checkpoints, currentId } = await this.list(vm.id);
    const id =
      wantedId || `${vm.id.replace(/_/g, '-')}.ckpt-${++this.sequence}-${randomBytes(3).toString('hex')}`;
    const same = checkpoints.find((c) => c.id === id);
    if (same) return same; // a repeated create is harmless
    if (await this.exists(id)) throw alreadyExists('checkpoint', id);
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
      const capture = this.host.read((e) => e.snapshots.capture(vm.id));
      const frozen = capture.config.disks.map((d) => this.abs(vm.id, d.path));
      made.push(...(await this.newDiffs(vm.id, frozen, id)));
      await this.host.mutate((e) =>
        e.snapshots.setDiskPaths(
          vm.id,
          made.map((p) => this.rel(vm.id, p)),
        ),
      );
      release();
      let savedHash = '';
      let savedPages = 0;
      const statePath = this.statePath(vm.id, id);
      await mkdir(dirname(statePath), { recursive: true });
      if (capture.memory && capture.deviceState) {
        const saved = await writeSavedState(statePath, capture.memory, capture.deviceState);
        savedHash = saved.sha256;
        savedPages = saved.pages;
      } else if (capture.state === 'VM_STATE_SAVED') {
        await copyFile(this.host.savedStatePath(vm.id), statePath);
        const saved = this.host.read((e) => e.vms.stateHash(vm.id));
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
        [checkpointKey(vm.id, id), record],
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
        const vmNow = this.host.read((e) => e.vms.get(vm.id));
        const onNew = vmNow.config!.disks.some((d) => made.includes(this.abs(vm.id, d.path)));
        if (onNew) {
          const resume2 = await this.host.quiesceDisks(vm.id);
          await this.host.mutate((e) =>
            e.snapshots.setDiskPaths(
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

  async apply(
    checkpointId: string,
    generation: number,
    turnOffFirst: boolean,
    saveCurrentFirst: boolean,
  ): Promise<pb.Vm> {
    const record = await this.find(checkpointId);
    return this.serial(record.vmId, async () => {
      const vmId = record.vmId;
      const facts = await this.facts(vmId);
      this.host.read((e) => e.snapshots.check(vmId, generation, 'apply a snapshot to', facts));
      this.host.read((e) => e.snapshots.applyNeedsTurnOff(vmId, record.name, turnOffFirst));
      if (saveCurrentFirst) await this.createNow(vmId, `Before applying '${record.name}'`, generation, '');
      if (this.host.read((e) => e.snapshots.applyNeedsTurnOff(vmId, record.name, turnOffFirst))) {
        await this.host.mutate((e) => e.power.change(vmId, 'VM_ACTION_TURN_OFF', generation));
      }
      const resume = await this.host.quiesceDisks(vmId);
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
        await this.host.mutate((e) =>
          e.snapshots.revert(vmId, config, savedHash, record.savedPages ?? 0, record.name),
        );
        await this.host.store.apply([[currentKey(vmId), { id: record.id }]]);
      } finally {
        resume();
      }
      // The state left behind is no one's now: its files go (the VM is Off or Saved).
      await this.merges.start(vmId, false);
      return this.host.read((e) => e.vms.get(vmId));
    });
  }

  async delete(checkpointId: string, generation: number, subtree: boolean): Promise<{ mergeId: string }> {
    const record = await this.find(checkpointId);
    return this.serial(record.vmId, async () => {
      const vmId = record.vmId;
      const facts = await this.facts(vmId);
      this.host.read((e) => e.snapshots.check(vmId, generation, 'delete a snapshot of', facts));
      const { checkpoints, currentId } = await this.list(vmId);
      const plan = planDeletion(checkpoints, currentId, record, subtree);
      await this.host.store.apply([
        ...[...plan.removed].map((id) => [checkpointKey(vmId, id), undefined] as const),
        ...plan.relinked.map((c) => [checkpointKey(vmId, c.id), c] as const),
        [currentKey(vmId), plan.currentId ? { id: plan.currentId } : undefined],
      ]);
      for (const id of plan.removed) await rm(this.statePath(vmId, id), { force: true });
      this.host.logger.info({ vmId, checkpoints: [...plan.removed] }, 'snapshots deleted');
      const online = !this.host.read((e) => e.snapshots.isOffline(vmId));
      return { mergeId: await this.merges.start(vmId, online) };
    });
  }

  async rename(checkpointId: string, name: string, generation: number): Promise<pb.Checkpoint> {
    checkName('name', name);
    const record = await this.find(checkpointId);
    return this.serial(record.vmId, async () => {
      this.host.read((e) => e.snapshots.check(record.vmId, generation, 'rename a snapshot of'));
      const renamed = { ...(await this.find(checkpointId)), name };
      await this.host.store.apply([[checkpointKey(record.vmId, record.id), renamed]]);
      return this.view(renamed);
    });
  }

  /** Forgets a deleted VM's snapshots (their files went with the VM's folder). */
  /**
   * Takes a VM's snapshot records from the manifest beside its files on cluster storage (it
   * arrived by migration, a failover or a move): the files are where they were.
   */
  async adopt(vmId: string, records: readonly CheckpointRecord[], currentId: string): Promise<void> {
    const held = await this.list(vmId);
    // Nothing held and nothing to hold (a VM without snapshots: most failovers) writes nothing. A
    // synced batch per VM, two before, is what held back a failover of hundreds of VMs.
    if (held.checkpoints.length === 0 && !held.currentId && records.length === 0 && !currentId) return;
    const kept = new Set(records.map((r) => r.id));
    // One batch: the old records go and the new ones come together.
    await this.host.store.apply([
      ...held.checkpoints
        .filter((c) => !kept.has(c.id))
        .map((c) => [checkpointKey(vmId, c.id), undefined] as const),
      ...records.map((r) => [checkpointKey(vmId, r.id), { ...r, vmId }] as const),
      [currentKey(vmId), currentId ? { id: currentId } : undefined],
    ]);
  }

  async forgetVm(vmId: string): Promise<void> {
    const { checkpoints } = await this.list(vmId);
    await this.host.store.apply([
      ...checkpoints.map((c) => [checkpointKey(vmId, c.id), undefined] as const),
      [currentKey(vmId), undefined],
    ]);
  }

  // ---- merges: what the merge loop asks of the snapshot tree ------------------------------------

  private async plan(vmId: string): Promise<CleanupStep | undefined> {
    if (!this.host.engine.vms.has(vmId)) return undefined;
    const vm = this.host.read((e) => e.vms.get(vmId));
    const { checkpoints } = await this.list(vmId);
    const current = vm.config!.disks.map((d) => this.abs(vmId, d.path));
    const owned = [
      ...current,
      ...checkpoints.flatMap((c) => c.config.disks.map((d) => this.abs(vmId, d.path))),
    ];
    const graph = await readFileGraph(owned, this.host.vmDir(vmId), this.host.storageProvider);
    const offline = this.host.read((e) => e.snapshots.isOffline(vmId));
    return nextCleanupStep(graph, offline ? new Set() : filesInUse(graph, current));
  }

  private async replaceReferences(vmId: string, from: string, to: string): Promise<void> {
    const vm = this.host.read((e) => e.vms.get(vmId));
    const current = vm.config!.disks.map((d) => this.abs(vmId, d.path));
    if (current.includes(from)) {
      const resume = await this.host.quiesceDisks(vmId);
      try {
        await this.host.mutate((e) =>
          e.snapshots.setDiskPaths(
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
      changes.push([checkpointKey(vmId, c.id), { ...c, config }]);
    }
    await this.host.store.apply(changes);
  }

  /** The running VM's open top disk whose chain holds `path`; undefined when the VM is off. */
  private async liveDiskFor(vmId: string, path: string): Promise<VhdDisk | undefined> {
    if (this.host.read((e) => e.snapshots.isOffline(vmId))) {
      // Nothing may hold the files open while they change under it.
      const resume = await this.host.quiesceDisks(vmId);
      resume();
      return undefined;
    }
    const disks = this.host.read((e) => e.vms.get(vmId)).config!.disks;
    for (let i = 0; i < disks.length; i++) {
      const top = await this.host.openVhd(vmId, i);
      for (let d: VhdDisk | undefined = top; d; d = d.parent) if (resolve(d.path) === path) return top;
    }
    return undefined;
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
