import { expect } from 'chai';
import { FarmStateMachine } from '../../src/fsm/index.js';
import { decodeSnapshot, encodeSnapshot, encodeSnapshotInSlices } from '../../src/fsm/snapshot.js';
import { FarmBuilder } from './build.js';

/** A farm with enough of every kind of record that slices of 3 cut each list many times. */
function farm(): { machine: FarmStateMachine; b: FarmBuilder } {
  const machine = new FarmStateMachine();
  const b = new FarmBuilder(machine.state);
  for (let h = 0; h < 4; h++) b.host({ id: `h${h}`, memGiB: 64 });
  for (let i = 0; i < 20; i++)
    b.vm(`vm-${i}`, { name: `vm-${i}`, memMiB: 256 }, `h${i % 4}`, { start: true }).report(
      `vm-${i}`,
      'RUNNING',
    );
  return { machine, b };
}

describe('snapshots encoded a slice at a time', () => {
  it('are byte for byte the snapshot encoded at once, and restore to the same state', async () => {
    const { machine } = farm();
    let pauses = 0;
    const sliced = await encodeSnapshotInSlices(machine.state, () => (pauses++, Promise.resolve()), 3);
    const whole = encodeSnapshot(machine.state);
    expect(Buffer.from(sliced).equals(Buffer.from(whole))).to.equal(true);
    expect(pauses).to.be.greaterThan(20);
    expect(encodeSnapshot(decodeSnapshot(sliced))).to.deep.equal(whole);
  });

  it('hold the state as it was when asked, however it changes between slices', async () => {
    const { machine, b } = farm();
    const before = encodeSnapshot(machine.state);
    let n = 0;
    // Between slices the farm goes on: VMs are turned off, a host goes into maintenance.
    const sliced = await encodeSnapshotInSlices(
      machine.state,
      () => {
        n++;
        if (n <= 10) {
          const id = `vm-${n}`;
          b.must({ type: 'vm.change_state', vmId: id, opId: `off-${n}`, action: 'VM_ACTION_TURN_OFF' });
          b.report(id, 'OFF');
        }
        if (n === 1)
          b.must({
            type: 'host.update',
            id: 'h0',
            paths: ['maintenance'],
            name: '',
            labels: {},
            maintenance: true,
          });
        return Promise.resolve();
      },
      3,
    );
    expect(encodeSnapshot(machine.state)).to.not.deep.equal(before);
    expect(Buffer.from(sliced).equals(Buffer.from(before))).to.equal(true);
  });

  it('are what a daemon state machine with a pause answers (a promise), and a plain one at once', async () => {
    const { machine } = farm();
    const paced = new FarmStateMachine({ pause: () => Promise.resolve() });
    paced.restore(encodeSnapshot(machine.state) as Uint8Array);
    const answer = paced.snapshot();
    expect(answer).to.be.instanceOf(Promise);
    expect(Buffer.from(await answer).equals(Buffer.from(encodeSnapshot(machine.state)))).to.equal(true);
    expect(machine.snapshot()).to.be.instanceOf(Uint8Array);
  });
});
