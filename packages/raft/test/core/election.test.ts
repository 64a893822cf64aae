import { expect } from 'chai';
import { MessageType, Role } from '../../src/types.js';
import { drain, lone, msg, Network } from './helpers.js';

/** Ticks `ticks` times and returns the terms seen on `id` (to measure election churn). */
function termsOver(net: Network, ticks: number): { first: number; last: number; leaders: Set<string> } {
  const leaders = new Set<string>();
  const first = Math.max(...[...net.nodes.keys()].map((id) => net.raw(id).status().term));
  for (let i = 0; i < ticks; i++) {
    net.tick(1);
    const l = net.leader();
    if (l) leaders.add(l);
  }
  const last = Math.max(...[...net.nodes.keys()].map((id) => net.raw(id).status().term));
  return { first, last, leaders };
}

describe('core/election', () => {
  it('a leader is elected, appends a no-op and commits it', () => {
    const net = new Network(['a', 'b', 'c']);
    const l = net.tickUntilLeader();
    const st = net.raw(l).status();
    expect(st.commit).to.equal(st.lastIndex);
    expect(net.node(l).appliedEntries.map((e) => e.term)).to.deep.equal([st.term]);
  });

  it('CheckQuorum: a leader cut off from its quorum steps down within an election timeout', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.isolate('a');
    net.tick(10, ['a']);
    // two rounds of the check at most: the first may still see answers from before the cut
    net.tick(10, ['a']);
    expect(net.raw('a').status().role).to.equal(Role.Follower);
  });

  it('PreVote: a node back from a partition does not disrupt the leader (its term stays)', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    const heal = net.isolate('c');
    net.tick(100);
    // c kept pre-campaigning without bumping its term
    expect(net.raw('c').status().term).to.equal(net.raw('a').status().term);
    heal();
    const { first, last } = termsOver(net, 50);
    expect(last).to.equal(first);
    expect(net.leader()).to.equal('a');
  });

  it('a follower that hears its leader ignores vote requests (without CheckQuorum it would not)', () => {
    for (const checkQuorum of [true, false]) {
      const net = new Network(['a', 'b', 'c'], { checkQuorum, preVote: false });
      net.campaign('a');
      net.tick(2);
      net.campaign('c');
      expect(net.leader(), `checkQuorum ${checkQuorum}`).to.equal(checkQuorum ? 'a' : 'c');
    }
  });

  it('no election livelock when only the link a<->c is cut (partial partition)', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.partition(['a'], ['c']);
    const churn = termsOver(net, 300);
    // At most one change of leadership, then stable, and the cluster still commits.
    expect(churn.last - churn.first).to.be.at.most(2);
    const l = net.leader()!;
    const before = net.raw(l).status().commit;
    net.propose(l, 'x');
    net.tick(2);
    expect(net.raw(l).status().commit).to.be.above(before);
    const { first, last } = termsOver(net, 200);
    expect(last).to.equal(first);
  });

  it('no election livelock with a one-way cut from the leader to a follower', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.cutOneWay('a', 'c');
    const churn = termsOver(net, 300);
    expect(churn.last - churn.first).to.be.at.most(2);
    const { first, last } = termsOver(net, 200);
    expect(last).to.equal(first);
    const l = net.leader()!;
    net.propose(l, 'y');
    net.tick(2);
    expect(net.node(l).applied).to.include('y');
  });

  it('no election livelock with a bridge node between two halves of a 5-node cluster', () => {
    for (const seed of [1, 7, 42]) {
      const net = new Network(['a', 'b', 'c', 'd', 'e'], { seed });
      net.campaign('a');
      // {a, b} and {d, e} cannot talk; c talks to everyone.
      net.partition(['a', 'b'], ['d', 'e']);
      termsOver(net, 300);
      const { first, last, leaders } = termsOver(net, 300);
      expect(last - first, `seed ${seed}`).to.equal(0);
      expect(leaders.size).to.equal(1);
      const l = net.leader()!;
      net.propose(l, 'z');
      net.tick(3);
      expect(net.node(l).applied).to.include('z');
    }
  });

  it('elections always converge after random partitions heal (safety: one leader per term)', () => {
    const net = new Network(['a', 'b', 'c', 'd', 'e'], { seed: 3 });
    const leaderOfTerm = new Map<number, string>();
    const ids = ['a', 'b', 'c', 'd', 'e'];
    let x = 12345;
    const rnd = (n: number) => {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      return x % n;
    };
    for (let round = 0; round < 20; round++) {
      net.clearFilters();
      const cut = ids.filter(() => rnd(2) === 0);
      net.partition(
        cut,
        ids.filter((i) => !cut.includes(i)),
      );
      for (let t = 0; t < 40; t++) {
        net.tick(1);
        for (const id of ids) {
          const s = net.raw(id).status();
          if (s.role !== Role.Leader) continue;
          const prev = leaderOfTerm.get(s.term);
          expect(prev === undefined || prev === id, `two leaders in term ${s.term}`).to.equal(true);
          leaderOfTerm.set(s.term, id);
        }
      }
    }
    net.clearFilters();
    const l = net.tickUntilLeader(100);
    net.propose(l, 'after');
    net.tick(3);
    for (const id of ids) expect(net.node(id).applied, id).to.include('after');
  });

  it('a refused vote request does not restart the election timer (a stale candidate cannot stall elections)', () => {
    // Without PreVote, a candidate with a stale log campaigns every 9 ticks at a higher term. The
    // up-to-date node must still time out and campaign: adopting the term alone is no reason to wait.
    const n = lone('a', ['a', 'b', 'c'], { term: 1, terms: [1, 1, 1], config: { checkQuorum: false } });
    let campaigned = false;
    for (let t = 1; t <= 100 && !campaigned; t++) {
      n.raw.tick();
      if (t % 9 === 0) {
        const term = n.raw.status().term + 1;
        n.raw.step(msg({ type: MessageType.Vote, from: 'b', to: 'a', term, index: 1, logTerm: 1 }));
      }
      campaigned = drain(n).some((m) => m.type === MessageType.Vote && m.from === 'a');
    }
    expect(campaigned).to.equal(true);
  });

  it('a pre-candidate does not bump its term until it has a quorum of pre-votes', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    const heal = net.isolate('b');
    net.tick(60);
    const sent = net.sent.filter((m) => m.from === 'b' && m.type === MessageType.Vote);
    expect(sent).to.have.length(0);
    heal();
  });
});
