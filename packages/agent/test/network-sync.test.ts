import { strict as assert } from 'node:assert';
import { createLogger, type pb } from '@hyperfarm/api';
import { AgentNetwork, type FrameLinks, type NetworkHostPort } from '../src/network/edge/agent-network.js';
import { makeEngine, vmConfig } from './helpers.js';

/**
 * The network follows the engine's VMs (AgentNetwork's sync, on each event and every 250 ms): a
 * VM whose adapters change is attached again with the new ones, and one left as it was keeps its
 * ports.
 */
/** A Private switch of host-1. */
const sw = (name: string): pb.VirtualSwitch__Output => ({
  id: name,
  name,
  type: 'SWITCH_TYPE_PRIVATE',
  hostId: 'host-1',
  macAgingSeconds: 300,
  hostAddress: '',
});

describe("the network's sync of the engine's VMs", function () {
  function setUp() {
    const engine = makeEngine();
    const listeners: ((e: pb.AgentEvent) => void)[] = [];
    const soon: (() => void)[] = [];
    const port: NetworkHostPort = {
      settings: { id: 'host-1' },
      logger: createLogger({ program: 'test', id: 'test', level: 'silent' }),
      now: () => engine.now(),
      read: (fn) => fn(engine),
      onEvent: (l) => {
        listeners.push(l);
        return () => undefined;
      },
    };
    const links: FrameLinks = { setPeers: () => undefined, send: () => undefined, close: () => undefined };
    const network = new AgentNetwork(port, undefined, {
      timers: { set: () => ({}), clear: () => undefined, soon: (fn) => void soon.push(fn) },
      links: () => links,
    });
    network.apply({ revision: 1, switches: [sw('a'), sw('b')], nlbClusters: [], peers: [] });
    /** An engine event, and the sync it schedules. */
    const event = () => {
      for (const l of listeners) l({});
      for (const fn of soon.splice(0)) fn();
    };
    const vmPorts = (name: string) =>
      network.net
        .switchStatus(name)
        .ports.filter((p) => p.vmId !== '')
        .map((p) => ({ vmId: p.vmId, id: p.id }));
    return { engine, network, event, vmPorts };
  }

  it('a VM whose adapters move to another switch leaves the first and is on the second', () => {
    const { engine, event, vmPorts } = setUp();
    const nic = (switchName: string): pb.NetworkAdapter => ({ kind: 'NIC_KIND_SYNTHETIC', switchName });
    engine.vms.create('vm-1', vmConfig('one', { networkAdapters: [nic('a')] }), 1);
    engine.vms.create('vm-2', vmConfig('two', { networkAdapters: [nic('a')] }), 1);
    event();
    assert.deepEqual(
      vmPorts('a').map((p) => p.vmId),
      ['vm-1', 'vm-2'],
    );
    assert.deepEqual(vmPorts('b'), []);

    engine.vms.update('vm-1', { networkAdapters: [nic('b')] }, ['network_adapters'], 1);
    event();
    assert.deepEqual(
      vmPorts('a').map((p) => p.vmId),
      ['vm-2'],
    );
    assert.deepEqual(
      vmPorts('b').map((p) => p.vmId),
      ['vm-1'],
    );
  });

  it('a VM left as it was keeps its ports from sync to sync, and a deleted one leaves', () => {
    const { engine, event, vmPorts } = setUp();
    engine.vms.create(
      'vm-1',
      vmConfig('one', { networkAdapters: [{ kind: 'NIC_KIND_SYNTHETIC', switchName: 'a' }] }),
      1,
    );
    event();
    const before = vmPorts('a');
    assert.equal(before.length, 1);
    // Another VM's change, and a change of this one that leaves its adapters as they were.
    engine.vms.create('vm-2', vmConfig('two'), 1);
    engine.vms.update('vm-1', { memoryBytes: 1024 * 1024 * 1024 }, ['memory_bytes'], 1);
    event();
    event();
    assert.deepEqual(vmPorts('a'), before);
    engine.vms.delete('vm-1', 1);
    event();
    assert.deepEqual(vmPorts('a'), []);
  });
});

/**
 * When the network syncs and wakes by itself (AgentNetwork's timers): each engine event syncs at
 * once; the periodic sync runs every 250 ms only while a running guest's speed follows its CPU
 * share (shares move without an event), else every 5 s as a safety net; the network's own timer
 * fires only at its core's deadlines (an idle host's MAC table sweep, every 10 s).
 */
