import type { ConfChange, ConfState, Message, NodeId, Ready, Rng } from '../types.js';
import type { LogStorage } from '../types.js';

/**
 * What the simulator needs from a Raft node: the sans-I/O surface of the core. The simulator is
 * written against this, so the core (`RawNode`) plugs in through a thin adapter, and tests plug
 * in deliberately broken nodes to prove that the checks fire.
 *
 * propose, proposeConfChange and readIndex throw when the node refuses (not the leader, a change
 * already pending...): the simulator then knows the operation did not happen. Like RaftNode,
 * the simulator forwards a follower's writes itself (ForwardPropose, see proposals.ts), so a
 * follower's core refuses them.
 */
export interface SimNode {
  tick(): void;
  step(msg: Message): void;
  /** Where the leader appended the command. */
  propose(data: Uint8Array): { index: number; term: number };
  proposeConfChange(cc: ConfChange): unknown;
  readIndex(context: Uint8Array): void;
  hasReady(): boolean;
  ready(): Ready;
  advance(rd: Ready): void;
  /** The Snapshot message to `to` arrived (ok) or was lost; the leader waits for this. */
  reportSnapshot(to: NodeId, ok: boolean): void;
  /** The membership as of the applied index (conf changes apply themselves in advance()). */
  conf(): ConfState;
  /** Starts an election now (scenario tests force elections with it). */
  campaign?(): void;
  /** Hands leadership to voter `to` (leader only). */
  transferLeader?(to: NodeId): void;
}

export interface SimNodeOptions {
  id: NodeId;
  storage: LogStorage;
  /** The last index the application applied (from its snapshot): not re-delivered. */
  applied: number;
  rng: Rng;
}

export type SimNodeFactory = (opts: SimNodeOptions) => SimNode;

/**
 * How a harness processes a Ready. The defaults are what RaftNode does in production; the
 * broken orders exist so that tests can show the simulator catches them.
 */
export interface ReadyDiscipline {
  /** Sync the write to disk before sending (false: the OS may lose it in a crash). */
  syncBeforeSend: boolean;
  /**
   * A leader sends its Ready's messages first and persists after, as RaftNode's
   * `leaderParallelPersist` does (default true); every other node persists first.
   */
  leaderSendsFirst?: boolean;
}
