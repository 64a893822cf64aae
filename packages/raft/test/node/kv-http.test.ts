import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { Registry } from 'prom-client';
import { NotLeaderError, ProposalDroppedError, RaftArgumentError } from '../../src/core/errors.js';
import {
  NodeStoppedError,
  OutcomeUnknownError,
  ReadNotConfirmedError,
  RequestTimeoutError,
} from '../../src/node/errors.js';
import { startKvHttp } from '../../src/node/kv-http.js';
import { KvStateMachine } from '../../src/node/kv-state-machine.js';
import type { RaftNode } from '../../src/node/raft-node.js';

/**
 * Each outcome of a request has its own HTTP status (docs/raft.md, "The key-value server"), so a
 * client can tell "certainly not applied" from "maybe applied" from "retry the read".
 */
describe('kv-server HTTP statuses', () => {
  let failWith: Error | undefined;
  const bugs: unknown[] = [];
  let server: Server;
  let base: string;
  const node = {
    propose: async () => {
      if (failWith) throw failWith;
      return { index: 1, result: new TextEncoder().encode('{"prev":null}') };
    },
    read: async () => {
      if (failWith) throw failWith;
    },
  } as unknown as RaftNode;

  before(async () => {
    const http = await startKvHttp(node, new KvStateMachine(), new Registry(), '127.0.0.1:0', (err) =>
      bugs.push(err),
    );
    server = http.server;
    base = `http://${http.address}`;
  });
  after(() => server.close());

  const call = async (method: string, err: Error | undefined) => {
    failWith = err;
    const res = await fetch(`${base}/kv/k`, { method, ...(method === 'PUT' ? { body: 'v' } : {}) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  const WRITES: Array<[string, Error | undefined, number]> = [
    ['applied', undefined, 200],
    ['refused: not the leader', new NotLeaderError('n2', '127.0.0.1:7002'), 503],
    ['refused: no leader', new NotLeaderError(''), 503],
    ['refused: node stopped', new NodeStoppedError('n1'), 503],
    ['dropped by the leader: certainly not applied', new ProposalDroppedError('transfer under way'), 409],
    ['timed out: maybe applied', new RequestTimeoutError('proposal', 10), 504],
    ['lost in a snapshot: maybe applied', new OutcomeUnknownError('compacted'), 504],
    ['a bad argument', new RaftArgumentError('data', 'is too large'), 400],
    ['a bug', new TypeError('oops'), 500],
  ];
  for (const [what, err, status] of WRITES) {
    it(`PUT, ${what} → ${status}`, async () => {
      assert.equal((await call('PUT', err)).status, status);
    });
  }

  it('reports a bug with its stack, and only bugs', () => {
    assert.deepEqual(
      bugs.map((e) => (e as Error).message),
      ['oops'],
    );
  });

  it('GET whose read the leader could not confirm → 503, to retry', async () => {
    assert.equal((await call('GET', new ReadNotConfirmedError('the leader changed'))).status, 503);
  });

  it("a 503 names the leader and its address when known, '' when not", async () => {
    const known = await call('PUT', new NotLeaderError('n2', '127.0.0.1:7002'));
    assert.deepEqual([known.body.leader, known.body.leaderAddress], ['n2', '127.0.0.1:7002']);
    const none = await call('PUT', new NotLeaderError(''));
    assert.deepEqual([none.body.leader, none.body.leaderAddress], ['', '']);
  });
});
