import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { pb } from '@hyperfarm/api';
import type { AgentHost } from '../src/edge/agent-host.js';
import { mib, vmConfig } from './helpers.js';
import { openTestHost, type TestClock } from './host-helpers.js';

/**
 * The host's own timer (AgentHost.arm): the engine is advanced every tick (100 ms) while a guest
 * runs, and otherwise at its next deadline, so a deadline (a boot's or a pause's end, the
 * lease's expiry) is acted on, with no call made, no later than a 100 ms timer did.
 */
describe("the host's timer pumps the engine at its deadlines", () => {
  let dir: string;
  let host: AgentHost;
  let clock: TestClock;
  /** Each event as the watchers get it, with the clock's time then. */
  let seen: { type: string; message: string; at: number }[];
  const START = 1_000_000;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-agent-pump-'));
    ({ host, clock } = await openTestHost(dir, {
      id: 'host-pump',
      macPoolStart: '00-15-5D-20-00-00',
      startMs: START,
      seed: 1,
      tickMs: 100,
    }));
    seen = [];
    host.onEvent((e: pb.AgentEvent) =>
      seen.push({ type: e.type ?? '', message: e.message ?? '', at: clock.t }),
    );
  });
  afterEach(async () => {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const seenAt = (pattern: RegExp) => seen.find((e) => pattern.test(e.message))?.at;

  it('an idle host (no VM, no lease) is pumped once every 5 s, not every 100 ms', () => {
    const from = clock.fired;
    clock.run(20_000);
    expect(clock.fired - from).to.equal(4);
  });

  it('the lease runs out at its deadline with no call: the host fences itself then', () => {
    host.renewLease('daemon-1', 1, 1_500);
    clock.run(1_499);
    expect(seen.map((e) => e.type)).to.deep.equal([]);
    clock.run(1);
    expect(seen.map((e) => [e.type, e.at])).to.deep.equal([['lease_expired', START + 1_500]]);
  });

  it('a booting guest is Running within a tick of its boot, and its host pumped every tick while it runs', async () => {
    await host.createVm('vm-1', vmConfig('web-1', { memoryBytes: mib(256), workload: { bootMs: 250 } }), 1);
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_START'));
    clock.run(1_000);
    expect(seenAt(/Starting -> Running/)).to.be.within(START + 250, START + 350);
    const from = clock.fired;
    clock.run(1_000);
    expect(clock.fired - from).to.equal(10);
  });

  it('a pause (no guest running while Pausing) ends at its deadline; a Paused host goes idle', async () => {
    await host.createVm('vm-1', vmConfig('web-1', { memoryBytes: mib(256), workload: { bootMs: 10 } }), 1);
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_START'));
    clock.run(500);
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_PAUSE'));
    const paused = clock.t;
    clock.run(1_000);
    expect(seenAt(/Pausing -> Paused/)).to.equal(paused + 100);
    const from = clock.fired;
    clock.run(10_000);
    expect(clock.fired - from).to.equal(2);
  });

  it('a reader that changes the engine has its output pumped at once, not at the next deadline', async () => {
    await host.createVm('vm-1', vmConfig('web-1', { memoryBytes: mib(256), workload: { bootMs: 10 } }), 1);
    clock.run(100);
    seen = [];
    host.read((e) => e.power.change('vm-1', 'VM_ACTION_START'));
    clock.run(0);
    expect(seenAt(/Off -> Starting/)).to.equal(clock.t);
  });
});
