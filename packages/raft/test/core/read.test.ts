import { expect } from 'chai';
import { MessageType, Role } from '../../src/types.js';
import { NotLeaderError } from '../../src/core/errors.js';
import { RaftArgumentError } from '../../src/core/errors.js';
import { MemoryStorage } from '../../src/core/memory-storage.js';
import { RawNode } from '../../src/core/raw-node.js';
import { SeededRng } from '../../src/core/rng.js';
import { dec, enc, Network } from './helpers.js';

describe('core/read-index', () => {
  it('the leader answers a ReadIndex with its commit index after a heartbeat round', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.propose('a', 'x');
    net.raw('a').readIndex(enc('r1'));
    // not before the heartbeat acknowledgements are in
    net.flushReadies();
    expect(net.node('a').readStates).to.have.length(0);
    net.deliver();
    const rs = net.node('a').readStates;
    expect(rs).to.have.length(1);
    expect(dec(rs[0]!.context)).to.equal('r1');
    expect(rs[0]!.index).to.equal(net.raw('a').status().commit);
  });

  it('a follower’s ReadIndex goes to the leader and comes back with the leader’s commit index', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.propose('a', 'x');
    net.raw('c').readIndex(enc('rc'));
    net.deliver();
    const rs = net.node('c').readStates;
    expect(rs.map((r) => [dec(r.context), r.index])).to.deep.equal([['rc', net.raw('a').status().commit]]);
  });

  it('a stale read from a deposed leader is impossible: it never confirms a ReadIndex', () => {
    const net = new Network(['a', 'b', 'c', 'd', 'e']);
    net.campaign('a');
    net.propose('a', 'v1');
    // a (with b) is cut from the majority, which elects c and writes v2
    const heal = net.partition(['a', 'b'], ['c', 'd', 'e']);
    net.tick(30, ['c', 'd', 'e']);
    const l = net.leader();
    expect(l).to.be.oneOf(['c', 'd', 'e']);
    net.propose(l!, 'v2');
    const v2Index = net.raw(l!).status().commit;
    // a still believes it leads (it has not ticked): ask it for a read
    expect(net.raw('a').status().role).to.equal(Role.Leader);
    net.raw('a').readIndex(enc('stale?'));
    net.raw('b').readIndex(enc('stale-b?'));
    net.deliver();
    net.tick(3, ['a', 'b']);
    expect(net.node('a').readStates, 'the deposed leader answered a read').to.have.length(0);
    expect(net.node('b').readStates).to.have.length(0);
    // after healing, reads reflect v2
    heal();
    net.tick(3);
    expect(net.raw('a').status().role).to.equal(Role.Follower);
    net.raw('a').readIndex(enc('fresh'));
    net.deliver();
    const rs = net.node('a').readStates;
    expect(rs.map((r) => dec(r.context))).to.deep.equal(['fresh']);
    expect(rs[0]!.index).to.be.at.least(v2Index);
  });

  it('a new leader holds ReadIndex requests until it has committed an entry of its term', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.propose('a', 'v1');
    // a is cut off; b or c wins the next election, but the new leader's appends (its no-op)
    // are lost for now
    const block = net.addFilter((m) => m.from !== 'a' && m.type === MessageType.Append);
    net.isolate('a');
    let leader: string | undefined;
    for (let i = 0; i < 60 && leader === undefined; i++) {
      net.tick(1, ['b', 'c']);
      leader = ['b', 'c'].find((id) => net.raw(id).status().role === Role.Leader);
    }
    expect(leader).to.not.equal(undefined);
    const L = leader!;
    const F = L === 'b' ? 'c' : 'b';
    const st = net.raw(L).status();
    expect(st.commit).to.be.below(st.lastIndex); // the no-op is not committed
    net.tick(1, ['b', 'c']); // a heartbeat tells F who leads
    net.raw(L).readIndex(enc('early'));
    net.raw(F).readIndex(enc('early-f'));
    net.tick(3, ['b', 'c']);
    expect(net.node(L).readStates, 'answered before committing in its term').to.have.length(0);
    expect(net.node(F).readStates).to.have.length(0);
    block();
    net.tick(2, ['b', 'c']);
    const noop = net.raw(L).status().lastIndex;
    expect(net.raw(L).status().commit).to.equal(noop);
    expect(net.node(L).readStates.map((r) => [dec(r.context), r.index])).to.deep.equal([['early', noop]]);
    expect(net.node(F).readStates.map((r) => [dec(r.context), r.index])).to.deep.equal([['early-f', noop]]);
  });

  it('lease reads answer without a heartbeat round, and require CheckQuorum', () => {
    const net = new Network(['a', 'b', 'c'], { readOnly: 'lease' });
    net.campaign('a');
    // no heartbeat acknowledged yet: no lease, so the read falls back to a heartbeat round
    net.raw('a').readIndex(enc('no-lease'));
    net.flushReadies();
    expect(net.node('a').readStates).to.have.length(0);
    net.deliver();
    expect(net.node('a').readStates.map((r) => dec(r.context))).to.deep.equal(['no-lease']);
    net.tick(1);
    net.raw('a').readIndex(enc('lease'));
    net.flushReadies();
    expect(net.node('a').readStates.map((r) => dec(r.context))).to.deep.equal(['no-lease', 'lease']);
    expect(
      () =>
        new RawNode({
          id: 'x',
          storage: new MemoryStorage(),
          rng: new SeededRng(1),
          readOnly: 'lease',
          checkQuorum: false,
        }),
    ).to.throw(RaftArgumentError, /readOnly: 'lease' requires checkQuorum/);
  });

  it('a lease read is never served by a leader once another may have been elected', () => {
    for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
      const net = new Network(['a', 'b', 'c'], { readOnly: 'lease', seed });
      net.campaign('a');
      // cut a off at every phase of its CheckQuorum cycle
      net.tick(seed);
      net.partition(['a'], ['b', 'c']);
      let overlap = 0;
      for (let t = 0; t < 40; t++) {
        net.tick(1);
        const other = net.leaders().find((id) => id !== 'a');
        if (other === undefined || net.raw('a').status().role !== Role.Leader) continue;
        overlap++;
        const before = net.node('a').readStates.length;
        net.raw('a').readIndex(enc(`lease-${t}`));
        net.flushReadies();
        expect(net.node('a').readStates.length, `seed ${seed}, tick ${t}: stale lease read`).to.equal(before);
      }
      void overlap;
    }
  });

  it('a ReadIndex with no leader known fails with NotLeaderError, and an empty context is refused', () => {
    const net = new Network(['a', 'b', 'c']);
    expect(() => net.raw('b').readIndex(enc('x')))
      .to.throw(NotLeaderError)
      .with.property('leader', '');
    expect(() => net.raw('b').readIndex(new Uint8Array(0))).to.throw(RaftArgumentError, /context/);
  });

  it('a single-voter cluster answers reads at once', () => {
    const net = new Network(['solo']);
    net.campaign('solo');
    net.raw('solo').readIndex(enc('s'));
    net.flushReadies();
    expect(net.node('solo').readStates).to.have.length(1);
  });
});
