import { goesAhead } from '../core/raft.js';
import type { ConfChange, Entry, Message, Ready } from '../types.js';
import { EntryType, MessageType, Role } from '../types.js';
import type { Cluster } from './cluster.js';
import type { DiskOp } from './disk.js';
import { decodeCommand, KvStateMachine } from './kv-app.js';
import type { Member } from './member.js';
import type { SimNode } from './node.js';
import { describeMessage } from './trace.js';

const decoder = new TextDecoder();

/** Messages that promise the sender's disk holds something: a granted vote, an append ack. */
function isPromise(m: Message): boolean {
  return !m.reject && (m.type === MessageType.VoteResponse || m.type === MessageType.AppendResponse);
}

/**
 * Processes one Ready as RaftNode does: persist, send, apply, advance; a leader (with
 * `leaderSendsFirst`, RaftNode's `leaderParallelPersist`) sends before it persists, and every
 * node sends heartbeats, their acknowledgements and read indexes before it persists (RaftNode
 * sends them as they are made, while it writes the Ready before). An armed crash strikes at its
 * point inside: before persisting (with what went ahead gone and nothing written), part-way
 * through sending, or after sending (and persisting), before a late sync.
 */
export function processReady(cluster: Cluster, m: Member, node: SimNode, rd: Ready): void {
  const { inv, opts } = cluster;
  const armed =
    m.crashIn !== undefined &&
    (m.crashWhen ? m.crashWhen(rd) : m.crashIn !== 'after-promise' || rd.messages.some(isPromise));
  const sendFirst = opts.discipline.leaderSendsFirst && (rd.softState?.role ?? m.role) === Role.Leader;
  let messages = rd.messages;
  if (!sendFirst && messages.some(goesAhead)) {
    for (const msg of messages) if (goesAhead(msg)) send(cluster, msg);
    messages = messages.filter((msg) => !goesAhead(msg));
  }
  if (armed && m.crashIn === 'before-persist' && !sendFirst) {
    cluster.crash(m, 'before persisting a Ready');
    return;
  }
  if (rd.softState) {
    if (rd.softState.role === Role.Leader && m.role !== Role.Leader) cluster.elections++;
    m.role = rd.softState.role;
    m.leader = rd.softState.leader;
  }
  if (sendFirst) {
    if (!sendAll(cluster, m, messages, armed)) return;
    if (armed && m.crashIn === 'before-persist') {
      cluster.crash(m, `after sending ${messages.length} messages, before persisting them`);
      return;
    }
  }
  // 1. Persist: the snapshot, then the hard state and entries, in one write.
  const ops: DiskOp[] = [];
  if (rd.snapshot) ops.push({ kind: 'snapshot', snapshot: rd.snapshot });
  if (rd.entries.length > 0) ops.push({ kind: 'append', entries: rd.entries });
  if (rd.hardState) ops.push({ kind: 'hardState', hardState: rd.hardState });
  if (ops.length > 0) {
    try {
      m.disk.write(ops, opts.discipline.syncBeforeSend);
    } catch (err) {
      cluster.violation('node-error', `${m.id} produced a Ready its disk refused: ${(err as Error).message}`);
      cluster.crash(m, 'unwritable Ready');
      return;
    }
  }
  if (rd.hardState) m.term = rd.hardState.term;
  if (m.role === Role.Leader) {
    inv.now = cluster.now;
    inv.leader(m.id, m.term);
    if (rd.hardState) inv.leaderCommitted(m.id, m.term, rd.hardState.commit, m.disk.current);
  }
  // 2. Send.
  if (!sendFirst && !sendAll(cluster, m, messages, armed)) return;
  if (armed) {
    cluster.crash(m, `after sending ${messages.length} messages`);
    return;
  }
  if (!opts.discipline.syncBeforeSend) m.disk.sync();
  // 3. Apply.
  if (rd.snapshot) {
    const s = rd.snapshot;
    m.sm = KvStateMachine.restore(s.data);
    m.applied = s.meta.index;
    m.conf = s.meta.conf;
    inv.restored(m.id, m.applied);
    cluster.snapshotsInstalled++;
    cluster.log(`${m.id} installed snapshot at ${s.meta.index} term ${s.meta.term}`);
    cluster.hooks.snapshotInstalled(m, s.meta.index);
  }
  const appliedConf: ConfChange[] = [];
  for (const e of rd.committedEntries) apply(cluster, m, e, appliedConf);
  for (const rs of rd.readStates) {
    const read = m.pendingReads.get(decoder.decode(rs.context));
    if (read) read.index = rs.index;
  }
  // 4. Advance (which applies membership changes inside the core).
  node.advance(rd);
  if (appliedConf.length > 0) {
    m.conf = node.conf();
    if (m.role === Role.Leader) for (const cc of appliedConf) cluster.hooks.confApplied(cc);
  }
  cluster.hooks.readyDone(m);
  maybeCompact(cluster, m);
}

/** Sends the Ready's messages; an armed mid-send crash cuts them short (returns false). */
function sendAll(cluster: Cluster, m: Member, messages: Message[], armed: boolean): boolean {
  const midSend = armed && m.crashIn === 'mid-send';
  const cut = midSend ? cluster.faultRng.int(messages.length + 1) : messages.length;
  for (let i = 0; i < cut; i++) send(cluster, messages[i]!);
  if (midSend) cluster.crash(m, `after sending ${cut} of ${messages.length} messages`);
  return !midSend;
}

function send(cluster: Cluster, msg: Message): void {
  if (cluster.opts.trace) cluster.log(`send ${describeMessage(msg)}`);
  cluster.network.send(msg, cluster.now);
}

function apply(cluster: Cluster, m: Member, e: Entry, appliedConf: ConfChange[]): void {
  cluster.inv.now = cluster.now;
  cluster.inv.applied(m.id, e);
  if (e.index <= m.applied) return; // the apply-order check above reports it
  m.applied = e.index;
  if (e.type === EntryType.Normal && e.data.length > 0) {
    const cmd = decodeCommand(e.data);
    cluster.hooks.writeApplied(m, e, m.sm.applyOnce(cmd));
  } else if (e.type === EntryType.ConfChange) {
    appliedConf.push(JSON.parse(decoder.decode(e.data)) as ConfChange);
  }
}

/** Snapshots the state machine and compacts the log every `compactEvery` applied entries. */
function maybeCompact(cluster: Cluster, m: Member): void {
  const every = cluster.opts.compactEvery;
  if (every <= 0) return;
  const storage = m.disk.current;
  const snapIndex = storage.snapshot().meta.index;
  if (m.applied - snapIndex < every || m.applied > storage.lastIndex()) return;
  // Keep a few entries behind the snapshot so a slightly slow follower can still catch up by log.
  const keep = Math.max(storage.firstIndex() - 1, m.applied - Math.floor(every / 4));
  const ops: DiskOp[] = [{ kind: 'createSnapshot', index: m.applied, conf: m.conf, data: m.sm.snapshot() }];
  if (keep >= storage.firstIndex()) ops.push({ kind: 'compact', index: keep });
  m.disk.write(ops, true);
}
