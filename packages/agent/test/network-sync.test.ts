import { strict as assert } from 'node:assert';
import { createLogger, type pb } from '@hyperfarm/api';
import { AgentNetwork, type FrameLinks, type NetworkHostPort } from '../src/network/edge/agent-network.js';
import { makeEngine, vmConfig } from './helpers.js';

/**
 * The network follows the engine's VMs (AgentNetwork's sync, on each event and every 250 ms): a
 * VM whose adapters change is attached again with the new ones, and one left as it was keeps its
 * ports.
 */
describe("the network's sync of the engine's VMs", function () {
  const sw = (name: string): pb.VirtualSwitch__Output => ({
    id: name,
    name,
    type: 'SWITCH_TYPE_PRIVATE',
    hostId: 'host-1',
    macAgingSeconds: 300,
    hostAddress: '',
  });

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
