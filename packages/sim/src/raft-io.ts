import { ApiError, status } from '@hyperfarm/api';
import {
  MemoryStorage,
  type SimRng,
  MessageType,
  type DurableState,
  type Message,
  type NodeId,
  type NodeStorage,
  type NodeTransport,
  type PersistRequest,
  type Snapshot,
  type TransportHandlers,
} from '@hyperfarm/raft';
import type { Scope } from './clock.js';
import type { SimNetwork } from './network.js';

/**
 * A daemon's Raft disk: what survives its crashes. A write is durable when its fsync ends (1 to
 * `maxFsyncMs` later, at random, never before an earlier write's), and only if the process is
 * still alive then: a crash before that loses it, as an fsync cut short does. That is what
 * RaftNode's persist-before-send order must withstand.
 */
export class SimRaftDisk {
  private readonly durable = new MemoryStorage();
  /** When the last write made becomes durable: writes complete in order. */
  private lastDoneAt = 0;
  /** Writes made and not yet durable (a crash now loses them). */
  unsynced = 0;
  /** Hears of each write as it starts (the simulator times a power failure by it). */
  onWrite: (() => void) | undefined;

  constructor(
    private readonly rng: SimRng,
    private readonly maxFsyncMs = 20,
  ) {}

  /** The storage of one incarnation (RaftNode's `storage` option), holding what was durable at open. */
  open(scope: Scope): NodeStorage {
    const d = this.durable;
    const snap = d.snapshot();
    const { hardState, conf } = d.initialState();
    const initial: DurableState = {
      hardState,
      conf,
      snapshot: snap.meta.index > 0 ? snap : undefined,
      entries: d.entries(d.firstIndex(), d.lastIndex() + 1),
    };
    // Once per incarnation, not per write: the scope keeps every watcher until it dies.
    scope.onKill(() => (this.unsynced = 0));
    const write = (apply: () => void) => {
      const at = Math.max(this.lastDoneAt, scope.now() + 1 + this.rng.int(this.maxFsyncMs));
      this.lastDoneAt = at;
      this.unsynced++;
      this.onWrite?.();
      return new Promise<void>((resolve) =>
        scope.set(() => {
          this.unsynced--;
          apply();
          resolve();
        }, at - scope.now()),
      );
    };
    return {
      initial,
      persist: (req: PersistRequest) =>
        write(() => {
          if (req.snapshot) d.applySnapshot(req.snapshot);
          d.append(req.entries);
          if (req.hardState) d.setHardState(req.hardState);
        }),
      saveSnapshot: (s: Snapshot, compactThrough: number) =>
        write(() => {
          d.createSnapshot(s.meta.index, s.meta.conf, s.data);
          if (compactThrough >= d.firstIndex()) d.compact(compactThrough);
        }),
      close: () => Promise.resolve(),
    };
  }
}

/** Where a daemon's current Raft node takes messages from peers, if it is up. */
export type RaftEndpoint = (id: NodeId) => TransportHandlers | undefined;

/**
 * RaftNode's transport over the simulated network, as GrpcTransport behaves: one batch per peer
 * per Ready (lost or delivered whole, like a stream write), snapshots on their own call whose
 * outcome the node hears (onSnapshotStatus), proposals forwarded to the leader as a call with
 * its deadline, answered by the leader's own ForwardPropose handler.
 */
export class SimRaftTransport implements NodeTransport {
  readonly service = undefined;

  constructor(
    private readonly id: NodeId,
    private readonly scope: Scope,
    private readonly net: SimNetwork,
    private readonly peers: RaftEndpoint,
    private readonly handlers: TransportHandlers,
  ) {}

  send(messages: Message[]): void {
    const batches = new Map<NodeId, Message[]>();
    for (const m of messages) {
      if (m.type === MessageType.Snapshot && m.snapshot) {
        this.sendSnapshot(m);
        continue;
      }
      let batch = batches.get(m.to);
      if (!batch) batches.set(m.to, (batch = []));
      batch.push(m);
    }
    for (const [to, batch] of batches) this.net.send(this.id, to, () => this.peers(to)?.onMessages(batch));
  }

  private sendSnapshot(m: Message): void {
    this.net
      .call(this.scope, this.id, m.to, 30_000, () => {
        const peer = this.peers(m.to);
        if (!peer) throw new ApiError(status.UNAVAILABLE, `${m.to} is not serving Raft`);
        peer.onMessages([m]);
      })
      .then(
        () => this.handlers.onSnapshotStatus?.(m.to, true),
        () => this.handlers.onSnapshotStatus?.(m.to, false),
      );
  }

  forwardPropose(
    leader: NodeId,
    data: Uint8Array,
    timeoutMs: number,
  ): Promise<{ index: number; result: Uint8Array }> {
    return this.net.call(this.scope, this.id, leader, timeoutMs, () => {
      const forward = this.peers(leader)?.forwardPropose;
      if (!forward) throw new ApiError(status.UNAVAILABLE, `${leader} is not serving Raft`);
      return forward(data);
    });
  }

  addPeer(): void {}
  removePeer(): void {}
  close(): void {}
}
