import { expect } from 'chai';
import { createLogger, type pb } from '@hyperfarm/api';
import type { AppliedNetworkReport } from '../src/edge/controller-runner.js';
import type { NetworkAgents } from '../src/edge/network-api.js';
import { NetworkPusher, PUSH_IN_FLIGHT } from '../src/edge/network-push.js';
import type { Timers } from '../src/edge/timers.js';
import { FarmStateMachine, type CommandBody } from '../src/fsm/index.js';
import { FarmBuilder } from './fsm/build.js';
import { EXT_SWITCH, webCluster } from './fsm/fixtures.js';

const logger = createLogger({ program: 'test', id: 'network-push', level: 'silent' });
const HOSTS = 100;

/**
 * The leader's network pusher against agents that answer only when told: how many pushes it has
 * open at once, over a term's first round and the rounds that changes ask for meanwhile.
 */
describe('network pusher', () => {
  it(`keeps at most ${PUSH_IN_FLIGHT} agents in flight, and a round waits for the one before it`, async () => {
    const machine = new FarmStateMachine();
    const b = new FarmBuilder(machine.state);
    for (let i = 0; i < HOSTS; i++) b.host({ id: `h${i}`, address: `10.0.0.${i}:1` });
    let index = 0;
    const apply = (c: CommandBody) =>
      machine.apply(
        new TextEncoder().encode(JSON.stringify({ v: 1, cmds: [{ rid: `t${++index}`, t: 2_000, ...c }] })),
        ++index,
      );

    // Timers fired by hand; the verify loop's (2 s) is never fired.
    const timers: { fn: () => void; ms: number }[] = [];
    const clock: Timers = {
      now: () => 0,
      set: (fn, ms) => timers.push({ fn, ms }),
      clear: () => undefined,
    };
    const fireRounds = () => {
      const due = timers.filter((t) => t.ms < 1_000);
      timers.splice(0, timers.length, ...timers.filter((t) => t.ms >= 1_000));
      for (const t of due) t.fn();
      return due.length;
    };

    const open: { address: string; answer(): void }[] = [];
    const pushes: string[] = [];
    let most = 0;
    const net: NetworkAgents = {
      of: (address) =>
        ({
          applyNetworkConfig: () =>
            new Promise<object>((resolve) => {
              pushes.push(address);
              open.push({ address, answer: () => resolve({}) });
              most = Math.max(most, open.length);
            }),
        }) as never,
    };
    const settle = () => new Promise((r) => setImmediate(r));
    const answerAll = async () => {
      while (open.length > 0) {
        for (const o of open.splice(0)) o.answer();
        await settle();
      }
    };

    const pusher = new NetworkPusher(machine, {} as never, net, logger, clock);
    pusher.start(1);
    expect(fireRounds()).to.equal(1);
    await settle();
    expect(open).to.have.length(PUSH_IN_FLIGHT);

    // A host's network changes while the first round is still pushing (an Internal switch on
    // h3, which only h3 holds): no second round alongside it.
    apply({ ...EXT_SWITCH, id: 's-in', name: 'in', switchType: 'SWITCH_TYPE_INTERNAL', hostId: 'h3' });
    expect(fireRounds()).to.equal(0);
    await settle();
    expect(open).to.have.length(PUSH_IN_FLIGHT);

    // A few agents answer: as many others are asked, never more than the limit.
    for (const o of open.splice(0, 5)) o.answer();
    await settle();
    expect(open).to.have.length(PUSH_IN_FLIGHT);
    await answerAll();
    expect(pushes).to.have.length(HOSTS);
    expect(new Set(pushes).size).to.equal(HOSTS);

    // The change made during the round is pushed by the next one: to h3 only, since every other
    // host already holds its configuration.
    expect(fireRounds()).to.equal(1);
    await settle();
    expect(open.map((o) => o.address)).to.deep.equal(['10.0.0.3:1']);
    await answerAll();
    expect(most).to.equal(PUSH_IN_FLIGHT);
    expect(fireRounds()).to.equal(0);
    pusher.stop();
  });
});

