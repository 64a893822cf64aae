import assert from 'node:assert/strict';
import { MemoryStorage } from '../../src/core/memory-storage.js';
import { InvariantChecker } from '../../src/sim/invariants.js';
import { rawNodeFactory, RawSimNode } from '../../src/sim/raw-node-adapter.js';
import { runSimulation, Simulation, type SimOptions, type SimResult } from '../../src/sim/simulation.js';
import { type Entry, EntryType, Role } from '../../src/types.js';
import { broken, brokenFactory } from './broken-nodes.js';

function runSeeds(from: number, count: number, options: Omit<SimOptions, 'seed'>): SimResult[] {
  return Array.from({ length: count }, (_, i) => runSimulation({ ...options, seed: from + i }));
}

function failures(results: SimResult[]): string[] {
  return results
    .filter((r) => r.violations.length > 0 || r.linearizable !== 'ok')
    .map(
      (r) =>
        `seed ${r.seed}: ${r.linearizable}; ${r.violations.map((v) => `${v.property}: ${v.detail}`).join('; ')}`,
    );
}

/** The first seed in [from, from+count) whose run breaks `property`, or undefined. */
function firstSeedBreaking(
  property: string,
  from: number,
  count: number,
  options: Omit<SimOptions, 'seed'>,
): number | undefined {
  for (let seed = from; seed < from + count; seed++) {
    const r = runSimulation({ ...options, seed });
    if (r.violations.some((v) => v.property === property)) return seed;
  }
  return undefined;
}

describe('raft simulator', () => {
  describe('the real core survives the faults', () => {
    it('60 seeds of 3 nodes: no violation, every history linearizable', () => {
      const results = runSeeds(1, 60, { nodes: 3, factory: rawNodeFactory() });
      assert.deepEqual(failures(results), []);
      // The faults really happened: a run that injected nothing would prove nothing.
      const sum = (f: (r: SimResult) => number) => results.reduce((a, r) => a + f(r), 0);
      assert.ok(sum((r) => r.crashes) > 60, 'crashes');
      assert.ok(sum((r) => r.elections) > 60, 'elections');
      assert.ok(
        sum((r) => r.network.dropped) > 0 && sum((r) => r.network.duplicated) > 0,
        'drops and duplicates',
      );
      assert.ok(sum((r) => r.network.blocked) > 0, 'partitions');
      assert.ok(sum((r) => r.ops.unknown) > 0, 'operations with unknown outcome');
      assert.ok(sum((r) => r.forwarded) > 60, 'writes forwarded to the leader (ForwardPropose)');
      assert.ok(sum((r) => r.ops.ok) > 60 * 50, 'completed operations');
    });

    it('20 seeds of 5 nodes', () => {
      assert.deepEqual(failures(runSeeds(1001, 20, { nodes: 5, factory: rawNodeFactory() })), []);
    });

    it('20 seeds of 3 nodes with learners added, promoted and voters removed', () => {
      const results = runSeeds(2001, 20, { nodes: 3, membership: true, factory: rawNodeFactory() });
      assert.deepEqual(failures(results), []);
      assert.ok(results.reduce((a, r) => a + r.confChanges, 0) > 10, 'membership changes applied');
      assert.ok(results.reduce((a, r) => a + r.snapshotsInstalled, 0) > 5, 'snapshots installed');
    });

    it('replays a seed exactly', () => {
      const a = runSimulation({ seed: 77, nodes: 3, factory: rawNodeFactory(), trace: true });
      const b = runSimulation({ seed: 77, nodes: 3, factory: rawNodeFactory(), trace: true });
      assert.ok(a.trace.length > 1000);
      assert.deepEqual(a.trace, b.trace);
      const c = runSimulation({ seed: 78, nodes: 3, factory: rawNodeFactory(), trace: true });
      assert.notDeepEqual(a.trace, c.trace);
    });

    it('refuses bad options with the field named', () => {
      assert.throws(
        () => new Simulation({ seed: 1, nodes: 0, factory: rawNodeFactory() }),
        /nodes: must be a positive integer/,
      );
      assert.throws(
        () => new Simulation({ seed: 1.5, nodes: 3, factory: rawNodeFactory() }),
        /seed: must be a safe integer/,
      );
    });
  });

  describe('the checks fire on broken nodes', () => {
    it('log matching: a node that persists different bytes than it was sent', () => {
      const r = runSimulation({ seed: 1, nodes: 3, factory: brokenFactory(broken.CorruptsLog, {}, ['n2']) });
      assert.ok(
        r.violations.some((v) => v.property === 'log-matching'),
        JSON.stringify(r.violations[0]),
      );
    });

    it('state-machine safety: a node that applies something else than what was committed', () => {
      const r = runSimulation({
        seed: 1,
        nodes: 3,
        factory: brokenFactory(broken.CorruptsApply, {}, ['n3']),
      });
      assert.ok(r.violations.some((v) => v.property === 'state-machine-safety'));
    });

    it('linearizability: nodes that serve reads from local state without ReadIndex', () => {
      const seed = firstSeedBreaking('linearizability', 1, 10, {
        nodes: 3,
        factory: brokenFactory(broken.ReadsLocally),
      });
      assert.notEqual(seed, undefined, 'no seed in 1..10 caught the stale reads');
    });

    it('an edge that acknowledges before it syncs loses committed entries in a crash', () => {
      const options = {
        nodes: 3,
        chaos: 2,
        factory: rawNodeFactory(),
        discipline: { syncBeforeSend: false },
      };
      const seed = firstSeedBreaking('state-machine-safety', 1, 120, options);
      assert.notEqual(seed, undefined, 'no seed in 1..120 caught the early acknowledgements');
    });

    it('election safety: a node that does not persist its vote votes twice in one term', () => {
      // Votes are only asked when the candidate asks; PreVote and CheckQuorum are off so that
      // the test can make n1 and then n3 campaign in the same term.
      const sim = forcedDoubleVote(brokenFactory(broken.ForgetsVote, { preVote: false, checkQuorum: false }));
      assert.ok(
        sim.violations.some((v) => v.property === 'election-safety'),
        JSON.stringify(sim.violations),
      );
    });

    it('the same forced double vote is refused by the real core', () => {
      const sim = forcedDoubleVote(rawNodeFactory({ preVote: false, checkQuorum: false }));
      assert.deepEqual(sim.violations, []);
      assert.notEqual(sim.roleOf('n3').role, Role.Leader);
    });

    it('liveness: nodes that never campaign leave the cluster without a leader', () => {
      class Frozen extends RawSimNode {
        override tick(): void {}
      }
      const r = runSimulation({ seed: 1, nodes: 3, chaosTicks: 20, factory: (o) => new Frozen(o) });
      assert.ok(r.violations.some((v) => v.property === 'liveness' && /no leader/.test(v.detail)));
    });
  });

  describe('InvariantChecker', () => {
    const entry = (index: number, term: number, byte = 1): Entry => ({
      index,
      term,
      type: EntryType.Normal,
      data: Uint8Array.of(byte),
    });
    const logWith = (...entries: Entry[]): MemoryStorage => {
      const s = new MemoryStorage();
      s.append(entries);
      return s;
    };

    it('flags two leaders in one term, not one leader seen twice', () => {
      const inv = new InvariantChecker();
      inv.leader('a', 2);
      inv.leader('a', 2);
      inv.leader('b', 3);
      assert.equal(inv.violations.length, 0);
      inv.leader('b', 2);
      assert.equal(inv.violations[0]?.property, 'election-safety');
    });

    it('flags logs that hold different entries at the same index and term', () => {
      const inv = new InvariantChecker();
      const a = logWith(entry(1, 1), entry(2, 1));
      inv.durableAppend('a', [entry(1, 1), entry(2, 1)], a);
      inv.durableAppend('b', [entry(1, 1)], logWith(entry(1, 1)));
      assert.equal(inv.violations.length, 0);
      inv.durableAppend('c', [entry(2, 1, 9)], logWith(entry(1, 1), entry(2, 1, 9)));
      assert.equal(inv.violations[0]?.property, 'log-matching');
    });

    it('flags logs that agree on an entry but not on the term before it', () => {
      const inv = new InvariantChecker();
      inv.durableAppend('a', [entry(1, 1), entry(2, 3)], logWith(entry(1, 1), entry(2, 3)));
      inv.durableAppend('b', [entry(1, 2), entry(2, 3)], logWith(entry(1, 2), entry(2, 3)));
      assert.ok(inv.violations.some((v) => v.property === 'log-matching'));
    });

    it('flags two nodes applying different entries at one index, and out-of-order applies', () => {
      const inv = new InvariantChecker();
      inv.applied('a', entry(1, 1));
      inv.applied('b', entry(1, 1));
      assert.equal(inv.violations.length, 0);
      inv.applied('c', entry(1, 1, 7));
      assert.equal(inv.violations[0]?.property, 'state-machine-safety');
      inv.applied('a', entry(3, 1));
      assert.equal(inv.violations[1]?.property, 'apply-order');
    });

    it('flags a leader of a later term that lacks a committed entry', () => {
      const inv = new InvariantChecker();
      inv.leaderCommitted('a', 1, 2, logWith(entry(1, 1), entry(2, 1)));
      inv.leaderHolds('b', 2, logWith(entry(1, 1), entry(2, 1), entry(3, 2)));
      inv.leaderHolds('a', 1, logWith(entry(1, 1)));
      assert.equal(inv.violations.length, 0, 'the same term is not bound');
      inv.leaderHolds('c', 3, logWith(entry(1, 1)));
      assert.equal(inv.violations[0]?.property, 'leader-completeness');
    });
  });
});

