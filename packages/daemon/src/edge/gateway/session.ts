import { quote, status, TRAILERS, type Logger } from '@hyperfarm/api';
import type * as grpc from '@grpc/grpc-js';
import type { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';
import type { ClusterCaller } from './cluster-caller.js';
import type { DrillReports } from './drill-reports.js';
import { clientMessage, type CallId, type ServerMessage, type WireError } from './protocol.js';

export interface SessionLimits {
  /**
   * Bytes the socket may hold unsent before the event stream stops and the browser is told to
   * resync from its last revision: a browser that cannot keep up costs the daemon this much.
   */
  maxQueuedBytes: number;
  /** Calls one socket may have in flight at once; more are refused with RESOURCE_EXHAUSTED. */
  maxCallsInFlight: number;
}

/**
 * The Watch stream as a session reads it: 'data' (an Event), 'error' (the status it ended with;
 * CANCELLED when stopped), 'end', and cancel(). ClusterCaller's in-process stream is one.
 */
export interface WatchStream extends EventEmitter {
  cancel(): void;
}

/** Most events in one message: a browser applies a message in one task, and that stays short. */
const MAX_BATCH = 256;

export const DEFAULT_LIMITS: SessionLimits = { maxQueuedBytes: 1024 * 1024, maxCallsInFlight: 32 };

/**
 * One browser's socket: calls go to the daemon's own ClusterService, the Watch stream comes
 * from it. Nothing here decides anything about the farm: it checks the message's shape, passes
 * it on and passes the answer (or the status) back.
 */
export class Session {
  private watch: WatchStream | undefined;
  private lastRevision = 0;
  private inFlight = 0;
  private closed = false;
  /** Events of the stream not sent yet, each as JSON: sent together once this turn ends. */
  private batch: string[] = [];
  private batchBytes = 0;

  constructor(
    private readonly ws: WebSocket,
    private readonly cluster: ClusterCaller,
    private readonly limits: SessionLimits,
    private readonly logger: Logger,
    private readonly drills: DrillReports,
  ) {
    ws.on('message', (data, isBinary) => {
      try {
        this.receive(data, isBinary);
      } catch (err) {
        // A bug of the gateway's: logged with its stack; the socket and the daemon go on.
        this.logger.error({ err }, 'unexpected error handling a console message');
        this.send({ type: 'error', error: wireError(err) });
      }
    });
    ws.on('close', () => this.close());
    ws.on('error', (err) => {
      this.logger.debug({ err }, 'console socket error');
      this.close();
    });
  }

  send(message: ServerMessage): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(JSON.stringify(message));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopWatch();
  }

  private receive(data: unknown, isBinary: boolean): void {
    if (isBinary) return this.refuse(undefined, 'binary frames are not part of the protocol: send JSON text');
    let parsed: unknown;
    try {
      parsed = JSON.parse(String(data));
    } catch {
      return this.refuse(undefined, 'the message is not JSON');
    }
    const checked = clientMessage.safeParse(parsed);
    if (!checked.success) {
      const issue = checked.error.issues[0]!;
      const id = callIdOf(parsed);
      return this.refuse(id, `invalid ${issue.path.join('.') || 'message'}: ${issue.message}`);
    }
    const m = checked.data;
    switch (m.type) {
      case 'call':
        return this.call(m.id, m.method, m.request);
      case 'watch':
        return this.startWatch(m.fromRevision, m.kinds);
      case 'unwatch':
        return this.stopWatch();
      case 'consoles':
        void this.cluster.consoles().then((consoles) => this.send({ type: 'consoles', id: m.id, consoles }));
        return;
      case 'drills':
        return this.files(m.id, async () => ({
          type: 'drills',
          id: m.id,
          folder: this.drills.folder,
          reports: await this.drills.list(),
        }));
      case 'drill':
        return this.files(m.id, async () => ({
          type: 'drill',
          id: m.id,
          path: m.path,
          report: await this.drills.read(m.path),
        }));
    }
  }

  /** A request answered from files (the drill reports): counted in flight as a call is. */
  private files(id: CallId, answer: () => Promise<ServerMessage>): void {
    if (this.inFlight >= this.limits.maxCallsInFlight) return this.tooMany(id);
    this.inFlight++;
    answer().then(
      (message) => {
        this.inFlight--;
        this.send(message);
      },
      (err: unknown) => {
        this.inFlight--;
        this.send({ type: 'error', id, error: wireError(err) });
      },
    );
  }

  private tooMany(id: CallId): void {
    this.send({
      type: 'error',
      id,
      error: {
        code: status.RESOURCE_EXHAUSTED,
        codeName: 'RESOURCE_EXHAUSTED',
        message: `${this.limits.maxCallsInFlight} calls are already in flight on this connection: wait for their answers`,
      },
    });
  }

  private refuse(id: CallId | undefined, message: string): void {
    const error = { code: status.INVALID_ARGUMENT, codeName: 'INVALID_ARGUMENT', message };
    this.send(id === undefined ? { type: 'error', error } : { type: 'error', id, error });
  }

  private call(id: CallId, method: string, request: Record<string, unknown>): void {
    if (this.inFlight >= this.limits.maxCallsInFlight) return this.tooMany(id);
    this.inFlight++;
    this.cluster.call(method, request).then(
      (response) => {
        this.inFlight--;
        this.send({ type: 'result', id, response });
      },
      (err: unknown) => {
        this.inFlight--;
        this.send({ type: 'error', id, error: wireError(err) });
      },
    );
  }

  private startWatch(fromRevision: number, kinds: string[]): void {
    this.stopWatch();
    this.lastRevision = fromRevision;
    const stream: WatchStream = this.cluster.watch({ fromRevision, kinds });
    this.watch = stream;
    stream.on('data', (event: { revision: number }) => {
      if (this.watch !== stream) return;
      this.lastRevision = event.revision;
      // Events that come together (one commit often makes several) go in one message: each
      // message costs the browser a task of its own, and under load those tasks, queued behind
      // a frame, were most of the page's lag (docs/benchmarks.md, Web console).
      const json = JSON.stringify(event);
      if (this.batch.length === 0) setImmediate(() => this.flush());
      this.batch.push(json);
      this.batchBytes += json.length;
      if (this.ws.bufferedAmount + this.batchBytes > this.limits.maxQueuedBytes) {
        this.flush();
        this.fellBehind();
      } else if (this.batch.length >= MAX_BATCH) this.flush();
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (this.watch !== stream) return;
      this.watch = undefined;
      if (err.code !== status.CANCELLED) this.send({ type: 'watchError', error: wireError(err) });
    });
    stream.on('end', () => {
      if (this.watch === stream) this.watch = undefined;
    });
  }

  /**
   * The browser is not reading as fast as events come: stop the stream rather than queue more,
   * and tell it where to resume once it has read what is queued.
   */
  private fellBehind(): void {
    this.stopWatch();
    this.logger.info(
      { queuedBytes: this.ws.bufferedAmount, revision: this.lastRevision },
      'a console fell behind the event stream; told it to resync',
    );
    this.send({
      type: 'resync',
      fromRevision: this.lastRevision,
      reason: `more than ${this.limits.maxQueuedBytes} bytes were waiting to be sent`,
    });
  }

  /** Sends the events batched: one `event` message, or one `events` message with several. */
  private flush(): void {
    const batch = this.batch;
    if (batch.length === 0) return;
    this.batch = [];
    this.batchBytes = 0;
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(
      batch.length === 1
        ? `{"type":"event","event":${batch[0]}}`
        : `{"type":"events","events":[${batch.join(',')}]}`,
    );
  }

  private stopWatch(): void {
    const stream = this.watch;
    this.watch = undefined;
    stream?.cancel();
  }
}

function callIdOf(message: unknown): CallId | undefined {
  const id = (message as { id?: unknown } | null)?.id;
  return (typeof id === 'number' && Number.isSafeInteger(id)) || (typeof id === 'string' && id.length <= 64)
    ? (id as CallId)
    : undefined;
}

/** A failed call as the browser receives it: the status, its name and the trailers that help. */
export function wireError(err: unknown): WireError {
  const e = err as Partial<grpc.ServiceError> & { field?: string };
  const code = typeof e.code === 'number' ? e.code : status.INTERNAL;
  const wire: WireError = {
    code,
    codeName: status[code] ?? 'UNKNOWN',
    message: e.details || e.message || quote(err),
  };
  const field = e.field ?? e.metadata?.get(TRAILERS.field)[0];
  if (typeof field === 'string' && field) wire.field = field;
  const leader = e.metadata?.get(TRAILERS.leaderId)[0];
  if (typeof leader === 'string' && leader) wire.leaderId = leader;
  return wire;
}