/**
 * A small farm whose agents answer at once, hold what they were pushed, and report it (or not)
 * through `reports`, as the leader's lease answers would.
 */
function farm(hosts: number) {
  const machine = new FarmStateMachine();
  const b = new FarmBuilder(machine.state);
  for (let i = 0; i < hosts; i++) b.host({ id: `h${i}`, address: `10.0.0.${i}:1` });
  b.must(EXT_SWITCH);
  let index = 0;
  const apply = (c: CommandBody) =>
    machine.apply(
      new TextEncoder().encode(JSON.stringify({ v: 1, cmds: [{ rid: `t${++index}`, t: 2_000, ...c }] })),
      ++index,
    );
  let now = 0;
  const timers: { fn: () => void; ms: number }[] = [];
  const clock: Timers = { now: () => now, set: (fn, ms) => timers.push({ fn, ms }), clear: () => undefined };
  const fire = (which: (ms: number) => boolean) => {
    const due = timers.filter((t) => which(t.ms));
    timers.splice(0, timers.length, ...timers.filter((t) => !which(t.ms)));
    for (const t of due) t.fn();
    return due.length;
  };
  /** What each agent holds, by host id (its address's last byte names it). */
  const held = new Map<string, pb.NetworkConfig__Output>();
  const hostOf = (address: string) => `h${address.split(':')[0]!.split('.')[3]}`;
  const pushes: { host: string; revision: number }[] = [];
  const asked: string[] = [];
  const net: NetworkAgents = {
    of: (address) =>
      ({
        applyNetworkConfig: (cfg: pb.NetworkConfig__Output) => {
          pushes.push({ host: hostOf(address), revision: cfg.revision });
          held.set(hostOf(address), cfg);
          return Promise.resolve({ revision: cfg.revision, warnings: [] });
        },
        getNetworkConfig: () => {
          asked.push(hostOf(address));
          return Promise.resolve(
            held.get(hostOf(address)) ?? { revision: 0, switches: [], nlbClusters: [], peers: [] },
          );
        },
      }) as never,
  };
  const reports = new Map<string, AppliedNetworkReport>();
  const pusher = new NetworkPusher(machine, {} as never, net, logger, clock, (id) => reports.get(id));
  const settle = () => new Promise((r) => setImmediate(r));
  return {
    machine,
    b,
    apply,
    held,
    pushes,
    asked,
    reports,
    pusher,
    at: (ms: number) => (now = ms),
    /** Runs the rounds due (20 ms timers) until none is left; how many ran. */
    rounds: async () => {
      let n = 0;
      for (let ran = fire((ms) => ms < 1_000); ran > 0; ran = fire((ms) => ms < 1_000)) {
        n += ran;
        await settle();
      }
      return n;
    },
    /** The 2 s check, once. */
    verify: async () => {
      fire((ms) => ms >= 1_000);
      await settle();
    },
    /** Every host reports, in answer to a grant sent at `sentMs`, the revision it holds. */
    reportHeld: (sentMs: number) => {
      for (const id of machine.state.hosts.keys())
        reports.set(id, { revision: held.get(id)?.revision ?? 0, sentMs });
    },
  };
}

