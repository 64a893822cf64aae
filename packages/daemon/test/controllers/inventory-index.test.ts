import type { Logger, pb } from '@hyperfarm/api';
import { expect } from 'chai';
import { staleCopies } from '../../src/controllers/index.js';
import type { AgentEventSink, AgentPort } from '../../src/edge/agent-port.js';
import { AgentWatcher } from '../../src/edge/agent-watcher.js';
import { ForeignCopies, RestingVms } from '../../src/edge/inventory-index.js';
import type { Timers } from '../../src/edge/timers.js';
import type { FarmState } from '../../src/fsm/index.js';

/** A small deterministic generator (the tests' random walks replay the same every run). */
function rng(seed: number): (n: number) => number {
  let x = seed;
  return (n) => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return (x >>> 8) % n;
  };
}

const HOSTS = ['h1', 'h2', 'h3', 'h4'];
const VMS = Array.from({ length: 12 }, (_, i) => `vm${i}`);

const silent = { debug: () => undefined } as unknown as Logger;
const timers: Timers = { now: () => 0, set: () => 0, clear: () => undefined };

/** An agent whose stream and listing the test drives by hand. */
function agent() {
  let sink: AgentEventSink | undefined;
  let listed: (vms: pb.Vm__Output[]) => void = () => undefined;
  const port = {
    watchEvents: (_h: unknown, s: AgentEventSink) => {
      sink = s;
      return { cancel: () => undefined };
    },
    listVms: () => new Promise<pb.Vm__Output[]>((resolve) => (listed = resolve)),
  } as unknown as AgentPort;
  return { port, sink: () => sink!, list: (vms: pb.Vm__Output[]) => listed(vms) };
}

let revision = 0;
const vm = (id: string, generation: number) =>
  ({
    id,
    revision: ++revision,
    status: { state: 'VM_STATE_RUNNING', generation, heartbeat: 'HEARTBEAT_STATUS_OK', message: '' },
  }) as unknown as pb.Vm__Output;

