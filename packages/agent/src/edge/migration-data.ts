import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import * as net from 'node:net';
import type { ServiceDefinition } from '@grpc/proto-loader';
import { ApiError, EncodedMessage, packageDefinition, status, type Logger, type pb } from '@hyperfarm/api';
import { drained, type Sink } from './migration-wire.js';

/**
 * A migration's data connection: after the header, the rest of the stream (pages, network and
 * device state, trailer) goes over a plain TCP connection from the target to the source, the
 * way Hyper-V moves live-migration memory over its own connection (port 6600). It carries the
 * same messages as the gRPC stream, each as its protobuf bytes behind a u32 big-endian length:
 * no HTTP/2 framing, no copy into frames on the source, and the target reads straight into the
 * buffer each message is decoded from.
 *
 * The source offers a connection only to a target that asked for one, in the header of the
 * stream that target opened over gRPC: a port and 32 random bytes. The listener accepts a
 * connection only if its first bytes are the token of a migration waiting for its target, once.
 */

export const TOKEN_BYTES = 32;
/** A connection must present its token this soon, or it is closed. */
const HANDSHAKE_MS = 5_000;
/** The largest message: a batch is 2 MiB, as on gRPC (MAX_MESSAGE_BYTES of the target). */
const MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Bytes the source lets the socket hold beyond the kernel's buffer before it waits for the reader. */
const WRITE_AHEAD_BYTES = 8 * 1024 * 1024;
/** Messages the target holds decoded and not yet taken before it stops reading. */
const READ_AHEAD_FRAMES = 4;

/** The stream's messages as gRPC encodes them: the ExportVm response's own (de)serializer. */
function codec(): ServiceDefinition['ExportVm'] {
  return (packageDefinition()['hyperfarm.v1.MigrationService'] as ServiceDefinition)['ExportVm']!;
}

/** An offer of a data connection for one migration: what the header carries, and the wait. */
export interface DataOffer {
  port: number;
  token: Buffer;
  /** The target's connection, once it presented the token; fails after the wait given. */
  connection: Promise<net.Socket>;
  /** Stops waiting (the stream ended first): the token is no longer accepted. */
  withdraw(reason: string): void;
}

/** The source's listener for data connections, bound on first use. */
export class DataChannelListener {
  private server: Promise<net.Server> | undefined;
  private readonly waiting = new Map<string, (socket: net.Socket) => void>();

  constructor(
    /** host:port to bind (port 0 picks one). */
    private readonly address: () => string,
    private readonly logger: Logger,
  ) {}

  /** Registers a fresh token; the connection presenting it must arrive within `waitMs`. */
  async offer(waitMs: number): Promise<DataOffer> {
    const server = await (this.server ??= this.listen());
    const port = (server.address() as net.AddressInfo).port;
    const token = randomBytes(TOKEN_BYTES);
    const key = token.toString('hex');
    let withdraw!: (reason: string) => void;
    const connection = new Promise<net.Socket>((resolve, reject) => {
      const timer = setTimeout(
        () => withdraw(`the target did not open the data connection within ${waitMs} ms`),
        waitMs,
      );
      withdraw = (reason) => {
        clearTimeout(timer);
        if (this.waiting.delete(key)) reject(new ApiError(status.DEADLINE_EXCEEDED, reason));
      };
      this.waiting.set(key, (socket) => {
        clearTimeout(timer);
        this.waiting.delete(key);
        resolve(socket);
      });
    });
    return { port, token, connection, withdraw };
  }

  private listen(): Promise<net.Server> {
    const address = this.address();
    const server = net.createServer((socket) => this.handshake(socket));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(Number(address.slice(address.lastIndexOf(':') + 1)), hostOf(address), () => {
        server.off('error', reject);
        server.on('error', (err) => this.logger.error({ err }, 'migration data listener failed'));
        resolve(server);
      });
    });
  }

  /** Reads the token; hands the connection to the migration it belongs to, or closes it. */
  private handshake(socket: net.Socket): void {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => refuse('no token in time'), HANDSHAKE_MS);
    const refuse = (why: string) => {
      clearTimeout(timer);
      socket.destroy();
      this.logger.warn({ peer, why }, 'migration data connection refused');
    };
    const onData = (data: Buffer) => {
      got = Buffer.concat([got, data]);
      if (got.length < TOKEN_BYTES) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      // The target sends nothing after its token until it has read the whole stream.
      if (got.length > TOKEN_BYTES) return refuse('bytes after the token');
      const take = this.waiting.get(got.toString('hex'));
      if (!take) return refuse('not the token of a migration waiting for its target');
      take(socket);
    };
    socket.on('data', onData);
    socket.on('error', () => undefined);
  }

  /** Stops listening; connections under way end with their migrations. */
  async close(): Promise<void> {
    (await this.server?.catch(() => undefined))?.close();
  }
}

/** A sink over a data connection, which is ended once the stream is whole. */
export interface DataSink extends Sink {
  /**
   * Ends the connection once everything written has gone out (at most `idleMs` more). From here
   * the gRPC stream's end no longer closes it: grpc-js reports 'cancelled' on every stream that
   * closes, a finished one too, which would cut the data still in the socket.
   */
  finish(): Promise<void>;
}

/**
 * Writes messages to a data connection, each behind its length, letting the socket hold up to
 * 8 MiB before waiting for the reader (at most `idleMs`). The gRPC stream's cancellation (the
 * target gave up) or the connection's close fails the sink. An EncodedMessage's buffer is given
 * back once the socket has written it.
 */
