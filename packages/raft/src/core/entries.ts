import {
  type ConfChange,
  ConfChangeType,
  type Entry,
  type Message,
  type MessageType,
  type NodeId,
} from '../types.js';
import { RaftArgumentError } from './errors.js';

const EMPTY = new Uint8Array(0);

/** The bytes an entry counts for in message-size and uncommitted-size limits: its payload. */
export function entryBytes(e: Entry): number {
  return e.data.byteLength;
}

export function entriesBytes(es: readonly Entry[]): number {
  let n = 0;
  for (const e of es) n += entryBytes(e);
  return n;
}

/**
 * Keeps a prefix of `es` whose payload fits `maxBytes`, but always at least one entry so that a
 * single large entry can still make progress.
 */
export function limitSize(es: Entry[], maxBytes: number | undefined): Entry[] {
  if (maxBytes === undefined || es.length === 0) return es;
  let size = entryBytes(es[0]!);
  let n = 1;
  for (; n < es.length; n++) {
    size += entryBytes(es[n]!);
    if (size > maxBytes) break;
  }
  return n === es.length ? es : es.slice(0, n);
}

/** A message with every field the core does not set filled with its zero value. */
export function makeMessage(m: Partial<Message> & { type: MessageType; from: NodeId; to: NodeId }): Message {
  return {
    term: 0,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    conflictTerm: 0,
    context: EMPTY,
    ...m,
  };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeConfChange(cc: ConfChange): Uint8Array {
  return encoder.encode(JSON.stringify(cc));
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  const parsed: unknown = JSON.parse(decoder.decode(data));
  validateConfChange(parsed);
  return parsed;
}

/** Checks the shape of a conf change (not whether it makes sense for the current membership). */
export function validateConfChange(cc: unknown): asserts cc is ConfChange {
  if (typeof cc !== 'object' || cc === null) throw new RaftArgumentError('confChange', 'must be an object');
  const c = cc as Record<string, unknown>;
  if (!Object.values(ConfChangeType).includes(c.type as ConfChangeType) || typeof c.type !== 'number') {
    throw new RaftArgumentError('confChange.type', `unknown type ${String(c.type)}`);
  }
  if (typeof c.node !== 'string' || c.node === '') {
    throw new RaftArgumentError('confChange.node', 'must be a non-empty node id');
  }
  if (c.address !== undefined && typeof c.address !== 'string') {
    throw new RaftArgumentError('confChange.address', 'must be a string when given');
  }
}

/** Hex of a byte string: read-request contexts are keyed by it. */
export function contextKey(ctx: Uint8Array): string {
  let s = '';
  for (const b of ctx) s += b.toString(16).padStart(2, '0');
  return s;
}

/** The context a leader puts on the Vote it triggers with TimeoutNow: voters skip their lease. */
export const CAMPAIGN_TRANSFER = encoder.encode('CampaignTransfer');

export function isCampaignTransfer(ctx: Uint8Array): boolean {
  return contextKey(ctx) === contextKey(CAMPAIGN_TRANSFER);
}
