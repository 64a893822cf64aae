import { expect } from 'chai';
import { BROADCAST_MAC } from '../src/network/addr.js';
import type { Frame } from '../src/network/frame.js';
import type { HostNetwork, SwitchSpec } from '../src/network/host-network.js';
import { NetworkSim } from '../src/network/sim.js';
import { cidr, dgramFrame, ip } from './network-helpers.js';

const X = '00-15-5D-00-00-0A';
const Y = '00-15-5D-00-00-0B';
const Z = '00-15-5D-00-00-0C';

function hosts(n: number, switches: (host: string) => SwitchSpec[]): NetworkSim {
  const sim = new NetworkSim({ latencyMs: 0.2 });
  for (let i = 1; i <= n; i++) sim.addHost(`h${i}`).setSwitches(switches(`h${i}`));
  return sim;
}

const vm = (h: HostNetwork, id: string, mac: string, sw: string, addr: string, vlan = 0) =>
  h.attachVm(id, [{ index: 0, mac, switchName: sw, vlan, ip: cidr(addr) }], 'running');

/** The frames a VM's port has sent it so far (what reached the VM). */
const delivered = (h: HostNetwork, sw: string, port: string): number =>
  h.switchStatus(sw).ports.find((p) => p.id === port)!.counters.sent;

/** A datagram request from `from` to `to`'s address: true if `to` answered. */
function ping(
  sim: NetworkSim,
  from: { h: HostNetwork; sw: string; port: string; mac: string; ip: string },
  toIp: string,
  toMac = BROADCAST_MAC,
): boolean {
  const before = delivered(from.h, from.sw, from.port);
  // Sent as if by the VM itself (through its own port).
  from.h.inject(from.sw, from.port, dgramFrame(from.mac, toMac, ip(from.ip), ip(toIp), 99));
  sim.run(50);
  return delivered(from.h, from.sw, from.port) > before;
}

