import type { pb } from '@hyperfarm/api';
import type { DurableState, PersistRequest } from '../storage/level-storage.js';
import type { TransportHandlers } from '../transport/grpc-transport.js';
import type { Message, NodeId, Snapshot } from '../types.js';

/**
 * Where a RaftNode keeps its log: LevelStorage in the programs; something else (the farm
 * simulator's disk that survives simulated crashes) when injected. Each write is durable when
 * its promise resolves; writes complete in the order they were made.
 */
export interface NodeStorage {
  /** What was durable when the storage opened. */
  readonly initial: DurableState;
  persist(request: PersistRequest): Promise<void>;
  saveSnapshot(snapshot: Snapshot, compactThrough: number): Promise<void>;
  close(): Promise<void>;
}

/** How a RaftNode reaches its peers: the gRPC transport in the programs. */
export interface NodeTransport {
  /** RaftService's handlers, for a program's gRPC server; undefined when the transport serves none. */
  readonly service: pb.RaftServiceHandlers | undefined;
  send(messages: Message[]): void;
  addPeer(id: NodeId, address: string): void;
  removePeer(id: NodeId): void;
  /** Sends a proposal to the leader; resolves once the leader has applied it. */
  forwardPropose(
    leader: NodeId,
    data: Uint8Array,
    timeoutMs: number,
  ): Promise<{ index: number; result: Uint8Array }>;
  close(): void;
}

export type NodeTransportFactory = (opts: {
  id: NodeId;
  peers: Record<NodeId, string>;
  handlers: TransportHandlers;
}) => NodeTransport;

/** A RaftNode's clock and timers: the real ones in the programs, a virtual clock when injected. */
export interface NodeTimers {
  /** Milliseconds, for latencies and deadlines (monotonic). */
  now(): number;
  set(fn: () => void, ms: number): unknown;
  /** Runs `fn` every `ms` until cleared. */
  every(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
  /** Resolves once what already arrived (I/O callbacks, requests) has been taken in. */
  yield(): Promise<void>;
}

export const realNodeTimers: NodeTimers = {
  now: () => performance.now(),
  set: (fn, ms) => setTimeout(fn, ms),
  every: (fn, ms) => setInterval(fn, ms),
  // clearTimeout clears intervals too (Node shares the id space).
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
  yield: () => new Promise<void>((resolve) => setImmediate(resolve)),
};
