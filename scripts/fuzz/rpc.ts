/**
 * Calls any RPC with encoded request bytes (grpc-js' generic client), whatever its streaming
 * shape, and reports how it ended: a status, its field trailer, and the answers decoded.
 */
import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { TRAILERS } from '@hyperfarm/api';
import type { Rpc } from './schema.js';

export interface Outcome {
  code: grpc.status;
  details: string;
  /** The field trailer of a failed call, '' without one. */
  field: string;
  /** Answers received, decoded as plain objects. */
  answers: unknown[];
}

const raw = (b: Buffer) => b;

/** Calls `rpc` with `messages` (one, or a client stream of several); streams are cut after `ms`. */
export function call(
  client: grpc.Client,
  rpc: Rpc,
  responseType: protobuf.Type,
  messages: Uint8Array[],
  ms: number,
): Promise<Outcome> {
  const answers: unknown[] = [];
  const decode = (b: Buffer) => {
    try {
      answers.push(responseType.toObject(responseType.decode(b), { longs: String, enums: String }));
    } catch {
      answers.push({ undecodable: b.length });
    }
  };
  const options = { deadline: Date.now() + ms };
  return new Promise((resolve) => {
    let done = false;
    const finish = (err: grpc.ServiceError | null) => {
      if (done) return;
      done = true;
      resolve({
        code: err ? err.code : grpc.status.OK,
        details: err?.details ?? '',
        field: String(err?.metadata?.get(TRAILERS.field)[0] ?? ''),
        answers,
      });
    };
    const callback = (err: grpc.ServiceError | null, value?: Buffer) => {
      if (value) decode(value);
      finish(err);
    };
    const bytes = messages.map((m) => Buffer.from(m));
    if (!rpc.requestStream && !rpc.responseStream) {
      client.makeUnaryRequest(rpc.path, raw, raw, bytes[0]!, new grpc.Metadata(), options, callback);
    } else if (rpc.requestStream && !rpc.responseStream) {
      const stream = client.makeClientStreamRequest(
        rpc.path,
        raw,
        raw,
        new grpc.Metadata(),
        options,
        callback,
      );
      for (const b of bytes) stream.write(b);
      stream.end();
    } else {
      const stream = rpc.requestStream
        ? client.makeBidiStreamRequest(rpc.path, raw, raw, new grpc.Metadata(), options)
        : client.makeServerStreamRequest(rpc.path, raw, raw, bytes[0]!, new grpc.Metadata(), options);
      if (rpc.requestStream) {
        const duplex = stream as grpc.ClientDuplexStream<Buffer, Buffer>;
        for (const b of bytes) duplex.write(b);
        duplex.end();
      }
      // A stream that keeps going is cut after a few answers or at the deadline: still a pass.
      stream.on('data', (b: Buffer) => {
        decode(b);
        if (answers.length >= 20) {
          stream.cancel();
          finish(null);
        }
      });
      stream.on('error', (err: grpc.ServiceError) =>
        finish(err.code === grpc.status.DEADLINE_EXCEEDED ? null : err),
      );
      stream.on('end', () => finish(null));
      stream.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) finish(null);
      });
    }
  });
}
