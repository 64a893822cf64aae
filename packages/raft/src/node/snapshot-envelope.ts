import type { NodeId } from '../types.js';

/**
 * What RaftNode stores as a snapshot's data: the members' transport addresses (the ConfState
 * has ids only, and a node restored from a snapshot must still reach its peers) followed by the
 * application's bytes.
 *
 *   u32 BE header length | header JSON {addresses} | application data
 */
export interface SnapshotEnvelope {
  addresses: Record<NodeId, string>;
  app: Uint8Array;
}

export function encodeSnapshotEnvelope(env: SnapshotEnvelope): Uint8Array {
  const header = Buffer.from(JSON.stringify({ addresses: env.addresses }));
  const out = Buffer.alloc(4 + header.length + env.app.byteLength);
  out.writeUInt32BE(header.length, 0);
  header.copy(out, 4);
  out.set(env.app, 4 + header.length);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

export function decodeSnapshotEnvelope(data: Uint8Array): SnapshotEnvelope {
  // The bootstrap snapshot of a new cluster carries no data at all.
  if (data.byteLength === 0) return { addresses: {}, app: new Uint8Array() };
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length < 4) throw new Error(`invalid snapshot data: ${buf.length} bytes, shorter than its header`);
  const len = buf.readUInt32BE(0);
  if (4 + len > buf.length)
    throw new Error(`invalid snapshot data: header of ${len} bytes overruns the data`);
  let header: { addresses?: Record<NodeId, string> };
  try {
    header = JSON.parse(buf.subarray(4, 4 + len).toString('utf8')) as typeof header;
  } catch {
    throw new Error('invalid snapshot data: the header is not JSON');
  }
  // A view over the application's bytes, not a copy: a farm's snapshot is tens of MiB, read at
  // every boot and install, and snapshot data is never written after it is made.
  return {
    addresses: header.addresses ?? {},
    app: new Uint8Array(buf.buffer, buf.byteOffset + 4 + len, buf.length - 4 - len),
  };
}
