import { expect } from 'chai';
import { SimRng } from '@hyperfarm/raft';
import { Scope, VirtualClock } from '../src/clock.js';
import { DEFAULT_SHAPE, SimHost } from '../src/host.js';
import { randomVmConfig } from '../src/workload.js';

// A lazy engine (the large profile's) issues a guest's disk writes only when the guest is worked
// out; a simulated host whose disk is full has its guests worked out at each pump, so a guest
// that writes meets the full disk (PausedCritical) as a stepping engine's does at its next step.

describe('simulated host: a full disk under the lazy guest model', () => {
  for (const lazyGuests of [false, true]) {
    it(`a running guest that writes is paused at the next pump once the disk is full (${lazyGuests ? 'lazy' : 'stepping'})`, () => {
      const clock = new VirtualClock();
      const h = new SimHost(
        'h0',
        'h0.sim:7000',
        DEFAULT_SHAPE,
        { leaseMs: 600_000, saveMs: 1, restoreMs: 1, lazyGuests },
        1,
      );
      h.boot(new Scope(clock, 'h0#1'));
      h.grantLease({ daemonId: 'd1', term: 1, durationMs: 600_000 });
      h.createVm('v1', randomVmConfig(new SimRng(1), 'v1', { disks: true }), 1);
      h.changeVmState('v1', 'VM_ACTION_START', 1);
      const state = () => h.getVm('v1').status!.state;
      clock.now += 20_000;
      h.pump();
      expect(state()).to.equal('VM_STATE_RUNNING');
      clock.now += 60_000;
      h.pump();
      expect(state()).to.equal('VM_STATE_RUNNING');
      h.diskFull = true;
      clock.now += 1_000;
      h.pump();
      expect(state()).to.equal('VM_STATE_PAUSED_CRITICAL');
    });
  }
});
