import { expect } from 'chai';
import { decodeSnapshot, encodeSnapshot, type CommandBody } from '../../src/fsm/index.js';
import { hostNetworkConfig } from '../../src/controllers/index.js';
import { FarmBuilder } from './build.js';
import { EXT_SWITCH, NLB_RULE, webCluster } from './fixtures.js';

// The farm's network configuration in the replicated state: switches and NLB clusters, the
// refusals Windows NLB and Hyper-V give, and the configuration each host's agent gets.

const rule = NLB_RULE;

function farm(): FarmBuilder {
  const b = new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2' }).host({ id: 'h3' });
  b.must(EXT_SWITCH);
  for (const [i, h] of ['h1', 'h2', 'h3'].entries())
    b.vm(`v${i + 1}`, { name: `web-${i + 1}`, switches: ['ext'] }, h).address(
      `v${i + 1}`,
      `10.0.0.${11 + i}/24`,
    );
  b.vm('v9', { name: 'no-address', switches: ['ext'] }, 'h1');
  b.must(webCluster([]));
  return b;
}

const add = (vmId: string, hostPriority: number): CommandBody => ({
  type: 'nlb.member.add',
  clusterId: 'c1',
  member: { vmId, hostPriority, loadWeight: 0, ruleSettings: [] },
});

describe('the farm network configuration (fsm)', () => {
  it('adds members; refuses a duplicate priority, and a member without the virtual IP’s network, naming the field', () => {
    const b = farm();
    b.must(add('v1', 1), add('v2', 2));
    const [dup] = b.apply(add('v3', 2));
    expect(dup).to.deep.include({ ok: false });
    expect((dup as { error: { field: string; message: string } }).error).to.include({
      field: 'member.host_priority',
    });
    expect((dup as { error: { message: string } }).error.message).to.match(/priority 2 is already held/);
    const [net] = b.apply(add('v9', 3));
    expect((net as { error: { field: string; message: string } }).error.field).to.equal('member.vm_id');
    expect((net as { error: { message: string } }).error.message).to.match(
      /no address in the network of the virtual IP 10\.0\.0\.100/,
    );
    expect(b.s.nlbClusters.get('c1')!.members.map((m) => m.vmId)).to.deep.equal(['v1', 'v2']);
  });

  it('refuses overlapping port rules on update, and keeps the cluster as it was', () => {
    const b = farm();
    const [r] = b.apply({
      type: 'nlb.update',
      id: 'c1',
      paths: ['port_rules'],
      portRules: [rule, { ...rule, startPort: 70, endPort: 90 }],
      heartbeatThreshold: 5,
      heartbeatPeriodMs: 1000,
    });
    expect((r as { error: { field: string } }).error.field).to.equal('cluster.port_rules[1]');
    expect(b.s.nlbClusters.get('c1')!.portRules).to.have.length(1);
  });

  it('Private switches of one name on two hosts; each host gets the External switch and its own', () => {
    const b = farm();
    const priv = (id: string, hostId: string): CommandBody => ({
      type: 'switch.create',
      id,
      name: 'lan',
      switchType: 'SWITCH_TYPE_PRIVATE',
      hostId,
      macAgingSeconds: 300,
      hostAddress: '',
    });
    b.must(priv('p1', 'h1'), priv('p2', 'h2'));
    const [again] = b.apply(priv('p3', 'h1'));
    expect(again).to.deep.include({ ok: false });
    const [ext] = b.apply({
      ...priv('p4', ''),
      name: 'ext',
      switchType: 'SWITCH_TYPE_PRIVATE',
      hostId: 'h3',
    } as CommandBody);
    expect((ext as { error: { code: string } }).error.code).to.equal('ALREADY_EXISTS');
    const h1 = hostNetworkConfig(b.s, 'h1');
    expect(h1.switches.map((w) => `${w.name}@${w.hostId}`).sort()).to.deep.equal(['ext@', 'lan@h1']);
    expect(hostNetworkConfig(b.s, 'h3').switches.map((w) => w.name)).to.deep.equal(['ext']);
    expect(h1.peers.map((p) => p.hostId)).to.deep.equal(['h2', 'h3']);
  });

  it('gives no tunnel peers in a farm without an External switch (tunnels are its uplinks), and every other host once there is one', () => {
    const b = new FarmBuilder().host({ id: 'h1' }).host({ id: 'h2' }).host({ id: 'h3' });
    b.must({
      type: 'switch.create',
      id: 's-int',
      name: 'lan',
      switchType: 'SWITCH_TYPE_INTERNAL',
      hostId: 'h1',
      macAgingSeconds: 300,
      hostAddress: '',
    });
    expect(hostNetworkConfig(b.s, 'h1').peers).to.deep.equal([]);
    b.must({
      type: 'switch.create',
      id: 's-ext',
      name: 'ext',
      switchType: 'SWITCH_TYPE_EXTERNAL',
      hostId: '',
      macAgingSeconds: 300,
      hostAddress: '',
    });
    expect(hostNetworkConfig(b.s, 'h2').peers.map((p) => p.hostId)).to.deep.equal(['h1', 'h3']);
  });

  it('will not delete a switch an adapter or a cluster uses', () => {
    const b = farm();
    const [r] = b.apply({ type: 'switch.delete', id: 's-ext' });
    expect((r as { error: { code: string; message: string } }).error.code).to.equal('FAILED_PRECONDITION');
  });

  it('survives a snapshot and restore, and a retried command changes nothing twice', () => {
    const b = farm();
    b.must(add('v1', 1));
    const restored = decodeSnapshot(encodeSnapshot(b.s));
    expect([...restored.nlbClusters.values()]).to.deep.equal([...b.s.nlbClusters.values()]);
    expect([...restored.switches.values()]).to.deep.equal([...b.s.switches.values()]);
    expect(hostNetworkConfig(restored, 'h2')).to.deep.equal(hostNetworkConfig(b.s, 'h2'));
  });
});
