import { invalidArgument, quote, type pb } from '@hyperfarm/api';
import {
  type ConfState,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type SnapshotMeta,
} from '../types.js';

/**
 * Conversion between the core's `Message` and the wire's `pb.RaftMessage`. Enums travel as
 * numbers (the proto numbering equals ours) and arrive as names (the loader decodes enums to
 * strings), so both directions go through tables built from our enums. What comes from a peer
 * is checked on the way in: a bad value is INVALID_ARGUMENT naming its field in the request
 * (`field` is where the message sits: "messages[2]" in a batch, "message" in a snapshot chunk).
 */

const snake = (name: string): string => name.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();

function nameTable<E extends Record<string, string | number>>(prefix: string, e: E): Map<string, number> {
  const table = new Map<string, number>();
  for (const [key, value] of Object.entries(e)) {
    if (typeof value === 'number') table.set(`${prefix}${snake(key)}`, value);
  }
  return table;
}

const MESSAGE_TYPES = nameTable('RAFT_MESSAGE_TYPE_', MessageType);
const ENTRY_TYPES = nameTable('RAFT_ENTRY_TYPE_', EntryType);

function decodeEnum(table: Map<string, number>, field: string, value: string | number): number {
  const n = typeof value === 'number' ? value : table.get(value);
  if (n === undefined || ![...table.values()].includes(n)) {
    throw invalidArgument(field, `${quote(value)} is not a known value`);
  }
  return n;
}

export function entryToPb(e: Entry): pb.RaftEntry {
  return { term: e.term, index: e.index, type: e.type, data: e.data };
}

export function entryFromPb(e: pb.RaftEntry__Output, field = 'entry'): Entry {
  return {
    term: e.term,
    index: e.index,
    type: decodeEnum(ENTRY_TYPES, `${field}.type`, e.type) as EntryType,
    data: new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength),
  };
}

export function snapshotMetaToPb(meta: SnapshotMeta): pb.RaftSnapshotMeta {
  return { index: meta.index, term: meta.term, confState: Buffer.from(JSON.stringify(meta.conf)) };
}

export function snapshotMetaFromPb(meta: pb.RaftSnapshotMeta__Output, field = 'snapshot'): SnapshotMeta {
  let conf: ConfState;
  try {
    conf = JSON.parse(meta.confState.toString('utf8')) as ConfState;
  } catch {
    throw invalidArgument(`${field}.conf_state`, 'not JSON');
  }
  const ids = (list: unknown) => Array.isArray(list) && list.every((id) => typeof id === 'string');
  if (typeof conf !== 'object' || conf === null || !ids(conf.voters) || !ids(conf.learners)) {
    throw invalidArgument(`${field}.conf_state`, 'voters and learners must be lists of ids');
  }
  return { index: meta.index, term: meta.term, conf };
}

/** The wire form; a snapshot's data is not included (it travels in chunks). */
export function messageToPb(m: Message): pb.RaftMessage {
  return {
    type: m.type,
    from: m.from,
    to: m.to,
    term: m.term,
    logTerm: m.logTerm,
    index: m.index,
    entries: m.entries.map(entryToPb),
    commit: m.commit,
    reject: m.reject,
    rejectHint: m.rejectHint,
    conflictTerm: m.conflictTerm,
    context: m.context,
    snapshot: m.snapshot ? snapshotMetaToPb(m.snapshot.meta) : null,
  };
}

/**
 * The core's form; `snapshotData` completes a Snapshot message assembled from chunks, `field`
 * says where the message sits in the request.
 */
export function messageFromPb(
  m: pb.RaftMessage__Output,
  snapshotData?: Uint8Array,
  field = 'message',
): Message {
  const message: Message = {
    type: decodeEnum(MESSAGE_TYPES, `${field}.type`, m.type) as MessageType,
    from: m.from,
    to: m.to,
    term: m.term,
    logTerm: m.logTerm,
    index: m.index,
    entries: m.entries.map((e, i) => entryFromPb(e, `${field}.entries[${i}]`)),
    commit: m.commit,
    reject: m.reject,
    rejectHint: m.rejectHint,
    conflictTerm: m.conflictTerm,
    context: new Uint8Array(m.context.buffer, m.context.byteOffset, m.context.byteLength),
  };
  if (m.snapshot) {
    message.snapshot = {
      meta: snapshotMetaFromPb(m.snapshot, `${field}.snapshot`),
      data: snapshotData ?? new Uint8Array(),
    };
  }
  return message;
}
