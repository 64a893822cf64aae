import { invalidArgument, type pb } from '@hyperfarm/api';
import type { Message } from '../types.js';
import { messageFromPb } from './convert.js';

/** Snapshots are cut into chunks of this size: far under gRPC's 4 MiB message limit. */
export const SNAPSHOT_CHUNK_BYTES = 1024 * 1024;

/** Cuts a snapshot into the chunks of one InstallSnapshot stream; the first carries the message. */
export function* snapshotChunks(
  message: pb.RaftMessage,
  data: Uint8Array,
  chunkBytes = SNAPSHOT_CHUNK_BYTES,
): Generator<pb.SnapshotChunk> {
  let offset = 0;
  do {
    const end = Math.min(data.byteLength, offset + chunkBytes);
    yield {
      message: offset === 0 ? message : null,
      offset,
      data: data.subarray(offset, end),
      last: end === data.byteLength,
    };
    offset = end;
  } while (offset < data.byteLength);
}

/**
 * Reassembles one InstallSnapshot stream, checking that chunks arrive in order. A stream out of
 * order is INVALID_ARGUMENT naming the chunk's field.
 */
export class SnapshotAssembler {
  private header: pb.RaftMessage__Output | undefined;
  private parts: Buffer[] = [];
  private received = 0;
  private done = false;

  constructor(private readonly maxBytes: number) {}

  get bytesReceived(): number {
    return this.received;
  }

  /** Adds a chunk; returns the complete Snapshot message after the last one. */
  add(chunk: pb.SnapshotChunk__Output): Message | undefined {
    if (this.done) throw invalidArgument('last', 'a chunk came after the last chunk');
    if (this.received === 0 && !this.header) {
      if (!chunk.message) throw invalidArgument('message', 'the first chunk must carry the message');
      if (!chunk.message.snapshot)
        throw invalidArgument('message.snapshot', 'the message has no snapshot metadata');
      this.header = chunk.message;
    }
    if (chunk.offset !== this.received) {
      throw invalidArgument('offset', `expected ${this.received}, got ${chunk.offset}`);
    }
    this.received += chunk.data.byteLength;
    if (this.received > this.maxBytes) {
      throw invalidArgument('data', `the snapshot is larger than the ${this.maxBytes}-byte limit`);
    }
    this.parts.push(chunk.data);
    if (!chunk.last) return undefined;
    this.done = true;
    const data = Buffer.concat(this.parts);
    this.parts = [];
    return messageFromPb(this.header!, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  get complete(): boolean {
    return this.done;
  }
}
