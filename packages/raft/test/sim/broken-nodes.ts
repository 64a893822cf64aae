import { RawSimNode, type SimRaftConfig } from '../../src/sim/raw-node-adapter.js';
import type { SimNodeFactory, SimNodeOptions } from '../../src/sim/node.js';
import { EntryType, type Ready } from '../../src/types.js';

/**
 * Deliberately broken nodes: each breaks one rule the edge must keep, so the tests can show
 * that the simulator's checks notice. Each wraps the real core and corrupts what crosses the
 * Ready boundary; the core itself stays correct.
 */
abstract class Broken extends RawSimNode {
  private original?: Ready;
  override ready(): Ready {
    const rd = super.ready();
    this.original = rd;
    return this.corrupt({ ...rd });
  }
  override advance(rd: Ready): void {
    super.advance(rd === this.original || !this.original ? rd : this.original);
    this.original = undefined;
  }
  protected abstract corrupt(rd: Ready): Ready;
}

/** Never persists its vote: after a restart it may vote twice in one term. */
class ForgetsVote extends Broken {
  protected corrupt(rd: Ready): Ready {
    if (rd.hardState) rd.hardState = { ...rd.hardState, vote: '' };
    return rd;
  }
}

/** Persists a different command than the one it was sent, on one node. */
class CorruptsLog extends Broken {
  protected corrupt(rd: Ready): Ready {
    rd.entries = rd.entries.map((e) =>
      e.type === EntryType.Normal && e.data.length > 0 ? { ...e, data: Uint8Array.from([...e.data, 32]) } : e,
    );
    return rd;
  }
}

/** Applies a different command than the one committed, on one node. */
class CorruptsApply extends Broken {
  protected corrupt(rd: Ready): Ready {
    rd.committedEntries = rd.committedEntries.map((e) =>
      e.type === EntryType.Normal && e.data.length > 0 ? { ...e, data: Uint8Array.from([...e.data, 32]) } : e,
    );
    return rd;
  }
}

/** Answers a read at once from its own state, without asking a quorum (a "local read"). */
class ReadsLocally extends RawSimNode {
  private reads: Uint8Array[] = [];
  override readIndex(context: Uint8Array): void {
    this.reads.push(context);
  }
  override hasReady(): boolean {
    return this.reads.length > 0 || super.hasReady();
  }
  override ready(): Ready {
    const rd = super.ready();
    rd.readStates = [...rd.readStates, ...this.reads.map((context) => ({ index: 0, context }))];
    this.reads = [];
    return rd;
  }
}

type Ctor = new (opts: SimNodeOptions, config?: SimRaftConfig) => RawSimNode;

/** A factory that builds `Bad` for the nodes in `which` (all when omitted), real nodes otherwise. */
export function brokenFactory(
  Bad: Ctor,
  config: SimRaftConfig = {},
  which?: readonly string[],
): SimNodeFactory {
  return (opts) => (!which || which.includes(opts.id) ? new Bad(opts, config) : new RawSimNode(opts, config));
}

export const broken = { ForgetsVote, CorruptsLog, CorruptsApply, ReadsLocally };
