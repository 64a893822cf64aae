import { expect } from 'chai';
import { makeEngine, mib, vmConfig } from './helpers.js';

describe('engine: host usage', () => {
  it('counts the VMs holding memory, with their overhead, as they start, change and stop', () => {
    // makeEngine: 32 MiB of overhead per VM.
    const e = makeEngine();
    e.vms.create('a', vmConfig('a', { memoryBytes: mib(512) }));
    e.vms.create('b', vmConfig('b', { memoryBytes: mib(1024) }));
    expect(e.usage()).to.include({ memoryUsedBytes: 0, runningVms: 0, vms: 2 });
    e.power.change('a', 'VM_ACTION_START');
    // Starting holds its memory already.
    expect(e.usage()).to.include({ memoryUsedBytes: mib(512 + 32), runningVms: 1, vms: 2 });
    e.power.change('b', 'VM_ACTION_START');
    e.advance(5_000);
    expect(e.usage()).to.include({ memoryUsedBytes: mib(512 + 32 + 1024 + 32), runningVms: 2 });
    expect(e.memoryUsedBytes()).to.equal(mib(512 + 32 + 1024 + 32));
    e.power.change('a', 'VM_ACTION_TURN_OFF');
    expect(e.usage()).to.include({ memoryUsedBytes: mib(1024 + 32), runningVms: 1 });
    // A configuration change while Off, then a start: the new size counts.
    const c = e.vms.get('a').config!;
    e.vms.update('a', { ...c, memoryBytes: mib(2048) }, ['memory_bytes'], 0);
    e.power.change('a', 'VM_ACTION_START');
    expect(e.usage()).to.include({ memoryUsedBytes: mib(2048 + 32 + 1024 + 32), runningVms: 2 });
    e.power.change('b', 'VM_ACTION_TURN_OFF');
    e.vms.delete('b');
    expect(e.usage()).to.include({ memoryUsedBytes: mib(2048 + 32), runningVms: 1, vms: 1 });
  });
});
