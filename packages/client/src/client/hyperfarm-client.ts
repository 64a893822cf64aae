import { randomUUID } from 'node:crypto';
import {
  createClient,
  hyperfarmProto,
  leaderHint,
  promiseClient,
  status,
  statusOf,
  type PromiseClient,
  type TlsFiles,
  type pb,
} from '@hyperfarm/api';
import { backoffDelay, systemClock, type BackoffOptions, type Clock } from './backoff.js';
import { asHyperfarmError, HyperfarmError, provenNotApplied, retryable } from './errors.js';
import { SAFETY, type Method, type RequestOf, type ResponseOf } from './methods.js';
import { OperationFailedError, type OperationRef, type WaitOptions } from './operations.js';
import { watchEvents, type WatchOptions } from './watch.js';

export interface HyperfarmClientOptions {
  /** Every daemon's gRPC address (host:port); the client finds the leader among them. */
  endpoints: string[];
  /** Total time for one call, retries included, in ms (default 30 s). */
  deadlineMs?: number;
  /** Time for one attempt, in ms (default 10 s); a slower attempt counts as failed. */
  attemptTimeoutMs?: number;
  backoff?: BackoffOptions;
  /** Time, for the deadlines and the waits between retries (tests inject a virtual one). */
  clock?: Clock;
  /** Uniform in [0, 1), for the jitter (tests inject a seeded one). */
  random?: () => number;
  /** Request ids for keyed writes (default: random UUIDs). */
  requestId?: () => string;
  tls?: TlsFiles;
  /** Told of every failed attempt that will be retried: for logs and `--verbose`. */
  onRetry?: (info: RetryInfo) => void;
}

export interface RetryInfo {
  method: string;
  endpoint: string;
  attempt: number;
  error: HyperfarmError;
  /** Where the next attempt goes. */
  next: string;
  delayMs: number;
}

export interface CallOptions {
  deadlineMs?: number;
  attemptTimeoutMs?: number;
}

type Cluster = PromiseClient<pb.ClusterServiceClient>;

interface Channel {
  raw: pb.ClusterServiceClient;
  unary: Cluster;
}

const v1 = () => hyperfarmProto().hyperfarm.v1;

/**
 * A client for a whole farm. It knows every daemon's address and sends each call to the one that
 * last answered, moving to the leader a follower names in its trailers and to the next daemon
 * when one does not answer. Failed attempts are retried with backoff and jitter within a
 * deadline, writes only when that is safe (see methods.ts). Long work comes back as promises
 * (`run`, `wait`) and the event stream as an async iterator that resumes where it stopped.
 */
export class HyperfarmClient {
  private readonly endpoints: string[];
  private readonly channels = new Map<string, Channel>();
  private current = 0;
  readonly clock: Clock;
  private readonly random: () => number;

  constructor(private readonly opts: HyperfarmClientOptions) {
    if (opts.endpoints.length === 0) throw new Error('HyperfarmClient: no endpoints given');
    this.endpoints = [...opts.endpoints];
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
  }

  /** The daemon the next call goes to. */
  get endpoint(): string {
    return this.endpoints[this.current]!;
  }

  /** Every daemon address known, those given and the leaders learned from trailers. */
  get knownEndpoints(): readonly string[] {
    return this.endpoints;
  }

  /**
   * Calls a ClusterService method, retrying as its safety allows. A keyed write without a
   * request id gets one, the same for every attempt. Failures are HyperfarmErrors.
   */
  async call<M extends Method>(
    method: M,
    request: RequestOf<M>,
    options: CallOptions = {},
  ): Promise<ResponseOf<M>> {
    const safety = SAFETY[method];
    const req =
      safety === 'keyed' && !(request as { requestId?: string }).requestId
        ? { ...request, requestId: (this.opts.requestId ?? randomUUID)() }
        : request;
    const deadline = this.clock.now() + (options.deadlineMs ?? this.opts.deadlineMs ?? 30_000);
    for (let attempt = 0; ; attempt++) {
      const endpoint = this.endpoint;
      const timeoutMs = Math.max(
        1,
        Math.min(
          options.attemptTimeoutMs ?? this.opts.attemptTimeoutMs ?? 10_000,
          deadline - this.clock.now(),
        ),
      );
      try {
        const fn = this.channel(endpoint).unary[method] as (
          r: unknown,
          o: { timeoutMs: number },
        ) => Promise<unknown>;
        return (await fn(req, { timeoutMs })) as ResponseOf<M>;
      } catch (err) {
        const extra = { method, endpoint, attempts: attempt + 1 };
        if (!retryable(err, safety)) throw this.failure(err, safety, extra);
        const redirected = this.follow(err);
        const delayMs =
          redirected && attempt === 0 ? 0 : backoffDelay(attempt, this.random, this.opts.backoff);
        if (this.clock.now() + delayMs >= deadline) throw this.failure(err, safety, extra);
        this.opts.onRetry?.({
          ...extra,
          attempt,
          error: asHyperfarmError(err, extra),
          next: this.endpoint,
          delayMs,
        });
        await this.clock.sleep(delayMs);
      }
    }
  }

