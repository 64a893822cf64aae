import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

/**
 * Trailer keys a failed call may carry besides its status, documented in docs/api.md so clients
 * in any language can read them.
 */
export const TRAILERS = {
  /** INVALID_ARGUMENT: the offending field, as a dotted path ("config.memory_bytes"). */
  field: 'hyperfarm-field',
  /** UNAVAILABLE from a replica that does not lead: the leader's id, when one is known. */
  leaderId: 'hyperfarm-leader-id',
  /** With `leaderId`, when known: the leader's gRPC address (host:port). */
  leaderAddress: 'hyperfarm-leader-address',
} as const;

/** Longest input quoted in a message; the rest is cut and its length stated. */
export const MAX_QUOTED_CHARS = 64;

/**
 * Longest status message sent. A status message travels as a header, and typical clients refuse
 * headers over 8 KiB: a message is never allowed to grow with the input.
 */
export const MAX_STATUS_MESSAGE_CHARS = 2_048;

/**
 * User input as it may appear in an error message: in single quotes, control characters escaped,
 * and cut after `max` characters ("'aaaa…' (1048576 characters)"). Every message that quotes a
 * name, id or path from a request goes through here.
 */
export function quote(value: unknown, max = MAX_QUOTED_CHARS): string {
  const text = String(value);
  const chars = [...text];
  const shown = chars.slice(0, max).join('');
  // eslint-disable-next-line no-control-regex
  const escaped = shown.replace(/[\u0000-\u001f\u007f]/g, (c) => JSON.stringify(c).slice(1, -1));
  return chars.length <= max ? `'${escaped}'` : `'${escaped}…' (${chars.length} characters)`;
}

function capMessage(message: string): string {
  if (message.length <= MAX_STATUS_MESSAGE_CHARS) return message;
  return `${message.slice(0, MAX_STATUS_MESSAGE_CHARS)}… (message cut at ${MAX_STATUS_MESSAGE_CHARS} of ${message.length} characters)`;
}

/**
 * A failure that belongs to the API: a gRPC status code and a message a person can act on,
 * naming the object and the reason. Domain code throws these; servers turn them into statuses.
 */
export class ApiError extends Error {
  constructor(
    readonly code: status,
    message: string,
    /** For INVALID_ARGUMENT: the offending field, as a dotted path ("config.memory_bytes"). */
    readonly field?: string,
    /** Extra trailer metadata (see TRAILERS). */
    readonly trailers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The error as grpc-js expects a handler to report it. */
  toServiceError(): ServiceError {
    const metadata = new Metadata();
    if (this.field) metadata.set(TRAILERS.field, this.field);
    for (const [key, value] of Object.entries(this.trailers)) metadata.set(key, value);
    const message = capMessage(this.message);
    return Object.assign(new Error(message), { code: this.code, details: message, metadata });
  }
}

export const invalidArgument = (field: string, reason: string): ApiError =>
  new ApiError(status.INVALID_ARGUMENT, `invalid ${field}: ${reason}`, field);

export const notFound = (kind: string, id: string): ApiError =>
  new ApiError(status.NOT_FOUND, `${kind} ${quote(id)} not found`);

export const alreadyExists = (kind: string, name: string): ApiError =>
  new ApiError(status.ALREADY_EXISTS, `${kind} ${quote(name)} already exists`);

export const failedPrecondition = (message: string): ApiError =>
  new ApiError(status.FAILED_PRECONDITION, message);

export const resourceExhausted = (message: string): ApiError =>
  new ApiError(status.RESOURCE_EXHAUSTED, message);

/**
 * UNAVAILABLE: retry. From a replica that does not lead, `leader` names the one that does (when
 * known), in the trailers as well as the message, so a client can go there directly.
 */
export const unavailable = (message: string, leader?: LeaderHint): ApiError =>
  new ApiError(status.UNAVAILABLE, message, undefined, leader ? leaderTrailers(leader) : {});

export const unimplemented = (what: string, plannedIn?: string): ApiError =>
  new ApiError(
    status.UNIMPLEMENTED,
    `${what} is not implemented yet${plannedIn ? ` (planned: ${plannedIn})` : ''}`,
  );

export const internal = (message: string): ApiError => new ApiError(status.INTERNAL, message);

/** Where the leader is, as a replica that does not lead knows it. */
export interface LeaderHint {
  id: string;
  /** Its gRPC address, when this replica knows it. */
  address?: string | undefined;
}

function leaderTrailers(leader: LeaderHint): Record<string, string> {
  const trailers: Record<string, string> = { [TRAILERS.leaderId]: leader.id };
  if (leader.address) trailers[TRAILERS.leaderAddress] = leader.address;
  return trailers;
}

/** The leader named by a failed call's trailers, if any. */
export function leaderHint(err: unknown): LeaderHint | undefined {
  if (!isServiceError(err)) return undefined;
  const id = err.metadata.get(TRAILERS.leaderId)[0];
  if (typeof id !== 'string' || id === '') return undefined;
  const address = err.metadata.get(TRAILERS.leaderAddress)[0];
  return { id, address: typeof address === 'string' && address !== '' ? address : undefined };
}

/** The original exception behind an INTERNAL status made by toServiceError, for logging. */
const UNEXPECTED = Symbol('hyperfarm.unexpected');

/**
 * Maps anything thrown by a handler to a status. An ApiError keeps its code; a status from a call
 * this handler made passes through; anything else is unexpected and becomes INTERNAL, keeping
 * the original error (see `unexpectedCause`) so the server can log it with its stack.
 */
export function toServiceError(err: unknown): ServiceError {
  if (err instanceof ApiError) return err.toServiceError();
  if (isServiceError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return Object.assign(internal(message).toServiceError(), { [UNEXPECTED]: err });
}

/** The unexpected exception an INTERNAL status was made from, or undefined for any other status. */
export function unexpectedCause(err: unknown): unknown {
  return typeof err === 'object' && err !== null
    ? (err as { [UNEXPECTED]?: unknown })[UNEXPECTED]
    : undefined;
}

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'metadata' in err;
}

/** The status code of a failed call, or undefined for anything that is not a gRPC error. */
export function statusOf(err: unknown): status | undefined {
  if (err instanceof ApiError) return err.code;
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? (code as status) : undefined;
}

export { status };
