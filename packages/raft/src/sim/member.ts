import type { ReadIds } from '../core/read-ids.js';
import type { ConfState, NodeId, Ready, Role } from '../types.js';
import type { SimDisk } from './disk.js';
import type { KvStateMachine } from './kv-app.js';
import type { SimNode } from './node.js';
import type { PendingProposals } from '../core/pending-proposals.js';
import type { ProposedWrite } from './proposals.js';
import type { CrashPoint } from './options.js';

/** A client read waiting for its ReadIndex to be applied on the node that took it. */
export interface PendingRead {
  op: number;
  client: number;
  key: string;
  /** Known once the node's ReadState arrives. */
  index?: number;
}

/** One simulated server: its disk survives crashes, everything else is rebuilt on restart. */
export interface Member {
  id: NodeId;
  disk: SimDisk;
  node?: SimNode;
  role: Role;
  leader: NodeId;
  term: number;
  sm: KvStateMachine;
  applied: number;
  conf: ConfState;
  pausedUntil: number;
  /** Paused and not yet resumed: messages for it pile up. */
  paused: boolean;
  tickPhase: number;
  restartAt: number;
  /** A crash armed to strike inside the next Ready. */
  crashIn?: CrashPoint;
  /** Only a Ready for which this holds triggers the armed crash. */
  crashWhen?: (rd: Ready) => boolean;
  removed: boolean;
  /** Client writes this node took (directly or to forward): op → client. */
  pendingWrites: Map<number, number>;
  /** Writes this process proposed, by log index, as RaftNode tracks them; lost in a crash. */
  proposals: PendingProposals<ProposedWrite>;
  /** By ReadIndex request id. */
  pendingReads: Map<string, PendingRead>;
  /** Ids for this incarnation's reads, made as RaftNode makes them. */
  readIds: ReadIds;
  /** Times the node booted: its incarnation. */
  boots: number;
}

/** A member whose process is running. */
export type LiveMember = Member & { node: SimNode };

export function isAlive(m: Member): m is LiveMember {
  return m.node !== undefined;
}
