import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

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
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The error as grpc-js expects a handler to report it. */
  toServiceError(): ServiceError {
    const metadata = new Metadata();
    if (this.field) metadata.set('hyperfarm-field', this.field);
    return Object.assign(new Error(this.message), {
      code: this.code,
      details: this.message,
      metadata,
    });
  }
}

export const invalidArgument = (field: string, reason: string): ApiError =>
  new ApiError(status.INVALID_ARGUMENT, `invalid ${field}: ${reason}`, field);

export const notFound = (kind: string, id: string): ApiError =>
  new ApiError(status.NOT_FOUND, `${kind} '${id}' not found`);

export const alreadyExists = (kind: string, name: string): ApiError =>
  new ApiError(status.ALREADY_EXISTS, `${kind} '${name}' already exists`);

export const failedPrecondition = (message: string): ApiError =>
  new ApiError(status.FAILED_PRECONDITION, message);

export const resourceExhausted = (message: string): ApiError =>
  new ApiError(status.RESOURCE_EXHAUSTED, message);

export const unavailable = (message: string): ApiError => new ApiError(status.UNAVAILABLE, message);

export const unimplemented = (what: string, plannedIn?: string): ApiError =>
  new ApiError(
    status.UNIMPLEMENTED,
    `${what} is not implemented yet${plannedIn ? ` (planned: ${plannedIn})` : ''}`,
  );

export const internal = (message: string): ApiError => new ApiError(status.INTERNAL, message);

/** Maps anything thrown by a handler to a status; unknown errors become INTERNAL with their message. */
export function toServiceError(err: unknown): ServiceError {
  if (err instanceof ApiError) return err.toServiceError();
  if (isServiceError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return internal(message).toServiceError();
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
