import { expect } from 'chai';
import {
  BROADCAST_MAC,
  formatCidr,
  isGroupMac,
  nlbClusterMac,
  nlbMaskedSourceMac,
  parseCidr,
  parseIpv4,
} from '../src/network/addr.js';
import type { Frame } from '../src/network/frame.js';
import { LearningSwitch } from '../src/network/switch.js';
import { dgramFrame, ip, vmMac } from './network-helpers.js';

describe('network addresses', () => {
  it('derives the cluster MACs as Windows NLB documents them', () => {
    // Microsoft's NLB technical overview: cluster MAC 02-BF-1-2-3-4 for cluster IP 1.2.3.4, and
    // each host sends as 02-h-1-2-3-4, h its priority.
    expect(nlbClusterMac('unicast', ip('1.2.3.4'))).to.equal('02-BF-01-02-03-04');
    expect(nlbMaskedSourceMac(5, ip('1.2.3.4'))).to.equal('02-05-01-02-03-04');
    // Multicast: 03-BF-W-X-Y-Z; IP 199.99.20.70 gives 03-bf-c7-63-14-46.
    expect(nlbClusterMac('multicast', ip('199.99.20.70'))).to.equal('03-BF-C7-63-14-46');
    // IGMP multicast: the MAC of group 239.255.Y.Z.
    expect(nlbClusterMac('igmp', ip('10.0.1.2'))).to.equal('01-00-5E-7F-01-02');
  });

  it('tells group MACs by the I/G bit: the multicast cluster MAC is one, the unicast one is not', () => {
    expect(isGroupMac(BROADCAST_MAC)).to.equal(true);
    expect(isGroupMac('03-BF-0A-00-00-64')).to.equal(true);
    expect(isGroupMac('01-00-5E-7F-00-64')).to.equal(true);
    expect(isGroupMac('02-BF-0A-00-00-64')).to.equal(false);
    expect(isGroupMac('00-15-5D-00-00-01')).to.equal(false);
  });

  it('parses dotted decimal and CIDR, refusing what is not', () => {
    expect(parseIpv4('10.0.0.100')).to.equal(0x0a000064);
    for (const bad of ['10.0.0', '10.0.0.256', '10.0.0.01', 'a.b.c.d', '1.2.3.4.5', ''])
      expect(parseIpv4(bad), bad).to.equal(undefined);
    expect(formatCidr(parseCidr('10.0.0.11/24')!)).to.equal('10.0.0.0/24');
    for (const bad of ['10.0.0.1', '10.0.0.1/0', '10.0.0.1/33', '10.0.0.1/x'])
      expect(parseCidr(bad), bad).to.equal(undefined);
  });
});

const A = vmMac(1);
const B = vmMac(2);
const C = vmMac(3);
const frame = (src: string, dst: string): Frame => dgramFrame(src, dst, ip('10.0.0.1'), ip('10.0.0.2'));
const ids = (r: { out: { id: string }[] }): string[] => r.out.map((p) => p.id).sort();

