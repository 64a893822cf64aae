import { isServiceError, leaderHint, status, statusOf, TRAILERS, type LeaderHint } from '@hyperfarm/api';
import type { Safety } from './methods.js';

/**
 * A failed call as the client reports it: the gRPC status, the farm's message, the field it
 * names, and whether the write may have happened anyway.
 */
export class HyperfarmError extends Error {
  constructor(
    readonly code: status,
    /** The farm's message (or the transport's), without the code. */
    readonly details: string,
    readonly extra: {
      /** RPC method, as the client spells it. */
      method?: string;
      /** The daemon that gave the last answer. */
      endpoint?: string;
      attempts?: number;
      /** INVALID_ARGUMENT: the offending field (the `hyperfarm-field` trailer). */
      field?: string | undefined;
      leader?: LeaderHint | undefined;
      /** A write that failed in a way that does not prove it did not happen. */
      outcomeUnknown?: boolean;
      cause?: unknown;
    } = {},
  ) {
    super(`${status[code] ?? code}: ${details}`);
    this.name = 'HyperfarmError';
  }

  get codeName(): string {
    return status[this.code] ?? String(this.code);
  }
}

/** Any failure as a HyperfarmError (a gRPC status keeps its code; anything else is UNKNOWN). */
export function asHyperfarmError(err: unknown, extra: HyperfarmError['extra'] = {}): HyperfarmError {
  if (err instanceof HyperfarmError) return err;
  if (isServiceError(err)) {
    const field = err.metadata.get(TRAILERS.field)[0];
    return new HyperfarmError(err.code, err.details, {
      ...extra,
      field: typeof field === 'string' ? field : undefined,
      leader: leaderHint(err),
      cause: err,
    });
  }
  return new HyperfarmError(status.UNKNOWN, err instanceof Error ? err.message : String(err), {
    ...extra,
    cause: err,
  });
}

/**
 * Failures that prove a write did not take effect (docs/api.md): the leader dropped it
 * (ABORTED), a daemon refused it because it does not lead (UNAVAILABLE with the leader's name in
 * the trailers) or no leader is known yet, or it never left this process (grpc-js's own
 * UNAVAILABLE before a stream was open). A connection lost mid-call proves nothing.
 */
const NEVER_SENT = /^(No connection established|Stream refused by server|Channel closed before call started)/;
const NO_LEADER = /^no leader yet/;

export function provenNotApplied(err: unknown): boolean {
  const code = statusOf(err);
  if (code === status.ABORTED) return true;
  if (code !== status.UNAVAILABLE) return false;
  const details = (err as { details?: string }).details ?? '';
  return leaderHint(err) !== undefined || NEVER_SENT.test(details) || NO_LEADER.test(details);
}

/** Statuses that may pass if the call is made again, later or at another daemon. */
const TRANSIENT = new Set([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.ABORTED, status.UNKNOWN]);

/** Whether a call of this safety may be made again after this failure. */
export function retryable(err: unknown, safety: Safety): boolean {
  const code = statusOf(err);
  if (code === undefined || !TRANSIENT.has(code)) return false;
  if (safety === 'read' || safety === 'keyed' || safety === 'idempotent') return true;
  return provenNotApplied(err);
}
