import { expect } from 'chai';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { status, type pb } from '@hyperfarm/api';
import { mib } from './helpers.js';
import { useAgentProcesses, waitForState } from './process-helpers.js';
import { readSectors, snapVmConfig, writeSector } from './snapshot-helpers.js';

/** One sector with data in each of six 2 MiB blocks of a 16 MiB disk. */
const PATTERN = [0, 4096 + 7, 8192 + 1, 4096 * 4 - 1, 4096 * 5, 4096 * 7 + 4000];
const value = (s: number) => 0x30 + (s % 60);

describe('snapshots through AgentService, and kill -9 in the middle of a merge', function () {
  this.timeout(60_000);
  const { dir: testDir, start } = useAgentProcesses('snapgrpc');

  it('takes, renames, deletes online with progress events; after kill -9 the tree is there and the merge finishes', async () => {
    // A pause between merge blocks keeps the merge running long enough to be killed in the middle.
    const a = await start('agent-1', ['--merge-throttle-ms', '150']);
    const c = a.client.p;
    await c.createVm({ vmId: 'v', config: snapVmConfig('grpc-1', {}, mib(16)), generation: 1 });
    const vmDir = join(testDir(), 'agent-1', 'vms', 'v');
    for (const s of PATTERN) await writeSector(join(vmDir, 'boot.vhd'), s, value(s));
    await c.createCheckpoint({ vmId: 'v', name: 'first', generation: 1, checkpointId: 'g1' });
    await c.createCheckpoint({ vmId: 'v', name: 'second', generation: 1, checkpointId: 'g2' });
    const renamed = await c.renameCheckpoint({ checkpointId: 'g2', name: 'second, renamed', generation: 1 });
    expect(renamed).to.include({ id: 'g2', name: 'second, renamed', parentId: 'g1' });
    const bad = await c
      .renameCheckpoint({ checkpointId: 'g2', name: '', generation: 1 })
      .catch((e: { code: number }) => e);
    expect(bad).to.include({ code: status.INVALID_ARGUMENT });
    await c.changeVmState({ vmId: 'v', action: 'VM_ACTION_START', generation: 1 });
    await waitForState(a.client, 'v', 'VM_STATE_RUNNING');
    const refused = await c
      .applyCheckpoint({ checkpointId: 'g1', generation: 1 })
      .catch((e: { code: number; details: string }) => e);
    expect(refused).to.include({ code: status.FAILED_PRECONDITION });
    expect((refused as { details: string }).details).to.match(/VM 'grpc-1': it is Running/);

    const watch = a.client.raw.watchEvents({});
    watch.on('error', () => undefined);
    // The kill waits for the merge's own word that two blocks are done (its progress event), not
    // for a guessed time.
    const twoBlocks = new Promise<pb.Merge__Output>((resolve) =>
      watch.on('data', (e: pb.AgentEvent__Output) => {
        if (e.type === 'merge_progress' && e.merge && e.merge.blocksDone >= 2) resolve(e.merge);
      }),
    );
    // Deleting the root: boot.vhd folds into the next disk while the VM runs.
    const { mergeId } = await c.deleteCheckpoint({ checkpointId: 'g1', generation: 1 });
    expect(mergeId).to.not.equal('');
    const seen = await twoBlocks;
    expect(seen.id).to.equal(mergeId);
    expect(seen.state).to.equal('running');
    expect(seen.blocksDone).to.be.within(2, seen.blocksTotal - 1);
    watch.cancel();

    a.child.kill('SIGKILL');
    await a.exited;
    a.client.raw.close();
    // Both agents may use one shared folder outside their data folders: how exports travel.
    const shared = join(testDir(), 'shared');
    const b = await start('agent-1', ['--allowed-roots', shared]);
    const after = await b.client.p.getMerge({ mergeId });
    expect(after).to.include({ state: 'completed', progressPercent: 100 });
    const tree = await b.client.p.listCheckpoints({ vmId: 'v' });
    expect(tree.checkpoints.map((x) => [x.id, x.parentId, x.name])).to.deep.equal([
      ['g2', '', 'second, renamed'],
    ]);
    expect(tree.currentId).to.equal('g2');
    const vm = await b.client.p.getVm({ vmId: 'v' });
    expect(vm.status!.state).to.equal('VM_STATE_OFF'); // it was running when the agent died
    expect(existsSync(join(vmDir, 'boot.vhd'))).to.equal(false);
    const current = join(vmDir, vm.config!.disks[0]!.path);
    expect(await readSectors(current, PATTERN)).to.deep.equal(PATTERN.map(value));

    // A whole-configuration update that repeats the original disks keeps the VM on its chain; one
    // that changes the disks is refused while snapshots hang on them.
    const updated = await b.client.p.updateVm({
      vmId: 'v',
      config: snapVmConfig('grpc-1', { bootMs: 20 }, mib(16)),
      generation: 1,
    });
    expect(updated.config!.disks[0]!.path).to.equal(vm.config!.disks[0]!.path);
    expect(updated.config!.workload!.bootMs).to.equal(20);
    const more = snapVmConfig('grpc-1', {}, mib(16));
    more.disks!.push({
      controller: 'DISK_CONTROLLER_IDE',
      location: 1,
      path: 'data.vhd',
      createSizeBytes: mib(8),
    });
    const changed = await b.client.p
      .updateVm({ vmId: 'v', config: more, updateMask: { paths: ['disks'] }, generation: 1 })
      .catch((e: { code: number; details: string }) => e);
    expect(changed).to.include({ code: status.FAILED_PRECONDITION });
    expect((changed as { details: string }).details).to.match(/it has snapshots/);

    // Export and import over gRPC: a second agent gets the same tree.
    const folder = join(shared, 'export-v');
    const out = await b.client.p.exportVmToFolder({ vmId: 'v', folder });
    expect(out.files).to.include('manifest.json');
    const other = await start('agent-2', ['--allowed-roots', shared]);
    const imported = await other.client.p.importVmFromFolder({ folder, generation: 1 });
    expect(imported.config!.name).to.equal('grpc-1');
    const tree2 = await other.client.p.listCheckpoints({ vmId: 'v' });
    expect(tree2).to.deep.equal(tree);
    const dir2 = join(testDir(), 'agent-2', 'vms', 'v');
    expect(await readSectors(join(dir2, imported.config!.disks[0]!.path), PATTERN)).to.deep.equal(
      PATTERN.map(value),
    );
    expect(
      readdirSync(dir2)
        .filter((f) => /\.a?vhd$/.test(f))
        .sort(),
    ).to.deep.equal(
      readdirSync(vmDir)
        .filter((f) => /\.a?vhd$/.test(f))
        .sort(),
    );
    const missing = await other.client.p.getMerge({ mergeId: 'nope' }).catch((e: { code: number }) => e);
    expect(missing).to.include({ code: status.NOT_FOUND });
  });
});
