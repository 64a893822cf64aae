import type { RaftConfig } from '../core/config.js';
import { RawNode } from '../core/raw-node.js';
import type { ConfState, NodeId } from '../types.js';
import type { SimNode, SimNodeFactory, SimNodeOptions } from './node.js';

/**
 * The tunables a simulation may set on every node (ids, storage and rng come from the simulator,
 * and proposals are forwarded by the harness, as RaftNode forwards them).
 */
export type SimRaftConfig = Omit<RaftConfig, 'id' | 'storage' | 'rng' | 'applied' | 'forwardProposals'>;

/** The real core, as the simulator drives it. */
export class RawSimNode implements SimNode {
  readonly raw: RawNode;

  constructor(opts: SimNodeOptions, config: SimRaftConfig = {}) {
    this.raw = new RawNode({
      ...config,
      id: opts.id,
      storage: opts.storage,
      rng: opts.rng,
      applied: opts.applied,
      forwardProposals: false,
    });
  }

  tick(): void {
    this.raw.tick();
  }
  step(msg: Parameters<RawNode['step']>[0]): void {
    this.raw.step(msg);
  }
  propose(data: Uint8Array): { index: number; term: number } {
    const res = this.raw.propose(data);
    if (res.forwarded) throw new Error('the core forwarded a proposal although forwarding is off');
    return res;
  }
  proposeConfChange(cc: Parameters<RawNode['proposeConfChange']>[0]): unknown {
    return this.raw.proposeConfChange(cc);
  }
  readIndex(context: Uint8Array): void {
    this.raw.readIndex(context);
  }
  hasReady(): boolean {
    return this.raw.hasReady();
  }
  ready(): ReturnType<RawNode['ready']> {
    return this.raw.ready();
  }
  advance(rd: ReturnType<RawNode['ready']>): void {
    this.raw.advance(rd);
  }
  reportSnapshot(to: NodeId, ok: boolean): void {
    this.raw.reportSnapshot(to, ok);
  }
  conf(): ConfState {
    return this.raw.status().conf;
  }
  campaign(): void {
    this.raw.campaign();
  }
  transferLeader(to: NodeId): void {
    this.raw.transferLeader(to);
  }
}

export function rawNodeFactory(config: SimRaftConfig = {}): SimNodeFactory {
  return (opts) => new RawSimNode(opts, config);
}
