import { expect } from 'chai';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhdDisk } from '@hyperfarm/vhd';
import { createLogger, status, type pb } from '@hyperfarm/api';
import { agentConfigSchema, type AgentConfig } from '../src/config.js';
import { startAgent, type RunningAgent } from '../src/server.js';
import { mib } from './helpers.js';
import { agentClient, waitForState, waitUntil } from './process-helpers.js';

function testConfig(dataDir: string): AgentConfig {
  const base = agentConfigSchema.parse({
    grpcAddress: '127.0.0.1:0',
    metricsAddress: '127.0.0.1:0',
    dataDir,
    logLevel: 'silent',
  });
  return { ...base, memoryBytes: base.memoryMib * 1024 * 1024 };
}

const disks: pb.DiskAttachment[] = [
  {
    controller: 'DISK_CONTROLLER_IDE',
    path: 'boot.vhd',
    createType: 'DISK_TYPE_DYNAMIC',
    createSizeBytes: mib(64),
  },
];
const config = (workload: pb.WorkloadProfile): pb.VmConfig => ({
  name: 'snap-1',
  processor: { count: 1 },
  memoryBytes: mib(64),
  guestOs: 'windows-server-2008-x64',
  integrationServices: true,
  disks,
  workload: { bootMs: 20, ...workload },
});

async function readByte(path: string): Promise<string> {
  const d = await VhdDisk.open(path, { readOnly: true });
  const b = await d.read(0, 512);
  await d.close();
  return String.fromCharCode(b[0]!);
}

async function writeByte(path: string, c: string): Promise<void> {
  const d = await VhdDisk.open(path);
  await d.write(0, Buffer.alloc(512, c));
  await d.close();
}

