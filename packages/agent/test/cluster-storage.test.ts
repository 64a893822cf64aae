import { expect } from 'chai';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, status, statusOf, type pb } from '@hyperfarm/api';
import { agentConfigSchema, type AgentConfig } from '../src/config.js';
import { startAgent, type RunningAgent } from '../src/server.js';
import { mib } from './helpers.js';
import { agentClient, collect, waitForState } from './process-helpers.js';

function hostConfig(id: string, dataDir: string, cluster: string): AgentConfig {
  const base = agentConfigSchema.parse({
    id,
    grpcAddress: '127.0.0.1:0',
    metricsAddress: '127.0.0.1:0',
    dataDir,
    clusterStoragePath: cluster,
    logLevel: 'silent',
  });
  return { ...base, memoryBytes: base.memoryMib * 1024 * 1024 };
}

const config = (over: Partial<pb.VmConfig> = {}): pb.VmConfig => ({
  name: 'web-1',
  processor: { count: 1 },
  memoryBytes: mib(128),
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
  disks: [
    {
      controller: 'DISK_CONTROLLER_IDE',
      path: 'boot.vhd',
      createType: 'DISK_TYPE_DYNAMIC',
      createSizeBytes: mib(64),
    },
  ],
  workload: { bootMs: 20, workingSetBytes: mib(16), dirtyPagesPerSecond: 0, cpuDemandPercent: 10 },
  ...over,
});

const code = (p: Promise<unknown>) =>
  p.then(
    () => ({ code: status.OK, details: '' }),
    (e: { code: number; details: string }) => ({ code: statusOf(e), details: e.details }),
  );

