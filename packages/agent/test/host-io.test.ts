import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeFooter, DiskType, FOOTER_SIZE, VhdDisk } from '@hyperfarm/vhd';
import { FaultyDisk, vhdLibraryFactory, type DiskBackend } from '../src/edge/disk.js';
import { gib, mib, vmConfig } from './helpers.js';
import { openTestHost } from './host-helpers.js';

/** A host on a virtual clock (no timer): tests move time with `clock.t`. */
const openHost = (dir: string, wrapDisk?: (vmId: string, i: number, d: DiskBackend) => DiskBackend) =>
  openTestHost(dir, {
    id: 'host-io',
    macPoolStart: '00-15-5D-10-00-00',
    startMs: 1_000_000,
    seed: 1,
    ...(wrapDisk ? { wrapDisk } : {}),
  });

describe('host I/O: saved state files, VHD disks and LevelDB', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hf-agent-io-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a fixed VHD footer round-trips and is checksummed', async () => {
    // Fixed disks are made by @hyperfarm/vhd, the one place that knows the format.
    const path = join(dir, 'fixed.vhd');
    const disk = await vhdLibraryFactory(() => 1_700_000_000_000).create(path, mib(8), 'fixed');
    expect(disk.sizeBytes).to.be.at.least(mib(8));
    await disk.close();
    const bytes = readFileSync(path);
    const f = bytes.subarray(bytes.length - FOOTER_SIZE);
    const decoded = decodeFooter(f);
    expect(decoded.ok && decoded.footer.diskType).to.equal(DiskType.Fixed);
    expect(decoded.ok && decoded.footer.currentSize).to.equal(disk.sizeBytes);
    f[100] = (f[100]! + 1) & 0xff;
    expect(decodeFooter(f)).to.deep.include({ ok: false });
    expect((decodeFooter(f) as { reason: string }).reason).to.match(/checksum/);
  });

  it('save writes real bytes (zero pages skipped) and restore brings back the same hash', async () => {
    const { host, clock } = await openHost(dir);
    const workload = { bootMs: 100, workingSetBytes: mib(8), dirtyPagesPerSecond: 20_000 };
    await host.createVm('vm-1', vmConfig('web-1', { memoryBytes: mib(256), workload }), 1);
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_START'));
    clock.t += 2_000;
    const before = host.read((e) => e.vms.stateHash('vm-1'));
    expect(before.residentPages).to.be.greaterThan(1000);
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_SAVE'));
    await host.settle();
    expect(host.read((e) => e.vms.get('vm-1')).status!.state).to.equal('VM_STATE_SAVED');
    const size = statSync(host.savedStatePath('vm-1')).size;
    // Only written pages are in the file: far less than the VM's 256 MiB.
    expect(size).to.be.within(before.residentPages * 4104, before.residentPages * 4104 + 4096);
    expect(host.read((e) => e.vms.stateHash('vm-1'))).to.deep.equal(before);
    clock.t += 60_000;
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_START'));
    await host.settle();
    expect(host.read((e) => e.vms.get('vm-1')).status!.state).to.equal('VM_STATE_RUNNING');
    expect(host.read((e) => e.vms.stateHash('vm-1')).sha256).to.equal(before.sha256);
    expect(existsSync(host.savedStatePath('vm-1'))).to.equal(false);
    await host.stop();
  });

  it('a corrupted saved state is refused and the VM stays Saved', async () => {
    const { host, clock } = await openHost(dir);
    await host.createVm('vm-1', vmConfig('web-1', { workload: { bootMs: 10 } }), 1);
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_START'));
    clock.t += 100;
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_SAVE'));
    await host.settle();
    const path = host.savedStatePath('vm-1');
    const bytes = readFileSync(path);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
    writeFileSync(path, bytes);
    await host.mutate((e) => e.power.change('vm-1', 'VM_ACTION_START'));
    await host.settle();
    const vm = host.read((e) => e.vms.get('vm-1'));
    expect(vm.status!.state).to.equal('VM_STATE_SAVED');
    expect(vm.status!.message).to.match(/restore failed/);
    await host.stop();
  });

  it('guest writes reach the VHD; a failing disk makes the VM RunningCritical, a full one PausedCritical', async () => {
    const faulty = new Map<string, FaultyDisk>();
    const { host, clock } = await openHost(dir, (vmId, _i, d) => {
      const f = new FaultyDisk(d);
      faulty.set(vmId, f);
      return f;
    });
    const disks = [{ controller: 'DISK_CONTROLLER_IDE' as const, path: 'boot.vhd', createSizeBytes: mib(4) }];
    const workload = { bootMs: 10, diskIops: 100, diskWriteBytes: 4096 };
    await host.createVm('a', vmConfig('a', { disks, workload }), 1);
    await host.createVm('b', vmConfig('b', { disks, workload }), 1);
    const created = await VhdDisk.open(join(host.vmDir('a'), 'boot.vhd'));
    expect(created.type).to.equal('fixed');
    expect(created.sizeBytes).to.be.at.least(mib(4));
    await created.close();
    for (const id of ['a', 'b']) await host.mutate((e) => e.power.change(id, 'VM_ACTION_START'));
    clock.t += 1_000;
    host.pump();
    await host.settle();
    expect(host.read((e) => e.vms.ioStats('a')).diskIos).to.be.greaterThan(50);
    const content = readFileSync(join(host.vmDir('a'), 'boot.vhd'));
    expect(content.subarray(0, mib(4)).some((b) => b !== 0)).to.equal(true);

    faulty.get('a')!.fault = 'failed';
    faulty.get('b')!.fault = 'full';
    clock.t += 100;
    host.pump();
    await host.settle();
    expect(host.read((e) => e.vms.get('a')).status!.state).to.equal('VM_STATE_RUNNING_CRITICAL');
    expect(host.read((e) => e.vms.get('b')).status!.state).to.equal('VM_STATE_PAUSED_CRITICAL');

    faulty.get('a')!.fault = undefined;
    clock.t += 100;
    host.pump();
    await host.settle();
    expect(host.read((e) => e.vms.get('a')).status!.state).to.equal('VM_STATE_RUNNING');
    await host.stop();
  });

  it('a real VHD on a really full file system makes the VM PausedCritical, not RunningCritical', async function () {
    // A small tmpfs, filled up: the kernel's own ENOSPC, through the VHD library's VhdNoSpaceError.
    const volume = join(dir, 'volume');
    mkdirSync(volume);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', volume]);
    if (mounted.status !== 0) {
      // Mounting needs root (CI runs as root); nothing short of a real file system tells the truth here.
      this.skip();
    }
    const { host, clock } = await openTestHost(dir, {
      id: 'host-full',
      macPoolStart: '00-15-5D-11-00-00',
      startMs: 1_000_000,
      seed: 3,
      settings: { allowedRoots: [volume] },
    });
    try {
      const disks = [
        {
          controller: 'DISK_CONTROLLER_IDE' as const,
          path: join(volume, 'data.vhd'),
          createType: 'DISK_TYPE_DYNAMIC' as const,
          createSizeBytes: mib(64),
        },
      ];
      await host.createVm(
        'full',
        vmConfig('full', { disks, workload: { bootMs: 10, diskIops: 50, diskWriteBytes: 4096 } }),
        1,
      );
      // Fill what is left of the volume, so the first block the guest touches cannot be allocated.
      const filler = spawnSync('dd', ['if=/dev/zero', `of=${join(volume, 'filler')}`, 'bs=64k'], {
        encoding: 'utf8',
      });
      expect(filler.stderr).to.match(/No space left on device/);
      await host.mutate((e) => e.power.change('full', 'VM_ACTION_START'));
      for (let i = 0; i < 5; i++) {
        clock.t += 100;
        host.pump();
        await host.settle();
      }
      const vm = host.read((e) => e.vms.get('full'));
      expect(vm.status!.state).to.equal('VM_STATE_PAUSED_CRITICAL');
      expect(vm.status!.message).to.match(/its storage is full/);
    } finally {
      await host.stop();
      spawnSync('umount', [volume]);
    }
  });

  it('a dynamic VHD (through @hyperfarm/vhd) grows as the guest writes into it', async () => {
    const { host, clock } = await openHost(dir);
    const disks = [
      {
        controller: 'DISK_CONTROLLER_SCSI' as const,
        path: 'data.vhd',
        createType: 'DISK_TYPE_DYNAMIC' as const,
        createSizeBytes: gib(1),
      },
    ];
    await host.createVm(
      'd',
      vmConfig('d', { disks, workload: { bootMs: 10, diskIops: 200, diskWriteBytes: 65536 } }),
      1,
    );
    const path = join(host.vmDir('d'), 'data.vhd');
    const empty = statSync(path).size;
    expect(empty).to.be.below(mib(1));
    await host.mutate((e) => e.power.change('d', 'VM_ACTION_START'));
    for (let i = 0; i < 10; i++) {
      clock.t += 100;
      host.pump();
      await host.settle();
    }
    await host.mutate((e) => e.power.change('d', 'VM_ACTION_TURN_OFF'));
    await host.stop();
    const disk = await VhdDisk.open(path);
    expect(disk.type).to.equal('dynamic');
    expect(disk.sizeBytes).to.be.at.least(gib(1));
    await disk.close();
    expect(statSync(path).size).to.be.greaterThan(empty + mib(2));
  });

  it('records survive a reopen; a clean stop saves running VMs (automatic stop action Save)', async () => {
    const first = await openHost(dir);
    await first.host.createVm('vm-1', vmConfig('web-1', { workload: { bootMs: 10 } }), 7);
    await first.host.createVm(
      'vm-2',
      vmConfig('web-2', { automaticStopAction: 'AUTOMATIC_STOP_ACTION_TURN_OFF', workload: { bootMs: 10 } }),
      1,
    );
    for (const id of ['vm-1', 'vm-2']) await first.host.mutate((e) => e.power.change(id, 'VM_ACTION_START'));
    first.clock.t += 100;
    const hash = first.host.read((e) => e.vms.stateHash('vm-1')).sha256;
    await first.host.stop();
    const second = await openHost(dir);
    const vm1 = second.host.read((e) => e.vms.get('vm-1'));
    expect(vm1.status!.state).to.equal('VM_STATE_SAVED');
    expect(vm1.status!.generation).to.equal(7);
    expect(second.host.read((e) => e.vms.stateHash('vm-1')).sha256).to.equal(hash);
    expect(second.host.read((e) => e.vms.get('vm-2')).status!.state).to.equal('VM_STATE_OFF');
    await second.host.stop();
  });
});
