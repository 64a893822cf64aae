import { expect } from 'chai';
import { ConfChangeType, MessageType, Role } from '../../src/types.js';
import { NotLeaderError, ProposalDroppedError, RaftArgumentError } from '../../src/core/errors.js';
import { MemoryStorage } from '../../src/core/memory-storage.js';
import { Network } from './helpers.js';

function confOf(net: Network, id: string) {
  return net.raw(id).status().conf;
}

describe('core/membership', () => {
  it('a learner receives the log but never votes in the count and never campaigns', () => {
    const net = new Network(['a', 'b', 'c'], { learners: ['d'] });
    net.campaign('a');
    net.propose('a', 'x');
    expect(net.node('d').applied).to.deep.equal(['x']);
    // cut the voters except a: the learner's acknowledgement does not make a majority
    const cut = net.isolate('b');
    const cut2 = net.isolate('c');
    net.propose('a', 'y');
    net.tick(1, ['a', 'd']);
    expect(net.node('a').applied).to.deep.equal(['x']);
    cut();
    cut2();
    // a learner that hears no leader for ages still does not campaign
    net.isolate('d');
    net.tick(100, ['d']);
    expect(net.raw('d').status()).to.include({ role: Role.Follower });
    expect(
      net.sent.filter(
        (m) => m.from === 'd' && (m.type === MessageType.PreVote || m.type === MessageType.Vote),
      ),
    ).to.have.length(0);
  });

  it('a promoted learner votes: with it, two of three can elect a leader', () => {
    const net = new Network(['a', 'b'], { learners: ['c'] });
    net.campaign('a');
    net.propose('a', 'x');
    net.raw('a').proposeConfChange({ type: ConfChangeType.PromoteLearner, node: 'c' });
    net.deliver();
    net.tick(1);
    for (const id of ['a', 'b', 'c'])
      expect(confOf(net, id), id).to.deep.equal({ voters: ['a', 'b', 'c'], learners: [] });
    // the old leader vanishes: b needs c's vote
    net.isolate('a');
    const sentBefore = net.sent.length;
    let leader: string | undefined;
    for (let i = 0; i < 100 && !leader; i++) {
      net.tick(1, ['b', 'c']);
      leader = ['b', 'c'].find((id) => net.raw(id).status().role === Role.Leader);
    }
    expect(leader).to.be.oneOf(['b', 'c']);
    const grantsFromC = net.sent
      .slice(sentBefore)
      .filter((m) => m.from === 'c' && m.type === MessageType.VoteResponse && !m.reject);
    const grantsToC = net.sent
      .slice(sentBefore)
      .filter((m) => m.to === 'c' && m.type === MessageType.VoteResponse && !m.reject);
    expect(grantsFromC.length + grantsToC.length).to.be.above(0);
    net.propose(leader!, 'y');
    expect(net.node('b').applied).to.deep.equal(['x', 'y']);
    expect(net.node('c').applied).to.deep.equal(['x', 'y']);
  });

  it('a conf change is refused until the leader has committed an entry of its term, and one at a time', () => {
    const net = new Network(['a', 'b', 'c']);
    const cut = net.addFilter((m) => m.type === MessageType.Append);
    net.campaign('a');
    expect(() => net.raw('a').proposeConfChange({ type: ConfChangeType.AddLearner, node: 'd' }))
      .to.throw(ProposalDroppedError)
      .with.property('reason')
      .that.matches(/not yet committed an entry of its term/);
    cut();
    net.tick(1);
    net.raw('a').proposeConfChange({ type: ConfChangeType.AddLearner, node: 'd' });
    expect(() => net.raw('a').proposeConfChange({ type: ConfChangeType.AddLearner, node: 'e' })).to.throw(
      ProposalDroppedError,
      /still pending/,
    );
    net.deliver();
    // applied: the next one is accepted
    net.raw('a').proposeConfChange({ type: ConfChangeType.AddLearner, node: 'e' });
    net.deliver();
    expect(confOf(net, 'a').learners).to.deep.equal(['d', 'e']);
  });

  it('nonsensical or malformed conf changes are refused with the field and the reason', () => {
    const net = new Network(['a', 'b', 'c'], { learners: ['d'] });
    net.campaign('a');
    const raw = net.raw('a');
    expect(() => raw.proposeConfChange({ type: ConfChangeType.AddVoter, node: 'b' })).to.throw(
      RaftArgumentError,
      /already a voter/,
    );
    expect(() => raw.proposeConfChange({ type: ConfChangeType.AddVoter, node: 'd' })).to.throw(
      RaftArgumentError,
      /PromoteLearner/,
    );
    expect(() => raw.proposeConfChange({ type: ConfChangeType.RemoveNode, node: 'z' })).to.throw(
      RaftArgumentError,
      /not a member/,
    );
    expect(() => raw.proposeConfChange({ type: ConfChangeType.PromoteLearner, node: 'b' })).to.throw(
      RaftArgumentError,
      /not a learner/,
    );
    expect(() => raw.proposeConfChange({ type: 99 as ConfChangeType, node: 'x' })).to.throw(
      RaftArgumentError,
      /confChange.type/,
    );
    expect(() => raw.proposeConfChange({ type: ConfChangeType.AddVoter, node: '' })).to.throw(
      RaftArgumentError,
      /confChange.node/,
    );
    expect(() => net.raw('b').proposeConfChange({ type: ConfChangeType.AddLearner, node: 'x' }))
      .to.throw(NotLeaderError)
      .with.property('leader', 'a');
  });

  it('a new node joins: it gets the log (or a snapshot) and the membership, then votes', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.propose('a', 'x');
    net.add('d', new MemoryStorage(), 9);
    net.raw('a').proposeConfChange({ type: ConfChangeType.AddVoter, node: 'd', address: 'd:1' });
    net.deliver();
    net.tick(2);
    expect(confOf(net, 'd')).to.deep.equal({ voters: ['a', 'b', 'c', 'd'], learners: [] });
    expect(net.node('d').applied).to.deep.equal(['x']);
    net.propose('a', 'y');
    expect(net.node('d').applied).to.deep.equal(['x', 'y']);
  });

  it('a membership change during a partition: the minority cannot change it, the majority can, and all converge', () => {
    const net = new Network(['a', 'b', 'c', 'd', 'e']);
    net.campaign('a');
    net.propose('a', 'x');
    // the leader a is in the minority: its conf change cannot commit and never takes effect
    const heal = net.partition(['a', 'b'], ['c', 'd', 'e']);
    net.raw('a').proposeConfChange({ type: ConfChangeType.RemoveNode, node: 'c' });
    net.deliver();
    expect(confOf(net, 'a').voters).to.include('c');
    // the majority elects a leader and removes e (which it can still reach)
    net.tick(30, ['c', 'd', 'e']);
    const l = net.leader()!;
    expect(l).to.be.oneOf(['c', 'd', 'e']);
    const target = l === 'e' ? 'd' : 'e';
    net.tick(1, ['c', 'd', 'e']);
    net.raw(l).proposeConfChange({ type: ConfChangeType.RemoveNode, node: target });
    net.deliver();
    net.tick(1, ['c', 'd', 'e']);
    expect(confOf(net, l).voters).to.not.include(target);
    heal();
    net.tick(20);
    const want = ['a', 'b', 'c', 'd', 'e'].filter((id) => id !== target);
    for (const id of want) {
      expect(confOf(net, id).voters, id).to.deep.equal(want);
      expect(net.node(id).applied, id).to.deep.equal(['x']);
    }
    // the removed node does not disrupt the cluster
    const term = net.raw(l).status().term;
    net.tick(100);
    expect(net.leader()).to.equal(l);
    expect(net.raw(l).status().term).to.equal(term);
  });

  it('removing the leader: it steps down once the change commits, and the rest elect a new one', () => {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.propose('a', 'x');
    net.raw('a').proposeConfChange({ type: ConfChangeType.RemoveNode, node: 'a' });
    net.deliver();
    expect(net.raw('a').status().role).to.equal(Role.Follower);
    expect(confOf(net, 'a').voters).to.deep.equal(['b', 'c']);
    const l = net.tickUntilLeader(100);
    expect(l).to.be.oneOf(['b', 'c']);
    net.propose(l, 'y');
    expect(net.node(l === 'b' ? 'c' : 'b').applied).to.deep.equal(['x', 'y']);
    // the removed node never campaigns again
    net.isolate('a');
    const sentBefore = net.sent.length;
    net.tick(100, ['a']);
    expect(net.sent.slice(sentBefore).filter((m) => m.from === 'a')).to.have.length(0);
  });
});
