/**
 * The rules of the Raft paper (§5.1–5.4), one test each, in the manner of etcd's
 * raft_paper_test.go. Each test names the sentence of the paper it checks.
 */
import { expect } from 'chai';
import { MessageType, Role } from '../../src/types.js';
import { MemoryStorage } from '../../src/core/memory-storage.js';
import { drain, entry, lone, msg, Network, termsOf } from './helpers.js';

describe('core/paper §5.1: terms', () => {
  it('a node that sees a higher term adopts it and becomes a follower, whatever its role', () => {
    for (const role of [Role.Follower, Role.Candidate, Role.Leader]) {
      const n = lone('a', ['a', 'b', 'c'], { term: 1 });
      if (role !== Role.Follower) {
        n.raw.campaign();
        drain(n);
      }
      if (role === Role.Leader) {
        n.raw.step(msg({ type: MessageType.VoteResponse, from: 'b', to: 'a', term: 2 }));
        drain(n);
      }
      expect(n.raw.status().role).to.equal(role);
      n.raw.step(msg({ type: MessageType.Append, from: 'c', to: 'a', term: 5 }));
      const s = n.raw.status();
      expect(s.role, `from ${role}`).to.equal(Role.Follower);
      expect(s.term).to.equal(5);
      expect(s.leader).to.equal('c');
      // the new term reaches the hard state, to be persisted before the reply goes out
      expect(n.raw.ready().hardState?.term).to.equal(5);
    }
  });

  it('a node rejects a request with a stale term, and its reply carries its newer term', () => {
    const n = lone('a', ['a', 'b', 'c'], { term: 3, terms: [1, 2] });
    n.raw.step(
      msg({
        type: MessageType.Append,
        from: 'b',
        to: 'a',
        term: 2,
        index: 2,
        logTerm: 2,
        entries: [entry(3, 2)],
      }),
    );
    const out = drain(n);
    expect(n.storage.lastIndex()).to.equal(2); // nothing appended
    expect(out).to.have.length(1);
    expect(out[0]).to.include({ type: MessageType.AppendResponse, to: 'b', term: 3 });
    // a stale vote request is not granted
    n.raw.step(msg({ type: MessageType.Vote, from: 'c', to: 'a', term: 2, index: 9, logTerm: 9 }));
    expect(drain(n).filter((m) => m.type === MessageType.VoteResponse && !m.reject)).to.have.length(0);
    expect(n.raw.status().vote).to.equal('');
  });
});

describe('core/paper §5.2: leader election', () => {
  it('a follower that hears nothing campaigns: new term, votes for itself, asks every voter', () => {
    const n = lone('a', ['a', 'b', 'c'], { term: 1 });
    for (let i = 0; i < 20; i++) n.raw.tick();
    const out = drain(n);
    const s = n.raw.status();
    expect(s.role).to.equal(Role.Candidate);
    expect(s.term).to.equal(2);
    expect(s.vote).to.equal('a');
    expect(out.map((m) => [m.type, m.to, m.term])).to.deep.equal([
      [MessageType.Vote, 'b', 2],
      [MessageType.Vote, 'c', 2],
    ]);
  });

  it('election timeouts are randomized in [electionTick, 2*electionTick)', () => {
    const seen = new Set<number>();
    for (let seed = 1; seed <= 60; seed++) {
      const n = lone('a', ['a', 'b', 'c'], { term: 1, seed });
      let t = 0;
      while (n.raw.status().role === Role.Follower) {
        n.raw.tick();
        t++;
        expect(t).to.be.below(20);
      }
      expect(t).to.be.at.least(10);
      seen.add(t);
    }
    // spread: most of the 10 possible values occur
    expect(seen.size).to.be.at.least(8);
  });

  it('randomized timeouts make it likely that a single follower times out first', () => {
    let conflicts = 0;
    const rounds = 300;
    for (let r = 0; r < rounds; r++) {
      const ids = ['a', 'b', 'c', 'd', 'e'];
      const nodes = ids.map((id, i) => lone(id, ids, { term: 1, seed: r * 5 + i + 1 }));
      for (let t = 0; t < 20; t++) {
        for (const n of nodes) n.raw.tick();
        const started = nodes.filter((n) => n.raw.status().role !== Role.Follower).length;
        if (started === 0) continue;
        if (started > 1) conflicts++;
        break;
      }
    }
    // etcd's bound for 5 nodes: fewer than 30% of elections start with a tie
    expect(conflicts / rounds).to.be.below(0.3);
  });

  it('a candidate that neither wins nor loses starts a new election after a timeout', () => {
    const n = lone('a', ['a', 'b', 'c'], { term: 1 });
    n.raw.campaign();
    drain(n);
    expect(n.raw.status().term).to.equal(2);
    for (let i = 0; i < 20; i++) n.raw.tick();
    expect(n.raw.status()).to.include({ role: Role.Candidate, term: 3 });
  });

  it('a candidate wins with a majority of votes and loses with a majority of refusals', () => {
    const cases: Array<[number, boolean[], Role]> = [
      [3, [true], Role.Leader],
      [3, [false], Role.Candidate],
      [3, [false, false], Role.Follower],
      [5, [true, true], Role.Leader],
      [5, [true, false, false], Role.Candidate],
      [5, [false, false, false], Role.Follower],
    ];
    for (const [size, votes, want] of cases) {
      const ids = ['a', 'b', 'c', 'd', 'e'].slice(0, size);
      const n = lone('a', ids, { term: 1 });
      n.raw.campaign();
      drain(n);
      votes.forEach((granted, i) =>
        n.raw.step(
          msg({ type: MessageType.VoteResponse, from: ids[i + 1]!, to: 'a', term: 2, reject: !granted }),
        ),
      );
      expect(n.raw.status().role, `${size} voters, votes ${votes}`).to.equal(want);
    }
  });

  it('a node votes at most once per term, first come first served (and repeats the same vote)', () => {
    const n = lone('a', ['a', 'b', 'c'], { term: 1 });
    const ask = (from: string) => {
      n.raw.step(msg({ type: MessageType.Vote, from, to: 'a', term: 2, index: 0, logTerm: 0 }));
      return drain(n).find((m) => m.type === MessageType.VoteResponse)!;
    };
    expect(ask('b').reject).to.equal(false);
    expect(n.storage.initialState().hardState.vote).to.equal('b'); // persisted with the reply
    expect(ask('c').reject).to.equal(true);
    expect(ask('b').reject).to.equal(false);
  });

  it('a candidate that hears from a leader of its term becomes its follower', () => {
    const n = lone('a', ['a', 'b', 'c'], { term: 1 });
    n.raw.campaign();
    drain(n);
    n.raw.step(msg({ type: MessageType.Heartbeat, from: 'b', to: 'a', term: 2 }));
    expect(n.raw.status()).to.include({ role: Role.Follower, leader: 'b', term: 2 });
  });
});

