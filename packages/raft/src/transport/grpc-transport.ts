import * as grpc from '@grpc/grpc-js';
import {
  invalidArgument,
  clientStream,
  createClient,
  hyperfarmProto,
  type pb,
  type TlsFiles,
  unary,
  unimplemented,
} from '@hyperfarm/api';
import type { Message, NodeId } from '../types.js';
import { MessageType } from '../types.js';
import { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
import { messageFromPb, messageToPb } from './convert.js';
import { SNAPSHOT_CHUNK_BYTES, SnapshotAssembler, snapshotChunks } from './snapshot-assembler.js';

/** What the transport hands to the node it serves. */
export interface TransportHandlers {
  /** Messages that arrived from peers, one call per received batch. */
  onMessages(messages: Message[]): void;
  /** A peer could not be reached; the core should probe it instead of streaming to it. */
  onUnreachable?(peer: NodeId): void;
  /** Whether a snapshot sent to a peer arrived. */
  onSnapshotStatus?(peer: NodeId, ok: boolean): void;
  /** Serves ForwardPropose on the leader; absent means UNIMPLEMENTED. */
  forwardPropose?(data: Uint8Array): Promise<{ index: number; result: Uint8Array }>;
  /** Serves ForwardReadIndex on the leader; absent means UNIMPLEMENTED. */
  forwardReadIndex?(): Promise<number>;
}

export interface TransportOptions {
  id: NodeId;
  /** Addresses of the other members. */
  peers: Record<NodeId, string>;
  handlers: TransportHandlers;
  tls?: TlsFiles | undefined;
  backoff?: BackoffOptions;
  /** Randomness for backoff jitter. */
  random?: () => number;
  snapshotChunkBytes?: number;
  /** Largest snapshot accepted. */
  maxSnapshotBytes?: number;
  /**
   * Batches allowed to wait in one peer's stream buffer before more are dropped. Raft resends
   * what is lost, so the bound costs only a retry, while an unbounded queue costs memory.
   */
  maxBufferedBatches?: number;
}

type RaftClient = pb.RaftServiceClient;

/**
 * grpc-js channels back off reconnecting for up to two minutes by default; a restarted Raft
 * peer must be reachable again within a second. A private subchannel pool keeps a channel made
 * after a failure from inheriting the old one's backoff.
 */
const RAFT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.min_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
  'grpc.use_local_subchannel_pool': 1,
};

/** The outgoing side towards one peer: one long-lived Send stream, rebuilt after failures. */
class PeerLink {
  private client: RaftClient;
  private stream: grpc.ClientWritableStream<pb.RaftBatch> | undefined;
  private failures = 0;
  private retryAt = 0;
  private snapshotInFlight = false;
  closed = false;

  constructor(
    readonly id: NodeId,
    readonly address: string,
    private readonly owner: GrpcTransport,
  ) {
    this.client = owner.makeClient(address);
  }

  get rpc(): RaftClient {
    return this.client;
  }

  send(batch: pb.RaftBatch): boolean {
    const stream = this.ensureStream();
    if (!stream) return false;
    if (stream.writableLength >= this.owner.maxBufferedBatches) return false;
    stream.write(batch);
    return true;
  }

  private ensureStream(): grpc.ClientWritableStream<pb.RaftBatch> | undefined {
    if (this.stream) return this.stream;
    if (this.closed || this.owner.now() < this.retryAt) return undefined;
    const stream = this.client.send((err) => {
      if (this.stream === stream) this.stream = undefined;
      if (err && !this.closed) this.fail();
    });
    // The receiver sends headers as soon as the stream opens: the peer is back, so the next
    // failure starts again from the shortest wait.
    stream.on('metadata', () => (this.failures = 0));
    this.stream = stream;
    return stream;
  }

  private fail(): void {
    this.retryAt = this.owner.now() + this.owner.backoffFor(this.failures);
    this.failures++;
    this.owner.unreachable(this.id);
  }

  sendSnapshot(message: Message): void {
    if (this.snapshotInFlight || this.closed) {
      // One snapshot at a time per peer; the core asks again when this one is reported.
      return;
    }
    this.snapshotInFlight = true;
    const done = (ok: boolean): void => {
      this.snapshotInFlight = false;
      this.owner.snapshotStatus(this.id, ok);
    };
    const call = this.client.installSnapshot((err) => done(!err));
    const chunks = snapshotChunks(
      messageToPb(message),
      message.snapshot!.data,
      this.owner.snapshotChunkBytes,
    );
    const pump = (): void => {
      for (;;) {
        const next = chunks.next();
        if (next.done) {
          call.end();
          return;
        }
        // Respect backpressure: a large snapshot never sits whole in the stream's buffer.
        if (!call.write(next.value)) {
          call.once('drain', pump);
          return;
        }
      }
    };
    call.on('error', () => undefined);
    pump();
  }

  close(): void {
    this.closed = true;
    this.stream?.end();
    this.stream = undefined;
    this.client.close();
  }
}

/**
 * Raft's messages over gRPC: RaftService's handlers for what peers send us (`service`, which the
 * program registers on the gRPC server it owns), and one PeerLink per peer for what we send.
 * Messages to a peer that is down are dropped (Raft resends), and the core is told the peer is
 * unreachable.
 */
export class GrpcTransport {
  private readonly links = new Map<NodeId, PeerLink>();
  readonly maxBufferedBatches: number;
  readonly snapshotChunkBytes: number;
  /** RaftService, for the program's gRPC server. */
  readonly service: pb.RaftServiceHandlers;

  constructor(private readonly opts: TransportOptions) {
    this.maxBufferedBatches = opts.maxBufferedBatches ?? 256;
    this.snapshotChunkBytes = opts.snapshotChunkBytes ?? SNAPSHOT_CHUNK_BYTES;
    this.service = this.serviceHandlers();
    for (const [id, address] of Object.entries(opts.peers)) {
      if (id !== opts.id) this.addPeer(id, address);
    }
  }

