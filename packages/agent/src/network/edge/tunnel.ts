import type * as grpc from '@grpc/grpc-js';
import { createClient, hyperfarmProto, type Logger, type pb, type TlsFiles } from '@hyperfarm/api';
import { decodeFrame, encodeFrame } from '../codec.js';
import type { Frame } from '../frame.js';

// The tunnels between agents. Each agent pulls from each of its peers with one server stream
// (TunnelService.Pull): the peer writes that agent's frames into it, so every direction of every
// pair is a server stream read by a client that opens a large receive window. A grpc-js server
// keeps its own receive window at 64 KiB whatever it is told, so a client stream would be the
// slow direction.
//
// Writing follows HTTP/2 flow control: when the stream's buffer is full, frames wait in a bounded
// queue until it drains; past the bound, or older than a network would ever hold them, they are
// dropped and counted, as a real uplink drops what it cannot send.

export interface TunnelOptions {
  hostId: string;
  logger: Logger;
  tls?: TlsFiles | undefined;
  /** Frames that arrived from a peer, in order, for one switch. */
  deliver(peer: string, switchName: string, frames: Frame[]): void;
  /** Frames to a peer that could not be sent (queue full or too old). */
  dropped(peer: string, switchName: string, count: number): void;
  /** Frames waiting per peer before new ones are dropped. */
  maxQueuedFrames?: number;
  /** A frame waiting longer than this is dropped instead of sent late. */
  maxFrameAgeMs?: number;
}

const BATCH_FRAMES = 512;
const BATCH_BYTES = 256 * 1024;
const DEFAULT_MAX_QUEUED = 8_192;
const DEFAULT_MAX_AGE_MS = 1_000;
const RECONNECT_MIN_MS = 50;
const RECONNECT_MAX_MS = 2_000;
/** The pulling side's HTTP/2 window: large, so a fast sender is not held back by the reader. */
const PULL_WINDOW_BYTES = 16 * 1024 * 1024;

interface Queued {
  switchName: string;
  bytes: Buffer;
  atMs: number;
}

type PullCall = grpc.ServerWritableStream<pb.PullRequest__Output, pb.FrameBatch>;

/** One peer: our queue of frames for it (it pulls them), and our pull of its frames for us. */
class PeerLink {
  private queue: Queued[] = [];
  private head = 0;
  private stream: PullCall | undefined;
  private blocked = false;
  private flushing = false;
  private pull: grpc.ClientReadableStream<pb.FrameBatch__Output> | undefined;
  private retryMs = RECONNECT_MIN_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  sent = 0;
  received = 0;

  constructor(
    readonly peer: string,
    public address: string,
    private readonly t: Tunnels,
  ) {
    this.connect();
  }

  get pulled(): boolean {
    return this.stream !== undefined;
  }

  get queued(): number {
    return this.queue.length - this.head;
  }

