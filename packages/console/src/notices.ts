import { CallError, CODE_NAMES, explain } from './errors.js';
import type { Operation } from './wire.js';

/**
 * The outcome of something a person asked for: the call, then the operation it started, which
 * the Watch stream carries to its end. Pure: `status` reads the operation from the model.
 */
export interface Notice {
  key: number;
  /** What was asked, in words: "Start web-1". */
  label: string;
  /** The operation the call started, once it answered. */
  operationId?: string;
  /** The call itself failed. */
  error?: unknown;
  /** A call that starts no operation answered: it is done. */
  answered?: boolean;
  /** Operation snapshot from the call's answer, until the stream brings a newer one. */
  operation?: Operation;
}

export type NoticeStatus =
  | { kind: 'sent' }
  | { kind: 'running'; percent: number; message: string }
  | { kind: 'done' }
  | { kind: 'failed'; message: string; action: string };

export function noticeStatus(n: Notice, live: Operation | undefined): NoticeStatus {
  if (n.error) return { kind: 'failed', ...explain(n.error) };
  if (n.answered) return { kind: 'done' };
  const op = live ?? n.operation;
  if (!op) return { kind: 'sent' };
  if (!op.done) return { kind: 'running', percent: op.progressPercent, message: op.message };
  if (op.error && op.error.code !== 0)
    return {
      kind: 'failed',
      ...explain(
        new CallError({
          code: op.error.code,
          codeName: CODE_NAMES[op.error.code] ?? '',
          message: op.error.message,
        }),
      ),
    };
  return { kind: 'done' };
}