  /** Starts long work and resolves when it is done: `run('changeVmState', {...}, { onProgress })`. */
  async run<M extends OperationMethod>(
    method: M,
    request: RequestOf<M>,
    options: WaitOptions & CallOptions = {},
  ): Promise<pb.Operation__Output> {
    const op = (await this.call(method, request, options)) as pb.Operation__Output;
    return this.wait(op, options);
  }

  /**
   * Resolves with the operation once it is done, or rejects with OperationFailedError carrying
   * its error. `onProgress` hears each change of progress or message, checked every
   * `intervalMs`; the waiting itself is WaitOperation, answered by the daemon when the operation
   * finishes, so a finished operation is seen at once.
   */
  async wait(ref: OperationRef, options: WaitOptions = {}): Promise<pb.Operation__Output> {
    const id = typeof ref === 'string' ? ref : ref.id;
    const interval = options.intervalMs ?? 1_000;
    const deadline = options.timeoutMs === undefined ? Infinity : this.clock.now() + options.timeoutMs;
    let seen = typeof ref === 'string' ? undefined : ref;
    if (seen) options.onProgress?.(seen);
    while (!seen?.done) {
      const left = deadline - this.clock.now();
      if (left <= 0)
        throw new HyperfarmError(
          status.DEADLINE_EXCEEDED,
          `operation '${id}' is not done after ${options.timeoutMs} ms (${seen?.progressPercent ?? 0}%: ${seen?.message || 'no message'})`,
        );
      const waitMs = Math.max(1, Math.min(interval, left));
      const op = await this.call(
        'waitOperation',
        { id, timeoutMs: waitMs },
        { attemptTimeoutMs: waitMs + 10_000 },
      );
      if (!seen || op.progressPercent !== seen.progressPercent || op.message !== seen.message || op.done)
        options.onProgress?.(op);
      seen = op;
    }
    if (seen.error) throw new OperationFailedError(seen);
    return seen;
  }

  /**
   * The farm's events from `fromRevision` on (0: the current state first), as an async
   * iterator. When the stream breaks (its daemon died, a leader change) it reconnects to the
   * next daemon and resumes after the last revision it delivered: nothing is lost or repeated.
   * A revision the farm no longer keeps ends it with OUT_OF_RANGE. Stop it with `break` or the
   * signal.
   */
  watch(request: pb.WatchRequest = {}, options: WatchOptions = {}): AsyncGenerator<pb.Event__Output> {
    return watchEvents(
      {
        open: (req) => {
          const endpoint = this.endpoint;
          return { endpoint, stream: this.channel(endpoint).raw.watch(req) };
        },
        failed: (err) => this.follow(err),
        delay: (attempt) => backoffDelay(attempt, this.random, this.opts.backoff),
        clock: this.clock,
      },
      request,
      options,
    );
  }

  /** Every item of a paged list: `list('listVms', {}, (r) => r.vms)`. */
  async list<M extends Method, T>(
    method: M,
    request: RequestOf<M>,
    items: (res: ResponseOf<M>) => T[],
    options: CallOptions = {},
  ): Promise<T[]> {
    const out: T[] = [];
    let pageToken = '';
    do {
      const res = await this.call(method, { ...request, pageToken, pageSize: 1000 } as RequestOf<M>, options);
      out.push(...items(res));
      pageToken = (res as { nextPageToken?: string }).nextPageToken ?? '';
    } while (pageToken !== '');
    return out;
  }

  close(): void {
    for (const c of this.channels.values()) c.raw.close();
    this.channels.clear();
  }

  private channel(endpoint: string): Channel {
    let c = this.channels.get(endpoint);
    if (!c) {
      const raw = createClient(v1().ClusterService, endpoint, { tls: this.opts.tls });
      c = { raw, unary: promiseClient(raw) };
      this.channels.set(endpoint, c);
    }
    return c;
  }

  /**
   * Chooses where the next attempt goes after a failure: the leader the trailers name (learning
   * its address if it is new), else the next daemon in the list. True when it followed a hint.
   */
  private follow(err: unknown): boolean {
    const hint = leaderHint(err)?.address;
    if (hint && hint !== this.endpoint) {
      if (!this.endpoints.includes(hint)) this.endpoints.push(hint);
      this.current = this.endpoints.indexOf(hint);
      return true;
    }
    // The daemon answered but knows no leader yet: any other daemon knows no more.
    if (
      statusOf(err) !== status.UNAVAILABLE ||
      !/^no leader yet/.test((err as { details?: string }).details ?? '')
    )
      this.current = (this.current + 1) % this.endpoints.length;
    return false;
  }

  private failure(err: unknown, safety: string, extra: HyperfarmError['extra']): HyperfarmError {
    const outcomeUnknown = safety === 'write' && statusOf(err) !== undefined && isUncertain(err);
    return asHyperfarmError(err, { ...extra, outcomeUnknown });
  }
}

/** A failure after which a write may or may not have happened. */
function isUncertain(err: unknown): boolean {
  const code = statusOf(err);
  return (
    (code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED || code === status.UNKNOWN) &&
    !provenNotApplied(err)
  );
}

/** The methods whose answer is an Operation. */
export type OperationMethod = {
  [M in Method]: ResponseOf<M> extends pb.Operation__Output ? M : never;
}[Method];
