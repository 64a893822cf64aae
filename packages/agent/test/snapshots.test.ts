import { expect } from 'chai';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FileSystemProvider, VhdDisk, type Storage, type StorageProvider } from '@hyperfarm/vhd';
import { status, type pb } from '@hyperfarm/api';
import type { AgentHost } from '../src/edge/agent-host.js';
import type { Checkpoints } from '../src/edge/checkpoints.js';
import { VmTransfer } from '../src/edge/vm-transfer.js';
import { mib } from './helpers.js';
import type { TestClock } from './host-helpers.js';
import {
  openSnapshotHost,
  quiesce,
  readSectors,
  runUntil,
  snapVmConfig,
  tempDir,
  writeSector,
} from './snapshot-helpers.js';

/** A volume that can run out of space: every write answers ENOSPC while `full` is set. */
class FullableProvider implements StorageProvider {
  full = false;
  private readonly fs = new FileSystemProvider();
  private wrap(s: Storage): Storage {
    const write = (offset: number, data: Uint8Array) =>
      this.full
        ? Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }))
        : s.write(offset, data);
    return {
      read: (o, l) => s.read(o, l),
      write,
      flush: () => s.flush(),
      size: () => s.size(),
      truncate: (l) => s.truncate(l),
      close: () => s.close(),
    };
  }
  async open(p: string, mode: 'read' | 'readwrite') {
    return this.wrap(await this.fs.open(p, mode));
  }
  async create(p: string) {
    return this.wrap(await this.fs.create(p));
  }
  exists(p: string) {
    return this.fs.exists(p);
  }
  rename(a: string, b: string) {
    return this.fs.rename(a, b);
  }
  remove(p: string) {
    return this.fs.remove(p);
  }
  resolve(p: string) {
    return this.fs.resolve(p);
  }
}

const errorOf = (p: Promise<unknown>) =>
  p.then(
    () => expect.fail('expected an error'),
    (e: { code: number; message: string; field?: string }) => e,
  );

async function startRunning(host: AgentHost, snaps: Checkpoints, clock: TestClock, vmId: string) {
  await host.mutate((e) => e.power.change(vmId, 'VM_ACTION_START'));
  await runUntil(
    host,
    snaps,
    clock,
    () => host.read((e) => e.vms.get(vmId)).status!.state === 'VM_STATE_RUNNING',
  );
}

/** One sector with data in each 2 MiB block of a 16 MiB disk, before any snapshot. */
const PATTERN = [0, 4096 + 7, 8192 + 1, 4096 * 4 - 1, 4096 * 5, 4096 * 7 + 4000];