describe('virtual switches across hosts', () => {
  it('an External switch spans every host through the tunnels', () => {
    const sim = hosts(3, () => [{ name: 'ext', type: 'external', agingMs: 300_000 }]);
    vm(sim.host('h1'), 'x', X, 'ext', '10.0.0.1/24');
    vm(sim.host('h3'), 'z', Z, 'ext', '10.0.0.3/24');
    expect(
      ping(sim, { h: sim.host('h1'), sw: 'ext', port: 'x#0', mac: X, ip: '10.0.0.1' }, '10.0.0.3'),
    ).to.equal(true);
    // h3 learned X behind its tunnel to h1, and h1 learned Z behind its tunnel to h3.
    const learned = (h: string) =>
      sim
        .host(h)
        .switchStatus('ext')
        .macTable.map((e) => `${e.mac}@${e.port}`);
    expect(learned('h3')).to.include(`${X}@peer:h1`);
    expect(learned('h1')).to.include(`${Z}@peer:h3`);
    // The answer came straight back (known unicast): h2 saw only the first, flooded frame.
    expect(sim.host('h2').switchStatus('ext').counters.received).to.equal(1);
  });

  it('Private switches of the same name on two hosts are two separate networks', () => {
    const sim = hosts(2, () => [{ name: 'priv', type: 'private', agingMs: 300_000 }]);
    vm(sim.host('h1'), 'x', X, 'priv', '192.168.0.1/24');
    vm(sim.host('h1'), 'w', '00-15-5D-00-00-0D', 'priv', '192.168.0.4/24');
    vm(sim.host('h2'), 'y', Y, 'priv', '192.168.0.2/24');
    const from = { h: sim.host('h1'), sw: 'priv', port: 'x#0', mac: X, ip: '192.168.0.1' };
    expect(ping(sim, from, '192.168.0.2')).to.equal(false);
    expect(ping(sim, from, '192.168.0.4')).to.equal(true);
    expect(sim.host('h2').switchStatus('priv').counters.received).to.equal(0);
    expect(sim.tunnelFrames).to.equal(0);
    // No host port on a Private switch.
    expect(
      sim
        .host('h1')
        .switchStatus('priv')
        .ports.map((p) => p.kind),
    ).to.deep.equal(['vm', 'vm']);
  });

  it('an Internal switch adds a port for the host itself, and stays on its host', () => {
    const sim = hosts(2, () => [
      { name: 'int', type: 'internal', agingMs: 300_000, hostIp: cidr('172.20.0.1/24') },
    ]);
    vm(sim.host('h1'), 'x', X, 'int', '172.20.0.10/24');
    vm(sim.host('h2'), 'y', Y, 'int', '172.20.0.11/24');
    const from = { h: sim.host('h1'), sw: 'int', port: 'x#0', mac: X, ip: '172.20.0.10' };
    expect(
      sim
        .host('h1')
        .switchStatus('int')
        .ports.map((p) => `${p.id}:${p.kind}`),
    ).to.deep.equal(['host:host', 'x#0:vm']);
    // The host answers on its own address; the VM on the other host is out of reach.
    expect(ping(sim, from, '172.20.0.1')).to.equal(true);
    expect(ping(sim, from, '172.20.0.11')).to.equal(false);
    expect(sim.tunnelFrames).to.equal(0);
  });

  it('VLANs stay apart across the tunnels too', () => {
    const sim = hosts(2, () => [{ name: 'ext', type: 'external', agingMs: 300_000 }]);
    vm(sim.host('h1'), 'x', X, 'ext', '10.0.0.1/24', 10);
    vm(sim.host('h2'), 'y', Y, 'ext', '10.0.0.2/24', 10);
    vm(sim.host('h2'), 'z', Z, 'ext', '10.0.0.3/24', 20);
    const from = { h: sim.host('h1'), sw: 'ext', port: 'x#0', mac: X, ip: '10.0.0.1' };
    expect(ping(sim, from, '10.0.0.2')).to.equal(true);
    expect(ping(sim, from, '10.0.0.3')).to.equal(false);
    expect(delivered(sim.host('h2'), 'ext', 'z#0')).to.equal(0);
  });

  it('frames for a VM that is not running are dropped at its port and counted', () => {
    const sim = hosts(1, () => [{ name: 'ext', type: 'external', agingMs: 300_000 }]);
    vm(sim.host('h1'), 'x', X, 'ext', '10.0.0.1/24');
    vm(sim.host('h1'), 'y', Y, 'ext', '10.0.0.2/24');
    sim.host('h1').setVmState('y', 'off');
    const from = { h: sim.host('h1'), sw: 'ext', port: 'x#0', mac: X, ip: '10.0.0.1' };
    expect(ping(sim, from, '10.0.0.2')).to.equal(false);
    const y = sim
      .host('h1')
      .switchStatus('ext')
      .ports.find((p) => p.id === 'y#0')!;
    expect(y.counters.dropped).to.equal(1);
    expect(y.vmId).to.equal('y');
  });

  for (const announce of [true, false]) {
    it(`after a migration the switches ${announce ? 'relearn the VM’s port from its gratuitous ARP' : 'send to the old host until the entry ages out'}`, () => {
      const sim = hosts(3, () => [{ name: 'ext', type: 'external', agingMs: 300_000 }]);
      vm(sim.host('h1'), 'x', X, 'ext', '10.0.0.1/24');
      vm(sim.host('h2'), 'y', Y, 'ext', '10.0.0.2/24');
      const fromY = { h: sim.host('h2'), sw: 'ext', port: 'y#0', mac: Y, ip: '10.0.0.2' };
      expect(ping(sim, fromY, '10.0.0.1')).to.equal(true);
      // x moves from h1 to h3.
      const state = sim.host('h1').detachVm('x');
      sim
        .host('h3')
        .attachVm(
          'x',
          [{ index: 0, mac: X, switchName: 'ext', vlan: 0, ip: cidr('10.0.0.1/24') }],
          'running',
          state,
        );
      if (announce) sim.host('h3').announce('x');
      sim.run(10);
      const whereIsX = sim
        .host('h2')
        .switchStatus('ext')
        .macTable.find((e) => e.mac === X)!.port;
      expect(whereIsX).to.equal(announce ? 'peer:h3' : 'peer:h1');
      expect(ping(sim, fromY, '10.0.0.1', X)).to.equal(announce);
    });
  }

  it('refuses a frame from a host it does not peer with, or for a switch it does not share', () => {
    const sim = hosts(2, (h) => (h === 'h1' ? [{ name: 'ext', type: 'external', agingMs: 300_000 }] : []));
    const f: Frame = dgramFrame(X, BROADCAST_MAC, ip('10.0.0.1'), ip('10.0.0.2'));
    sim.host('h1').receiveFromPeer('h9', 'ext', f);
    sim.host('h1').receiveFromPeer('h2', 'nope', f);
    expect(sim.host('h1').switchStatus('ext').counters).to.include({ received: 0, dropped: 1 });
  });
});
