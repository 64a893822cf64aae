import { expect } from 'chai';
import type { pb } from '@hyperfarm/api';
import { until } from './harness.js';
import { vmOnExt, webCluster } from './network-helpers.js';
import { MigrationFarm } from './migration-helpers.js';

// Live migration of an NLB member through the daemon (MigrateVm), with real processes and
// traffic: the member keeps its connections (its network state travels with it) and every switch
// relearns where the VM is from the gratuitous ARP it sends when its new host runs it. A VM that
// is in no NLB cluster sends nothing by itself, so its MAC entry can only move by that ARP: a
// switch without it would keep sending to the old host until the entry aged out (300 s).

const FAST = ['--heartbeat-ms', '200', '--suspect-after-ms', '1000', '--down-after-ms', '3000'];
const HOSTS = ['ha', 'hb', 'hc'];
const SOLO_MAC = '00-15-5D-AA-00-50';
/** Unicast mode: member 2 sends with the masked MAC 02-<priority>-<VIP>. */
const MASKED_2 = '02-02-0A-00-00-64';

describe('an NLB member live-migrated through the daemon, under traffic (real processes)', function () {
  this.timeout(240_000);
  let mf: MigrationFarm;

  before(async () => {
    mf = await MigrationFarm.start(1, FAST, HOSTS);
  });
  after(() => mf?.stop());
  afterEach(() => expect(mf.checker.violations).to.deep.equal([]));

  it('loses no connection, stays in the cluster, and the switches relearn its port', async () => {
    const c = mf.c();
    await c.createSwitch({ name: 'ext', type: 'SWITCH_TYPE_EXTERNAL' });
    const create = async (config: pb.VmConfig, hostId: string) =>
      (await mf.ok(await c.createVm({ config, hostId, start: true }))).vm!;
    const web1 = await create(vmOnExt('web-1', '00-15-5D-AA-00-01', '10.0.0.11/24'), 'ha');
    const web2 = await create(vmOnExt('web-2', '00-15-5D-AA-00-02', '10.0.0.12/24'), 'hb');
    const solo = await create(vmOnExt('solo', SOLO_MAC, '10.0.0.50/24'), 'hb');
    // Windows NLB's default heartbeats (1 s, lost after 5 missed).
    const web = await c.createNlbCluster(webCluster());
    await c.addNlbMember({ clusterId: web.id, member: { vmId: web1.id, hostPriority: 1 } });
    await c.addNlbMember({ clusterId: web.id, member: { vmId: web2.id, hostPriority: 2 } });
    await until('two members converged', 60_000, async () => {
      const st = await c.getNlbClusterState({ id: web.id });
      return st.converged && st.members.length === 2 ? true : undefined;
    });
    const macOn = async (hostId: string, mac: string) =>
      (await c.getSwitchState({ id: 'ext', hostId })).macTable.find((e) => e.macAddress === mac)?.port;
    // The solo VM announced itself once, when it started on hb.
    await until('ha learned the solo VM behind hb', 30_000, async () =>
      (await macOn('ha', SOLO_MAC)) === 'peer:hb' ? true : undefined,
    );

    // Connections of 5 requests each, retransmitted from 250 ms on (doubling, 6 times) as TCP
    // does: a connection counts as lost only if a member stays silent for some 15 s.
    const run = await c.startTraffic({
      hostId: 'ha',
      traffic: {
        id: 'run',
        switchName: 'ext',
        virtualIp: '10.0.0.100',
        port: 80,
        ratePerSecond: 60,
        durationMs: 120_000,
        clients: 2_000,
        requestsPerConnection: 5,
        maxRetries: 6,
        seed: 5,
      },
    });
    const report = () => c.getTraffic({ hostId: run.hostId, id: 'run' });
    await until('both members answering', 60_000, async () => {
      const r = await report();
      return r.before!.members.filter((m) => m.vmId && m.requests > 0).length === 2 ? true : undefined;
    });

    await c.markTrafficPhase({ hostId: run.hostId, id: 'run', phase: 'during' });
    for (const vm of [web2, solo]) {
      const op = await c.migrateVm({ vmId: vm.id, targetHostId: 'hc', kind: 'MIGRATION_KIND_LIVE' });
      const m = (await mf.ok(op)).migration!;
      expect(m).to.deep.include({
        sourceHostId: 'hb',
        targetHostId: 'hc',
        phase: 'MIGRATION_PHASE_COMPLETED',
      });
      await mf.settledOn(vm.id, 'hc', 'VM_STATE_RUNNING');
    }
    await c.markTrafficPhase({ hostId: run.hostId, id: 'run', phase: 'after' });

    // The member kept its place: its state is reported from hc, in a cluster of two.
    const st = await until('two members converged, web-2 on hc', 60_000, async () => {
      const s = await c.getNlbClusterState({ id: web.id });
      const w2 = s.members.find((m) => m.vmId === web2.id);
      return s.converged && s.members.length === 2 && w2?.hostId === 'hc' ? s : undefined;
    });
    expect(st.missing).to.deep.equal([]);

    // Every switch relearned: the solo VM's MAC (which only its gratuitous ARP carries) and the
    // member's masked MAC sit behind the tunnel to hc, on the generator's host and on the old one.
    for (const h of ['ha', 'hb'])
      await until(`${h} relearned the moved VMs behind hc`, 30_000, async () =>
        (await macOn(h, SOLO_MAC)) === 'peer:hc' && (await macOn(h, MASKED_2)) === 'peer:hc'
          ? true
          : undefined,
      );
    expect(await macOn('hc', SOLO_MAC)).to.equal(`${solo.id}#0`);

    await until('200 connections after the migration', 60_000, async () =>
      (await report()).after!.completed >= 200 ? true : undefined,
    );
    await c.stopTraffic({ hostId: run.hostId, id: 'run' });
    const r = await until('the run ends', 60_000, async () => {
      const x = await report();
      return x.inFlight === 0 ? x : undefined;
    });
    for (const [name, ph] of [
      ['before', r.before!],
      ['during', r.during!],
      ['after', r.after!],
    ] as const) {
      expect(Number(ph.lost) + Number(ph.reset), `${name}: lost ${ph.lost}, reset ${ph.reset}`).to.equal(0);
      expect(ph.completed, name).to.equal(ph.started);
    }
    expect(Number(r.during!.started)).to.be.greaterThan(0);
    // Both members answered after the move: web-2 from hc.
    expect(
      r
        .after!.members.filter((m) => m.requests > 0)
        .map((m) => m.vmId)
        .sort(),
    ).to.deep.equal([web1.id, web2.id].sort());
  });
});
