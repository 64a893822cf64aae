import { expect } from 'chai';
import { createLogger, type pb } from '@hyperfarm/api';
import { LiveHosts, REFRESH_MS } from '../src/edge/live-hosts.js';

const logger = createLogger({ program: 'test', id: 'live-hosts', level: 'silent' });

/**
 * A follower's copy of the leader's live host view: how often it asks the leader, and when a
 * read waits for it. The leader's side over real processes is in process/farm.test.ts.
 */
describe('live host usage on a follower', () => {
  let now = 1_000_000;
  let leader = 'daemon-1';
  const calls: { pageToken: string }[] = [];
  let answer: (req: { pageToken: string }) => Promise<pb.ListHostsResponse__Output>;
  const host = (id: string, cpuPercent: number) =>
    ({ id, lastHeartbeatMs: now, usage: { cpuPercent } }) as pb.Host__Output;
  const live = new LiveHosts(
    { status: () => ({ id: 'daemon-2', leader, addresses: { 'daemon-1': 'leader:1' } }) } as never,
    (id) => ({ lastHeartbeatMs: 1, cpuPercent: id === 'mine' ? 50 : 0 }),
    {
      of: () =>
        ({
          listHosts: (req: { pageToken: string }) => {
            calls.push(req);
            return answer(req);
          },
        }) as never,
    },
    logger,
    { now: () => now },
  );

  it('waits for the first copy, every page of it, then answers from it and asks at most once a second', async () => {
    answer = (req) =>
      Promise.resolve(
        req.pageToken === ''
          ? { hosts: [host('a', 12)], nextPageToken: 'p2' }
          : { hosts: [host('b', 3)], nextPageToken: '' },
      );
    const first = await live.lookup();
    expect(first('a')).to.deep.equal({ lastHeartbeatMs: now, cpuPercent: 12 });
    expect(first('b')?.cpuPercent).to.equal(3);
    expect(calls.map((c) => c.pageToken)).to.deep.equal(['', 'p2']);

    now += REFRESH_MS - 1;
    await live.lookup();
    expect(calls).to.have.length(2);

    // Due again: the read answers from the copy it has; the new one comes after.
    now += 1;
    let release!: () => void;
    answer = () =>
      new Promise((resolve) => (release = () => resolve({ hosts: [host('a', 40)], nextPageToken: '' })));
    const during = await live.lookup();
    expect(during('a')?.cpuPercent).to.equal(12);
    await live.lookup(); // one refresh at a time
    expect(calls).to.have.length(3);
    release();
    await new Promise((r) => setImmediate(r));
    expect((await live.lookup())('a')?.cpuPercent).to.equal(40);
    expect((await live.lookup())('b')).to.equal(undefined);
  });

  it('keeps the last copy when the leader cannot answer, and asks nothing while no read asks', async () => {
    const before = calls.length;
    now += 60_000; // no read for a minute: nothing asked meanwhile
    expect(calls).to.have.length(before);
    answer = () => Promise.reject(new Error('unreachable'));
    expect((await live.lookup())('a')?.cpuPercent).to.equal(40);
    expect(calls).to.have.length(before + 1);
  });

  it('answers from its own controllers once it leads', async () => {
    leader = 'daemon-2';
    const before = calls.length;
    expect((await live.lookup())('mine')?.cpuPercent).to.equal(50);
    expect(calls).to.have.length(before);
  });
});