describe('network pusher: what agents hold, from their lease answers', () => {
  it('pushes again to a restarted agent that reports an older revision, and asks no agent that reports', async () => {
    const f = farm(5);
    f.pusher.start(1);
    expect(await f.rounds()).to.equal(1);
    const first = f.machine.state.revision;
    expect(f.pushes).to.deep.equal(['h0', 'h1', 'h2', 'h3', 'h4'].map((host) => ({ host, revision: first })));
    // An Internal switch on h2: h2 alone gets a newer configuration.
    f.apply({ ...EXT_SWITCH, id: 's-in', name: 'in', switchType: 'SWITCH_TYPE_INTERNAL', hostId: 'h2' });
    f.at(100);
    expect(await f.rounds()).to.equal(1);
    const second = f.machine.state.revision;
    expect(second).to.be.above(first);
    expect(f.pushes.slice(5)).to.deep.equal([{ host: 'h2', revision: second }]);

    // Every agent reports what it holds: nothing to push, nobody asked, no round run.
    f.at(1_000);
    f.reportHeld(1_000);
    await f.verify();
    expect(await f.rounds()).to.equal(0);
    expect(f.asked).to.deep.equal([]);
    expect(f.pushes).to.have.length(6);

    // h2's agent restarts with the configuration of before the switch (revision `first`), and
    // the farm does not see it register anew: its next lease answer says so.
    f.held.set('h2', { ...f.held.get('h2')!, revision: first });
    f.reportHeld(2_000);
    await f.verify();
    expect(await f.rounds()).to.equal(1);
    expect(f.pushes.slice(6)).to.deep.equal([{ host: 'h2', revision: f.machine.state.revision }]);
    expect(f.held.get('h2')!.switches.map((s) => s.name)).to.have.members(['ext', 'in']);
    expect(f.asked).to.deep.equal([]);
    f.pusher.stop();
  });

  it('pushes again to an agent that lost its configuration (revision 0), once its answer postdates the push', async () => {
    const f = farm(3);
    f.pusher.start(1);
    await f.rounds();
    expect(f.pushes).to.have.length(3);
    const revision = f.machine.state.revision;
    // h1 lost what it held. An answer to a grant sent before the push was confirmed (at 0)
    // proves nothing: the push may have reached the agent after it.
    f.held.delete('h1');
    f.at(500);
    f.reportHeld(0);
    await f.verify();
    expect(await f.rounds()).to.equal(0);
    // The answer to a later grant does.
    f.reportHeld(400);
    await f.verify();
    expect(await f.rounds()).to.equal(1);
    expect(f.pushes.slice(3)).to.deep.equal([{ host: 'h1', revision }]);
    // Held again: nothing more.
    f.at(1_000);
    f.reportHeld(900);
    await f.verify();
    expect(await f.rounds()).to.equal(0);
    expect(f.pushes).to.have.length(4);
    expect(f.asked).to.deep.equal([]);
    f.pusher.stop();
  });

  it('asks an agent whose lease answers do not say (an older agent) and pushes again if it holds an older revision', async () => {
    const f = farm(3);
    f.pusher.start(1);
    await f.rounds();
    f.at(1_000);
    f.reportHeld(1_000);
    f.reports.set('h0', { revision: undefined, sentMs: 1_000 });
    await f.verify();
    expect(f.asked).to.deep.equal(['h0']);
    expect(await f.rounds()).to.equal(0);
    f.held.set('h0', { ...f.held.get('h0')!, revision: 0 });
    await f.verify();
    expect(f.asked).to.deep.equal(['h0', 'h0']);
    expect(await f.rounds()).to.equal(1);
    expect(f.pushes.slice(3).map((p) => p.host)).to.deep.equal(['h0']);
    f.pusher.stop();
  });

  it('builds and pushes the configurations again when an NLB member’s VM goes, not for other VMs', async () => {
    const f = farm(3);
    f.b.vm('v1', { name: 'web-1', switches: ['ext'] }, 'h1').address('v1', '10.0.0.11/24');
    f.b.vm('v2', { name: 'other', switches: ['ext'] }, 'h2');
    f.b.must(webCluster(['v1']));
    f.pusher.start(1);
    await f.rounds();
    expect(f.held.get('h0')!.nlbClusters[0]!.members.map((m) => m.vmId)).to.deep.equal(['v1']);
    // Not a member: no round.
    f.apply({ type: 'vm.delete', vmId: 'v2', opId: 'del-v2' });
    expect(await f.rounds()).to.equal(0);
    // The member's VM is deleted (it never ran: gone at once): every host holds the cluster.
    f.apply({ type: 'vm.delete', vmId: 'v1', opId: 'del-v1' });
    expect(f.machine.state.vms.has('v1')).to.equal(false);
    expect(await f.rounds()).to.equal(1);
    expect(f.pushes.slice(3).map((p) => p.host)).to.have.members(['h0', 'h1', 'h2']);
    for (const id of ['h0', 'h1', 'h2']) expect(f.held.get(id)!.nlbClusters[0]!.members).to.deep.equal([]);
    f.pusher.stop();
  });
});
