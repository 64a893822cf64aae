import { expect } from 'chai';
import { MessageType } from '../../src/types.js';
import { enc, entry, msg, Network } from './helpers.js';

/**
 * What a node lets go ahead of the Ready it is writing (RawNode.takeAhead): what promises
 * nothing of that write, and a heartbeat's commit index never past the leader's own disk.
 */
describe('core/ahead of the write', () => {
  /** a leads b and c, x committed everywhere; then a proposes y and holds that Ready (its fsync). */
  function writing() {
    const net = new Network(['a', 'b', 'c']);
    net.campaign('a');
    net.propose('a', 'x');
    const x = net.raw('a').status().commit;
    net.raw('a').propose(enc('y'));
    expect(net.beginReady('a')).to.equal(true);
    return { net, x, y: x + 1 };
  }

  it('a follower acknowledges a heartbeat and asks a read index while it writes, but not an append', () => {
    const { net, y } = writing();
    const appends = net.inFlight.get('a')!.messages.filter((m) => m.to === 'b');
    expect(appends.map((m) => m.type)).to.deep.equal([MessageType.Append]);
    // b takes y's append and starts writing it: its acknowledgement waits for that write.
    net.raw('b').step(appends[0]!);
    expect(net.beginReady('b')).to.equal(true);
    expect(net.inFlight.get('b')!.entries.map((e) => e.index)).to.deep.equal([y]);
    expect(net.raw('b').takeAhead().messages).to.deep.equal([]);
    // Meanwhile a heartbeat comes: acknowledged at once. So is a read index asked here.
    net.raw('a').tick();
    const heartbeats = net.raw('a').takeAhead().messages;
    expect(heartbeats.map((m) => [m.type, m.to])).to.deep.equal([
      [MessageType.Heartbeat, 'b'],
      [MessageType.Heartbeat, 'c'],
    ]);
    net.raw('b').step(heartbeats[0]!);
    net.raw('b').readIndex(enc('r'));
    expect(
      net
        .raw('b')
        .takeAhead()
        .messages.map((m) => [m.type, m.to]),
    ).to.deep.equal([
      [MessageType.HeartbeatResponse, 'a'],
      [MessageType.ReadIndex, 'a'],
    ]);
    // A second append while the first is written: its answer waits too.
    net.raw('b').step({ ...appends[0]!, entries: [] });
    expect(net.raw('b').takeAhead().messages).to.deep.equal([]);
    // What was taken ahead is not in the next Ready; the append's answer is.
    net.finishReady('b');
    net.beginReady('b');
    const next = net.inFlight.get('b')!.messages;
    expect(next.map((m) => m.type)).to.deep.equal([MessageType.AppendResponse]);
  });

  it('the leader answers a read index while it writes, after a heartbeat round taken ahead', () => {
    const { net, x } = writing();
    net.raw('c').readIndex(enc('rc'));
    const ask = net.raw('c').takeAhead().messages;
    expect(ask.map((m) => m.type)).to.deep.equal([MessageType.ReadIndex]);
    net.raw('a').step(ask[0]!);
    const round = net.raw('a').takeAhead().messages;
    expect(round.map((m) => m.type)).to.deep.equal([MessageType.Heartbeat, MessageType.Heartbeat]);
    net.raw('b').step(round[0]!);
    net.raw('a').step(net.raw('b').takeAhead().messages[0]!);
    const answer = net.raw('a').takeAhead().messages;
    expect(answer.map((m) => [m.type, m.to, m.index])).to.deep.equal([
      [MessageType.ReadIndexResponse, 'c', x],
    ]);
    net.raw('c').step(answer[0]!);
    expect(
      net
        .raw('c')
        .takeAhead()
        .readStates.map((r) => r.index),
    ).to.deep.equal([x]);
  });

  it('a heartbeat never tells a follower to commit an entry the leader is still writing', () => {
    const { net, x, y } = writing();
    const rd = net.inFlight.get('a')!;
    // b gets y and acknowledges it (its write done); with a's own copy, y is committed on a.
    net.raw('b').step(rd.messages.find((m) => m.to === 'b')!);
    net.beginReady('b');
    net.finishReady('b');
    const ack = net.queue.splice(0).find((m) => m.type === MessageType.AppendResponse)!;
    net.raw('a').step(ack);
    expect(net.raw('a').status().commit).to.equal(y);
    // a's disk has not written y: were it to crash now, y would be on b alone, and c with a's
    // vote could win and overwrite it. A heartbeat must not let b apply y.
    net.raw('a').tick();
    const hb = net
      .raw('a')
      .takeAhead()
      .messages.filter((m) => m.type === MessageType.Heartbeat);
    expect(hb.map((m) => [m.to, m.commit])).to.deep.equal([
      ['b', x],
      ['c', x],
    ]);
    net.raw('b').step(hb[0]!);
    expect(net.raw('b').status().commit).to.equal(x);
    // Once a's write is done, the commit goes out (with the appends of the next Ready).
    net.finishReady('a');
    net.deliver();
    expect(net.node('b').applied).to.deep.equal(['x', 'y']);
  });

  it('a follower takes the entries past its commit index from an append that starts below it', () => {
    // b acknowledged y's append, but the acknowledgement is still waiting behind b's Ready
    // while a, hearing b's heartbeat acknowledgements meanwhile, sends again from an older
    // match, with z after y: b keeps z rather than dropping the whole append.
    const { net, x, y } = writing();
    net.finishReady('a');
    net.deliver();
    expect(net.raw('b').status().commit).to.equal(y);
    const term = net.raw('a').status().term;
    /** An append from a to b after `index`, a's commit index y. */
    const append = (index: number, values: string[]) =>
      net.raw('b').step(
        msg({
          type: MessageType.Append,
          from: 'a',
          to: 'b',
          term,
          index,
          logTerm: term,
          commit: y,
          entries: values.map((v, i) => entry(index + 1 + i, term, v)),
        }),
      );
    append(x, ['y', 'z']);
    expect(net.raw('b').status().lastIndex).to.equal(y + 1);
    net.beginReady('b');
    const acks = net.inFlight.get('b')!.messages.filter((m) => m.type === MessageType.AppendResponse);
    expect(acks.map((m) => [m.index, m.reject])).to.deep.equal([[y + 1, false]]);
    // One that brings nothing past the commit index is answered with it, as before.
    net.finishReady('b');
    append(x - 1, ['x']);
    net.beginReady('b');
    expect(net.inFlight.get('b')!.messages.map((m) => [m.type, m.index])).to.deep.equal([
      [MessageType.AppendResponse, y],
    ]);
  });
});
