import type { WireError } from './wire.js';

/** A call that failed: the status as the daemon gave it, and words a person can act on. */
export class CallError extends Error {
  constructor(readonly wire: WireError) {
    super(wire.message);
    this.name = 'CallError';
  }
}

/** gRPC status codes by number, as an operation's error carries them. */
export const CODE_NAMES: Record<number, string> = {
  1: 'CANCELLED',
  2: 'UNKNOWN',
  3: 'INVALID_ARGUMENT',
  4: 'DEADLINE_EXCEEDED',
  5: 'NOT_FOUND',
  6: 'ALREADY_EXISTS',
  7: 'PERMISSION_DENIED',
  8: 'RESOURCE_EXHAUSTED',
  9: 'FAILED_PRECONDITION',
  10: 'ABORTED',
  11: 'OUT_OF_RANGE',
  12: 'UNIMPLEMENTED',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
};

/** The codes the gateway itself gives when no daemon answered. */
export const CONNECTION_LOST = 14;

/**
 * What to tell a person about a failed call: the daemon's message (it names the object and the
 * reason) and what to do about it.
 */
export function explain(err: unknown): { message: string; action: string } {
  if (!(err instanceof CallError)) {
    return {
      message: err instanceof Error ? err.message : String(err),
      action: 'Reload the page if this persists.',
    };
  }
  const w = err.wire;
  const message = w.message.replace(/^\d+ [A-Z_]+: /, '');
  switch (w.codeName) {
    case 'INVALID_ARGUMENT':
      return {
        message,
        action: w.field
          ? `Correct the field “${w.field}” and try again.`
          : 'Correct the request and try again.',
      };
    case 'NOT_FOUND':
      return { message, action: 'It may have just been deleted: the views show the farm as it is now.' };
    case 'ALREADY_EXISTS':
      return { message, action: 'Choose another name.' };
    case 'FAILED_PRECONDITION':
      return {
        message,
        action: 'Bring it into a state that allows this first (see its state), then try again.',
      };
    case 'RESOURCE_EXHAUSTED':
      return {
        message,
        action: 'Free capacity (stop or move VMs, add a host) or ask for less, then try again.',
      };
    case 'UNAVAILABLE':
      return {
        message,
        action:
          'The farm has no leader or the daemon is out of reach: wait a few seconds (an election takes one or two) and try again.',
      };
    case 'UNIMPLEMENTED':
      return {
        message,
        action: 'This farm does not do this yet; it arrives with a later version of hyperfarm.',
      };
    case 'DEADLINE_EXCEEDED':
      return {
        message,
        action: 'The daemon did not answer in time. Check whether the change happened before trying again.',
      };
    case 'CANCELLED':
      return { message, action: 'Try again.' };
    case 'ABORTED':
      return { message, action: 'It was stopped part way and rolled back: try again.' };
    default:
      return {
        message,
        action: 'This is unexpected: the daemon logged it. Try again, and report it if it persists.',
      };
  }
}
