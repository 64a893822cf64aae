import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import {
  ApiError,
  createLogger,
  createServer,
  status,
  unary,
  unavailable,
  withUnimplemented,
  type pb,
  type RunningServer,
} from '@hyperfarm/api';
import { backoffDelay, HyperfarmClient, HyperfarmError, type Clock } from '../src/index.js';

/** A virtual clock: sleeping advances it at once and is recorded. */
function virtualClock(): Clock & { sleeps: number[] } {
  let t = 1_000_000;
  const sleeps: number[] = [];
  return { sleeps, now: () => t, sleep: (ms) => ((t += ms), sleeps.push(ms), Promise.resolve()) };
}

const op = (id: string): pb.Operation => ({ id, kind: 'vm.create', done: false });

/**
 * A daemon's ClusterService whose answers the test scripts: each handler takes the next failure
 * from its queue, if any, else answers. Requests are recorded.
 */
async function fakeDaemon(script: {
  createVm?: (ApiError | undefined)[];
  changeVmState?: (ApiError | undefined)[];
  listVms?: (ApiError | undefined)[];
}) {
  const seen: { method: string; request: unknown }[] = [];
  const next = (method: keyof typeof script, request: unknown) => {
    seen.push({ method, request });
    const failure = script[method]?.shift();
    if (failure) throw failure;
  };
  const server = await createServer({
    logger: createLogger({ program: 'test', id: 'test', level: 'silent' }),
  })
    .add(
      'cluster',
      withUnimplemented(
        'cluster',
        {
          CreateVm: unary<pb.CreateVmRequest__Output, pb.Operation>(
            (req) => (next('createVm', req), op('op-1')),
          ),
          ChangeVmState: unary<pb.ChangeVmStateRequest__Output, pb.Operation>(
            (req) => (next('changeVmState', req), op('op-2')),
          ),
          ListVms: unary<pb.ListVmsRequest__Output, pb.ListVmsResponse>(
            (req) => (next('listVms', req), { vms: [], nextPageToken: '' }),
          ),
        },
        'test',
      ),
    )
    .listen('127.0.0.1:0');
  return { server, seen };
}

