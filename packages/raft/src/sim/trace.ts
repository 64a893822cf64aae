import { type Message, MessageType } from '../types.js';

/** One message on one line of a trace: who, what, which term, and the fields that matter. */
export function describeMessage(m: Message): string {
  const parts = [`${m.from}→${m.to} ${MessageType[m.type]} t${m.term}`];
  if (m.type === MessageType.Append || m.type === MessageType.Vote || m.type === MessageType.PreVote) {
    parts.push(`log=${m.logTerm}/${m.index}`);
  }
  if (m.entries.length > 0)
    parts.push(`ents=${m.entries[0]!.index}..${m.entries[m.entries.length - 1]!.index}`);
  if (m.commit) parts.push(`commit=${m.commit}`);
  if (m.reject) parts.push(`reject hint=${m.rejectHint} ct=${m.conflictTerm}`);
  if (m.snapshot) parts.push(`snap=${m.snapshot.meta.index}/${m.snapshot.meta.term}`);
  if (m.type !== MessageType.Append && m.type !== MessageType.AppendResponse && m.index)
    parts.push(`index=${m.index}`);
  return parts.join(' ');
}
