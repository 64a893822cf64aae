import { expect } from 'chai';
import { hostView } from '../../src/fsm/views.js';
import { FarmBuilder } from './build.js';

const MIB = 1024 * 1024;

describe('hostView', () => {
  it("counts the host's VMs, those with memory assigned, and their memory with the per-VM overhead", () => {
    const b = new FarmBuilder()
      .host({ id: 'h1', memGiB: 64, overheadMiB: 32 })
      .host({ id: 'h2', memGiB: 64, overheadMiB: 16 });
    b.vm('running', { name: 'running', memMiB: 512 }, 'h1').report('running', 'RUNNING');
    b.vm('paused', { name: 'paused', memMiB: 256 }, 'h1').report('paused', 'PAUSED');
    b.vm('off', { name: 'off', memMiB: 1024 }, 'h1').report('off', 'OFF');
    b.vm('saved', { name: 'saved', memMiB: 2048 }, 'h1').report('saved', 'SAVED');
    b.vm('elsewhere', { name: 'elsewhere', memMiB: 128 }, 'h2').report('elsewhere', 'RUNNING');
    b.vm('waiting', { name: 'waiting', memMiB: 4096 });

    // Running and Paused hold their memory (and the partition's overhead); Off and Saved do not.
    expect(hostView(b.s, b.s.hosts.get('h1')!).usage).to.include({
      vms: 4,
      runningVms: 2,
      memoryUsedBytes: (512 + 32 + 256 + 32) * MIB,
    });
    expect(hostView(b.s, b.s.hosts.get('h2')!).usage).to.include({
      vms: 1,
      runningVms: 1,
      memoryUsedBytes: (128 + 16) * MIB,
    });
  });

  it('a host without VMs uses nothing', () => {
    const b = new FarmBuilder().host({ id: 'h1' });
    expect(hostView(b.s, b.s.hosts.get('h1')!).usage).to.include({
      vms: 0,
      runningVms: 0,
      memoryUsedBytes: 0,
    });
  });
});
