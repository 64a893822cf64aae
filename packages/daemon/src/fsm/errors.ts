import { quote } from '@hyperfarm/api';
import type { ResultError } from './command.js';
import type { ErrorCode } from './model.js';

/**
 * A command the state refuses: the same refusal on every replica, carried back to the proposer
 * as the command's result and turned into a gRPC status there. Handlers throw it before they
 * change anything.
 */
export class FsmError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** For INVALID_ARGUMENT: the offending request field, as a dotted path. */
    readonly field?: string,
  ) {
    // A refusal is an answer, not a bug: nothing reads its stack, and capturing one was most of
    // a refused command's apply on every replica (an Error walks and keeps the stack's frames).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(message);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = 'FsmError';
  }

  /** The refusal as a command's result carries it. */
  result(): ResultError {
    return { code: this.code, message: this.message, ...(this.field ? { field: this.field } : {}) };
  }
}

export const notFound = (kind: string, id: string): FsmError =>
  new FsmError('NOT_FOUND', `${kind} ${quote(id)} not found`);

export const alreadyExists = (kind: string, name: string): FsmError =>
  new FsmError('ALREADY_EXISTS', `${kind} ${quote(name)} already exists`);

export const failedPrecondition = (message: string): FsmError => new FsmError('FAILED_PRECONDITION', message);