describe('learning switch', () => {
  function threePorts(agingMs = 300_000): LearningSwitch {
    const sw = new LearningSwitch('s', agingMs);
    sw.addPort('a', 'vm');
    sw.addPort('b', 'vm');
    sw.addPort('c', 'vm');
    return sw;
  }

  it('floods an unknown destination, then forwards to the port it learned', () => {
    const sw = threePorts();
    expect(ids(sw.forward('a', frame(A, B), 0))).to.deep.equal(['b', 'c']);
    expect(sw.counters.flooded).to.equal(1);
    // B answers: A is known, so only port a gets it; and now B is learned too.
    expect(ids(sw.forward('b', frame(B, A), 1))).to.deep.equal(['a']);
    expect(ids(sw.forward('a', frame(A, B), 2))).to.deep.equal(['b']);
    expect(sw.counters).to.include({ received: 3, sent: 4, flooded: 1, dropped: 0 });
    expect(sw.ports.get('c')!.counters).to.include({ sent: 1, flooded: 1, received: 0 });
    expect(sw.macTable(2).map((e) => [e.mac, e.port])).to.deep.equal([
      [A, 'a'],
      [B, 'b'],
    ]);
  });

  it('forgets a MAC after the aging time and floods again', () => {
    const sw = threePorts(1_000);
    sw.forward('b', frame(B, A), 0);
    expect(ids(sw.forward('a', frame(A, B), 1_000))).to.deep.equal(['b']);
    // Aging counts from the last frame seen from B (at 0): past 1 s it is gone.
    expect(ids(sw.forward('a', frame(A, B), 1_001))).to.deep.equal(['b', 'c']);
    expect(sw.macTable(1_001).map((e) => e.mac)).to.deep.equal([A]);
    expect(sw.macTable(2_002)).to.deep.equal([]);
  });

  it('floods broadcast and multicast to every other port of the VLAN, and never learns a group source', () => {
    const sw = threePorts();
    expect(ids(sw.forward('a', frame(A, BROADCAST_MAC), 0))).to.deep.equal(['b', 'c']);
    expect(ids(sw.forward('b', frame(B, '03-BF-0A-00-00-64'), 0))).to.deep.equal(['a', 'c']);
    sw.forward('c', frame('03-BF-0A-00-00-64', A), 0);
    expect(sw.macTable(0).map((e) => e.mac)).to.not.include('03-BF-0A-00-00-64');
  });

  it('keeps VLANs apart: access ports only see their own VLAN, even for a known MAC', () => {
    const sw = new LearningSwitch('s', 300_000);
    sw.addPort('a10', 'vm', 10);
    sw.addPort('b10', 'vm', 10);
    sw.addPort('c20', 'vm', 20);
    sw.addPort('d0', 'vm', 0);
    expect(ids(sw.forward('a10', frame(A, BROADCAST_MAC), 0))).to.deep.equal(['b10']);
    // C in VLAN 20 sends to A: A is known only in VLAN 10, so in VLAN 20 it is unknown and flooded
    // to VLAN 20's other ports (none).
    expect(ids(sw.forward('c20', frame(C, A), 1))).to.deep.equal([]);
    expect(ids(sw.forward('d0', frame(C, A), 1))).to.deep.equal([]);
    expect(sw.macTable(1).map((e) => [e.vlan, e.mac])).to.deep.equal([
      [0, C],
      [10, A],
      [20, C],
    ]);
  });

  it('drops a frame whose destination is on the port it came from', () => {
    const sw = threePorts();
    sw.forward('a', frame(A, BROADCAST_MAC), 0);
    sw.forward('a', frame(B, BROADCAST_MAC), 0); // B appears on port a too (a hub behind it)
    expect(ids(sw.forward('a', frame(B, A), 1))).to.deep.equal([]);
    expect(sw.ports.get('a')!.counters.dropped).to.equal(1);
    expect(sw.counters.dropped).to.equal(1);
  });

  it('uplinks are trunks with split horizon: nothing from one tunnel goes out another', () => {
    const sw = new LearningSwitch('ext', 300_000);
    sw.addPort('v10', 'vm', 10);
    sw.addPort('v20', 'vm', 20);
    sw.addPort('peer:h2', 'uplink');
    sw.addPort('peer:h3', 'uplink');
    // A local broadcast in VLAN 10 goes to the VLAN-10 port and to both tunnels, tagged 10.
    const local = sw.forward('v10', frame(A, BROADCAST_MAC), 0);
    expect(ids(local)).to.deep.equal(['peer:h2', 'peer:h3']);
    expect(local.frame.vlan).to.equal(10);
    // A broadcast from h2 tagged 20 reaches only VLAN 20 here, never h3.
    expect(ids(sw.forward('peer:h2', { ...frame(B, BROADCAST_MAC), vlan: 20 }, 0))).to.deep.equal(['v20']);
    // B is now known behind h2 in VLAN 20; a frame to B arriving from h3 is not relayed.
    expect(ids(sw.forward('peer:h3', { ...frame(C, B), vlan: 20 }, 1))).to.deep.equal([]);
    // A VLAN tag out of range from a tunnel is dropped.
    expect(ids(sw.forward('peer:h2', { ...frame(B, BROADCAST_MAC), vlan: 5000 }, 1))).to.deep.equal([]);
  });

  it('with IGMP snooping, sends a group only to the ports that joined it', () => {
    const sw = threePorts();
    sw.addPort('d', 'vm');
    const group = '01-00-5E-7F-00-64';
    expect(ids(sw.forward('a', frame(A, group), 0))).to.deep.equal(['b', 'c', 'd']);
    const join: Frame = { src: B, dst: BROADCAST_MAC, vlan: 0, body: { type: 'igmp', op: 'join', group } };
    sw.forward('b', join, 0);
    sw.forward('c', { ...join, src: C }, 0);
    expect(ids(sw.forward('a', frame(A, group), 1))).to.deep.equal(['b', 'c']);
    sw.forward('c', { ...join, src: C, body: { type: 'igmp', op: 'leave', group } }, 2);
    expect(ids(sw.forward('a', frame(A, group), 3))).to.deep.equal(['b']);
  });

  it('counts a frame for a port with nothing able to take it as dropped there', () => {
    const sw = threePorts();
    sw.countDrop('b');
    expect(sw.ports.get('b')!.counters.dropped).to.equal(1);
    expect(sw.counters.dropped).to.equal(1);
  });
});
