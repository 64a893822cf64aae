import { expect } from 'chai';
import { VM_ACTIONS } from '../src/actions.js';
import { CallError } from '../src/errors.js';
import { noticeStatus } from '../src/notices.js';
import { checkpointTree, filterVms, type TreeNode } from '../src/lists.js';
import type { Checkpoint, Operation, Vm, VmStateName } from '../src/wire.js';

/**
 * The console's pure rules, without a browser: which actions a state offers (Hyper-V's
 * RequestStateChange and Msvm_VirtualSystemManagementService rules), the VM table's filters and
 * sorting, the snapshot tree, and what a notice says.
 */

const vm = (name: string, state: VmStateName, hostId = '', memoryMiB = 256, labels = {}): Vm =>
  ({
    id: `vm-${name}`,
    config: { name, memoryBytes: memoryMiB * 1024 * 1024, labels },
    status: { state, hostId, cpuPercent: 0, uptimeMs: 0 },
  }) as unknown as Vm;

const offered = (state: VmStateName) =>
  VM_ACTIONS.filter((a) => a.allowed(state))
    .map((a) => a.key)
    .sort();

describe('console: VM actions by state', () => {
  it('offers what Hyper-V allows from each stable state', () => {
    // Off: start; a snapshot of an Off VM; delete (DestroySystem needs the VM off or saved).
    expect(offered('VM_STATE_OFF')).to.deep.equal(['checkpoint', 'delete', 'start']);
    // Running: shut down, turn off, save, pause, checkpoint; never start or delete.
    expect(offered('VM_STATE_RUNNING')).to.deep.equal(['checkpoint', 'pause', 'save', 'stop', 'turn-off']);
    // Paused: resume, save, turn off.
    expect(offered('VM_STATE_PAUSED')).to.deep.equal(['checkpoint', 'resume', 'save', 'turn-off']);
    // Saved: start (restore), turn off (discards the saved state), delete.
    expect(offered('VM_STATE_SAVED')).to.deep.equal(['checkpoint', 'delete', 'start', 'turn-off']);
  });

  it('offers only turn off while a VM changes state, and nothing for an unknown one', () => {
    expect(offered('VM_STATE_STARTING')).to.deep.equal(['turn-off']);
    expect(offered('VM_STATE_UNKNOWN')).to.deep.equal([]);
  });

  it('asks before the actions that lose something', () => {
    const asks = VM_ACTIONS.filter((a) => a.confirm)
      .map((a) => a.key)
      .sort();
    expect(asks).to.deep.equal(['delete', 'stop', 'turn-off']);
  });
});

describe('console: VM table', () => {
  const vms = [
    vm('web-2', 'VM_STATE_RUNNING', 'h1', 1024, { tier: 'front' }),
    vm('db-1', 'VM_STATE_OFF', 'h2', 4096),
    vm('web-10', 'VM_STATE_RUNNING', 'h2', 512),
    vm('new-1', 'VM_STATE_OFF', ''),
  ];
  const all = { text: '', state: '', host: '' };
  const names = (list: Vm[]) => list.map((v) => v.config!.name);

  it('filters by name, label, state and host (or not placed)', () => {
    const byName = { column: 'name', descending: false } as const;
    expect(names(filterVms(vms, { ...all, text: 'WEB' }, byName))).to.deep.equal(['web-2', 'web-10']);
    expect(names(filterVms(vms, { ...all, text: 'tier=front' }, byName))).to.deep.equal(['web-2']);
    expect(names(filterVms(vms, { ...all, state: 'VM_STATE_OFF' }, byName))).to.deep.equal(['db-1', 'new-1']);
    expect(names(filterVms(vms, { ...all, host: 'h2' }, byName))).to.deep.equal(['db-1', 'web-10']);
    expect(names(filterVms(vms, { ...all, host: '-' }, byName))).to.deep.equal(['new-1']);
  });

  it('sorts by a column either way, numbers as numbers, ties by name (web-2 before web-10)', () => {
    expect(names(filterVms(vms, all, { column: 'memory', descending: true }))).to.deep.equal([
      'db-1',
      'web-2',
      'web-10',
      'new-1',
    ]);
    expect(names(filterVms(vms, all, { column: 'memory', descending: false }))[0]).to.equal('new-1');
    expect(names(filterVms(vms, all, { column: 'state', descending: false }))).to.deep.equal([
      'db-1',
      'new-1',
      'web-2',
      'web-10',
    ]);
  });
});

describe('console: snapshot tree', () => {
  it('links checkpoints by parent, each level oldest first', () => {
    const cp = (id: string, parentId: string, createdAtMs: number) =>
      ({ id, parentId, createdAtMs, name: id, vmId: 'v' }) as Checkpoint;
    const tree = checkpointTree([cp('c', 'a', 3), cp('b', 'a', 2), cp('a', '', 1), cp('d', 'c', 4)]);
    const shape = (ns: TreeNode[]): unknown => ns.map((n) => [n.checkpoint.id, shape(n.children)]);
    expect(shape(tree)).to.deep.equal([
      [
        'a',
        [
          ['b', []],
          ['c', [['d', []]]],
        ],
      ],
    ]);
  });
});

describe('console: notices', () => {
  const op = (patch: Partial<Operation>) =>
    ({
      id: 'op-1',
      kind: 'vm.start',
      targetId: 'v',
      done: false,
      progressPercent: 0,
      message: '',
      error: null,
      ...patch,
    }) as Operation;

  it('follows the operation to its end, the stream’s copy over the call’s answer', () => {
    const n = { key: 1, label: 'Start web-1', operationId: 'op-1', operation: op({}) };
    expect(noticeStatus({ key: 1, label: 'x' }, undefined).kind).to.equal('sent');
    expect(noticeStatus(n, undefined)).to.deep.equal({ kind: 'running', percent: 0, message: '' });
    expect(noticeStatus(n, op({ progressPercent: 40, message: 'booting' }))).to.deep.equal({
      kind: 'running',
      percent: 40,
      message: 'booting',
    });
    expect(noticeStatus(n, op({ done: true, progressPercent: 100 })).kind).to.equal('done');
  });

  it('says why an operation failed and what to do, in words', () => {
    const n = { key: 1, label: 'Start web-1', operationId: 'op-1' };
    const s = noticeStatus(
      n,
      op({ done: true, error: { code: 8, message: "no host has 4096 MiB free for 'web-1'" } }),
    );
    expect(s).to.deep.include({ kind: 'failed', message: "no host has 4096 MiB free for 'web-1'" });
    expect((s as { action: string }).action).to.match(/Free capacity/);
  });

  it('names the field of a refused call', () => {
    const s = noticeStatus(
      {
        key: 1,
        label: 'Create x',
        error: new CallError({
          code: 3,
          codeName: 'INVALID_ARGUMENT',
          message: 'config.name: empty',
          field: 'config.name',
        }),
      },
      undefined,
    );
    expect(s).to.deep.include({ kind: 'failed', message: 'config.name: empty' });
    expect((s as { action: string }).action).to.contain('config.name');
  });
});