describe('the leader’s indexes of agent inventories', () => {
  it('ForeignCopies names, per host, exactly the inventory’s VMs the farm places elsewhere, through moves, deletes, reconnects and a restored state', async () => {
    // The farm: where each VM is placed (absent: no such VM); the generation a move gives it.
    const placed = new Map<string, string>();
    const generation = new Map<string, number>();
    const index = new ForeignCopies((id) => placed.get(id));
    const agents = HOSTS.map(() => agent());
    const watchers = new Map(
      HOSTS.map((h, i) => [
        h,
        new AgentWatcher(
          { id: h, address: h },
          agents[i]!.port,
          timers,
          silent,
          () => undefined,
          index.hook(h),
        ),
      ]),
    );
    for (const w of watchers.values()) w.start();
    for (const a of agents) a.list([]);
    await Promise.resolve();
    const state = {
      hosts: new Map(HOSTS.map((id) => [id, { id, state: 'HOST_STATE_UP' }])),
      get vms() {
        return new Map(
          [...placed].map(([id, hostId]) => [id, { id, hostId, generation: generation.get(id) ?? 1 }]),
        );
      },
    } as unknown as FarmState;

    const next = rng(7);
    let sawForeign = 0;
    let sawStale = 0;
    for (let step = 0; step < 4_000; step++) {
      const h = HOSTS[next(HOSTS.length)]!;
      const i = HOSTS.indexOf(h);
      const id = VMS[next(VMS.length)]!;
      const w = watchers.get(h)!;
      switch (next(9)) {
        case 0:
        case 1: // the agent holds the VM (a create, a move's copy, an event), at some generation
          agents[i]!.sink().event({
            type: 'state_changed',
            vmId: id,
            vm: vm(id, 1 + next(3)),
          } as unknown as pb.AgentEvent__Output);
          break;
        case 2: // the agent deleted it
          agents[i]!.sink().event({ type: 'deleted', vmId: id } as unknown as pb.AgentEvent__Output);
          break;
        case 3: // the leader dropped it (DeleteVm, DropStaleVm answered)
          w.forget(id);
          break;
        case 4: // the farm moves it (a failover, a migration's end): a newer generation
        case 5:
          placed.set(id, h);
          generation.set(id, (generation.get(id) ?? 1) + 1);
          index.vmChanged(id);
          break;
        case 6: // the farm deletes it
          placed.delete(id);
          index.vmChanged(id);
          break;
        case 7: // the stream broke: the inventory is dropped, and read again
          if (next(4) === 0) {
            agents[i]!.sink().closed(new Error('cut'));
            w.start();
            agents[i]!.list([]);
            await Promise.resolve();
          } else w.observe(vm(id, 1 + next(3)));
          break;
        case 8: // a snapshot replaced the state: no events say what changed
          if (next(20) === 0) {
            for (const v of VMS) if (next(3) === 0) placed.set(v, HOSTS[next(HOSTS.length)]!);
            index.recheckAll();
          }
          break;
      }
      for (const host of HOSTS) {
        const inv = watchers.get(host)!.vms;
        const want = [...inv.keys()].filter((v) => placed.get(v) !== host).sort();
        expect([...index.of(host)].sort(), `step ${step}, ${host}`).to.deep.equal(want);
        sawForeign += want.length;
      }
      // Looking through the few candidates finds what looking through every inventory finds, in order.
      const every = staleCopies(state, watchers, HOSTS);
      expect(
        staleCopies(state, watchers, HOSTS, (x) => index.of(x)),
        `step ${step}`,
      ).to.deep.equal(every);
      sawStale += every.length;
    }
    // The walk went through the cases that matter: copies held elsewhere, and stale ones.
    expect(sawForeign).to.be.above(1_000);
    expect(sawStale).to.be.above(100);
  });

  it('a stopped watcher’s inventory leaves the index', () => {
    const index = new ForeignCopies(() => 'h2');
    const a = agent();
    const w = new AgentWatcher(
      { id: 'h1', address: 'h1' },
      a.port,
      timers,
      silent,
      () => undefined,
      index.hook('h1'),
    );
    w.start();
    a.sink().event({
      type: 'state_changed',
      vmId: 'vm1',
      vm: vm('vm1', 1),
    } as unknown as pb.AgentEvent__Output);
    expect([...index.of('h1')]).to.deep.equal(['vm1']);
    w.stop();
    expect([...index.of('h1')]).to.deep.equal([]);
  });

  it('RestingVms says a host’s VMs are all at rest exactly when each of them is', () => {
    const placed = new Map<string, string>();
    const resting = new RestingVms();
    const onHost = (h: string) => new Set(VMS.filter((v) => placed.get(v) === h));
    const next = rng(11);
    let sawAll = 0;
    let sawSome = 0;
    for (let step = 0; step < 4_000; step++) {
      const id = VMS[next(VMS.length)]!;
      switch (next(6)) {
        case 0: // the farm places or moves it; the leader takes it out of rest (its record changed)
          placed.set(id, HOSTS[next(HOSTS.length)]!);
          resting.delete(id);
          break;
        case 1: // the farm deletes it
          placed.delete(id);
          resting.delete(id);
          break;
        case 2: // the reconciler found it at rest
        case 3:
          resting.add(id, placed.get(id));
          break;
        case 4: // looked at again
          resting.delete(id);
          break;
        case 5:
          if (next(30) === 0) resting.clear();
          break;
      }
      for (const h of HOSTS) {
        const vms = onHost(h);
        const all = [...vms].every((v) => resting.has(v));
        expect(resting.allAtRest(h, vms), `step ${step}, ${h}`).to.equal(all);
        if (vms.size > 0) {
          if (all) sawAll++;
          else sawSome++;
        }
      }
    }
    expect(sawAll).to.be.above(100);
    expect(sawSome).to.be.above(100);
  });
});
