import { EventEmitter } from 'node:events';
import { LOADER_OPTIONS, toServiceError, unexpectedCause, type Logger, type pb } from '@hyperfarm/api';
import type protobuf from 'protobufjs';
import type { EventSink } from '../operations-api.js';
import { checkMessage, messageType } from './request-check.js';

/** ClusterService.Watch's own code (operations-api.ts watchEvents), bound to this daemon. */
export type WatchEvents = (request: pb.WatchRequest__Output, sink: EventSink) => Promise<void>;

/**
 * The Watch stream the gateway reads, served in this process by the very code the gRPC Watch
 * runs (the same events, revisions, kinds, resume and OUT_OF_RANGE rules), without a loopback
 * gRPC stream in between: following it through one cost the daemon a fifth of its CPU under the
 * console benchmark (docs/benchmarks.md, Web console). It looks to the session as a gRPC client
 * stream does: 'data' with each event as a gRPC client decodes it, 'error' with the status the
 * gRPC Watch ends with, 'end', and cancel() (after which it emits nothing).
 *
 * Nothing is queued here: each event goes straight to the session, whose bounded send queue
 * decides when a browser has fallen behind.
 */
export class LocalWatch extends EventEmitter {
  private cancelled = false;
  private stop: (() => void) | undefined;

  constructor(run: WatchEvents, request: { fromRevision: number; kinds: string[] }, logger: Logger) {
    super();
    const eventType = messageType('Event');
    let received: pb.WatchRequest__Output;
    try {
      const requestType = messageType('WatchRequest');
      checkMessage(requestType, request);
      received = asReceived(requestType, request) as unknown as pb.WatchRequest__Output;
    } catch (err) {
      this.fail(err, logger);
      return;
    }
    run(received, {
      write: (event) => {
        if (!this.cancelled) this.emit('data', asReceived(eventType, event));
      },
      buffered: () => 0,
      onClose: (stop) => {
        if (this.cancelled) stop();
        else this.stop = stop;
      },
    }).then(
      () => {
        if (!this.cancelled) this.emit('end');
      },
      (err: unknown) => this.fail(err, logger),
    );
  }

  /** Stops the stream: the Watch unsubscribes at once, and nothing more is emitted. */
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.stop?.();
  }

  /** Ends the stream with the status a gRPC client would receive (emitted on a later turn). */
  private fail(err: unknown, logger: Logger): void {
    const serviceError = toServiceError(err);
    const cause = unexpectedCause(serviceError);
    if (cause !== undefined) logger.error({ err: cause }, 'unexpected error in the console Watch');
    queueMicrotask(() => {
      if (!this.cancelled) this.emit('error', serviceError);
    });
  }
}

/**
 * A message as the other end of a gRPC call receives it: converted by its protobuf type and
 * back with the options grpc-js decodes with (proto-loader's serialize and deserialize, without
 * the bytes between). Fields the type does not have are dropped, absent ones get their
 * defaults, 64-bit integers become numbers, enums names, and each oneof names its member.
 */
function asReceived(type: protobuf.Type, value: object): Record<string, unknown> {
  return type.toObject(type.fromObject(value), LOADER_OPTIONS as protobuf.IConversionOptions);
}