  enqueue(switchName: string, frame: Frame): void {
    if (this.queue.length - this.head >= this.t.maxQueued) {
      this.t.opts.dropped(this.peer, switchName, 1);
      return;
    }
    this.queue.push({ switchName, bytes: encodeFrame(frame), atMs: Date.now() });
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => {
        this.flushing = false;
        this.flush();
      });
    }
  }

  /** The peer's pull arrived: frames for it go there from now on. */
  attach(call: PullCall): Promise<void> {
    this.stream?.end();
    this.stream = call;
    this.blocked = false;
    call.on('drain', () => {
      this.blocked = false;
      this.flush();
    });
    this.flush();
    return new Promise((resolve) => {
      const done = (): void => {
        if (this.stream === call) this.stream = undefined;
        resolve();
      };
      call.on('cancelled', done);
      call.on('close', done);
      call.on('error', done);
    });
  }

  private flush(): void {
    const call = this.stream;
    const now = Date.now();
    while (this.head < this.queue.length && call && !this.blocked) {
      const first = this.queue[this.head]!;
      const frames: Buffer[] = [];
      let bytes = 0;
      let stale = 0;
      while (this.head < this.queue.length && frames.length < BATCH_FRAMES && bytes < BATCH_BYTES) {
        const q = this.queue[this.head]!;
        if (q.switchName !== first.switchName) break;
        this.head++;
        if (now - q.atMs > this.t.maxAgeMs) {
          stale++;
          continue;
        }
        frames.push(q.bytes);
        bytes += q.bytes.length;
      }
      if (stale > 0) this.t.opts.dropped(this.peer, first.switchName, stale);
      if (frames.length === 0) continue;
      this.sent += frames.length;
      if (!call.write({ switchName: first.switchName, frames })) this.blocked = true;
    }
    if (!call) this.dropStale(now);
    if (this.head > 4_096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** With nobody pulling, frames older than the limit are dropped rather than kept. */
  private dropStale(now: number): void {
    while (this.head < this.queue.length && now - this.queue[this.head]!.atMs > this.t.maxAgeMs) {
      this.t.opts.dropped(this.peer, this.queue[this.head]!.switchName, 1);
      this.head++;
    }
  }

  private connect(): void {
    if (this.closed) return;
    const client = this.t.client(this.address);
    const call = client.pull({ hostId: this.t.opts.hostId });
    this.pull = call;
    call.on('data', (batch: pb.FrameBatch__Output) => {
      this.retryMs = RECONNECT_MIN_MS;
      const frames: Frame[] = [];
      for (const b of batch.frames) {
        const f = decodeFrame(b);
        if (f) frames.push(f);
      }
      this.received += frames.length;
      if (frames.length < batch.frames.length)
        this.t.opts.logger.warn(
          { peer: this.peer, bad: batch.frames.length - frames.length },
          'malformed frames from a tunnel were dropped',
        );
      if (frames.length > 0) this.t.opts.deliver(this.peer, batch.switchName, frames);
    });
    const again = (): void => {
      if (this.pull !== call || this.closed) return;
      this.pull = undefined;
      client.close();
      this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
      this.retryTimer.unref();
      this.retryMs = Math.min(RECONNECT_MAX_MS, this.retryMs * 2);
    };
    call.on('error', again);
    call.on('end', again);
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.pull?.cancel();
    this.pull = undefined;
    this.stream?.end();
    this.stream = undefined;
  }
}

export class Tunnels {
  private readonly links = new Map<string, PeerLink>();
  readonly maxQueued: number;
  readonly maxAgeMs: number;

  constructor(readonly opts: TunnelOptions) {
    this.maxQueued = opts.maxQueuedFrames ?? DEFAULT_MAX_QUEUED;
    this.maxAgeMs = opts.maxFrameAgeMs ?? DEFAULT_MAX_AGE_MS;
  }

  client(address: string): pb.TunnelServiceClient {
    return createClient(hyperfarmProto().hyperfarm.v1.TunnelService, address, {
      tls: this.opts.tls,
      channelOptions: {
        'grpc-node.flow_control_window': PULL_WINDOW_BYTES,
        'grpc.initial_reconnect_backoff_ms': RECONNECT_MIN_MS,
        'grpc.max_reconnect_backoff_ms': RECONNECT_MAX_MS,
      },
    });
  }

  /** The peers to tunnel to; links to others close, links to new ones open. */
  setPeers(peers: { hostId: string; address: string }[]): void {
    const wanted = new Map(
      peers.filter((p) => p.hostId !== this.opts.hostId).map((p) => [p.hostId, p.address]),
    );
    for (const [id, link] of this.links) {
      if (wanted.get(id) === link.address) continue;
      link.close();
      this.links.delete(id);
    }
    for (const [id, address] of wanted)
      if (!this.links.has(id)) this.links.set(id, new PeerLink(id, address, this));
  }

  /** Frames waiting for a peer's pull (a sender that wants no drops paces itself on it). */
  queued(peer: string): number {
    return this.links.get(peer)?.queued ?? 0;
  }

  /** Whether the peer is pulling its frames now. */
  pulled(peer: string): boolean {
    return this.links.get(peer)?.pulled ?? false;
  }

  isPeer(hostId: string): boolean {
    return this.links.has(hostId);
  }

  send(peer: string, switchName: string, frame: Frame): void {
    const link = this.links.get(peer);
    if (link) link.enqueue(switchName, frame);
    else this.opts.dropped(peer, switchName, 1);
  }

  /** Serves a peer's pull until it ends. */
  serve(peer: string, call: PullCall): Promise<void> {
    return this.links.get(peer)!.attach(call);
  }

  stats(): { peer: string; sent: number; received: number }[] {
    return [...this.links.values()].map((l) => ({ peer: l.peer, sent: l.sent, received: l.received }));
  }

  close(): void {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }
}
