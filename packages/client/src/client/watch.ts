import type * as grpc from '@grpc/grpc-js';
import { status, statusOf, type pb } from '@hyperfarm/api';
import type { Clock } from './backoff.js';
import { asHyperfarmError } from './errors.js';

export interface WatchOptions {
  /** Ends the iteration (it returns normally). */
  signal?: AbortSignal;
  /** Told each time the stream breaks and is opened again, with the revision it resumes after. */
  onReconnect?: (info: { endpoint: string; fromRevision: number; error: Error }) => void;
}

/** How the watcher reaches the farm: given by the client, so it shares its endpoints and clock. */
export interface WatchPort {
  open(req: pb.WatchRequest): { endpoint: string; stream: grpc.ClientReadableStream<pb.Event__Output> };
  /** Picks where the next stream opens after `err`. */
  failed(err: unknown): void;
  delay(attempt: number): number;
  clock: Clock;
}

/**
 * Statuses after which a stream is opened again: the daemon went away or is between leaders, or
 * it dropped a watcher that fell behind (RESOURCE_EXHAUSTED). Anything else (OUT_OF_RANGE for a
 * compacted revision, a bad request) ends the iteration with the error.
 */
const RESUMABLE = new Set([
  status.UNAVAILABLE,
  status.RESOURCE_EXHAUSTED,
  status.ABORTED,
  status.UNKNOWN,
  status.DEADLINE_EXCEEDED,
]);

export async function* watchEvents(
  port: WatchPort,
  request: pb.WatchRequest,
  options: WatchOptions,
): AsyncGenerator<pb.Event__Output> {
  let from = Number(request.fromRevision ?? 0);
  let failures = 0;
  while (!options.signal?.aborted) {
    const { endpoint, stream } = port.open({ ...request, fromRevision: from });
    const abort = () => stream.cancel();
    options.signal?.addEventListener('abort', abort);
    try {
      for await (const event of stream as AsyncIterable<pb.Event__Output>) {
        failures = 0;
        from = Number(event.revision);
        yield event;
      }
      // A stream that ends without an error was ended by the daemon (it is shutting down).
      throw Object.assign(new Error('the stream ended'), {
        code: status.UNAVAILABLE,
        details: 'the stream ended',
      });
    } catch (err) {
      if (options.signal?.aborted) return;
      if (!RESUMABLE.has(statusOf(err) ?? status.UNKNOWN))
        throw asHyperfarmError(err, { method: 'watch', endpoint });
      port.failed(err);
      options.onReconnect?.({ endpoint, fromRevision: from, error: err as Error });
      await port.clock.sleep(port.delay(failures++));
    } finally {
      options.signal?.removeEventListener('abort', abort);
      stream.cancel();
    }
  }
}
