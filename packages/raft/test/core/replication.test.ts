import { expect } from 'chai';
import { MessageType, Role } from '../../src/types.js';
import { NotLeaderError, ProposalDroppedError, RaftArgumentError } from '../../src/core/errors.js';
import { ProgressState } from '../../src/core/progress.js';
import { RawNode } from '../../src/core/raw-node.js';
import { SeededRng } from '../../src/core/rng.js';
import { enc, entry, lone, msg, Network } from './helpers.js';
import { MemoryStorage } from '../../src/core/memory-storage.js';

describe('core/replication', () => {
  it('a follower stuck in probe recovers when its probe is lost', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    const cut = net.isolate('c');
    for (let i = 0; i < 30; i++) net.raw('a').propose(enc(`v${i}`));
    net.deliver();
    net.raw('a').reportUnreachable('c');
    expect(net.raw('a').status().progress.c!.state).to.equal(ProgressState.Probe);
    net.tick(1); // a probe goes out and is lost
    expect(net.raw('a').status().progress.c!.state).to.equal(ProgressState.Probe);
    cut();
    // the next heartbeat's answer unpauses the probe; c catches up within a few ticks
    net.tick(3);
    expect(net.node('c').applied).to.have.length(30);
    expect(net.raw('a').status().progress.c!.state).to.equal(ProgressState.Replicate);
  });

  it('a follower stuck in replicate with a full window of lost appends recovers', () => {
    const net = new Network(['a', 'b', 'c'], { maxInflightMsgs: 2, maxSizePerMsg: 0 });
    net.campaign('a');
    const lose = net.addFilter((m) => m.to === 'c' && m.type === MessageType.Append);
    for (let i = 0; i < 6; i++) net.raw('a').propose(enc(`v${i}`));
    net.deliver();
    const pr = net.raw('a').status().progress.c!;
    expect([pr.state, pr.inflight]).to.deep.equal([ProgressState.Replicate, 2]);
    lose();
    net.tick(3);
    expect(net.node('c').applied).to.have.length(6);
  });

  it('fast backtracking: a follower with a long divergent tail is repaired in a few round trips', () => {
    // c has 100 entries of term 2 that the leader (term 3 log) does not have
    const ids = ['a', 'b', 'c'];
    const net = new Network([], { preVote: false });
    const base = [1];
    const logs: Record<string, number[]> = {
      a: [...base, ...Array<number>(50).fill(3)],
      b: [...base, ...Array<number>(50).fill(3)],
      c: [...base, ...Array<number>(100).fill(2)],
    };
    ids.forEach((id, i) => {
      const s = new MemoryStorage();
      s.setConfState({ voters: ids, learners: [] });
      s.append(logs[id]!.map((t, j) => entry(j + 1, t)));
      s.setHardState({ term: 3, vote: '', commit: 1 });
      net.add(id, s, i + 1);
    });
    net.campaign('a');
    net.tick(2);
    const rejections = net.sent.filter(
      (m) => m.from === 'c' && m.type === MessageType.AppendResponse && m.reject,
    );
    expect(rejections.length).to.be.at.most(3);
    expect(net.node('c').storage.lastIndex()).to.equal(52);
    expect(net.node('c').storage.term(51)).to.equal(3);
  });

  it('pipelining: in replicate state appends stream without waiting, bounded by the inflight window', () => {
    const net = new Network(['a', 'b', 'c'], { maxInflightMsgs: 4, maxSizePerMsg: 0 });
    net.campaign('a');
    const hold = net.addFilter((m) => m.type === MessageType.AppendResponse);
    for (let i = 0; i < 10; i++) net.raw('a').propose(enc(`p${i}`));
    net.flushReadies();
    const toB = net.queue.filter(
      (m) => m.to === 'b' && m.type === MessageType.Append && m.entries.length > 0,
    );
    expect(toB).to.have.length(4); // the window, not 10, and not 1
    hold();
    net.deliver();
    net.tick(2);
    expect(net.node('b').applied).to.have.length(10);
  });

  it('batching: with a size budget, several entries travel in one append', () => {
    const net = new Network(['a', 'b', 'c'], { maxInflightMsgs: 1, maxSizePerMsg: 1024 });
    net.campaign('a');
    const hold = net.addFilter((m) => m.type === MessageType.AppendResponse);
    for (let i = 0; i < 10; i++) net.raw('a').propose(enc(`p${i}`));
    net.flushReadies();
    hold();
    net.deliver();
    net.tick(2);
    const batches = net.sent.filter((m) => m.from === 'a' && m.to === 'b' && m.entries.length > 1);
    expect(batches.length).to.be.above(0);
    expect(net.node('b').applied).to.have.length(10);
  });

  it('a lagging follower gets a snapshot after the leader compacted its log', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    const cut = net.isolate('c');
    for (let i = 0; i < 20; i++) net.propose('a', `v${i}`);
    net.compact('a');
    net.compact('b');
    cut();
    net.tick(3);
    const snaps = net.sent.filter((m) => m.type === MessageType.Snapshot && m.to === 'c');
    expect(snaps).to.have.length(1);
    expect(net.node('c').snapshotsInstalled).to.equal(1);
    expect(net.node('c').applied).to.deep.equal(net.node('a').applied);
    net.propose('a', 'after');
    expect(net.node('c').applied).to.deep.equal(net.node('a').applied);
    expect(net.raw('a').status().progress.c!.state).to.equal(ProgressState.Replicate);
  });

  it('a failed snapshot stream is retried', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    const cut = net.isolate('c');
    for (let i = 0; i < 5; i++) net.propose('a', `v${i}`);
    net.compact('a');
    cut();
    const dropSnap = net.addFilter((m) => m.type === MessageType.Snapshot);
    net.tick(2);
    expect(net.node('c').snapshotsInstalled).to.equal(0);
    dropSnap();
    net.tick(3);
    expect(net.node('c').snapshotsInstalled).to.equal(1);
    expect(net.node('c').applied).to.deep.equal(net.node('a').applied);
  });

  it('a follower forwards proposals to the leader; without forwarding it names the leader', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    expect(net.raw('b').propose(enc('fwd'))).to.deep.equal({ forwarded: true, leader: 'a' });
    net.deliver();
    for (const id of ['a', 'b', 'c']) expect(net.node(id).applied, id).to.deep.equal(['fwd']);
    const off = new Network(['a', 'b', 'c'], { forwardProposals: false });
    off.campaign('a');
    expect(() => off.raw('b').propose(enc('x')))
      .to.throw(NotLeaderError)
      .with.property('leader', 'a');
    const none = new Network(['a', 'b', 'c']);
    expect(() => none.raw('b').propose(enc('x')))
      .to.throw(NotLeaderError)
      .with.property('leader', '');
    expect(() => net.raw('a').propose('str' as unknown as Uint8Array)).to.throw(RaftArgumentError, /data/);
  });

  it('leaderElsewhere names the leader a proposal would go to, as propose decides', () => {
    const off = new Network(['a', 'b', 'c'], { forwardProposals: false });
    // No leader known: propose refuses with NotLeaderError(''), and there is nowhere to send it.
    expect(off.raw('b').leaderElsewhere()).to.equal('');
    off.campaign('a');
    // The leader appends it itself.
    expect(off.raw('a').leaderElsewhere()).to.equal('');
    expect(off.raw('b').leaderElsewhere()).to.equal('a');
    expect(() => off.raw('b').propose(enc('x')))
      .to.throw(NotLeaderError)
      .with.property('leader', 'a');
  });

  it('maxUncommittedBytes: the leader refuses proposals past the budget until entries commit', () => {
    const net = new Network(['a', 'b', 'c'], { maxUncommittedBytes: 10 });
    net.campaign('a');
    const cut = net.addFilter((m) => m.type === MessageType.Append);
    net.raw('a').propose(enc('12345'));
    net.raw('a').propose(enc('12345'));
    expect(() => net.raw('a').propose(enc('1'))).to.throw(ProposalDroppedError, /uncommitted bytes/);
    cut();
    net.tick(2);
    net.raw('a').propose(enc('1'));
  });

  it('a restarted node keeps its term, vote and log', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.propose('a', 'x');
    const b = net.node('b');
    const before = b.raw.status();
    const restarted = new RawNode({ id: 'b', storage: b.storage, rng: new SeededRng(5) });
    const after = restarted.status();
    expect([after.term, after.vote, after.commit, after.lastIndex]).to.deep.equal([
      before.term,
      before.vote,
      before.commit,
      before.lastIndex,
    ]);
    // it re-delivers committed entries from the snapshot on, unless told what it applied
    expect(restarted.ready().committedEntries.map((e) => e.index)).to.deep.equal([2, 3]);
    const resumed = new RawNode({ id: 'b', storage: b.storage, rng: new SeededRng(5), applied: 3 });
    expect(resumed.hasReady()).to.equal(false);
  });

  it('a node restarted after compaction rebuilds from its snapshot and re-applies the rest', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    for (let i = 0; i < 5; i++) net.propose('a', `v${i}`);
    net.compact('b', 2);
    for (let i = 5; i < 8; i++) net.propose('a', `v${i}`);
    const want = net.node('b').applied;
    const snapIndex = net.node('b').storage.snapshot().meta.index;
    const b = net.restart('b', 77);
    expect(b.applied.length).to.be.below(want.length);
    net.tick(2);
    expect(net.node('b').applied).to.deep.equal(want);
    expect(net.raw('b').status().applied).to.be.above(snapIndex);
    // an `applied` below the snapshot is harmless; one beyond the commit index is refused
    new RawNode({ id: 'b', storage: b.storage, rng: new SeededRng(1), applied: 1 });
    expect(() => new RawNode({ id: 'b', storage: b.storage, rng: new SeededRng(1), applied: 999 })).to.throw(
      RaftArgumentError,
      /^applied:/,
    );
  });

  it('mustSync: entries, a term or a vote need an fsync; a commit index alone does not', () => {
    const n = lone('a', ['a', 'b'], { term: 1 });
    n.raw.step(msg({ type: MessageType.Vote, from: 'b', to: 'a', term: 2 }));
    let rd = n.raw.ready();
    expect([rd.hardState?.vote, rd.mustSync]).to.deep.equal(['b', true]);
    n.raw.advance(rd);
    n.raw.step(msg({ type: MessageType.Append, from: 'b', to: 'a', term: 2, entries: [entry(1, 2)] }));
    rd = n.raw.ready();
    expect([rd.entries.length, rd.mustSync]).to.deep.equal([1, true]);
    n.storage.append(rd.entries);
    n.raw.advance(rd);
    n.raw.step(msg({ type: MessageType.Heartbeat, from: 'b', to: 'a', term: 2, commit: 1 }));
    rd = n.raw.ready();
    expect([rd.hardState?.commit, rd.mustSync]).to.deep.equal([1, false]);
  });

  it('maxCommittedSizePerReady splits a large backlog of committed entries over several Readies', () => {
    const net = new Network(['a'], { maxCommittedSizePerReady: 8 });
    net.campaign('a');
    for (let i = 0; i < 6; i++) net.raw('a').propose(enc('xxxx'));
    let readies = 0;
    let applied = 0;
    const n = net.node('a');
    while (n.raw.hasReady()) {
      const rd = n.raw.ready();
      n.storage.append(rd.entries);
      if (rd.hardState) n.storage.setHardState(rd.hardState);
      expect(rd.committedEntries.length).to.be.at.most(2);
      applied += rd.committedEntries.filter((e) => e.data.byteLength > 0).length;
      n.raw.advance(rd);
      readies++;
    }
    expect(applied).to.equal(6);
    expect(readies).to.be.at.least(3);
  });

  it('config errors name the field and the reason', () => {
    const base = { id: 'a', storage: new MemoryStorage(), rng: new SeededRng(1) };
    expect(() => new RawNode({ ...base, id: '' })).to.throw(RaftArgumentError, /^id:/);
    expect(() => new RawNode({ ...base, electionTick: 1, heartbeatTick: 1 })).to.throw(
      RaftArgumentError,
      /electionTick: must be greater than heartbeatTick/,
    );
    expect(() => new RawNode({ ...base, maxInflightMsgs: 0 })).to.throw(RaftArgumentError, /maxInflightMsgs/);
    expect(() => new SeededRng(1.5)).to.throw(RangeError, /seed/);
  });
});