export function socketSink(socket: net.Socket, idleMs: number, stream: EventEmitter): DataSink {
  let ended: Error | undefined;
  const end = (why: string) => () => {
    ended ??= new ApiError(status.CANCELLED, why);
    socket.destroy();
  };
  // Each message goes out whole (length and bytes corked together): Nagle would only hold the
  // small last ones (device state, trailer), inside the downtime, for the reader's delayed ACK.
  socket.setNoDelay(true);
  const cancelled = end('the reader cancelled the stream');
  stream.once('cancelled', cancelled);
  socket.once('close', end('the data connection closed'));
  socket.on('error', (err) => end(`the data connection failed: ${err.message}`)());
  const serialize = codec().responseSerialize;
  return {
    async write(chunk) {
      if (ended) throw ended;
      const encoded = chunk instanceof EncodedMessage ? chunk : undefined;
      const bytes = encoded ? encoded.bytes : serialize(chunk);
      const length = Buffer.allocUnsafe(4);
      length.writeUInt32BE(bytes.length);
      // One writev of both: the message's bytes are not copied.
      socket.cork();
      socket.write(length);
      socket.write(bytes, encoded?.copied && (() => encoded.copied!()));
      socket.uncork();
      if (socket.writableLength > WRITE_AHEAD_BYTES) await drained(socket, idleMs, () => ended);
    },
    async finish() {
      stream.off('cancelled', cancelled);
      if (ended) throw ended;
      const flushed = new Promise<void>((resolve) => socket.once('finish', resolve));
      socket.end();
      await Promise.race([flushed, drained(socket, idleMs, () => ended)]);
    },
  };
}

/**
 * The target's end of a data connection: connects, presents the token and yields the messages
 * as they arrive. Each message is read from the socket straight into a buffer of its own size
 * and decoded there; a batch's buffer is reused once the next message is asked for (the
 * receiver keeps nothing of a batch), other messages keep theirs.
 */
export class DataChannelReader implements AsyncIterable<pb.MigrationChunk__Output> {
  private readonly socket: net.Socket;
  private readonly head = Buffer.allocUnsafe(4);
  private body: Buffer | undefined;
  private length = 0;
  private have = 0;
  private readonly ready: { chunk: pb.MigrationChunk__Output; buffer: Buffer }[] = [];
  private readonly spare: Buffer[] = [];
  private taken: Buffer | undefined;
  private failed: Error | undefined;
  private ended = false;
  /** Reading stopped: READ_AHEAD_FRAMES messages wait to be taken. */
  private paused = false;
  private wake: (() => void) | undefined;
  private readonly deserialize = codec().responseDeserialize as (b: Buffer) => pb.MigrationChunk__Output;

  constructor(host: string, port: number, token: Buffer) {
    this.socket = net.connect({
      host,
      port,
      onread: { buffer: () => this.nextRead(), callback: (n) => this.onRead(n) },
    });
    this.socket.write(token);
    this.socket.on('error', (err) =>
      this.fail(new ApiError(status.UNAVAILABLE, `data connection: ${err.message}`)),
    );
    this.socket.on('end', () => {
      if (this.body || this.have > 0) this.fail(invalid('the data connection ended inside a message'));
      this.ended = true;
      this.notify();
    });
    this.socket.on('close', () => {
      if (!this.ended) this.fail(new ApiError(status.UNAVAILABLE, 'the data connection closed'));
    });
  }

  /** Ends the reading with this error (the gRPC call failed, the pull was cancelled). */
  fail(err: Error): void {
    this.failed ??= err;
    this.socket.destroy();
    this.notify();
  }

  close(): void {
    this.socket.destroy();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Where the next read goes: the rest of the length, or the rest of the message's body. */
  private nextRead(): Buffer {
    if (!this.body) return this.head.subarray(this.have);
    return this.body.subarray(this.have, this.length);
  }

  private onRead(n: number): boolean {
    this.have += n;
    if (!this.body) {
      if (this.have < 4) return true;
      this.length = this.head.readUInt32BE(0);
      if (this.length > MAX_FRAME_BYTES) {
        this.fail(invalid(`a message of ${this.length} bytes, above ${MAX_FRAME_BYTES}`));
        return false;
      }
      this.body = this.bufferOf(this.length);
      this.have = 0;
    }
    if (this.have < this.length) return true;
    const buffer = this.body;
    this.body = undefined;
    this.have = 0;
    try {
      this.ready.push({ chunk: this.deserialize(buffer.subarray(0, this.length)), buffer });
    } catch (err) {
      this.fail(invalid(`a message does not decode: ${(err as Error).message}`));
      return false;
    }
    this.notify();
    this.paused = this.ready.length >= READ_AHEAD_FRAMES;
    return !this.paused;
  }

  private bufferOf(length: number): Buffer {
    const i = this.spare.findIndex((b) => b.length >= length);
    if (i >= 0) return this.spare.splice(i, 1)[0]!;
    // A zero-length message still needs a read target; the body is then complete at once.
    return Buffer.allocUnsafeSlow(Math.max(length, 1));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<pb.MigrationChunk__Output> {
    for (;;) {
      // The message handed out last is done with: a batch's buffer serves again.
      if (this.taken) {
        if (this.spare.length < READ_AHEAD_FRAMES + 1) this.spare.push(this.taken);
        this.taken = undefined;
      }
      if (this.failed) throw this.failed;
      const next = this.ready.shift();
      if (next) {
        if (this.paused) {
          this.paused = false;
          this.socket.resume();
        }
        if (next.chunk.pages) this.taken = next.buffer;
        yield next.chunk;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

function invalid(why: string): ApiError {
  return new ApiError(status.INVALID_ARGUMENT, `data connection: ${why}`);
}

/** The host part of host:port (without an IPv6 address's brackets). */
export function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1');
}