describe('core/paper §5.4.1: the up-to-date check', () => {
  it('a vote is granted only to a candidate whose log is at least as up to date', () => {
    // voter's log: terms [1, 2, 2] (last index 3, last term 2)
    const cases: Array<[number, number, boolean]> = [
      [3, 2, true], // same
      [4, 2, true], // longer, same term
      [2, 2, false], // shorter, same term
      [1, 3, true], // higher last term wins even when shorter
      [9, 1, false], // lower last term loses even when longer
    ];
    for (const [index, logTerm, grant] of cases) {
      const n = lone('a', ['a', 'b', 'c'], { term: 2, terms: [1, 2, 2] });
      n.raw.step(msg({ type: MessageType.Vote, from: 'b', to: 'a', term: 3, index, logTerm }));
      const r = drain(n).find((m) => m.type === MessageType.VoteResponse)!;
      expect(r.reject, `candidate (${index}, ${logTerm})`).to.equal(!grant);
    }
  });
});

describe('core/paper §5.3: log replication', () => {
  it('the leader commits an entry once a majority stores it, not before, and followers then apply it', () => {
    const net = new Network(['a', 'b', 'c', 'd', 'e']);
    net.campaign('a');
    const cutThree = net.addFilter((m) => ['c', 'd', 'e'].includes(m.to));
    const before = net.raw('a').status().commit;
    net.propose('a', 'x');
    expect(net.raw('a').status().commit).to.equal(before); // a and b only: 2 of 5
    cutThree();
    const cutTwo = net.addFilter((m) => ['d', 'e'].includes(m.to));
    net.tick(1); // heartbeat: c asks for the entry
    expect(net.raw('a').status().commit).to.equal(before + 1); // a, b, c: 3 of 5
    expect(net.node('a').applied).to.deep.equal(['x']);
    expect(net.node('b').applied).to.deep.equal(['x']);
    cutTwo();
    net.tick(1);
    for (const id of ['c', 'd', 'e']) expect(net.node(id).applied, id).to.deep.equal(['x']);
  });

  it('the leader sends heartbeats every heartbeatTick, carrying a commit index the follower holds', () => {
    const net = new Network(['a', 'b', 'c'], { heartbeatTick: 3 });
    net.campaign('a');
    const cut = net.isolate('c');
    net.propose('a', 'x');
    const from = net.sent.length;
    net.tick(6, ['a']);
    const beats = net.sent.slice(from).filter((m) => m.type === MessageType.Heartbeat);
    expect(beats.map((m) => m.to)).to.deep.equal(['b', 'c', 'b', 'c']);
    // c has not acknowledged x: its heartbeat must not tell it to commit x
    expect(beats.find((m) => m.to === 'c')!.commit).to.be.below(net.raw('a').status().commit);
    expect(beats.find((m) => m.to === 'b')!.commit).to.equal(net.raw('a').status().commit);
    cut();
  });

  it('the consistency check: a follower refuses an append whose previous entry does not match', () => {
    const n = lone('a', ['a', 'b'], { term: 3, terms: [1, 2, 2] });
    const send = (index: number, logTerm: number) => {
      n.raw.step(
        msg({
          type: MessageType.Append,
          from: 'b',
          to: 'a',
          term: 3,
          index,
          logTerm,
          entries: [entry(index + 1, 3)],
        }),
      );
      return drain(n).find((m) => m.type === MessageType.AppendResponse)!;
    };
    expect(send(3, 3).reject).to.equal(true); // term differs at 3
    expect(send(4, 2).reject).to.equal(true); // no entry at 4
    expect(termsOf(n.storage)).to.deep.equal([1, 2, 2]);
    const ok = send(2, 2); // matches: replaces index 3
    expect(ok.reject).to.equal(false);
    expect(ok.index).to.equal(3);
    expect(termsOf(n.storage)).to.deep.equal([1, 2, 3]);
  });

  it('Figure 7: the leader brings each follower log (a)–(f) to its own', () => {
    const leaderTerms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    const followers: Record<string, number[]> = {
      a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
      b: [1, 1, 1, 4],
      c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
      d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
      e: [1, 1, 1, 4, 4, 4, 4],
      f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    };
    for (const [name, terms] of Object.entries(followers)) {
      // 'x' holds the leader's log too, so the leader can win its election whatever f's log.
      const net = new Network([], { preVote: false });
      const ids = ['leader', 'x', name];
      for (const [id, ts, seed] of [
        ['leader', leaderTerms, 1],
        ['x', leaderTerms, 2],
        [name, terms, 3],
      ] as const) {
        const s = new MemoryStorage();
        s.setConfState({ voters: ids, learners: [] });
        s.append(ts.map((t, i) => entry(i + 1, t)));
        s.setHardState({ term: 7, vote: '', commit: 0 });
        net.add(id, s, seed);
      }
      net.campaign('leader');
      expect(net.raw('leader').status().role).to.equal(Role.Leader);
      net.tick(3);
      const want = [...leaderTerms, 8];
      expect(termsOf(net.node(name).storage), `follower (${name})`).to.deep.equal(want);
      expect(net.raw(name).status().commit).to.equal(11);
    }
  });
});

