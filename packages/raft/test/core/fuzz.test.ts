/**
 * A small randomized check of the core under message loss, reordering, duplication, partitions,
 * crashes and compaction, with Raft's safety properties checked after every step and liveness
 * checked at the end. The simulator (src/sim) is the thorough version; this one runs in the
 * default suite and is deterministic (seeded).
 */
import { expect } from 'chai';
import { type ConfChange, ConfChangeType, type Entry, MessageType, Role } from '../../src/types.js';
import { NotLeaderError, ProposalDroppedError, RaftArgumentError } from '../../src/core/errors.js';
import { MemoryStorage } from '../../src/core/memory-storage.js';
import { SeededRng } from '../../src/core/rng.js';
import { dec, enc, Network } from './helpers.js';

interface Options {
  nodes: number;
  steps: number;
  /** Also add learners, promote them and remove members (one at a time). */
  membership: boolean;
  /** Hold Readies across other input (an edge with asynchronous fsync). */
  async: boolean;
}

function runSeed(seed: number, opts: Options): void {
  const rng = new SeededRng(seed);
  // Every node in the network, members or not (spares join as learners; removed nodes stay).
  const ids = ['n1', 'n2', 'n3', 'n4', 'n5'].slice(0, opts.nodes);
  const spares = ['x1', 'x2'];
  const net = new Network(ids, { seed: seed * 10, maxSizePerMsg: 64, maxInflightMsgs: 4 });
  const leaderOfTerm = new Map<number, string>();
  /** index -> the entry applied there by anyone (state-machine safety). */
  const appliedAt = new Map<number, Entry>();
  const seenApplied = new Map<string, number>();
  /** index -> a term at or after the one in which it was committed. */
  const committedBy = new Map<number, number>();
  let proposals = 0;
  let restarts = 0;
  const where = (what: string) => `seed ${seed}: ${what}`;
  const trace = Object.assign(
    (line: string) => {
      if (trace.enabled) console.log(line);
    },
    { enabled: process.env.FUZZ_TRACE === String(seed) },
  );

  /** read context -> the highest commit index anywhere when the read was issued. */
  const reads = new Map<string, number>();
  const readsSeen = new Map<string, number>();

  const checkSafety = () => {
    for (const id of ids) {
      const rs = net.node(id).readStates;
      for (const r of rs.slice(readsSeen.get(id) ?? 0)) {
        const floor = reads.get(dec(r.context));
        expect(floor, where(`unknown read ${dec(r.context)}`)).to.not.equal(undefined);
        expect(r.index, where(`stale read ${dec(r.context)} at ${id}`)).to.be.at.least(floor!);
      }
      readsSeen.set(id, rs.length);
    }
    for (const id of ids) {
      const n = net.node(id);
      const s = n.raw.status();
      // election safety
      if (s.role === Role.Leader) {
        const prev = leaderOfTerm.get(s.term);
        expect(
          prev === undefined || prev === id,
          where(`two leaders in term ${s.term}: ${prev}, ${id}`),
        ).to.equal(true);
        leaderOfTerm.set(s.term, id);
      }
      // state-machine safety: whatever anyone applied at an index, everyone applies the same
      const from = seenApplied.get(id) ?? 0;
      for (const e of n.appliedEntries.slice(from)) {
        const other = appliedAt.get(e.index);
        if (other) {
          expect(
            [other.term, dec(other.data)],
            where(`${id} applied a different entry at ${e.index}`),
          ).to.deep.equal([e.term, dec(e.data)]);
        } else {
          appliedAt.set(e.index, e);
          // It was committed in a term <= the applier's current term.
          committedBy.set(e.index, s.term);
        }
      }
      seenApplied.set(id, n.appliedEntries.length);
    }
    // leader completeness: a leader of a later term than a commit holds that entry (above its
    // snapshot). Leaders of older terms may linger, cut off; they are not bound by it.
    for (const id of ids) {
      const n = net.node(id);
      const s = n.raw.status();
      if (s.role !== Role.Leader) continue;
      for (const [index, e] of appliedAt) {
        if (index < n.storage.firstIndex() || s.term <= committedBy.get(index)!) continue;
        expect(index, where(`leader ${id} misses committed index ${index}`)).to.be.at.most(s.lastIndex);
        if (index <= n.storage.lastIndex()) {
          expect(
            n.storage.term(index),
            where(`leader ${id} has another term at committed ${index}`),
          ).to.equal(e.term);
        }
      }
    }
  };

  const checkLogMatching = () => {
    for (let i = 0; i < ids.length; i++) {
      for (let j = i + 1; j < ids.length; j++) {
        const a = net.node(ids[i]!).storage;
        const b = net.node(ids[j]!).storage;
        const lo = Math.max(a.firstIndex(), b.firstIndex());
        const hi = Math.min(a.lastIndex(), b.lastIndex());
        let matched = false;
        for (let k = hi; k >= lo; k--) {
          const same = a.term(k) === b.term(k);
          if (matched)
            expect(same, where(`log matching broken at ${k} between ${ids[i]} and ${ids[j]}`)).to.equal(true);
          else if (same) matched = true;
        }
      }
    }
  };

  const changeMembership = () => {
    const l = net.leader();
    if (!l) return;
    const conf = net.raw(l).status().conf;
    let cc: ConfChange | undefined;
    const spare = spares.find((id) => !ids.includes(id));
    if (spare && rng.int(2) === 0) {
      net.add(spare, new MemoryStorage(), seed * 1000 + ids.length);
      ids.push(spare);
      cc = { type: ConfChangeType.AddLearner, node: spare };
    } else if (conf.learners.length > 0 && rng.int(2) === 0) {
      cc = { type: ConfChangeType.PromoteLearner, node: conf.learners[rng.int(conf.learners.length)]! };
    } else if (conf.voters.length > 3) {
      cc = { type: ConfChangeType.RemoveNode, node: conf.voters[rng.int(conf.voters.length)]! };
    }
    if (!cc) return;
    try {
      net.raw(l).proposeConfChange(cc);
      trace(`conf change ${ConfChangeType[cc.type]} ${cc.node} at ${l}`);
    } catch (err) {
      if (!(err instanceof ProposalDroppedError || err instanceof RaftArgumentError)) throw err;
    }
  };

  for (let step = 0; step < opts.steps; step++) {
    const r = rng.int(100);
    if (r < 30) {
      // deliver a random message (reordering)
      if (net.queue.length > 0) {
        const [m] = net.queue.splice(rng.int(net.queue.length), 1);
        if (rng.int(20) === 0) net.queue.push(m!); // duplicate
        trace(
          `deliver ${MessageType[m!.type]} ${m!.from}->${m!.to} t${m!.term} i${m!.index} lt${m!.logTerm} c${m!.commit} n${m!.entries.length}${m!.entries.map((e) => `(${e.index},${e.term})`).join('')} rej${m!.reject} hint${m!.rejectHint}`,
        );
        net.raw(m!.to).step(m!);
      }
    } else if (r < 35) {
      if (net.queue.length > 0) net.queue.splice(rng.int(net.queue.length), 1); // loss
    } else if (r < 60) {
      for (const id of ids) if (rng.int(4) !== 0) net.raw(id).tick();
    } else if (r < 75) {
      const id = ids[rng.int(ids.length)]!;
      try {
        net.raw(id).propose(enc(`s${seed}-p${proposals++}`));
      } catch (err) {
        if (!(err instanceof NotLeaderError || err instanceof ProposalDroppedError)) throw err;
      }
    } else if (r < 80) {
      net.clearFilters();
      if (rng.int(2) === 0) {
        const cut = ids.filter(() => rng.int(2) === 0);
        const rest = ids.filter((id) => !cut.includes(id));
        if (rng.int(3) === 0 && cut[0] && rest[0]) net.cutOneWay(cut[0], rest[0]);
        else net.partition(cut, rest);
      }
    } else if (r < 83) {
      const id = ids[rng.int(ids.length)]!;
      trace(`restart ${id}`);
      net.restart(id, seed * 100 + restarts++);
    } else if (r < 86) {
      const id = ids[rng.int(ids.length)]!;
      const st = net.raw(id).status();
      if (st.applied > net.node(id).storage.snapshot().meta.index) net.compact(id, rng.int(3));
    } else if (r < 88) {
      const l = net.leader();
      const other = ids[rng.int(ids.length)]!;
      if (l && other !== l && net.raw(l).status().conf.voters.includes(other))
        net.raw(l).transferLeader(other);
    } else if (r < 90) {
      // a linearizable read must see every write committed before it was issued
      const id = ids[rng.int(ids.length)]!;
      const ctx = `read-${reads.size}`;
      const floor = Math.max(...ids.map((x) => net.raw(x).status().commit));
      try {
        net.raw(id).readIndex(enc(ctx));
        reads.set(ctx, floor);
      } catch (err) {
        if (!(err instanceof NotLeaderError)) throw err;
      }
    } else if (r < 93 && opts.membership) {
      changeMembership();
    } else {
      net.flushReadies();
    }
    if (opts.async) {
      // Readies are taken and handled at random moments: other input arrives in between, as
      // it does while an edge waits for its fsync.
      for (const id of ids) {
        if (rng.int(2) === 0) net.finishReady(id);
        if (rng.int(2) === 0) net.beginReady(id);
      }
    } else {
      net.flushReadies();
    }
    if (trace.enabled) {
      for (const id of ids) {
        const st = net.raw(id).status();
        const n = net.node(id);
        const terms: number[] = [];
        for (let i = n.storage.firstIndex(); i <= n.storage.lastIndex(); i++) terms.push(n.storage.term(i));
        trace(
          `   ${id} ${st.role} t${st.term} v${st.vote} c${st.commit} a${st.applied} log@${n.storage.firstIndex()}:${terms.join(',')}`,
        );
      }
    }
    checkSafety();
  }
  checkLogMatching();

  // liveness: heal everything; a leader emerges and a new proposal reaches every node
  net.clearFilters();
  net.deliver();
  const l = net.tickUntilLeader(200);
  let done = false;
  for (let attempt = 0; attempt < 5 && !done; attempt++) {
    const leader = net.leader() ?? l;
    try {
      net.raw(leader).propose(enc(`final-${seed}`));
    } catch (err) {
      if (!(err instanceof ProposalDroppedError || err instanceof NotLeaderError)) throw err;
    }
    net.tick(15);
    const conf = net.raw(net.leader() ?? l).status().conf;
    done = [...conf.voters, ...conf.learners].every((id) => net.node(id).applied.includes(`final-${seed}`));
  }
  if (!done && process.env.FUZZ_DEBUG) {
    for (const id of ids) {
      const st = net.raw(id).status();
      console.log(
        id,
        JSON.stringify({ ...st, applied: st.applied }),
        net.node(id).applied.slice(-3),
        net.node(id).storage.firstIndex(),
      );
    }
  }
  expect(done, where('the final proposal did not reach every node')).to.equal(true);
  checkSafety();
  checkLogMatching();
}

describe('core/fuzz: safety under faults, liveness after healing', () => {
  // FUZZ_SEEDS=N FUZZ_START=S widen the search outside the default suite.
  const seeds = Number(process.env.FUZZ_SEEDS ?? 60);
  const start = Number(process.env.FUZZ_START ?? 1);
  const steps = Number(process.env.FUZZ_STEPS ?? 400);
  for (const [nodes, membership, async] of [
    [3, false, false],
    [5, false, false],
    [3, true, false],
    [5, true, false],
    [3, true, true],
    [5, true, true],
  ] as const) {
    const what = `${nodes} nodes${membership ? ', membership changes' : ''}${async ? ', Readies held across input' : ''}`;
    it(`${what}, ${seeds} seeds`, function () {
      this.timeout(0);
      for (let seed = start; seed < start + seeds; seed++) runSeed(seed, { nodes, steps, membership, async });
    });
  }
});
