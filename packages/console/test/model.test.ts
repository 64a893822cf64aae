import { expect } from 'chai';
import {
  applyEvent,
  emptyModel,
  FINISHED_KEPT,
  hostUse,
  sameLook,
  sameLooks,
  vmsByHost,
} from '../src/model.js';
import type { FarmEvent, Operation, Vm } from '../src/wire.js';

/** A VM's PUT event, as the stream sends it. */
const vmEvent = (
  revision: number,
  id: string,
  vmName: string,
  hostId: string,
  state = 'VM_STATE_OFF',
): FarmEvent =>
  ({
    revision,
    timeMs: revision,
    kind: 'RESOURCE_KIND_VM',
    type: 'EVENT_TYPE_PUT',
    id,
    vm: { id, config: { name: vmName }, status: { state, hostId } },
  }) as unknown as FarmEvent;

/** The page's farm model: bounded however long the page stays open. */
describe('console: farm model', () => {
  const opEvent = (revision: number, id: string, done: boolean): FarmEvent =>
    ({
      revision,
      timeMs: revision,
      kind: 'RESOURCE_KIND_OPERATION',
      type: 'EVENT_TYPE_PUT',
      id,
      operation: {
        id,
        kind: 'vm.update',
        targetId: 'v',
        done,
        progressPercent: done ? 100 : 0,
        message: '',
        error: null,
      },
    }) as unknown as FarmEvent;

  it('keeps every running operation and only the newest finished ones', () => {
    const m = emptyModel();
    let rev = 0;
    applyEvent(m, opEvent(++rev, 'running-first', false));
    for (let i = 0; i < FINISHED_KEPT + 100; i++) applyEvent(m, opEvent(++rev, `op-${i}`, true));
    expect(m.operations.size).to.equal(FINISHED_KEPT + 1);
    expect(m.operations.has('running-first')).to.equal(true);
    expect(m.operations.has('op-0')).to.equal(false);
    expect(m.operations.has(`op-${FINISHED_KEPT + 99}`)).to.equal(true);
    // The running one finishing later is kept as the newest news, and the oldest finished goes.
    applyEvent(m, opEvent(++rev, 'running-first', true));
    expect((m.operations.get('running-first') as Operation).done).to.equal(true);
    expect(m.operations.size).to.equal(FINISHED_KEPT);
  });

  it('counts a finished operation deleted from the farm out of those kept', () => {
    const m = emptyModel();
    let rev = 0;
    for (let i = 0; i < FINISHED_KEPT; i++) applyEvent(m, opEvent(++rev, `op-${i}`, true));
    for (let i = 0; i < 10; i++)
      applyEvent(m, { ...opEvent(++rev, `op-${i}`, true), type: 'EVENT_TYPE_DELETE' } as FarmEvent);
    // Room for 10 more finished ones: none of those still held is dropped for them.
    for (let i = 0; i < 10; i++) applyEvent(m, opEvent(++rev, `new-${i}`, true));
    expect(m.operations.size).to.equal(FINISHED_KEPT);
    expect(m.operations.has('op-10')).to.equal(true);
    expect(m.finished.operations).to.equal(FINISHED_KEPT);
  });

  it('keeps 50 state changes per VM in a small farm, 10,000 in all up to 2,000 VMs, and 5 per VM beyond', () => {
    const m = emptyModel();
    let rev = 0;
    const churn = (ids: string[], rounds: number) => {
      for (let r = 0; r < rounds; r++)
        for (const id of ids)
          applyEvent(m, vmEvent(++rev, id, id, 'h1', r % 2 ? 'VM_STATE_RUNNING' : 'VM_STATE_OFF'));
    };
    const names = (from: number, n: number) => Array.from({ length: n }, (_, i) => `vm-${from + i}`);
    const total = () => [...m.history.values()].reduce((sum, l) => sum + l.length, 0);
    churn(names(0, 100), 80);
    expect(m.history.get('vm-0')).to.have.length(50);
    expect(m.history.get('vm-0')!.at(-1)!.revision).to.equal(rev - 99);
    // 1,000 VMs: 10 each, the histories already kept cut as soon as the farm grows.
    churn(names(100, 900), 1);
    expect(total()).to.be.at.most(10_000);
    churn(names(0, 1_000), 40);
    expect(m.history.get('vm-999')).to.have.length(10);
    expect(total()).to.equal(10_000);
    // 4,000 VMs: never fewer than 5 each.
    churn(names(1_000, 3_000), 6);
    expect(m.history.get('vm-3999')).to.have.length(5);
    expect(total()).to.equal(20_000);
  });

  it('applies an event once: a revision already applied changes nothing', () => {
    const m = emptyModel();
    expect(applyEvent(m, opEvent(5, 'a', false))).to.equal(true);
    expect(applyEvent(m, opEvent(5, 'a', true))).to.equal(false);
    expect((m.operations.get('a') as Operation).done).to.equal(false);
    expect(m.timeline).to.have.length(1);
  });
});

