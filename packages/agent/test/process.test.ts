import { expect } from 'chai';
import { status, type pb } from '@hyperfarm/api';
import { mib } from './helpers.js';
import { collect, useAgentProcesses, waitForState, waitUntil } from './process-helpers.js';

const config = (name: string, over: Partial<pb.VmConfig> = {}): pb.VmConfig => ({
  name,
  processor: { count: 2 },
  memoryBytes: mib(128),
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
  networkAdapters: [{ kind: 'NIC_KIND_SYNTHETIC', switchName: 'external' }],
  workload: { bootMs: 50, workingSetBytes: mib(16), dirtyPagesPerSecond: 0, cpuDemandPercent: 20 },
  ...over,
});

describe('agent processes over gRPC', function () {
  this.timeout(60_000);
  const { start } = useAgentProcesses('proc');

  it('crash (kill -9) and restart: running VMs come back Off and say so, Saved VMs stay Saved', async () => {
    const a = await start('agent-1');
    const c = a.client.p;
    await c.createVm({ vmId: 'run', config: config('run'), generation: 1 });
    await c.createVm({
      vmId: 'sav',
      config: config('sav', {
        workload: { bootMs: 50, workingSetBytes: mib(16), dirtyPagesPerSecond: 50_000 },
      }),
      generation: 1,
    });
    await c.createVm({ vmId: 'off', config: config('off'), generation: 1 });
    await c.changeVmState({ vmId: 'run', action: 'VM_ACTION_START', generation: 1 });
    await c.changeVmState({ vmId: 'sav', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(a.client, 'run', 'VM_STATE_RUNNING');
    await waitForState(a.client, 'sav', 'VM_STATE_RUNNING');
    await c.changeVmState({ vmId: 'sav', action: 'VM_ACTION_SAVE', generation: 1 });
    await waitForState(a.client, 'sav', 'VM_STATE_SAVED');
    const savedHash = (await c.getVmStateHash({ vmId: 'sav' })).sha256;
    // Quiet the guest so its memory after the restore is exactly what was saved.
    const quiet = { bootMs: 50, workingSetBytes: mib(16), dirtyPagesPerSecond: 0 };
    await c.updateVm({
      vmId: 'sav',
      config: config('sav', { workload: quiet }),
      updateMask: { paths: ['workload'] },
      generation: 1,
    });

    a.child.kill('SIGKILL');
    expect(await a.exited).to.equal(null);
    a.client.raw.close();

    const b = await start('agent-1');
    const vms = (await b.client.p.listVms({})).vms;
    const byId = Object.fromEntries(vms.map((v) => [v.id, v]));
    expect(byId['run']!.status!.state).to.equal('VM_STATE_OFF');
    expect(byId['run']!.status!.message).to.match(/turned off: the agent stopped while it was Running/);
    expect(byId['sav']!.status!.state).to.equal('VM_STATE_SAVED');
    expect(byId['off']!.status!.state).to.equal('VM_STATE_OFF');
    await b.client.p.changeVmState({ vmId: 'sav', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(b.client, 'sav', 'VM_STATE_RUNNING');
    expect((await b.client.p.getVmStateHash({ vmId: 'sav' })).sha256).to.equal(savedHash);
  });

  it('SIGTERM stops the agent cleanly with exit code 0', async () => {
    const a = await start('agent-1');
    await a.client.p.createVm({ vmId: 'v', config: config('v'), generation: 1 });
    a.child.kill('SIGTERM');
    expect(await a.exited).to.equal(0);
  });

  it('bad input over the wire: INVALID_ARGUMENT naming the field; stale generation: FAILED_PRECONDITION', async () => {
    const a = await start('agent-1');
    const c = a.client.p;
    const fieldOf = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (err) {
        const e = err as { code: number; metadata: { get(k: string): unknown[] }; details: string };
        return {
          code: e.code,
          field: String(e.metadata.get('hyperfarm-field')[0] ?? ''),
          details: e.details,
        };
      }
      throw new Error('expected an error');
    };
    const neg = await fieldOf(
      c.createVm({ vmId: 'x', config: config('x', { memoryBytes: -1 }), generation: 1 }),
    );
    expect(neg).to.include({ code: status.INVALID_ARGUMENT, field: 'config.memory_bytes' });
    const five = await fieldOf(
      c.createVm({ vmId: 'x', config: config('x', { processor: { count: 5 } }), generation: 1 }),
    );
    expect(five).to.include({ code: status.INVALID_ARGUMENT, field: 'config.processor.count' });
    const os = await fieldOf(
      c.createVm({ vmId: 'x', config: config('x', { guestOs: 'beos' }), generation: 1 }),
    );
    expect(os).to.include({ code: status.INVALID_ARGUMENT, field: 'config.guest_os' });
    await c.createVm({ vmId: 'y', config: config('dup'), generation: 2 });
    const dup = await fieldOf(c.createVm({ vmId: 'z', config: config('dup'), generation: 1 }));
    expect(dup).to.include({ code: status.INVALID_ARGUMENT, field: 'config.name' });
    const stale = await fieldOf(c.changeVmState({ vmId: 'y', action: 'VM_ACTION_START', generation: 1 }));
    expect(stale.code).to.equal(status.FAILED_PRECONDITION);
    expect(stale.details).to.match(/stale generation 1/);
  });

  for (const kind of ['MIGRATION_KIND_QUICK', 'MIGRATION_KIND_LIVE'] as const) {
    it(`${kind === 'MIGRATION_KIND_QUICK' ? 'quick' : 'live'} migration between two agent processes: hash verified, VM runs on the target, source removed`, async () => {
      const [src, dst] = await Promise.all([start('agent-src'), start('agent-dst')]);
      const workload = {
        bootMs: 50,
        workingSetBytes: mib(32),
        dirtyPagesPerSecond: kind === 'MIGRATION_KIND_LIVE' ? 20_000 : 0,
        cpuDemandPercent: 30,
      };
      const created = await src.client.p.createVm({
        vmId: 'mig',
        config: config('mig', { memoryBytes: mib(256), workload }),
        generation: 4,
      });
      const mac = created.config!.networkAdapters[0]!.macAddress;
      await src.client.p.changeVmState({ vmId: 'mig', action: 'VM_ACTION_START', generation: 4 });
      await waitForState(src.client, 'mig', 'VM_STATE_RUNNING');
      // Let the guest run long enough to touch a good part of its working set (the VM's own
      // uptime, not a sleep: on a loaded machine the guest may get less than the wall clock).
      await waitUntil('the guest to run 300 ms', async () => {
        const vm = await src.client.p.getVm({ vmId: 'mig' });
        return vm.status!.uptimeMs >= 300;
      });
      const progress = await collect(
        src.client.raw.migrateOut({
          vmId: 'mig',
          generation: 4,
          targetAddress: dst.address,
          kind,
          targetGeneration: 5,
          stopCopyThresholdPages: 64,
        }),
      );
      const last = progress[progress.length - 1]!;
      expect(last.phase).to.equal('MIGRATION_PHASE_COMPLETED');
      expect(last.verifiedSha256).to.match(/^[0-9a-f]{64}$/);
      expect(last.bytesTransferred).to.be.greaterThan(256 * 4096);
      expect(progress.some((p) => p.phase === 'MIGRATION_PHASE_STOP_AND_COPY')).to.equal(true);
      if (kind === 'MIGRATION_KIND_LIVE') expect(last.round).to.be.at.least(2);
      const moved = await dst.client.p.getVm({ vmId: 'mig' });
      expect(moved.status!.state).to.equal('VM_STATE_RUNNING');
      expect(moved.status!.generation).to.equal(5);
      expect(moved.status!.hostId).to.equal('agent-dst');
      expect(moved.config!.networkAdapters[0]!.macAddress).to.equal(mac);
      if (kind === 'MIGRATION_KIND_QUICK') {
        // Nothing dirties pages here, so the target's hash is still the one it verified.
        expect((await dst.client.p.getVmStateHash({ vmId: 'mig' })).sha256).to.equal(last.verifiedSha256);
      }
      const gone = await src.client.p.getVm({ vmId: 'mig' }).catch((e: { code: number }) => e.code);
      expect(gone).to.equal(status.NOT_FOUND);
      // The old generation is fenced off on the target too.
      const stale = await dst.client.p
        .changeVmState({ vmId: 'mig', action: 'VM_ACTION_TURN_OFF', generation: 4 })
        .catch((e: { code: number }) => e.code);
      expect(stale).to.equal(status.FAILED_PRECONDITION);
    });
  }

  it('a failed migration (target unreachable) leaves the VM running on its source', async () => {
    const src = await start('agent-src');
    await src.client.p.createVm({ vmId: 'mig', config: config('mig'), generation: 1 });
    await src.client.p.changeVmState({ vmId: 'mig', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(src.client, 'mig', 'VM_STATE_RUNNING');
    const err = await collect(
      src.client.raw.migrateOut({
        vmId: 'mig',
        generation: 1,
        targetAddress: '127.0.0.1:1',
        kind: 'MIGRATION_KIND_QUICK',
        migrationId: 'm-1',
      }),
    ).catch((e: { code: number }) => e);
    expect((err as { code: number }).code).to.equal(status.UNAVAILABLE);
    const vm = await waitForState(src.client, 'mig', 'VM_STATE_RUNNING');
    expect(vm.status!.generation).to.equal(1);
    const s = await src.client.p.getMigrationStatus({ migrationId: 'm-1' });
    expect(s).to.include({ role: 'MIGRATION_ROLE_SOURCE', stage: 'MIGRATION_STAGE_ABORTED' });
  });

  it('lease: an agent that is not renewed turns its VMs off by itself', async () => {
    const a = await start('agent-1');
    const c = a.client.p;
    await c.createVm({ vmId: 'v', config: config('v'), generation: 1 });
    await c.changeVmState({ vmId: 'v', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(a.client, 'v', 'VM_STATE_RUNNING');
    const events: pb.AgentEvent__Output[] = [];
    const watch = a.client.raw.watchEvents({});
    watch.on('data', (e: pb.AgentEvent__Output) => events.push(e));
    watch.on('error', () => undefined);
    const granted = await c.grantLease({ daemonId: 'd1', term: 1, durationMs: 300 });
    expect(granted.expiresAtMs).to.be.greaterThan(0);
    const vm = await waitForState(a.client, 'v', 'VM_STATE_OFF', 5_000);
    expect(vm.status!.message).to.match(/lease expired/);
    expect(events.map((e) => e.type)).to.include('lease_expired');
    watch.cancel();
  });
});
