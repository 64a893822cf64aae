import { expect } from 'chai';
import { createLogger } from '@hyperfarm/api';
import type { NetworkAgents } from '../src/edge/network-api.js';
import { NetworkPusher, PUSH_IN_FLIGHT } from '../src/edge/network-push.js';
import type { Timers } from '../src/edge/timers.js';
import { FarmStateMachine, type CommandBody } from '../src/fsm/index.js';
import { FarmBuilder } from './fsm/build.js';
import { EXT_SWITCH } from './fsm/fixtures.js';

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
