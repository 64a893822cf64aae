import { expect } from 'chai';
import type { pb } from '@hyperfarm/api';
import { until } from './harness.js';
import { MigrationFarm } from './migration-helpers.js';

/**
 * Migration driven by the daemon, with real processes: 3 daemons, 3 agents sharing cluster
 * storage. Quick and live migration with the memory hash checked and the downtime recorded from
 * the target's clock; an Off VM handed over; the leader killed mid-migration; a drain of a host
 * with VMs of each priority and state. A checker on every agent's own event stream fails the
 * test if a VM ever runs on two hosts.
 */

const FAST = ['--heartbeat-ms', '200', '--suspect-after-ms', '1000', '--down-after-ms', '3000'];
const HOSTS = ['ha', 'hb', 'hc'];

describe('migration through the daemon (real processes)', function () {
  this.timeout(240_000);
  let mf: MigrationFarm;

  before(async () => {
    mf = await MigrationFarm.start(3, [...FAST, '--migration-deadline-ms', '15000'], HOSTS);
  });

  after(() => mf?.stop());

  afterEach(() => {
    expect(mf.checker.violations).to.deep.equal([]);
  });

  it('live: a busy running VM moves, its generation bumped, the downtime from the target', async () => {
    const vm = await mf.createVm('live-1', 'ha', { busy: true });
    const g = vm.status!.generation;
    const op = await mf.c().migrateVm({ vmId: vm.id, targetHostId: 'hb', kind: 'MIGRATION_KIND_LIVE' });
    expect(op.kind).to.equal('vm.migrate');
    const m = (await mf.ok(op)).migration!;
    expect(m).to.deep.include({
      vmId: vm.id,
      sourceHostId: 'ha',
      targetHostId: 'hb',
      kind: 'MIGRATION_KIND_LIVE',
      phase: 'MIGRATION_PHASE_COMPLETED',
      decision: 'commit',
      fromGeneration: g,
      reason: 'user',
      operationId: op.id,
    });
    expect(m.rounds).to.be.above(0);
    expect(Number(m.bytesTransferred)).to.be.above(0);
    // The downtime is the target's own measure: its status for the migration says the same.
    const st = await mf.agent('hb').getMigrationStatus({ migrationId: m.id });
    expect(st.stage).to.equal('MIGRATION_STAGE_COMMITTED');
    expect(Number(m.downtimeMs)).to.equal(Number(st.downtimeMs)).and.be.above(0);
    await mf.settledOn(vm.id, 'hb', 'VM_STATE_RUNNING', g + 1);
    await mf.onlyOn(vm.id, 'hb', HOSTS);
    expect((await mf.c().getMigration({ id: m.id })).phase).to.equal('MIGRATION_PHASE_COMPLETED');
    const listed = await mf.c().listMigrations({ vmId: vm.id });
    expect(listed.migrations.map((x) => x.id)).to.deep.equal([m.id]);
  });

  it('quick: a paused VM arrives with the same memory hash, still paused', async () => {
    const vm = await mf.createVm('quick-1', 'ha');
    await mf.changeState(vm.id, 'VM_ACTION_PAUSE');
    const before = (await mf.agent('ha').getVmStateHash({ vmId: vm.id })).sha256;
    const op = await mf.c().migrateVm({ vmId: vm.id, targetHostId: 'hc', kind: 'MIGRATION_KIND_QUICK' });
    const m = (await mf.ok(op)).migration!;
    expect(m.kind).to.equal('MIGRATION_KIND_QUICK');
    expect(Number(m.downtimeMs)).to.be.above(0);
    await mf.settledOn(vm.id, 'hc', 'VM_STATE_PAUSED', vm.status!.generation + 1);
    expect((await mf.agent('hc').getVmStateHash({ vmId: vm.id })).sha256).to.equal(before);
    await mf.onlyOn(vm.id, 'hc', HOSTS);
    // It runs on from there.
    await mf.changeState(vm.id, 'VM_ACTION_RESUME');
  });

  it('an Off VM moves by handing its configuration over; it starts on its new host', async () => {
    const vm = await mf.createVm('off-1', 'hb', { off: true });
    const op = await mf.c().migrateVm({ vmId: vm.id, targetHostId: 'ha' });
    const m = (await mf.ok(op)).migration!;
    expect(m.phase).to.equal('MIGRATION_PHASE_COMPLETED');
    await mf.settledOn(vm.id, 'ha', 'VM_STATE_OFF', vm.status!.generation + 1);
    await mf.onlyOn(vm.id, 'ha', HOSTS);
    await mf.changeState(vm.id, 'VM_ACTION_START');
    await mf.settledOn(vm.id, 'ha', 'VM_STATE_RUNNING');
  });

  it('refuses what cannot move, naming the reason; cancel after the decision is refused', async () => {
    const vm = await mf.createVm('stay-1', 'hc', { off: true });
    const refused = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: { code: number; details: string }) => ({ code: e.code, details: e.details }),
      );
    expect(await refused(mf.c().migrateVm({ vmId: vm.id, targetHostId: 'hc' }))).to.deep.include({
      code: 9,
      details: "cannot migrate VM 'stay-1': it is on host 'hc' already",
    });
    expect(await refused(mf.c().migrateVm({ vmId: vm.id, targetHostId: 'nope' }))).to.deep.include({
      code: 5,
    });
    expect(
      (await refused(mf.c().migrateVm({ vmId: vm.id, kind: 7 as unknown as pb.MigrationKind })))!.details,
    ).to.match(/^invalid kind: /);
    const done = await mf.ok(await mf.c().migrateVm({ vmId: vm.id }));
    expect((await refused(mf.c().cancelMigration({ id: done.migration!.id })))!.details).to.match(
      /is over: completed/,
    );
  });

  it('drain: every VM leaves by priority and state; one that cannot is listed with its reason', async () => {
    const high = await mf.createVm('d-high', 'hc', { priority: 'HA_PRIORITY_HIGH', busy: true });
    const low = await mf.createVm('d-low', 'hc', { priority: 'HA_PRIORITY_LOW' });
    const none = await mf.createVm('d-none', 'hc', { priority: 'HA_PRIORITY_NONE' });
    const off = await mf.createVm('d-off', 'hc', { off: true });
    const saved = await mf.createVm('d-saved', 'hc');
    await mf.changeState(saved.id, 'VM_ACTION_SAVE');
    // A hard anti-affinity class held on both other hosts: this one has nowhere to go.
    await mf.createVm('d-solo-a', 'ha', { group: 'solo', off: true });
    await mf.createVm('d-solo-b', 'hb', { group: 'solo', off: true });
    const stuck = await mf.createVm('d-solo-c', 'hc', { group: 'solo', off: true });

    const op = await mf.c().drainHost({ id: 'hc' });
    expect(op.kind).to.equal('host.drain');
    try {
      const ended = await mf.done(op, 120_000);
      expect(ended.error?.code, ended.message).to.equal(9); // FAILED_PRECONDITION: one VM stayed
      // The whole message on failure: it names each VM that stayed and why.
      expect(ended.message, ended.message).to.match(
        /1 VM could not move \(VM 'd-solo-c': .*hard anti-affinity class 'solo'/,
      );
      expect((await mf.c().getHost({ id: 'hc' })).maintenance).to.equal(true);

      const kindOf = async (vmId: string) => {
        const [m] = (await mf.c().listMigrations({ vmId })).migrations.filter((x) => x.reason === 'drain');
        expect(m?.phase, vmId).to.equal('MIGRATION_PHASE_COMPLETED');
        return m!.kind;
      };
      expect(await kindOf(high.id)).to.equal('MIGRATION_KIND_LIVE');
      expect(await kindOf(low.id)).to.equal('MIGRATION_KIND_QUICK');
      expect(await kindOf(none.id)).to.equal('MIGRATION_KIND_QUICK');
      await kindOf(off.id);
      await kindOf(saved.id);
      for (const [vm, state] of [
        [high, 'VM_STATE_RUNNING'],
        [low, 'VM_STATE_RUNNING'],
        [none, 'VM_STATE_RUNNING'],
        [off, 'VM_STATE_OFF'],
        [saved, 'VM_STATE_SAVED'],
      ] as const) {
        const now = await mf.c().getVm({ id: vm.id });
        expect(now.status!.hostId, vm.config!.name).to.not.equal('hc');
        await mf.settledOn(vm.id, now.status!.hostId, state);
        await mf.onlyOn(vm.id, now.status!.hostId, HOSTS);
      }
      const left = (await mf.c().listVms({ hostId: 'hc' })).vms.map((v) => v.config!.name);
      expect(left).to.deep.equal([stuck.config!.name]);
    } finally {
      // The next tests need 'hc' in service, whatever happened here.
      const back = await mf.c().undrainHost({ id: 'hc' });
      expect(back.maintenance).to.equal(false);
    }
  });

  it('the leader killed mid-migration: the new leader finishes it, the VM on exactly one host', async () => {
    const vm = await mf.createVm('leader-1', 'hb', { busy: true });
    const op = await mf.c().migrateVm({ vmId: vm.id, targetHostId: 'hc', kind: 'MIGRATION_KIND_LIVE' });
    const leader = await until('a leader', 20_000, () => mf.farm.leader());
    const mid = (await mf.c().getOperation({ id: op.id })).message;
    await until('the transfer to begin', 30_000, async () => {
      const ms = await mf.c(leader).listMigrations({ vmId: vm.id, consistency: 'CONSISTENCY_STALE' });
      return ms.migrations[0]?.phase === 'MIGRATION_PHASE_PENDING' ? undefined : true;
    });
    await mf.farm.killDaemon(leader);
    const survivor = mf.farm.liveDaemons()[0]!;
    const ended = await until('the migration to end under the new leader', 90_000, async () => {
      const o = await mf.c(survivor).getOperation({ id: op.id });
      return o.done ? o : undefined;
    });
    const m = (await mf.c(survivor).listMigrations({ vmId: vm.id })).migrations[0]!;
    const home = m.decision === 'commit' ? 'hc' : 'hb';
    expect(m.phase, `${mid} / ${ended.message}`).to.equal(
      m.decision === 'commit' ? 'MIGRATION_PHASE_COMPLETED' : 'MIGRATION_PHASE_FAILED',
    );
    await mf.settledOn(vm.id, home, 'VM_STATE_RUNNING');
    await mf.onlyOn(vm.id, home, HOSTS);
    mf.farm.startDaemon(leader);
  });
});
