import { expect } from 'chai';
import { SimRng } from '@hyperfarm/raft';
import { Scope, VirtualClock } from '../src/clock.js';
import { DEFAULT_SHAPE, SimHost } from '../src/host.js';
import { SimNetwork } from '../src/network.js';

// A simulated multi-host agent process answers GrantLease as the agent's AgentService does: the
// hosts in `more` are granted as if called each on their own, and one that cannot be reached
// answers an error of its own while the others are granted.

function agentOf(n: number) {
  const clock = new VirtualClock();
  const net = new SimNetwork(clock, new SimRng(1));
  const hosts = [...Array(n).keys()].map((i) => {
    const h = new SimHost(
      `h${i}`,
      `h${i}.sim:7000`,
      DEFAULT_SHAPE,
      { leaseMs: 10_000, saveMs: 1, restoreMs: 1 },
      i,
    );
    h.links = { net, byAddress: () => undefined, step: () => undefined };
    h.boot(new Scope(clock, `h${i}#1`));
    return h;
  });
  for (const h of hosts) h.siblings = hosts.filter((x) => x !== h);
  return { clock, net, hosts };
}

describe('simulated multi-host agent: lease grants carried for siblings', () => {
  it('grants each sibling its own lease and names the siblings', () => {
    const { clock, hosts } = agentOf(3);
    const [a, b, c] = hosts as [SimHost, SimHost, SimHost];
    const r = a.grantLease({
      daemonId: 'd1',
      term: 2,
      durationMs: 5_000,
      more: (
        [
          ['h1', 7_000],
          ['h2', 9_000],
        ] as const
      ).map(([hostId, durationMs]) => ({ hostId, durationMs })),
    });
    expect(r.expiresAtMs).to.equal(clock.now + 5_000);
    expect(r.siblingHostIds).to.deep.equal(['h1', 'h2']);
    expect(r.more.map((m) => [m.hostId, m.expiresAtMs, m.error, m.host?.id])).to.deep.equal([
      ['h1', clock.now + 7_000, '', 'h1'],
      ['h2', clock.now + 9_000, '', 'h2'],
    ]);
    expect(b.leaseUntil()).to.equal(clock.now + 7_000);
    expect(c.leaseUntil()).to.equal(clock.now + 9_000);
  });

  it('a sibling that crashed, is cut off from the daemon, or is not of this process gets an error, and only it', () => {
    const { clock, net, hosts } = agentOf(4);
    const [a, b, c, d] = hosts as [SimHost, SimHost, SimHost, SimHost];
    b.crash();
    net.isolate('h2');
    const r = a.grantLease({
      daemonId: 'd1',
      term: 1,
      durationMs: 5_000,
      more: ['h1', 'h2', 'h3', 'h9'].map((hostId) => ({ hostId, durationMs: 5_000 })),
    });
    const errors = Object.fromEntries(r.more.map((m) => [m.hostId, m.error]));
    expect(errors['h1']).to.match(/does not answer/);
    expect(errors['h2']).to.match(/cut off from d1/);
    expect(errors['h3']).to.equal('');
    expect(errors['h9']).to.match(/not served by this agent process/);
    expect(c.leaseUntil()).to.equal(undefined);
    expect(d.leaseUntil()).to.equal(clock.now + 5_000);
  });
});