describe('HyperfarmClient: retries and leader following (fake daemons)', () => {
  const servers: RunningServer[] = [];
  const clients: HyperfarmClient[] = [];
  afterEach(async () => {
    clients.splice(0).forEach((c) => c.close());
    await Promise.all(servers.splice(0).map((s) => s.shutdown(100)));
  });

  async function daemon(script: Parameters<typeof fakeDaemon>[0]) {
    const d = await fakeDaemon(script);
    servers.push(d.server);
    return d;
  }
  function client(endpoints: string[], clock = virtualClock(), extra = {}) {
    const c = new HyperfarmClient({
      endpoints,
      clock,
      random: () => 0.5,
      requestId: () => 'rid-1',
      ...extra,
    });
    clients.push(c);
    return { c, clock };
  }

  it('backs off with full jitter: uniform below min(cap, base * 2^n)', () => {
    expect([0, 1, 2, 3, 10].map((n) => backoffDelay(n, () => 0.5))).to.deep.equal([25, 50, 100, 200, 1000]);
    expect(backoffDelay(40, () => 0.999, { baseMs: 10, capMs: 300 })).to.equal(299);
    expect(backoffDelay(3, () => 0)).to.equal(0);
  });

  it('follows the leader a follower names in its trailers, at once, and keeps going there', async () => {
    const leader = await daemon({});
    const follower = await daemon({
      createVm: [unavailable('not the leader', { id: 'daemon-2', address: leader.server.address })],
    });
    const { c, clock } = client([follower.server.address]);
    const res = await c.call('createVm', { config: { name: 'web-1' } });
    expect(res.id).to.equal('op-1');
    expect(clock.sleeps).to.deep.equal([0]);
    expect(c.endpoint).to.equal(leader.server.address);
    expect(c.knownEndpoints).to.deep.equal([follower.server.address, leader.server.address]);
    // The same request id on both attempts: the farm deduplicates the retry.
    expect(follower.seen.map((s) => (s.request as pb.CreateVmRequest).requestId)).to.deep.equal(['rid-1']);
    expect(leader.seen.map((s) => (s.request as pb.CreateVmRequest).requestId)).to.deep.equal(['rid-1']);
    await c.call('listVms', {});
    expect(leader.seen).to.have.length(2);
  });

  it('retries "no leader yet" at the same daemon with growing waits', async () => {
    const noLeader = () => unavailable('no leader yet (an election is under way): retry');
    const d = await daemon({ changeVmState: [noLeader(), noLeader(), noLeader()] });
    const { c, clock } = client([d.server.address]);
    await c.call('changeVmState', { id: 'vm-1', action: 'VM_ACTION_START' });
    expect(clock.sleeps).to.deep.equal([25, 50, 100]);
    expect(d.seen).to.have.length(4);
  });

  it('moves to the next daemon when one does not answer', async () => {
    const d = await daemon({});
    const dead = await daemon({});
    await dead.server.shutdown(0);
    const { c } = client([dead.server.address, d.server.address]);
    const res = await c.call('listVms', {});
    expect(res.vms).to.deep.equal([]);
    expect(c.endpoint).to.equal(d.server.address);
  });

  it('does not retry a write whose outcome is unknown, and says so', async () => {
    const d = await daemon({
      changeVmState: [
        new ApiError(status.DEADLINE_EXCEEDED, 'timed out: the write may or may not have taken effect'),
      ],
    });
    const { c } = client([d.server.address]);
    const err = await c
      .call('changeVmState', { id: 'vm-1', action: 'VM_ACTION_START' })
      .catch((e: unknown) => e);
    expect(err).to.be.instanceOf(HyperfarmError);
    expect((err as HyperfarmError).code).to.equal(status.DEADLINE_EXCEEDED);
    expect((err as HyperfarmError).extra.outcomeUnknown).to.equal(true);
    expect(d.seen).to.have.length(1);
  });

  it('retries a keyed write whose outcome is unknown, with the same request id', async () => {
    const d = await daemon({
      createVm: [new ApiError(status.UNKNOWN, 'forwarded to the leader: outcome unknown')],
    });
    const { c } = client([d.server.address]);
    await c.call('createVm', { config: { name: 'web-1' }, requestId: 'mine' });
    expect(d.seen.map((s) => (s.request as pb.CreateVmRequest).requestId)).to.deep.equal(['mine', 'mine']);
  });

  it('retries a write the leader dropped (ABORTED), and never one the farm refused', async () => {
    const d = await daemon({
      changeVmState: [new ApiError(status.ABORTED, 'proposal dropped: leadership transfer'), undefined],
    });
    const { c } = client([d.server.address]);
    await c.call('changeVmState', { id: 'vm-1', action: 'VM_ACTION_START' });
    expect(d.seen).to.have.length(2);
    const refusing = await daemon({
      changeVmState: [new ApiError(status.FAILED_PRECONDITION, "cannot save VM 'web-1': it is Off")],
    });
    const { c: c2 } = client([refusing.server.address]);
    const err = (await c2
      .call('changeVmState', { id: 'x', action: 'VM_ACTION_SAVE' })
      .catch((e: unknown) => e)) as HyperfarmError;
    expect(err.message).to.equal("FAILED_PRECONDITION: cannot save VM 'web-1': it is Off");
    expect(refusing.seen).to.have.length(1);
  });

  it('stops retrying at the deadline and reports the last failure', async () => {
    const failures = Array.from({ length: 100 }, () =>
      unavailable('no leader yet (an election is under way): retry'),
    );
    const d = await daemon({ listVms: failures });
    const { c, clock } = client([d.server.address], virtualClock(), { deadlineMs: 3_000 });
    const err = (await c.call('listVms', {}).catch((e: unknown) => e)) as HyperfarmError;
    expect(err.code).to.equal(status.UNAVAILABLE);
    expect(clock.sleeps.reduce((a, b) => a + b, 0)).to.be.below(3_000);
    expect(err.extra.attempts).to.equal(d.seen.length);
  });

  it('reports the field an INVALID_ARGUMENT names', async () => {
    const d = await daemon({
      createVm: [new ApiError(status.INVALID_ARGUMENT, 'invalid config.name: is required', 'config.name')],
    });
    const { c } = client([d.server.address]);
    const err = (await c.call('createVm', { config: {} }).catch((e: unknown) => e)) as HyperfarmError;
    expect(err.extra.field).to.equal('config.name');
    expect(err.extra.cause).to.have.property('code', grpc.status.INVALID_ARGUMENT);
  });
});
