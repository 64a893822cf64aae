import { expect } from 'chai';
import { FarmStateMachine } from '../../src/fsm/index.js';
import {
  decodeSnapshot,
  decodeSnapshotInSlices,
  encodeSnapshot,
  encodeSnapshotInSlices,
} from '../../src/fsm/snapshot.js';
import type { FarmState } from '../../src/fsm/state.js';
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
    const whole = encodeSnapshot(machine.state, 3);
    expect(Buffer.from(sliced).equals(Buffer.from(whole))).to.equal(true);
    expect(pauses).to.be.greaterThan(20);
    expect(encodeSnapshot(decodeSnapshot(sliced), 3)).to.deep.equal(whole);
  });

  it('decode a line at a time, pausing between lines, to the state decoded at once', async () => {
    const { machine } = farm();
    const bytes = encodeSnapshot(machine.state, 3);
    const lines = Buffer.from(bytes).toString().split('\n').length;
    let pauses = 0;
    const state = await decodeSnapshotInSlices(bytes, () => (pauses++, Promise.resolve()));
    expect(pauses).to.be.at.least(lines - 1);
    expect(encodeSnapshot(state)).to.deep.equal(encodeSnapshot(decodeSnapshot(bytes)));
    expect(encodeSnapshot(state)).to.deep.equal(encodeSnapshot(machine.state));
  });

  it('restored by a paced state machine keep the old state serving until the new one is whole', async () => {
    const { machine } = farm();
    const paced = new FarmStateMachine({ pause: () => Promise.resolve() });
    const seen: number[] = [];
    let restoring = true;
    const pause = (): Promise<void> => {
      if (restoring) seen.push(paced.state.vms.size);
      return Promise.resolve();
    };
    const slow = new FarmStateMachine({ pause });
    let replaced = 0;
    slow.onRestored(() => replaced++);
    const restore = slow.restore(encodeSnapshot(machine.state, 3));
    expect(restore).to.be.instanceOf(Promise);
    expect(slow.state.vms.size).to.equal(0);
    await restore;
    restoring = false;
    expect(seen.length).to.be.greaterThan(5);
    expect(seen.every((n) => n === 0)).to.equal(true);
    expect(replaced).to.equal(1);
    expect(slow.state.vms.size).to.equal(20);
    expect(encodeSnapshot(slow.state)).to.deep.equal(encodeSnapshot(machine.state));
  });

  it('of format 1 (one JSON document, before the lists were cut in lines) are still read', () => {
    const { machine } = farm();
    const s = machine.state;
    // Format 1 as daemons wrote it, with the lists added later absent, as in the oldest ones.
    const v1 = {
      format: 1,
      revision: s.revision,
      settings: s.settings,
      hosts: [...s.hosts.values()],
      guests: [...s.guests.values()],
      vms: [...s.vms.values()],
      checkpoints: [...s.checkpoints.values()],
      operations: [...s.operations.values()],
      switches: [...s.switches.values()],
      events: { floor: s.events.oldestResumable, list: s.events.all() },
      requests: [...s.requests],
    };
    const restored: FarmState = decodeSnapshot(Buffer.from(JSON.stringify(v1)));
    expect(encodeSnapshot(restored)).to.deep.equal(encodeSnapshot(s));
    expect(restored.vmsByHost.get('h1')?.size).to.equal(5);
  });

  it('of an unknown format are refused, naming it', () => {
    expect(() => decodeSnapshot(Buffer.from('{"format":9}'))).to.throw(
      /format 9 is not one this daemon reads/,
    );
  });

  it('hold the state as it was when asked, however it changes between slices', async () => {
    const { machine, b } = farm();
    const before = encodeSnapshot(machine.state, 3);
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
    await paced.restore(encodeSnapshot(machine.state));
    const answer = paced.snapshot();
    expect(answer).to.be.instanceOf(Promise);
    expect(Buffer.from(await answer).equals(Buffer.from(encodeSnapshot(machine.state)))).to.equal(true);
    expect(machine.snapshot()).to.be.instanceOf(Uint8Array);
  });
});