describe('core/leadership-transfer', () => {
  it('transfers leadership under load, without losing committed entries', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    let n = 0;
    let dropped = 0;
    const load = () => {
      const l = net.leader();
      if (!l) return;
      for (let i = 0; i < 5; i++) {
        try {
          net.raw(l).propose(enc(`w${n++}`));
        } catch (err) {
          if (!(err instanceof ProposalDroppedError || err instanceof NotLeaderError)) throw err;
          dropped++;
        }
      }
    };
    // c lags: the transfer must first catch it up
    const slow = net.isolate('c');
    for (let t = 0; t < 5; t++) {
      load();
      net.tick(1);
    }
    slow();
    const termBefore = net.raw('a').status().term;
    net.raw('a').transferLeader('c');
    for (let t = 0; t < 10 && net.leader() !== 'c'; t++) {
      load();
      net.deliver();
      net.tick(1);
    }
    expect(net.leader()).to.equal('c');
    expect(net.raw('c').status().term).to.equal(termBefore + 1);
    for (let t = 0; t < 5; t++) {
      load();
      net.tick(1);
    }
    net.tick(3);
    const applied = net.node('a').applied;
    expect(applied.length).to.be.above(40);
    for (const id of ['b', 'c']) expect(net.node(id).applied, id).to.deep.equal(applied);
    // every value applied once, in proposal order
    expect(new Set(applied).size).to.equal(applied.length);
    void dropped;
  });

  it('proposals are refused during a transfer, which is abandoned after an election timeout', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.isolate('c');
    net.raw('a').transferLeader('c');
    expect(() => net.raw('a').propose(enc('x'))).to.throw(ProposalDroppedError, /transferred to 'c'/);
    net.tick(11, ['a', 'b']);
    expect(net.raw('a').status()).to.include({ role: Role.Leader, leadTransferee: '' });
    net.raw('a').propose(enc('x'));
  });

  it('transferLeader checks its argument and the role', () => {
    const net = new Network(['a', 'b', 'c'], { learners: ['d'] });
    net.campaign('a');
    expect(() => net.raw('a').transferLeader('d')).to.throw(RaftArgumentError, /not a voter/);
    expect(() => net.raw('b').transferLeader('c'))
      .to.throw(NotLeaderError)
      .with.property('leader', 'a');
  });

  it('TimeoutNow lets the transferee win even though the voters still hear the old leader', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.tick(1);
    net.raw('a').transferLeader('b');
    net.deliver();
    expect(net.leader()).to.equal('b');
    const votes = net.sent.filter((m) => m.type === MessageType.PreVote);
    expect(votes.filter((m) => m.from === 'b')).to.have.length(0); // no pre-vote on a transfer
  });
});
