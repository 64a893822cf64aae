import assert from 'node:assert/strict';
import { Metadata } from '@grpc/grpc-js';
import { ApiError, status, toServiceError } from '@hyperfarm/api';
import { NotLeaderError, ProposalDroppedError, RaftArgumentError } from '../../src/core/errors.js';
import {
  NodeStoppedError,
  OutcomeUnknownError,
  ReadNotConfirmedError,
  RequestTimeoutError,
} from '../../src/node/errors.js';
import { raftApiError, raftErrorFromStatus } from '../../src/node/status.js';

/**
 * What each of Raft's outcomes must tell a gRPC client (docs/api.md): UNAVAILABLE and ABORTED
 * promise that nothing happened, so a client may retry any write; DEADLINE_EXCEEDED and UNKNOWN
 * promise nothing.
 */
const CASES: Array<[string, Error, status]> = [
  ['no leader', new NotLeaderError(''), status.UNAVAILABLE],
  ['not the leader', new NotLeaderError('n2', '10.0.0.2:7000'), status.UNAVAILABLE],
  ['node stopped before taking it', new NodeStoppedError('n1'), status.UNAVAILABLE],
  ['read not confirmed', new ReadNotConfirmedError('the leader changed'), status.UNAVAILABLE],
  ['write dropped by the leader', new ProposalDroppedError('transfer in progress'), status.ABORTED],
  ['bad argument', new RaftArgumentError('data', 'is too large'), status.INVALID_ARGUMENT],
  ['timed out', new RequestTimeoutError('proposal', 10), status.DEADLINE_EXCEEDED],
  ['outcome unknown', new OutcomeUnknownError('compacted'), status.UNKNOWN],
];

describe("Raft's errors as gRPC statuses", () => {
  for (const [what, err, code] of CASES) {
    it(`${what} → ${status[code]}`, () => {
      const api = raftApiError(err);
      assert.ok(api instanceof ApiError);
      assert.equal(api.code, code);
    });
  }

  it('names the leader in the trailers only when one is known', () => {
    const known = (raftApiError(new NotLeaderError('n2', '10.0.0.2:7000')) as ApiError).toServiceError();
    assert.deepEqual(known.metadata.getMap(), {
      'hyperfarm-leader-id': 'n2',
      'hyperfarm-leader-address': '10.0.0.2:7000',
    });
    const none = (raftApiError(new NotLeaderError('')) as ApiError).toServiceError();
    assert.deepEqual(none.metadata.getMap(), {});
  });

  it('leaves anything else as it is, so a bug still becomes INTERNAL', () => {
    const bug = new TypeError('x is undefined');
    assert.equal(raftApiError(bug), bug);
  });

  it('a forwarded request comes back as the same refusal, or as an unknown outcome', () => {
    const back = (err: Error) => raftErrorFromStatus(toServiceError(raftApiError(err)), 'n2');
    const notLeader = back(new NotLeaderError('n3', '10.0.0.3:7000'));
    assert.ok(notLeader instanceof NotLeaderError);
    assert.deepEqual([notLeader.leader, notLeader.leaderAddress], ['n3', '10.0.0.3:7000']);
    assert.ok(back(new ProposalDroppedError('busy')) instanceof ProposalDroppedError);
    const arg = back(new RaftArgumentError('data', 'is too large'));
    assert.ok(arg instanceof RaftArgumentError);
    assert.deepEqual([arg.field, arg.reason], ['data', 'is too large']);
    // Only a status that proves nothing happened is a refusal: everything else is unknown.
    const connectionDropped = Object.assign(new Error('14 UNAVAILABLE: Connection dropped'), {
      code: status.UNAVAILABLE,
      details: 'Connection dropped',
      metadata: new Metadata(),
    });
    for (const err of [
      toServiceError(raftApiError(new RequestTimeoutError('proposal', 10))),
      toServiceError(raftApiError(new NotLeaderError(''))),
      connectionDropped,
    ]) {
      const got = raftErrorFromStatus(err, 'n2');
      assert.ok(got instanceof OutcomeUnknownError, `${err.message} → ${got.name}`);
    }
  });
});