/**
 * n1 campaigns and wins n2's vote in term t+1; n2 crashes and restarts; n3, which never heard
 * of term t+1, campaigns in the same term and asks n2. A node that kept its vote refuses.
 */
function forcedDoubleVote(factory: SimOptions['factory']): Simulation {
  const sim = new Simulation({ seed: 5, nodes: 3, factory, chaos: 0, autoRestart: false, compactEvery: 0 });
  const leader = sim.awaitStableLeader(100);
  assert.ok(leader, 'no first leader');
  sim.runTicks(5);
  const term = sim.roleOf('n2').term;
  sim.network.partition([['n1'], ['n3']]); // n1 and n3 cannot hear each other; both hear n2
  sim.network.blockOneWay('n3', 'n2');
  sim.network.blockOneWay('n2', 'n3');
  sim.campaign('n1');
  // As soon as n2 has voted (its durable term moved on), cut n1 → n2 so that n2 never sees
  // n1's appends as leader: its log stays as short as n3's.
  const voted = sim.runUntil(() => sim.diskOf('n2').durable.initialState().hardState.term > term, 5);
  assert.ok(voted, 'n2 never voted for n1');
  sim.network.blockOneWay('n1', 'n2');
  sim.runUntil(() => sim.roleOf('n1').role === Role.Leader, 5);
  assert.equal(sim.roleOf('n1').role, Role.Leader, 'n1 did not win');
  sim.crashNode('n2');
  sim.restartNode('n2');
  sim.network.heal();
  sim.network.partition([['n1'], ['n2', 'n3']]);
  // n3 is still in term t: its campaign asks for term t+1, the term n1 already leads.
  assert.equal(sim.roleOf('n3').term, term);
  sim.campaign('n3');
  sim.runTicks(3);
  return sim;
}
