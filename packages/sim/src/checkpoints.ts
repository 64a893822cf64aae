import { failedPrecondition, notFound, type pb } from '@hyperfarm/api';
import { GuestMemory, type Capture, type Effect, type VmRecord } from '@hyperfarm/agent';
import type { SimHost } from './host.js';

/** One snapshot as the agent keeps it: its place in the tree and what the engine captured. */
interface SimCheckpoint {
  id: string;
  vmId: string;
  name: string;
  parentId: string;
  createdAtMs: number;
  capture: Capture;
}

/** A saved-state file: the memory and device state a save wrote. */
export interface SavedState {
  memory: Extract<Effect, { kind: 'save' }>['memory'];
  device: Buffer;
}

/**
 * The farm's cluster storage, which every simulated host reaches: each VM's folder holds its
 * manifest (the record its host last wrote, and which host), its saved-state file, and its
 * snapshot tree with what each snapshot holds. So they survive a host crash and follow the VM
 * to any host: a create there under a newer generation adopts the VM as it was left (the
 * agent's adoptOrCreate), Saved if it was.
 */
export class ClusterCheckpoints {
  readonly savedStates = new Map<string, SavedState>();
  private readonly manifests = new Map<string, { record: VmRecord; hostId: string }>();

  /** A host wrote a VM's record: the manifest follows, unless a newer generation owns the folder. */
  wrote(hostId: string, record: VmRecord): void {
    const m = this.manifests.get(record.id);
    if (m && m.record.generation > record.generation) return;
    this.manifests.set(record.id, { record, hostId });
  }

  manifest(vmId: string): { record: VmRecord; hostId: string } | undefined {
    return this.manifests.get(vmId);
  }

  private readonly trees = new Map<string, { checkpoints: Map<string, SimCheckpoint>; currentId: string }>();

  tree(vmId: string): { checkpoints: Map<string, SimCheckpoint>; currentId: string } {
    let t = this.trees.get(vmId);
    if (!t) this.trees.set(vmId, (t = { checkpoints: new Map(), currentId: '' }));
    return t;
  }

  find(checkpointId: string): SimCheckpoint | undefined {
    for (const t of this.trees.values()) {
      const c = t.checkpoints.get(checkpointId);
      if (c) return c;
    }
    return undefined;
  }

  /** The VM was deleted: its files, and its snapshots, go. */
  forget(vmId: string): void {
    this.trees.delete(vmId);
    this.manifests.delete(vmId);
    this.savedStates.delete(vmId);
  }
}

/**
 * AgentService's snapshot calls on a simulated host, with the agent's rules from the engine
 * (`snapshots.checkTake`, `capture`, `applyNeedsTurnOff`, `revert`) and the tree kept on cluster
 * storage. What is not simulated: the differencing disks and their merges (a deleted snapshot
 * is gone at once).
 */
export class SimCheckpoints {
  constructor(
    private readonly host: SimHost,
    private readonly store: ClusterCheckpoints,
  ) {}

  create(vmId: string, checkpointId: string, name: string, generation: number): void {
    const tree = this.store.tree(vmId);
    if (tree.checkpoints.has(checkpointId)) return; // a repeat (its first answer was lost)
    const facts = { snapshots: tree.checkpoints.size };
    const vm = this.host.mutate((e) => e.snapshots.checkTake(vmId, generation, facts));
    const capture = this.host.mutate((e) => e.snapshots.capture(vmId));
    const now = this.host.scope!.now();
    tree.checkpoints.set(checkpointId, {
      id: checkpointId,
      vmId,
      name: name || `${vm.config!.name} - (${new Date(now).toISOString()})`,
      parentId: tree.currentId,
      createdAtMs: now,
      capture,
    });
    tree.currentId = checkpointId;
  }

  private get(checkpointId: string): SimCheckpoint {
    const c = this.store.find(checkpointId);
    if (!c) throw notFound('snapshot', checkpointId);
    return c;
  }

  rename(checkpointId: string, name: string, generation: number): void {
    const c = this.get(checkpointId);
    this.host.mutate((e) => e.snapshots.check(c.vmId, generation, 'rename a snapshot of'));
    c.name = name;
  }

  delete(checkpointId: string, subtree: boolean, generation: number): void {
    const c = this.store.find(checkpointId);
    if (!c) return; // gone already (a repeat)
    const tree = this.store.tree(c.vmId);
    this.host.mutate((e) =>
      e.snapshots.check(c.vmId, generation, 'delete a snapshot of', { snapshots: tree.checkpoints.size }),
    );
    const gone = new Set([c.id]);
    if (subtree)
      for (let grew = true; grew;) {
        grew = false;
        for (const x of tree.checkpoints.values())
          if (!gone.has(x.id) && gone.has(x.parentId)) [grew] = [true, gone.add(x.id)];
      }
    for (const id of gone) tree.checkpoints.delete(id);
    // Without its subtree, the children hang under the deleted one's parent.
    for (const x of tree.checkpoints.values()) if (x.parentId === c.id) x.parentId = c.parentId;
    if (gone.has(tree.currentId)) tree.currentId = c.parentId;
  }

  apply(
    checkpointId: string,
    opts: { turnOffFirst: boolean; saveCurrentFirst: boolean },
    generation: number,
  ): pb.Vm__Output {
    const c = this.get(checkpointId);
    if (opts.saveCurrentFirst)
      throw failedPrecondition('the simulated host does not take a snapshot before applying one');
    const tree = this.store.tree(c.vmId);
    this.host.mutate((e) =>
      e.snapshots.check(c.vmId, generation, 'apply a snapshot to', { snapshots: tree.checkpoints.size }),
    );
    if (this.host.mutate((e) => e.snapshots.applyNeedsTurnOff(c.vmId, c.name, opts.turnOffFirst)))
      this.host.mutate((e) => e.power.change(c.vmId, 'VM_ACTION_TURN_OFF', generation));
    const { memory, deviceState, config } = c.capture;
    let hash: string | undefined;
    let pages = 0;
    if (memory && deviceState) {
      // The snapshot's memory becomes the VM's saved state (a copy: the snapshot keeps its own).
      const copy = new GuestMemory(c.vmId, memory.totalPages);
      for (const p of memory.residentPageNumbers()) copy.install(p, memory.versionOf(p));
      this.host.savedStates.set(c.vmId, { memory: copy, device: deviceState });
      hash = copy.stateHash(deviceState);
      pages = copy.residentPages;
    }
    const vm = this.host.mutate((e) => e.snapshots.revert(c.vmId, config, hash, pages, c.name));
    tree.currentId = c.id;
    return vm;
  }

  list(vmId: string): pb.AgentListCheckpointsResponse__Output {
    const tree = this.store.tree(vmId);
    const checkpoints = [...tree.checkpoints.values()]
      .sort((a, b) => a.createdAtMs - b.createdAtMs || (a.id < b.id ? -1 : 1))
      .map((c) => ({
        id: c.id,
        vmId: c.vmId,
        name: c.name,
        parentId: c.parentId,
        createdAtMs: c.createdAtMs,
        includesMemory: c.capture.memory !== undefined,
        vmState: c.capture.state,
      }));
    return { checkpoints, currentId: tree.currentId } as pb.AgentListCheckpointsResponse__Output;
  }
}