describe("the network's timers", function () {
  const nic = (switchName: string): pb.NetworkAdapter => ({ kind: 'NIC_KIND_SYNTHETIC', switchName });

  function setUp() {
    const engine = makeEngine();
    const listeners: ((e: pb.AgentEvent) => void)[] = [];
    let syncs = 0;
    let fired = 0;
    const due: { at: number; seq: number; fn: () => void }[] = [];
    let seq = 0;
    const port: NetworkHostPort = {
      settings: { id: 'host-1' },
      logger: createLogger({ program: 'test', id: 'test', level: 'silent' }),
      now: () => engine.now(),
      // Each sync reads the engine's VMs and CPU shares once.
      read: (fn) => {
        syncs++;
        return fn(engine);
      },
      onEvent: (l) => {
        listeners.push(l);
        return () => undefined;
      },
    };
    const links: FrameLinks = { setPeers: () => undefined, send: () => undefined, close: () => undefined };
    const network = new AgentNetwork(port, undefined, {
      timers: {
        set: (fn, ms) => {
          const t = { at: engine.now() + ms, seq: seq++, fn };
          due.push(t);
          return t;
        },
        clear: (t) => void due.splice(due.indexOf(t as (typeof due)[number]) >>> 0, 1),
        soon: (fn) => fn(),
      },
      links: () => links,
    });
    network.apply({ revision: 1, switches: [sw('a')], nlbClusters: [], peers: [] });
    /** Moves the engine's clock on by `ms`, the timers firing on the way, each at its time. */
    const run = (ms: number) => {
      const from = { syncs, fired };
      const until = engine.now() + ms;
      for (;;) {
        due.sort((a, b) => a.at - b.at || a.seq - b.seq);
        const t = due[0];
        if (!t || t.at > until) break;
        due.shift();
        engine.advance(t.at);
        fired++;
        t.fn();
      }
      engine.advance(until);
      return { syncs: syncs - from.syncs, fired: fired - from.fired };
    };
    /** The engine's events so far, as the agent hands them to its listeners. */
    const event = () => {
      engine.takeEvents();
      listeners.forEach((l) => l({}));
    };
    const guest = (vmId: string) =>
      (network as unknown as { vms: Map<string, { guest: { serviceTimeMs: number } }> }).vms.get(vmId)?.guest;
    return { engine, network, event, run, guest };
  }

  it('an idle host syncs every 5 s and wakes for its MAC table sweep every 10 s, nothing more', async () => {
    const { engine, network, event, run } = setUp();
    run(1_000);
    // 4 syncs and 2 sweeps in 20 s; at the former 250 ms and 1 s: 80 syncs and 20 wakes.
    assert.deepEqual(run(20_000), { syncs: 4, fired: 6 });
    // Off VMs, and a running one with no CPU demand, change nothing.
    engine.vms.create('vm-1', vmConfig('off', { networkAdapters: [nic('a')] }), 1);
    engine.vms.create('vm-2', vmConfig('idle', { workload: { bootMs: 100, cpuDemandPercent: 0 } }), 1);
    engine.power.change('vm-2', 'VM_ACTION_START');
    event();
    run(1_000);
    assert.deepEqual(run(20_000), { syncs: 4, fired: 6 });
    await network.stop();
  });

  it('each change the sync follows is followed at its event, with no timer', async () => {
    const { engine, network, event, run } = setUp();
    run(10_000);
    const ports = () => network.net.switchStatus('a').ports.filter((p) => p.vmId !== '').length;
    engine.vms.create('vm-1', vmConfig('one', { networkAdapters: [nic('a')], workload: { bootMs: 100 } }), 1);
    event();
    assert.equal(ports(), 1);
    assert.equal(network.net.vmState('vm-1'), 'off');
    engine.power.change('vm-1', 'VM_ACTION_START');
    engine.advance(engine.now() + 100);
    event();
    assert.equal(network.net.vmState('vm-1'), 'running');
    engine.power.change('vm-1', 'VM_ACTION_PAUSE');
    engine.advance(engine.now() + 100);
    event();
    assert.equal(network.net.vmState('vm-1'), 'paused');
    engine.power.change('vm-1', 'VM_ACTION_TURN_OFF');
    engine.vms.delete('vm-1', 1);
    event();
    assert.equal(ports(), 0);
    await network.stop();
  });

  it('a running guest with a CPU demand has its speed follow its share within 250 ms, with no event', async () => {
    const { engine, network, event, run, guest } = setUp();
    const busy = (name: string) =>
      vmConfig(name, { processor: { count: 4 }, workload: { bootMs: 100, cpuDemandPercent: 100 } });
    engine.vms.create('vm-1', busy('one'), 1);
    engine.power.change('vm-1', 'VM_ACTION_START');
    event();
    run(200);
    event();
    assert.equal(guest('vm-1')?.serviceTimeMs, 1);
    // Other guests take CPU from it; the network hears of nothing.
    for (const id of ['vm-2', 'vm-3']) {
      engine.vms.create(id, busy(id), 1);
      engine.power.change(id, 'VM_ACTION_START');
    }
    run(500);
    const slowed = guest('vm-1')!.serviceTimeMs;
    assert.ok(slowed > 1, `service time ${slowed} ms`);
    assert.equal(run(1_000).syncs, 4);
    await network.stop();
  });
});