describe('snapshots on the engine VMs', function () {
  this.timeout(30_000);
  let dir: string;
  let host: AgentHost;
  let snaps: Checkpoints;
  let clock: TestClock;
  const open = async (opts: Parameters<typeof openSnapshotHost>[1] = {}) => {
    ({ host, snaps, clock } = await openSnapshotHost(dir, opts));
  };
  beforeEach(() => {
    dir = tempDir('ops');
  });
  afterEach(async () => {
    await host?.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('snapshots Off, Saved, Running and Paused VMs; a running one keeps memory after a short pause', async () => {
    await open();
    await host.createVm(
      'v',
      snapVmConfig('states-1', { workingSetBytes: mib(4), dirtyPagesPerSecond: 500 }),
      1,
    );
    const off = await snaps.create('v', 'off', 1, 'c-off');
    expect(off).to.include({ includesMemory: false, vmState: 'VM_STATE_OFF', parentId: '' });
    await startRunning(host, snaps, clock, 'v');
    const hRun = host.read((e) => e.vms.stateHash('v')).sha256;
    const run = await snaps.create('v', 'running', 1, 'c-run');
    expect(run).to.include({ includesMemory: true, vmState: 'VM_STATE_RUNNING', parentId: 'c-off' });
    expect(host.read((e) => e.vms.get('v')).status!.state).to.equal('VM_STATE_RUNNING');
    const rec = (await snaps.list('v')).checkpoints.find((c) => c.id === 'c-run')!;
    expect(rec.savedHash).to.equal(hRun);
    expect(rec.pauseMs).to.be.a('number').greaterThan(0);
    await host.mutate((e) => e.power.change('v', 'VM_ACTION_PAUSE'));
    await runUntil(
      host,
      snaps,
      clock,
      () => host.read((e) => e.vms.get('v')).status!.state === 'VM_STATE_PAUSED',
    );
    expect(await snaps.create('v', 'paused', 1, 'c-pause')).to.include({
      includesMemory: true,
      vmState: 'VM_STATE_PAUSED',
    });
    await host.mutate((e) => e.power.change('v', 'VM_ACTION_SAVE'));
    await runUntil(
      host,
      snaps,
      clock,
      () => host.read((e) => e.vms.get('v')).status!.state === 'VM_STATE_SAVED',
    );
    const hSaved = host.read((e) => e.vms.stateHash('v')).sha256;
    const saved = await snaps.create('v', 'saved', 1, 'c-saved');
    expect(saved).to.include({ includesMemory: true, vmState: 'VM_STATE_SAVED', parentId: 'c-pause' });
    expect(host.read((e) => e.vms.get('v')).status!.state).to.equal('VM_STATE_SAVED');

    // Apply: Saved with the snapshot's memory, or Off without.
    const a1 = await snaps.apply('c-run', 1, false, false);
    expect(a1.status!.state).to.equal('VM_STATE_SAVED');
    expect(host.read((e) => e.vms.stateHash('v')).sha256).to.equal(hRun);
    const a2 = await snaps.apply('c-off', 1, false, false);
    expect(a2.status!.state).to.equal('VM_STATE_OFF');
    const a3 = await snaps.apply('c-saved', 1, false, false);
    expect(a3.status!.state).to.equal('VM_STATE_SAVED');
    expect(host.read((e) => e.vms.stateHash('v')).sha256).to.equal(hSaved);
    expect((await snaps.list('v')).currentId).to.equal('c-saved');
  });

  it('applying to a running VM is refused unless turn_off_first; save_current_first keeps the state left', async () => {
    await open();
    await host.createVm(
      'v',
      snapVmConfig('apply-1', { workingSetBytes: mib(4), dirtyPagesPerSecond: 500 }),
      1,
    );
    await snaps.create('v', 'base', 1, 'c0');
    await startRunning(host, snaps, clock, 'v');
    const err = await errorOf(snaps.apply('c0', 1, false, true));
    expect(err.code).to.equal(status.FAILED_PRECONDITION);
    expect(err.message).to.match(/VM 'apply-1': it is Running; turn it off first, or set turn_off_first/);
    clock.advance(500);
    const before = host.read((e) => e.vms.stateHash('v')).sha256;
    const vm = await snaps.apply('c0', 1, true, true);
    expect(vm.status!.state).to.equal('VM_STATE_OFF');
    const { checkpoints, currentId } = await snaps.list('v');
    expect(currentId).to.equal('c0');
    const kept = checkpoints.find((c) => c.name === "Before applying 'base'")!;
    expect(kept).to.include({ parentId: 'c0', includesMemory: true });
    expect(kept.savedHash).to.equal(before);
    // The kept state can be applied back: Saved with exactly that memory.
    await snaps.apply(kept.id, 1, false, false);
    expect(host.read((e) => e.vms.stateHash('v')).sha256).to.equal(before);
  });

  it('refuses the 51st snapshot, bad names and unknown ids with clear errors', async () => {
    await open();
    await host.createVm('v', snapVmConfig('limit-1'), 1);
    for (let i = 1; i <= 50; i++) await snaps.create('v', `s${i}`, 1, `s${i}`);
    const full = await errorOf(snaps.create('v', 's51', 1, 's51'));
    expect(full.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(full.message).to.match(
      /VM 'limit-1': it has 50 snapshots, the most a VM may have \(50\); delete one first/,
    );
    expect((await errorOf(snaps.rename('s1', '', 1))).message).to.match(/name.*1 to 100/);
    expect((await errorOf(snaps.rename('s1', 'a\nb', 1))).message).to.match(/control characters/);
    expect((await errorOf(snaps.rename('nope', 'x', 1))).code).to.equal(status.NOT_FOUND);
    expect((await errorOf(snaps.create('v', 'x', 1, 'bad id!'))).code).to.equal(status.INVALID_ARGUMENT);
    expect((await errorOf(snaps.merges.get('m-unknown'))).code).to.equal(status.NOT_FOUND);
    // Deleting the whole tree from its root folds all 50 files back into boot.vhd.
    await snaps.delete('s1', 1, true);
    expect((await snaps.list('v')).checkpoints).to.deep.equal([]);
    expect(host.read((e) => e.vms.get('v')).config!.disks[0]!.path).to.equal('boot.vhd');
    expect(readdirSync(host.vmDir('v')).filter((f) => f.endsWith('.avhd'))).to.deep.equal([]);
  });

  it("deletes the parent of a running VM's current state with an online merge while the guest writes", async () => {
    const writes: { offset: number; data: Buffer }[] = [];
    let record = false;
    ({ host, snaps, clock } = await openSnapshotHost(dir, { mergeThrottleMs: 15 }));
    await host.createVm('v', snapVmConfig('online-1', { diskIops: 50, diskWriteBytes: 4096 }, mib(16)), 1);
    for (const s of PATTERN) await writeSector(join(host.vmDir('v'), 'boot.vhd'), s, 0x40 + (s % 50));
    await snaps.create('v', 'base', 1, 'c0');
    await startRunning(host, snaps, clock, 'v');
    // Record the guest's writes as they reach the disk: the model of what the disk must hold.
    const live = (await host.openVhd('v', 0))!;
    const origWrite = live.write.bind(live);
    live.write = async (offset: number, data: Uint8Array) => {
      await origWrite(offset, data);
      if (record) writes.push({ offset, data: Buffer.from(data) });
    };
    clock.advance(1000);
    host.pump();
    await host.settle();
    const size = live.sizeBytes;
    const model = await live.read(0, size);
    record = true;
    const events: pb.AgentEvent[] = [];
    host.onEvent((e) => events.push(e));
    const { mergeId } = await snaps.delete('c0', 1, false);
    expect(mergeId).to.not.equal('');
    const refused = await errorOf(snaps.create('v', 'x', 1, ''));
    expect(refused.message).to.match(/merge .* is folding its snapshot disks/);
    await runUntil(host, snaps, clock, async () => (await snaps.merges.get(mergeId)).state === 'completed');
    await host.settle();
    record = false;
    for (const w of writes) Buffer.from(w.data).copy(model, w.offset);
    const progress = events.filter((e) => e.type === 'merge_progress');
    expect(progress.length).to.be.greaterThan(1);
    expect(progress[0]!.merge!.blocksTotal).to.equal(PATTERN.length);
    expect(events.some((e) => e.type === 'merge_completed' && e.merge!.id === mergeId)).to.equal(true);
    // The guest kept writing while the merge ran.
    expect(writes.length).to.be.greaterThan(10);
    expect(host.read((e) => e.vms.get('v')).status!.state).to.equal('VM_STATE_RUNNING');
    expect((await live.read(0, size)).equals(model)).to.equal(true);
    expect(live.parent).to.equal(undefined); // the base merged into it: a dynamic disk now
    expect(existsSync(join(host.vmDir('v'), 'boot.vhd'))).to.equal(false);
    expect(readdirSync(host.vmDir('v')).filter((f) => /\.a?vhd$/.test(f))).to.have.length(1);
    expect(await snaps.merges.get(mergeId)).to.include({ state: 'completed', progressPercent: 100 });
  });

  it('a snapshot taken while the guest writes holds exactly the writes before it, and Now the rest', async () => {
    // Every guest write, with the file it reached, in order.
    const writes: { path: string; offset: number; data: Buffer }[] = [];
    await open({
      wrapDisk: (_vm, _i, disk) => {
        const path = (disk as VhdDisk).path;
        return {
          get sizeBytes() {
            return disk.sizeBytes;
          },
          read: (o, l) => disk.read(o, l),
          write: async (o, d) => {
            await disk.write(o, d);
            writes.push({ path, offset: o, data: Buffer.from(d) });
          },
          flush: () => disk.flush(),
          close: () => disk.close(),
        };
      },
    });
    await host.createVm('v', snapVmConfig('io-1', { diskIops: 200, diskWriteBytes: 4096 }), 1);
    await startRunning(host, snaps, clock, 'v');
    // Each step's guest writes are real I/O the host settles. While the snapshot holds guest
    // I/O there is none, and one turn of the event loop lets the snapshot's own I/O go on: the
    // number of steps it spans varies, what the disks must hold does not.
    const step = async () => {
      clock.advance(100);
      host.pump();
      await quiesce(host, snaps);
      await new Promise((r) => setImmediate(r));
    };
    for (let i = 0; i < 10; i++) await step();
    const taking = snaps.create('v', 'under load', 1, 'u1');
    // The guest keeps issuing writes while the snapshot is being taken.
    let done = false;
    void taking.then(() => (done = true));
    while (!done) await step();
    for (let i = 0; i < 10; i++) await step();
    await host.settle();
    const boot = join(host.vmDir('v'), 'boot.vhd');
    const top = join(host.vmDir('v'), host.read((e) => e.vms.get('v')).config!.disks[0]!.path);
    expect(writes.filter((w) => w.path === boot).length).to.be.greaterThan(10);
    expect(writes.filter((w) => w.path === top).length).to.be.greaterThan(10);
    const size = mib(4);
    const frozenModel = Buffer.alloc(size);
    const nowModel = Buffer.alloc(size);
    for (const w of writes) {
      if (w.path === boot) w.data.copy(frozenModel, w.offset);
      w.data.copy(nowModel, w.offset);
    }
    const live = (await host.openVhd('v', 0))!;
    expect((await live.read(0, size)).equals(nowModel), 'Now').to.equal(true);
    await host.mutate((e) => e.power.change('v', 'VM_ACTION_TURN_OFF'));
    await host.settle();
    const frozen = await VhdDisk.open(boot, { readOnly: true });
    try {
      expect((await frozen.read(0, size)).equals(frozenModel), 'the snapshot').to.equal(true);
    } finally {
      await frozen.close();
    }
  });

  it('a full volume turns the VM RunningCritical and the merge resumes once space returns', async () => {
    const volume = new FullableProvider();
    await open({ storageProvider: volume });
    await host.createVm('v', snapVmConfig('full-1', {}, mib(16)), 1);
    for (const s of PATTERN) await writeSector(join(host.vmDir('v'), 'boot.vhd'), s, 0x60 + (s % 50));
    await snaps.create('v', 'base', 1, 'c0');
    await startRunning(host, snaps, clock, 'v');
    const events: pb.AgentEvent[] = [];
    host.onEvent((e) => events.push(e));
    volume.full = true;
    const { mergeId } = await snaps.delete('c0', 1, false);
    await runUntil(
      host,
      snaps,
      clock,
      () => host.read((e) => e.vms.get('v')).status!.state === 'VM_STATE_RUNNING_CRITICAL',
    );
    const waiting = await snaps.merges.get(mergeId);
    expect(waiting.state).to.equal('waiting_for_space');
    expect(waiting.message).to.match(/full/);
    expect(events.some((e) => e.type === 'critical' && /snapshot merge/.test(e.message ?? ''))).to.equal(
      true,
    );
    volume.full = false;
    await runUntil(host, snaps, clock, async () => (await snaps.merges.get(mergeId)).state === 'completed');
    expect(host.read((e) => e.vms.get('v')).status!.state).to.equal('VM_STATE_RUNNING');
    const live = (await host.openVhd('v', 0))!;
    for (const s of PATTERN) expect((await live.read(s * 512, 512))[0]).to.equal(0x60 + (s % 50));
    expect(existsSync(join(host.vmDir('v'), 'boot.vhd'))).to.equal(false);
  });

  it('an Off VM merges at once; the tree and an interrupted merge survive a restart', async () => {
    await open({ mergeThrottleMs: 40 });
    await host.createVm('v', snapVmConfig('restart-1', {}, mib(16)), 1);
    for (const s of PATTERN) await writeSector(join(host.vmDir('v'), 'boot.vhd'), s, 0x20 + (s % 50));
    await snaps.create('v', 'a', 1, 'ca');
    await writeSector(join(host.vmDir('v'), 'boot_ca.avhd'), 3, 0x33);
    await snaps.create('v', 'b', 1, 'cb');
    await startRunning(host, snaps, clock, 'v');
    const { mergeId } = await snaps.delete('ca', 1, false);
    await runUntil(host, snaps, clock, async () => (await snaps.merges.get(mergeId)).blocksDone >= 2);
    // The process dies here: nothing is stopped cleanly (the store is closed under the merge, as
    // a kill would leave it), then the agent comes back on the same folder.
    const interrupted = await snaps.merges.get(mergeId);
    expect(interrupted.blocksDone).to.be.lessThan(interrupted.blocksTotal);
    await snaps.merges.stop(); // stands in for the kill: the job stops between two durable blocks
    await host.stop();
    await open();
    const after = await snaps.merges.get(mergeId);
    expect(after.state).to.equal('completed');
    const { checkpoints, currentId } = await snaps.list('v');
    expect(checkpoints.map((c) => [c.id, c.parentId, c.name])).to.deep.equal([['cb', '', 'b']]);
    expect(currentId).to.equal('cb');
    const frozen = join(host.vmDir('v'), checkpoints[0]!.config.disks[0]!.path);
    expect(await readSectors(frozen, [...PATTERN, 3])).to.deep.equal([
      ...PATTERN.map((s) => 0x20 + (s % 50)),
      0x33,
    ]);
    expect(existsSync(join(host.vmDir('v'), 'boot.vhd'))).to.equal(false);
  });

  it('exports a VM with its snapshots to a folder and imports it with the same tree, disks and memory', async () => {
    await open();
    await host.createVm(
      'v',
      snapVmConfig('export-1', { workingSetBytes: mib(4), dirtyPagesPerSecond: 300 }),
      1,
    );
    await writeSector(join(host.vmDir('v'), 'boot.vhd'), 10, 0x11);
    await snaps.create('v', 'off', 1, 'e0');
    await writeSector(join(host.vmDir('v'), 'boot_e0.avhd'), 11, 0x12);
    await startRunning(host, snaps, clock, 'v');
    await snaps.create('v', 'run', 1, 'e1');
    clock.advance(700);
    await host.mutate((e) => e.power.change('v', 'VM_ACTION_SAVE'));
    await runUntil(
      host,
      snaps,
      clock,
      () => host.read((e) => e.vms.get('v')).status!.state === 'VM_STATE_SAVED',
    );
    const transfer = new VmTransfer(host, snaps);
    // Outside the data folder's exports/ and every allowed root: refused before anything is written.
    const outside = await errorOf(transfer.exportToFolder('v', join(dir, 'elsewhere')));
    expect(outside).to.include({ code: status.INVALID_ARGUMENT, field: 'folder' });
    expect(existsSync(join(dir, 'elsewhere'))).to.equal(false);
    const out = await transfer.exportToFolder('v', 'vm-1');
    const folder = join(dir, 'exports', 'vm-1');
    expect(out.files).to.include('manifest.json');
    const source = { tree: await snaps.list('v'), hash: host.read((e) => e.vms.stateHash('v')) };
    const readAll = async (h: AgentHost, rel: string) => {
      const d = await VhdDisk.open(join(h.vmDir('v'), rel), { readOnly: true });
      try {
        return await d.read(0, d.sizeBytes);
      } finally {
        await d.close();
      }
    };
    const sourceDisks = [
      host.read((e) => e.vms.get('v')).config!.disks[0]!.path,
      ...source.tree.checkpoints.map((c) => c.config.disks[0]!.path),
    ];
    const sourceBytes = await Promise.all(sourceDisks.map((p) => readAll(host, p)));
    const other = await openSnapshotHost(join(dir, 'host2'), { allowedRoots: [join(dir, 'exports')] });
    try {
      const vm = await new VmTransfer(other.host, other.snaps).importFromFolder(folder, '', '', 3);
      expect(vm.id).to.equal('v');
      expect(vm.status!.state).to.equal('VM_STATE_SAVED');
      expect(other.host.read((e) => e.vms.stateHash('v'))).to.deep.equal(source.hash);
      const tree = await other.snaps.list('v');
      expect(tree).to.deep.equal(source.tree);
      const importedBytes = await Promise.all(sourceDisks.map((p) => readAll(other.host, p)));
      importedBytes.forEach((b, i) => expect(b.equals(sourceBytes[i]!), sourceDisks[i]).to.equal(true));
      // Memory of a snapshot: apply it on both and compare.
      await snaps.apply('e1', 1, false, false);
      await other.snaps.apply('e1', 3, false, false);
      expect(other.host.read((e) => e.vms.stateHash('v'))).to.deep.equal(
        host.read((e) => e.vms.stateHash('v')),
      );
      await other.host.mutate((e) => e.power.change('v', 'VM_ACTION_START'));
      await runUntil(
        other.host,
        other.snaps,
        other.clock,
        () => other.host.read((e) => e.vms.get('v')).status!.state === 'VM_STATE_RUNNING',
      );
      expect(other.host.read((e) => e.vms.stateHash('v')).sha256).to.equal(
        source.tree.checkpoints[1]!.savedHash,
      );
      expect(
        (await errorOf(new VmTransfer(other.host, other.snaps).importFromFolder(folder, '', '', 3))).code,
      ).to.equal(status.ALREADY_EXISTS);
    } finally {
      await other.host.stop();
    }
  });
});
