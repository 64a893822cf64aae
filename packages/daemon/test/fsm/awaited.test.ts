import { expect } from 'chai';
import { encodeEntry, FarmStateMachine, type Command } from '../../src/fsm/index.js';
import { encodeSnapshot } from '../../src/fsm/snapshot.js';
import { hostPayload, vmConfig } from './fixtures.js';

// RaftNode tells the state machine whether a proposer on this node waits for an entry's result
// (issues 9 and 14: the followers encoded every result for nobody). Waited for or not, an entry
// changes the state alike and remembers its request ids' results alike; only the answer differs.

const utf8 = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

const register = { type: 'host.register', rid: 'reg-h1', t: 1_000, ...hostPayload({ id: 'h1', memGiB: 64 }) };
const create = (name: string, id: string, rid: string) => ({
  type: 'vm.create',
  rid,
  t: 2_000,
  vmId: `vm-${id}`,
  opId: `op-${id}`,
  config: vmConfig({ name, memMiB: 512 }),
  start: false,
  hostId: '',
});

/** The log: a host, two VMs (the second's name taken by the first), then the first create retried. */
const LOG = [
  encodeEntry([register] as Command[]),
  encodeEntry([create('web', 'a', 'create-vm:one'), create('web', 'b', 'create-vm:two')] as Command[]),
  encodeEntry([create('web', 'c', 'create-vm:one')] as Command[]),
];

/** What a proposer receives for each entry of LOG, as docs/daemon.md gives a command's result. */
const ANSWERS = [
  '[{"ok":true,"hostId":"h1"}]',
  '[{"ok":true,"vmId":"vm-a","opId":"op-a"},{"ok":false,"error":{"code":"ALREADY_EXISTS","message":"VM \'web\' already exists"}}]',
  // The retry (new ids, as a retried CreateVm has) answers the first create's result: no VM c.
  '[{"ok":true,"vmId":"vm-a","opId":"op-a"}]',
];

describe("the farm state machine's answer to an entry", () => {
  it('is the results encoded when a proposer waits, and empty when none does', () => {
    const waited = new FarmStateMachine();
    const follower = new FarmStateMachine();
    LOG.forEach((data, i) => {
      expect(utf8(waited.apply(data, i + 1, true)), `entry ${i + 1}`).to.equal(ANSWERS[i]);
      expect(follower.apply(data, i + 1, false), `entry ${i + 1}`).to.have.length(0);
    });
    // Absent, as RaftNode's callers before the flag: waited for.
    expect(utf8(new FarmStateMachine().apply(LOG[0]!, 1))).to.equal(ANSWERS[0]);
  });

  it('leaves the same state and remembered results (snapshots byte for byte) whether waited for or not', () => {
    const waited = new FarmStateMachine();
    const follower = new FarmStateMachine();
    const mixed = new FarmStateMachine();
    LOG.forEach((data, i) => {
      waited.apply(data, i + 1, true);
      follower.apply(data, i + 1, false);
      mixed.apply(data, i + 1, i % 2 === 0);
    });
    const snapshot = Buffer.from(encodeSnapshot(waited.state));
    expect(Buffer.from(encodeSnapshot(follower.state)).equals(snapshot)).to.equal(true);
    expect(Buffer.from(encodeSnapshot(mixed.state)).equals(snapshot)).to.equal(true);
    expect([...follower.state.requests.keys()]).to.deep.equal(['reg-h1', 'create-vm:one', 'create-vm:two']);
    expect(follower.state.vms.size).to.equal(1);
  });

  it('to a retry on a replica that never encoded the first result, or restored it from a snapshot, is the first answer byte for byte', () => {
    // A follower applied the first create unwaited; it leads now, and the client retries there.
    const follower = new FarmStateMachine();
    LOG.slice(0, 2).forEach((data, i) => follower.apply(data, i + 1, false));
    const restored = new FarmStateMachine();
    restored.restore(encodeSnapshot(follower.state));
    expect(utf8(follower.apply(LOG[2]!, 3, true))).to.equal(ANSWERS[2]);
    expect(utf8(restored.apply(LOG[2]!, 3, true))).to.equal(ANSWERS[2]);
    expect(follower.state.vms.size).to.equal(1);
    expect(restored.state.vms.size).to.equal(1);
  });
});
