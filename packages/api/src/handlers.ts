import type * as grpc from '@grpc/grpc-js';
import { toServiceError } from './errors.js';

/**
 * Adapters from promise-returning functions to grpc-js handlers: whatever a handler throws
 * becomes a gRPC status (ApiError keeps its code; anything else is INTERNAL, and the server made
 * by createServer logs it with its stack), and the server keeps serving. A stream handler reports
 * its error by emitting 'error' on the call, which is how grpc-js turns it into the status that
 * ends the stream.
 */

export function unary<Req, Res>(
  fn: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => fn(call.request, call))
      .then(
        (res) => callback(null, res),
        (err: unknown) => callback(toServiceError(err)),
      );
  };
}

export function serverStream<Req, Res>(
  fn: (request: Req, call: grpc.ServerWritableStream<Req, Res>) => Promise<void> | void,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    Promise.resolve()
      .then(() => fn(call.request, call))
      .then(
        () => call.end(),
        (err: unknown) => call.emit('error', toServiceError(err)),
      );
  };
}

export function clientStream<Req, Res>(
  fn: (call: grpc.ServerReadableStream<Req, Res>) => Promise<Res>,
): grpc.handleClientStreamingCall<Req, Res> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => fn(call))
      .then(
        (res) => callback(null, res),
        (err: unknown) => callback(toServiceError(err)),
      );
  };
}

export function bidiStream<Req, Res>(
  fn: (call: grpc.ServerDuplexStream<Req, Res>) => Promise<void> | void,
): grpc.handleBidiStreamingCall<Req, Res> {
  return (call) => {
    Promise.resolve()
      .then(() => fn(call))
      .then(
        () => call.end(),
        (err: unknown) => call.emit('error', toServiceError(err)),
      );
  };
}