describe('cluster storage: VM folders every host reaches, under ownership records', function () {
  this.timeout(30_000);
  let dir: string;
  let cluster: string;
  let a: RunningAgent;
  let b: RunningAgent;
  let ca: ReturnType<typeof agentClient>;
  let cb: ReturnType<typeof agentClient>;
  const logger = createLogger({ program: 't', id: 't', level: (process.env['LOG'] ?? 'silent') as 'silent' });

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-cluster-'));
    cluster = join(dir, 'cluster');
    a = await startAgent(hostConfig('host-a', join(dir, 'a'), cluster), logger);
    b = await startAgent(hostConfig('host-b', join(dir, 'b'), cluster), logger);
    ca = agentClient(a.grpcAddress);
    cb = agentClient(b.grpcAddress);
  });
  afterEach(async () => {
    ca.raw.close();
    cb.raw.close();
    await a.stop();
    await b.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const folder = (vmId: string) => join(cluster, 'vms', vmId);
  const owner = (vmId: string) =>
    JSON.parse(readFileSync(join(folder(vmId), 'owner.json'), 'utf8')) as unknown;

  it('a host that lost a VM to a newer generation may not start, change or delete it; DropStaleVm removes its copy and leaves the files', async () => {
    await ca.p.createVm({ vmId: 'v1', config: config(), generation: 1 });
    expect(owner('v1')).to.deep.equal({ vmId: 'v1', hostId: 'host-a', generation: 1 });
    expect(existsSync(join(folder('v1'), 'boot.vhd'))).to.equal(true);

    // A failover gives the VM to host-b under generation 2: it adopts it from the manifest.
    const adopted = await cb.p.createVm({ vmId: 'v1', config: config({ name: 'ignored' }), generation: 2 });
    expect(adopted.config!.name).to.equal('web-1');
    expect(adopted.status!.message).to.match(
      /adopted from cluster storage \(left by host 'host-a' at generation 1\)/,
    );
    expect(owner('v1')).to.deep.equal({ vmId: 'v1', hostId: 'host-b', generation: 2 });

    for (const refused of [
      code(ca.p.changeVmState({ vmId: 'v1', action: 'VM_ACTION_START', generation: 1 })),
      code(ca.p.deleteVm({ vmId: 'v1', generation: 1 })),
      code(ca.p.createCheckpoint({ vmId: 'v1', name: 's', generation: 1 })),
    ]) {
      const r = await refused;
      expect(r.code).to.equal(status.FAILED_PRECONDITION);
      expect(r.details).to.match(/belong to host 'host-b' at generation 2, and this host holds generation 1/);
    }
    expect((await code(ca.p.dropStaleVm({ vmId: 'v1', generation: 1 }))).code).to.equal(
      status.FAILED_PRECONDITION,
    );
    expect(await ca.p.dropStaleVm({ vmId: 'v1', generation: 2 })).to.deep.equal({ was: 'VM_STATE_OFF' });
    expect((await code(ca.p.getVm({ vmId: 'v1' }))).code).to.equal(status.NOT_FOUND);
    expect(existsSync(join(folder('v1'), 'boot.vhd'))).to.equal(true);

    await cb.p.changeVmState({ vmId: 'v1', action: 'VM_ACTION_START', generation: 2 });
    await waitForState(cb, 'v1', 'VM_STATE_RUNNING');
    // A create that would take the folder back under an older generation is refused too.
    const stale = await code(ca.p.createVm({ vmId: 'v1', config: config(), generation: 1 }));
    expect(stale.code).to.equal(status.FAILED_PRECONDITION);
  });

  it('a VM without snapshots is adopted with no synced write of snapshot records (a failover of hundreds of VMs waited for two per VM)', async () => {
    await ca.p.createVm({ vmId: 'v4', config: config({ name: 'plain' }), generation: 1 });
    const store = b.hosts[0]!.host.store;
    const apply = store.apply.bind(store);
    const batches: string[][] = [];
    store.apply = (changes) => {
      batches.push(changes.map(([key]) => key));
      return apply(changes);
    };
    const adopted = await cb.p.createVm({ vmId: 'v4', config: config({ name: 'ignored' }), generation: 2 });
    expect(adopted.status!.message).to.match(/adopted from cluster storage/);
    expect(batches).to.deep.equal([]);
    expect(owner('v4')).to.deep.equal({ vmId: 'v4', hostId: 'host-b', generation: 2 });
    await cb.p.changeVmState({ vmId: 'v4', action: 'VM_ACTION_START', generation: 2 });
    await waitForState(cb, 'v4', 'VM_STATE_RUNNING');
  });

  it('the manifests of a batch of VMs are written several at a time, each VM its own in order', async () => {
    const cluster = a.hosts[0]!.host.cluster!;
    const write = cluster.writeManifest.bind(cluster);
    let inFlight = 0;
    let most = 0;
    cluster.writeManifest = async (m) => {
      most = Math.max(most, ++inFlight);
      try {
        return await write(m);
      } finally {
        inFlight--;
      }
    };
    const ids = Array.from({ length: 24 }, (_, i) => `m${i}`);
    await Promise.all(
      ids.map((vmId) => ca.p.createVm({ vmId, config: config({ name: vmId, disks: [] }), generation: 1 })),
    );
    expect(most).to.be.greaterThan(1);
    for (const vmId of ids) {
      const m = JSON.parse(readFileSync(join(folder(vmId), 'vm.json'), 'utf8')) as {
        config: { name: string };
      };
      expect(m.config.name).to.equal(vmId);
    }
  });

  it('a Saved VM is adopted Saved, with its saved state, and resumes from it', async () => {
    await ca.p.createVm({ vmId: 'v2', config: config({ name: 'db-1' }), generation: 1 });
    await ca.p.changeVmState({ vmId: 'v2', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(ca, 'v2', 'VM_STATE_RUNNING');
    await ca.p.changeVmState({ vmId: 'v2', action: 'VM_ACTION_SAVE', generation: 1 });
    await waitForState(ca, 'v2', 'VM_STATE_SAVED');
    const { sha256 } = await ca.p.getVmStateHash({ vmId: 'v2' });

    const adopted = await cb.p.createVm({ vmId: 'v2', config: config({ name: 'db-1' }), generation: 2 });
    expect(adopted.status!.state).to.equal('VM_STATE_SAVED');
    expect((await cb.p.getVmStateHash({ vmId: 'v2' })).sha256).to.equal(sha256);
    await ca.p.dropStaleVm({ vmId: 'v2', generation: 2 });
    // The stale copy went without taking the saved state with it.
    await cb.p.changeVmState({ vmId: 'v2', action: 'VM_ACTION_START', generation: 2 });
    await waitForState(cb, 'v2', 'VM_STATE_RUNNING');
    expect((await cb.p.getVmStateHash({ vmId: 'v2' })).sha256).to.equal(sha256);
  });

  it('a VM with snapshots migrates live: its snapshot tree comes along and its chain stays on cluster storage', async () => {
    await ca.p.createVm({ vmId: 'v3', config: config({ name: 'app-1' }), generation: 1 });
    await ca.p.changeVmState({ vmId: 'v3', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(ca, 'v3', 'VM_STATE_RUNNING');
    const snap = await ca.p.createCheckpoint({
      vmId: 'v3',
      name: 'before',
      generation: 1,
      checkpointId: 's1',
    });
    const onA = await ca.p.getVm({ vmId: 'v3' });
    const current = onA.config!.disks[0]!.path;
    expect(current).to.match(/\.avhd$/);

    const progress = await collect(
      ca.raw.migrateOut({
        vmId: 'v3',
        generation: 1,
        targetAddress: b.grpcAddress,
        kind: 'MIGRATION_KIND_LIVE',
        migrationId: 'mig-3',
      }),
    );
    expect(progress[progress.length - 1]!.phase).to.equal('MIGRATION_PHASE_COMPLETED');
    const moved = await cb.p.getVm({ vmId: 'v3' });
    expect(moved.status).to.include({ state: 'VM_STATE_RUNNING', generation: 2, hostId: 'host-b' });
    expect(moved.config!.disks[0]!.path).to.equal(current);
    const tree = await cb.p.listCheckpoints({ vmId: 'v3' });
    expect(tree.checkpoints.map((c) => [c.id, c.name])).to.deep.equal([[snap.id, 'before']]);
    expect(tree.currentId).to.equal('s1');
    expect((await code(ca.p.getVm({ vmId: 'v3' }))).code).to.equal(status.NOT_FOUND);
    expect(owner('v3')).to.deep.equal({ vmId: 'v3', hostId: 'host-b', generation: 2 });
    expect(existsSync(join(folder('v3'), current))).to.equal(true);
    expect(await cb.p.getMigrationStatus({ migrationId: 'mig-3' })).to.include({
      role: 'MIGRATION_ROLE_TARGET',
      stage: 'MIGRATION_STAGE_COMMITTED',
    });

    // The snapshot works on its new host: back to it (it held memory: Saved), then on.
    const applied = await cb.p.applyCheckpoint({ checkpointId: 's1', generation: 2, turnOffFirst: true });
    expect(applied.status!.state).to.equal('VM_STATE_SAVED');
    await cb.p.changeVmState({ vmId: 'v3', action: 'VM_ACTION_START', generation: 2 });
    await waitForState(cb, 'v3', 'VM_STATE_RUNNING');
  });
});
