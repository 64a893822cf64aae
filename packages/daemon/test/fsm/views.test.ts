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

describe("hostView's usage, kept as VMs change", () => {
  // From the definition: the host's VMs whose state holds memory, each its memory plus the
  // host's per-VM overhead.
  const HOLDS_MEMORY = new Set([
    'VM_STATE_RUNNING',
    'VM_STATE_PAUSED',
    'VM_STATE_STARTING',
    'VM_STATE_SAVING',
  ]);
  const recount = (b: FarmBuilder, hostId: string) => {
    const h = b.s.hosts.get(hostId)!;
    const vms = [...b.s.vms.values()].filter((v) => v.hostId === hostId);
    const running = vms.filter((v) => HOLDS_MEMORY.has(v.observed.state));
    return {
      vms: vms.length,
      runningVms: running.length,
      memoryUsedBytes: running.reduce((n, v) => n + v.config.memoryBytes + h.capacity.perVmOverheadBytes, 0),
    };
  };

  it('equals a recount after every report, move and delete (a seeded walk)', () => {
    const b = new FarmBuilder()
      .host({ id: 'h1', memGiB: 512, overheadMiB: 32 })
      .host({ id: 'h2', memGiB: 512, overheadMiB: 8 });
    const states = ['RUNNING', 'OFF', 'PAUSED', 'SAVED', 'STARTING', 'SAVING'];
    let seed = 7;
    const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const live: string[] = [];
    for (let i = 0; i < 40; i++) {
      const id = `vm-${i}`;
      b.vm(id, { name: id, memMiB: 64 * (1 + next(8)) }, next(2) === 0 ? 'h1' : 'h2');
      live.push(id);
    }
    for (let step = 0; step < 400; step++) {
      // Viewed before each change too, so that the kept usage exists and must follow the change.
      for (const h of ['h1', 'h2']) expect(hostView(b.s, b.s.hosts.get(h)!).usage).to.include(recount(b, h));
      const id = live[next(live.length)]!;
      const what = next(10);
      if (what < 7) b.report(id, states[next(states.length)]!);
      else if (what < 9) {
        const vm = b.s.vms.get(id)!;
        b.must({
          type: 'vm.place',
          placements: [{ vmId: id, hostId: vm.hostId === 'h1' ? 'h2' : 'h1', note: '' }],
        });
      } else if (live.length > 5) {
        b.must({ type: 'vm.delete', vmId: id, opId: `del-${step}` });
        live.splice(live.indexOf(id), 1);
      }
    }
  });
});