describe('checkpoints (snapshots) on differencing disks', function () {
  this.timeout(30_000);
  let dir: string;
  let agent: RunningAgent;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hf-agent-ckpt-'));
    agent = await startAgent(testConfig(dir), createLogger({ program: 't', id: 't', level: 'silent' }));
  });
  afterEach(async () => {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a checkpoint of a running VM keeps its memory; applying it brings the VM back Saved with that hash', async () => {
    const c = agentClient(agent.grpcAddress);
    await c.p.createVm({
      vmId: 'v',
      config: config({ workingSetBytes: mib(8), dirtyPagesPerSecond: 0 }),
      generation: 1,
    });
    await c.p.changeVmState({ vmId: 'v', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(c, 'v', 'VM_STATE_RUNNING');
    const h1 = (await c.p.getVmStateHash({ vmId: 'v' })).sha256;
    const c1 = await c.p.createCheckpoint({ vmId: 'v', name: 'before', generation: 1, checkpointId: 'c1' });
    expect(c1).to.include({ id: 'c1', includesMemory: true, vmState: 'VM_STATE_RUNNING', parentId: '' });
    const vm = await c.p.getVm({ vmId: 'v' });
    expect(vm.status!.state).to.equal('VM_STATE_RUNNING');
    expect(vm.config!.disks[0]!.path).to.equal('boot_c1.avhd');

    // The guest changes its memory, then the VM is turned off and checkpointed again.
    await c.p.updateVm({
      vmId: 'v',
      config: config({ workingSetBytes: mib(8), dirtyPagesPerSecond: 20_000 }),
      updateMask: { paths: ['workload'] },
      generation: 1,
    });
    // The guest dirties pages as the agent's clock runs: wait until its memory has changed.
    await waitUntil(
      'the memory hash to change',
      async () => (await c.p.getVmStateHash({ vmId: 'v' })).sha256 !== h1,
    );
    await c.p.changeVmState({ vmId: 'v', action: 'VM_ACTION_TURN_OFF', generation: 1 });
    const c2 = await c.p.createCheckpoint({ vmId: 'v', name: 'off', generation: 1, checkpointId: 'c2' });
    expect(c2).to.include({ includesMemory: false, parentId: 'c1' });

    const stale = await c.p
      .applyCheckpoint({ checkpointId: 'c1', generation: 0 })
      .catch((e: { code: number }) => e.code);
    expect(stale).to.not.equal(status.FAILED_PRECONDITION); // generation 0 is unfenced: it applied
    const applied = await c.p.getVm({ vmId: 'v' });
    expect(applied.status!.state).to.equal('VM_STATE_SAVED');
    expect((await c.p.getVmStateHash({ vmId: 'v' })).sha256).to.equal(h1);
    const list = await c.p.listCheckpoints({ vmId: 'v' });
    expect(list.checkpoints.map((x) => x.id)).to.deep.equal(['c1', 'c2']);
    expect(list.currentId).to.equal('c1');

    await c.p.updateVm({
      vmId: 'v',
      config: config({ workingSetBytes: mib(8), dirtyPagesPerSecond: 0 }),
      updateMask: { paths: ['workload'] },
      generation: 1,
    });
    await c.p.changeVmState({ vmId: 'v', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(c, 'v', 'VM_STATE_RUNNING');
    expect((await c.p.getVmStateHash({ vmId: 'v' })).sha256).to.equal(h1);

    const running = await c.p
      .applyCheckpoint({ checkpointId: 'c2', generation: 1 })
      .catch((e: { code: number; details: string }) => e);
    expect(running).to.include({ code: status.FAILED_PRECONDITION });
    expect((running as { details: string }).details).to.match(/it is Running; turn it off first/);
    c.raw.close();
  });

  it('revert discards later writes; deleting the last checkpoint of an Off VM merges its disk back', async () => {
    const c = agentClient(agent.grpcAddress);
    await c.p.createVm({ vmId: 'v', config: config({}), generation: 1 });
    const vmDir = join(dir, 'vms', 'v');
    await writeByte(join(vmDir, 'boot.vhd'), 'A');
    await c.p.createCheckpoint({ vmId: 'v', name: 'base', generation: 1, checkpointId: 'c0' });
    await writeByte(join(vmDir, 'boot_c0.avhd'), 'B');
    expect(await readByte(join(vmDir, 'boot_c0.avhd'))).to.equal('B');

    const vm = await c.p.applyCheckpoint({ checkpointId: 'c0', generation: 1 });
    expect(vm.status!.state).to.equal('VM_STATE_OFF');
    const current = join(vmDir, vm.config!.disks[0]!.path);
    expect(existsSync(join(vmDir, 'boot_c0.avhd'))).to.equal(false); // the abandoned state is gone
    expect(await readByte(current)).to.equal('A');
    await writeByte(current, 'C');

    await c.p.deleteCheckpoint({ checkpointId: 'c0', generation: 1 });
    const after = await c.p.getVm({ vmId: 'v' });
    expect(after.config!.disks[0]!.path).to.equal('boot.vhd');
    expect(await readByte(join(vmDir, 'boot.vhd'))).to.equal('C');
    expect(readdirSync(vmDir).filter((f) => f.endsWith('.avhd'))).to.deep.equal([]);
    expect((await c.p.listCheckpoints({ vmId: 'v' })).checkpoints).to.deep.equal([]);
    c.raw.close();
  });

  it('a VM with checkpoints does not migrate; deleting the VM forgets its checkpoints', async () => {
    const c = agentClient(agent.grpcAddress);
    await c.p.createVm({ vmId: 'v', config: config({}), generation: 1 });
    await c.p.createCheckpoint({ vmId: 'v', name: 'x', generation: 1 });
    await c.p.changeVmState({ vmId: 'v', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(c, 'v', 'VM_STATE_RUNNING');
    const err = await new Promise<{ code: number; details: string }>((resolve) => {
      const s = c.raw.migrateOut({
        vmId: 'v',
        generation: 1,
        targetAddress: '127.0.0.1:1',
        kind: 'MIGRATION_KIND_QUICK',
      });
      s.on('data', () => undefined);
      s.on('error', (e: { code: number; details: string }) => resolve(e));
    });
    expect(err.code).to.equal(status.FAILED_PRECONDITION);
    expect(err.details).to.match(/has snapshots, which travel only on cluster storage/);
    await c.p.changeVmState({ vmId: 'v', action: 'VM_ACTION_TURN_OFF', generation: 1 });
    await c.p.deleteVm({ vmId: 'v', generation: 1 });
    await c.p.createVm({ vmId: 'v', config: config({}), generation: 1 });
    expect((await c.p.listCheckpoints({ vmId: 'v' })).checkpoints).to.deep.equal([]);
    c.raw.close();
  });
});