describe('core/paper §5.4.2: Figure 8, committing entries from previous terms', () => {
  /**
   * The state of Figure 8 (c): S1 leads in term 4; the term-2 entry at index 2 is on S1, S2 and
   * now S3 (a majority of 5), S5 holds a term-3 entry at index 2, and S1's own term-4 entry
   * reaches nobody yet; S5 is down. One entry per message (maxSizePerMsg 0) so index 2 travels alone.
   */
  function figure8c(): { net: Network; unblock: () => void } {
    const net = new Network([], { preVote: true, checkQuorum: false, maxSizePerMsg: 0 });
    const ids = ['s1', 's2', 's3', 's4', 's5'];
    const logs: Record<string, number[]> = { s1: [1, 2], s2: [1, 2], s3: [1], s4: [1], s5: [1, 3] };
    ids.forEach((id, i) => {
      const s = new MemoryStorage();
      s.setConfState({ voters: ids, learners: [] });
      s.append(logs[id]!.map((t, j) => entry(j + 1, t, `${id}@${t}`)));
      s.setHardState({ term: 3, vote: '', commit: 1 });
      net.add(id, s, i + 1);
    });
    // S5 is down in (c).
    net.partition(['s1'], ['s5']);
    // The network loses the term-4 entries (but delivers the rest of each message).
    const unblock = net.addFilter((m) => {
      if (m.type === MessageType.Append) m.entries = m.entries.filter((e) => e.term !== 4);
      return false;
    });
    net.campaign('s1');
    expect(net.raw('s1').status()).to.include({ role: Role.Leader, term: 4 });
    return { net, unblock };
  }

  it('an entry of an earlier term on a majority is not committed by counting replicas', () => {
    const { net } = figure8c();
    net.tick(2);
    for (const id of ['s1', 's2', 's3']) expect(net.node(id).storage.term(2), id).to.equal(2);
    expect(net.raw('s1').status().commit).to.equal(1);
    // ...and rightly so: S5 can still be elected and overwrite it (Figure 8 (d)).
    net.isolate('s1');
    net.campaign('s5'); // refused, but S5 learns term 4 from the refusals
    net.campaign('s5');
    expect(net.raw('s5').status()).to.include({ role: Role.Leader, term: 5 });
    for (const id of ['s2', 's3', 's4']) expect(net.node(id).storage.term(2), id).to.equal(3);
  });

  it('it is committed once an entry of the leader’s term is on a majority (Figure 8 (e))', () => {
    const { net, unblock } = figure8c();
    unblock();
    net.tick(2);
    expect(net.raw('s1').status().commit).to.equal(3);
    // now S5 cannot win: a majority holds term 4
    net.isolate('s1');
    net.campaign('s5');
    net.campaign('s5');
    expect(net.raw('s5').status().role).to.not.equal(Role.Leader);
    expect(net.node('s2').storage.term(2)).to.equal(2);
  });
});