  peers(): NodeId[] {
    return [...this.links.keys()];
  }

  addPeer(id: NodeId, address: string): void {
    if (id === this.opts.id) return;
    const existing = this.links.get(id);
    if (existing?.address === address) return;
    existing?.close();
    this.links.set(id, new PeerLink(id, address, this));
  }

  removePeer(id: NodeId): void {
    this.links.get(id)?.close();
    this.links.delete(id);
  }

  /** Sends a Ready's messages: one batch per peer, snapshots on their own streams. */
  send(messages: Message[]): void {
    const batches = new Map<NodeId, pb.RaftMessage[]>();
    for (const m of messages) {
      const link = this.links.get(m.to);
      if (!link) continue; // not a member we know an address for
      if (m.type === MessageType.Snapshot && m.snapshot) {
        link.sendSnapshot(m);
        continue;
      }
      let batch = batches.get(m.to);
      if (!batch) batches.set(m.to, (batch = []));
      batch.push(messageToPb(m));
    }
    for (const [to, batch] of batches) {
      if (!this.links.get(to)!.send({ messages: batch })) this.unreachable(to);
    }
  }

  /** Forwards a proposal to `leader`; resolves once the leader has applied it. */
  async forwardPropose(
    leader: NodeId,
    data: Uint8Array,
    timeoutMs: number,
  ): Promise<{ index: number; result: Uint8Array }> {
    const res = await this.unaryCall<pb.ForwardProposeResponse__Output>(
      leader,
      timeoutMs,
      (client, opts, cb) => client.forwardPropose({ data }, opts, cb),
    );
    return { index: res.index, result: new Uint8Array(res.result) };
  }

  /** Asks `leader` for a read index. */
  async forwardReadIndex(leader: NodeId, timeoutMs: number): Promise<number> {
    const res = await this.unaryCall<pb.ForwardReadIndexResponse__Output>(
      leader,
      timeoutMs,
      (client, opts, cb) => client.forwardReadIndex({}, opts, cb),
    );
    return res.readIndex;
  }

  close(): void {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }

  // --- used by PeerLink ---

  makeClient(address: string): RaftClient {
    return createClient(hyperfarmProto().hyperfarm.v1.RaftService, address, {
      tls: this.opts.tls,
      channelOptions: RAFT_CHANNEL_OPTIONS,
    });
  }

  now(): number {
    return performance.now();
  }

  backoffFor(failures: number): number {
    return backoffDelay(failures, this.opts.backoff ?? DEFAULT_BACKOFF, this.opts.random ?? Math.random);
  }

  unreachable(peer: NodeId): void {
    this.opts.handlers.onUnreachable?.(peer);
  }

  snapshotStatus(peer: NodeId, ok: boolean): void {
    this.opts.handlers.onSnapshotStatus?.(peer, ok);
  }

  private unaryCall<R>(
    peer: NodeId,
    timeoutMs: number,
    call: (
      client: RaftClient,
      opts: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: R) => void,
    ) => void,
  ): Promise<R> {
    const link = this.links.get(peer);
    if (!link) return Promise.reject(new Error(`no address known for raft peer '${peer}'`));
    return new Promise<R>((resolve, reject) => {
      call(link.rpc, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res!)));
    });
  }

  // --- server side ---

  private serviceHandlers(): pb.RaftServiceHandlers {
    const handlers = this.opts.handlers;
    const maxSnapshotBytes = this.opts.maxSnapshotBytes ?? 1024 * 1024 * 1024;
    const impl: pb.RaftServiceHandlers = {
      Send: clientStream<pb.RaftBatch__Output, pb.RaftSendResponse>(
        (call) =>
          new Promise((resolve, reject) => {
            // Headers now, not at the end: the sender takes them as "connected" and resets its backoff.
            call.sendMetadata(new grpc.Metadata());
            call.on('data', (batch: pb.RaftBatch__Output) => {
              let messages: Message[];
              try {
                messages = batch.messages.map((m, i) => messageFromPb(m, undefined, `messages[${i}]`));
              } catch (err) {
                reject(err);
                return;
              }
              handlers.onMessages(messages);
            });
            call.on('end', () => resolve({}));
            call.on('error', reject);
          }),
      ),
      InstallSnapshot: clientStream<pb.SnapshotChunk__Output, pb.InstallSnapshotResponse>(
        (call) =>
          new Promise((resolve, reject) => {
            const assembler = new SnapshotAssembler(maxSnapshotBytes);
            call.on('data', (chunk: pb.SnapshotChunk__Output) => {
              try {
                const message = assembler.add(chunk);
                if (message) handlers.onMessages([message]);
              } catch (err) {
                reject(err);
              }
            });
            call.on('end', () => {
              if (assembler.complete) resolve({ bytesReceived: assembler.bytesReceived });
              else reject(invalidArgument('last', 'the stream ended before the last chunk'));
            });
            call.on('error', reject);
          }),
      ),
      ForwardPropose: unary<pb.ForwardProposeRequest__Output, pb.ForwardProposeResponse>(async (req) => {
        if (!handlers.forwardPropose) throw unimplemented('ForwardPropose on this node');
        const res = await handlers.forwardPropose(new Uint8Array(req.data));
        return { index: res.index, result: res.result };
      }),
      ForwardReadIndex: unary<pb.ForwardReadIndexRequest__Output, pb.ForwardReadIndexResponse>(async () => {
        if (!handlers.forwardReadIndex) throw unimplemented('ForwardReadIndex on this node');
        return { readIndex: await handlers.forwardReadIndex() };
      }),
    };
    return impl;
  }
}
