import { expect } from 'chai';
import { ApiError, status, type pb } from '@hyperfarm/api';
import { messageFromPb } from '../../src/transport/convert.js';
import { SnapshotAssembler } from '../../src/transport/snapshot-assembler.js';

// Found by the request fuzzer: a peer's bad message was refused without naming its field, and a
// conf_state of `null` was a TypeError (INTERNAL).

function wire(over: Partial<pb.RaftMessage__Output> = {}): pb.RaftMessage__Output {
  return {
    type: 'RAFT_MESSAGE_TYPE_APPEND',
    from: 'a',
    to: 'b',
    term: 1,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    conflictTerm: 0,
    context: Buffer.alloc(0),
    snapshot: null,
    ...over,
  } as pb.RaftMessage__Output;
}

function refusal(f: () => unknown): { code: number; field: string | undefined } {
  try {
    f();
  } catch (err) {
    expect(err).to.be.instanceOf(ApiError);
    return { code: (err as ApiError).code, field: (err as ApiError).field };
  }
  throw new Error('expected a refusal');
}

describe('RaftService refuses a bad peer message naming its field', () => {
  it('an unknown message or entry type', () => {
    expect(
      refusal(() => messageFromPb(wire({ type: 'RAFT_MESSAGE_TYPE_UNSPECIFIED' }), undefined, 'messages[2]')),
    ).to.deep.equal({
      code: status.INVALID_ARGUMENT,
      field: 'messages[2].type',
    });
    const entry = { term: 1, index: 1, type: 99, data: Buffer.alloc(0) } as unknown as pb.RaftEntry__Output;
    expect(refusal(() => messageFromPb(wire({ entries: [entry] }), undefined, 'messages[0]')).field).to.equal(
      'messages[0].entries[0].type',
    );
  });

  it('a conf_state that is not JSON, or JSON null', () => {
    for (const conf of ['not json', 'null', '{"voters":[1]}']) {
      const snapshot = { index: 1, term: 1, confState: Buffer.from(conf) };
      expect(
        refusal(() => messageFromPb(wire({ snapshot }))),
        conf,
      ).to.deep.equal({
        code: status.INVALID_ARGUMENT,
        field: 'message.snapshot.conf_state',
      });
    }
  });

  it('snapshot chunks without the message, or out of order', () => {
    const chunk = (over: Partial<pb.SnapshotChunk__Output>) =>
      ({ message: null, offset: 0, data: Buffer.alloc(4), last: false, ...over }) as pb.SnapshotChunk__Output;
    expect(refusal(() => new SnapshotAssembler(1024).add(chunk({}))).field).to.equal('message');
    const snapshot = { index: 1, term: 1, confState: Buffer.from('{"voters":[],"learners":[]}') };
    const a = new SnapshotAssembler(1024);
    a.add(chunk({ message: wire({ type: 'RAFT_MESSAGE_TYPE_SNAPSHOT', snapshot }) }));
    expect(refusal(() => a.add(chunk({ offset: 99 }))).field).to.equal('offset');
  });
});
