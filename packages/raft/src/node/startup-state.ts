import { RaftArgumentError } from '../core/errors.js';
import { MemoryStorage } from '../core/memory-storage.js';
import type { DurableState } from '../storage/level-storage.js';
import type { NodeStorage } from './node-io.js';
import type { NodeId, Snapshot } from '../types.js';
import type { RaftNodeOptions } from './raft-node.js';
import { decodeSnapshotEnvelope, encodeSnapshotEnvelope } from './snapshot-envelope.js';

/**
 * A founding member's first start: persist the bootstrap snapshot (the same on every founder).
 * Returns the state to start from.
 */
export async function bootstrapIfNew(
  storage: Pick<NodeStorage, 'initial' | 'persist'>,
  opts: RaftNodeOptions,
): Promise<DurableState> {
  const init = storage.initial;
  const isNew = !init.snapshot && init.entries.length === 0 && init.hardState.term === 0;
  if (!isNew || opts.join) return init;
  if (!(opts.id in opts.peers)) {
    throw new RaftArgumentError('peers', `this node '${opts.id}' is not among them`);
  }
  const boot = MemoryStorage.bootstrap({ voters: Object.keys(opts.peers).sort(), learners: [] });
  const snapshot: Snapshot = {
    meta: boot.snapshot().meta,
    data: encodeSnapshotEnvelope({ addresses: opts.peers, app: new Uint8Array() }),
  };
  const hardState = boot.initialState().hardState;
  await storage.persist({ snapshot, hardState, entries: [] });
  return { hardState, conf: snapshot.meta.conf, snapshot, entries: [] };
}

/** The core's in-memory log, loaded from what LevelDB holds. */
export function loadMemory(
  state: DurableState,
  opts: RaftNodeOptions,
): { mem: MemoryStorage; addresses: Record<NodeId, string> } {
  const mem = new MemoryStorage();
  let addresses: Record<NodeId, string> = { ...opts.peers };
  const snapshot = state.snapshot;
  if (snapshot && snapshot.meta.index > 0) {
    mem.applySnapshot(snapshot);
    addresses = { ...decodeSnapshotEnvelope(snapshot.data).addresses, ...opts.peers };
  }
  mem.append(state.entries);
  // Commit-only changes are not written (see handleReady), so the stored commit index may lag
  // the snapshot; the snapshot holds applied, hence committed, state, so it is a floor.
  const commit = Math.max(state.hardState.commit, snapshot?.meta.index ?? 0);
  mem.setHardState({ ...state.hardState, commit });
  return { mem, addresses };
}