describe('console: VMs by host', () => {
  const names = (m: ReturnType<typeof emptyModel>) =>
    Object.fromEntries(
      [...vmsByHost(m)].map(([h, vms]) => [h, vms.map((v) => `${v.config!.name}:${v.status!.state}`)]),
    );

  it('lists each host’s VMs by name, and follows moves, renames, new VMs and state changes', () => {
    const m = emptyModel();
    let rev = 0;
    applyEvent(m, vmEvent(++rev, 'v1', 'web-10', 'h1'));
    applyEvent(m, vmEvent(++rev, 'v2', 'web-2', 'h1'));
    applyEvent(m, vmEvent(++rev, 'v3', 'db', 'h2'));
    expect(names(m)).to.deep.equal({
      h1: ['web-2:VM_STATE_OFF', 'web-10:VM_STATE_OFF'],
      h2: ['db:VM_STATE_OFF'],
    });
    applyEvent(m, vmEvent(++rev, 'v2', 'web-2', 'h1', 'VM_STATE_RUNNING'));
    expect(names(m).h1).to.deep.equal(['web-2:VM_STATE_RUNNING', 'web-10:VM_STATE_OFF']);
    applyEvent(m, vmEvent(++rev, 'v1', 'web-10', 'h2'));
    expect(names(m)).to.deep.equal({
      h1: ['web-2:VM_STATE_RUNNING'],
      h2: ['db:VM_STATE_OFF', 'web-10:VM_STATE_OFF'],
    });
    applyEvent(m, vmEvent(++rev, 'v3', 'a-db', 'h2'));
    applyEvent(m, vmEvent(++rev, 'v4', 'web-1', 'h1'));
    expect(names(m)).to.deep.equal({
      h1: ['web-1:VM_STATE_OFF', 'web-2:VM_STATE_RUNNING'],
      h2: ['a-db:VM_STATE_OFF', 'web-10:VM_STATE_OFF'],
    });
  });
});

describe('console: a host card’s memory and running VMs', () => {
  const MiB = 1024 * 1024;
  const hostEvent = (revision: number): FarmEvent =>
    ({
      revision,
      timeMs: revision,
      kind: 'RESOURCE_KIND_HOST',
      type: 'EVENT_TYPE_PUT',
      id: 'h1',
      host: {
        id: 'h1',
        name: 'h1',
        state: 'HOST_STATE_UP',
        capacity: {
          logicalProcessors: 4,
          memoryBytes: 4096 * MiB,
          rootReserveBytes: 0,
          perVmOverheadBytes: 32 * MiB,
        },
        // As the daemon sent it when the host registered: nothing ran yet.
        usage: { memoryUsedBytes: 0, runningVms: 0, vms: 0, cpuPercent: 0 },
      },
    }) as unknown as FarmEvent;
  const vmEvent = (revision: number, id: string, state: string, memoryMiB: number): FarmEvent =>
    ({
      revision,
      timeMs: revision,
      kind: 'RESOURCE_KIND_VM',
      type: 'EVENT_TYPE_PUT',
      id,
      vm: { id, config: { name: id, memoryBytes: memoryMiB * MiB }, status: { state, hostId: 'h1' } },
    }) as unknown as FarmEvent;
  const use = (m: ReturnType<typeof emptyModel>) => hostUse(m.hosts.get('h1')!, vmsByHost(m).get('h1') ?? []);

  it('follows the VMs that start and stop after the host’s own record was sent', () => {
    const m = emptyModel();
    let rev = 0;
    applyEvent(m, hostEvent(++rev));
    applyEvent(m, vmEvent(++rev, 'a', 'VM_STATE_RUNNING', 512));
    applyEvent(m, vmEvent(++rev, 'b', 'VM_STATE_PAUSED', 1024));
    applyEvent(m, vmEvent(++rev, 'c', 'VM_STATE_OFF', 2048));
    applyEvent(m, vmEvent(++rev, 'd', 'VM_STATE_SAVED', 2048));
    // common.proto's HostUsage: every state but Off and Saved holds memory plus the overhead.
    expect(use(m)).to.deep.equal({ memoryUsedBytes: (512 + 32 + 1024 + 32) * MiB, runningVms: 2 });
    applyEvent(m, vmEvent(++rev, 'a', 'VM_STATE_OFF', 512));
    expect(use(m)).to.deep.equal({ memoryUsedBytes: (1024 + 32) * MiB, runningVms: 1 });
  });

  it('counts the farm’s running VMs as they start, stop and go, each event once', () => {
    const m = emptyModel();
    let rev = 0;
    applyEvent(m, vmEvent(++rev, 'a', 'VM_STATE_RUNNING', 512));
    applyEvent(m, vmEvent(++rev, 'b', 'VM_STATE_RUNNING', 512));
    applyEvent(m, vmEvent(++rev, 'c', 'VM_STATE_PAUSED', 512));
    expect(m.running).to.equal(2);
    applyEvent(m, vmEvent(rev, 'c', 'VM_STATE_RUNNING', 512)); // already applied: ignored
    applyEvent(m, vmEvent(++rev, 'a', 'VM_STATE_OFF', 512));
    expect(m.running).to.equal(1);
    applyEvent(m, {
      ...vmEvent(++rev, 'b', 'VM_STATE_RUNNING', 512),
      type: 'EVENT_TYPE_DELETE',
    } as FarmEvent);
    expect(m.running).to.equal(0);
    expect(m.running).to.equal(
      [...m.vms.values()].filter((v) => v.status?.state === 'VM_STATE_RUNNING').length,
    );
  });
});

describe('console: what the Farm view draws of a VM', () => {
  const vm = (patch: { name?: string; state?: string; memoryBytes?: string; labels?: object } = {}) =>
    ({
      id: 'v1',
      config: {
        name: patch.name ?? 'web-1',
        memoryBytes: patch.memoryBytes ?? '268435456',
        labels: patch.labels ?? {},
      },
      status: { state: patch.state ?? 'VM_STATE_RUNNING', hostId: 'h1' },
    }) as unknown as Vm;

  it('draws a VM again when its name, state or memory changed, not for a label', () => {
    expect(sameLook(vm(), vm({ labels: { seq: '7' } }))).to.equal(true);
    expect(sameLook(vm(), vm({ name: 'web-2' }))).to.equal(false);
    expect(sameLook(vm(), vm({ state: 'VM_STATE_PAUSED' }))).to.equal(false);
    expect(sameLook(vm(), vm({ memoryBytes: '536870912' }))).to.equal(false);
  });

  it('draws a card again when its VMs are others or in another order', () => {
    const a = vm();
    const b = { ...vm({ name: 'web-2' }), id: 'v2' } as Vm;
    expect(sameLooks([a, b], [vm({ labels: { x: '1' } }), b])).to.equal(true);
    expect(sameLooks([a, b], [b, a])).to.equal(false);
    expect(sameLooks([a, b], [a])).to.equal(false);
  });
});
