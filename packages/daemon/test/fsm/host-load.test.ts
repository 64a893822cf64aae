import { expect } from 'chai';
import { Changes } from '../../src/fsm/changes.js';
import { hostLoad, type FarmState } from '../../src/fsm/index.js';
import { FarmBuilder } from './build.js';

const MIB = 1024 ** 2;
/** fixtures.ts's hosts: 32 MiB of overhead per VM. */
const OVERHEAD = 32 * MIB;

/**
 * The host's load counted afresh from its VMs, in the host's VM order: a kept load holds only for
 * the VM map it was counted from, so a copy of the map has it counted again.
 */
const recount = (s: FarmState, hostId: string) =>
  hostLoad({ ...s, vms: new Map(s.vms) }, s.hosts.get(hostId)!);

/** Comparable: the classes as [name, members] in their order. */
const plain = (l: ReturnType<typeof hostLoad>) => ({ ...l, classes: [...l.classes] });

describe("a host's kept load, as its VMs change", () => {
  function farm(): FarmBuilder {
    const b = new FarmBuilder();
    b.host({ id: 'h1', memGiB: 64 }).host({ id: 'h2', memGiB: 64 });
    b.vm('a', { name: 'a', memMiB: 512 }, 'h1');
    b.vm('b', { name: 'b', memMiB: 1024, classes: ['web'] }, 'h1');
    b.vm('c', { name: 'c', memMiB: 256, classes: ['web'] }, 'h1');
    return b;
  }

  it('is what its VMs cost: a report (the same host and configuration) leaves it, and the scheduler is not told the host changed', () => {
    const b = farm();
    const h1 = b.s.hosts.get('h1')!;
    const before = hostLoad(b.s, h1);
    const journal = b.s.hostJournal.end;
    b.report('a', 'OFF');
    expect(b.s.vms.get('a')!.observed.present).to.equal(true);
    expect(hostLoad(b.s, h1), 'the same kept load').to.equal(before);
    expect(b.s.hostJournal.end, 'no host marked').to.equal(journal);
    expect(before.memoryBytes).to.equal((512 + 1024 + 256) * MIB + 3 * OVERHEAD);
    expect(plain(hostLoad(b.s, h1))).to.deep.equal(plain(recount(b.s, 'h1')));
  });

  it('lists a class in the order a recount does after a report of a member (which moves it to the end of its host)', () => {
    const b = farm();
    hostLoad(b.s, b.s.hosts.get('h1')!);
    b.report('b', 'OFF');
    const kept = hostLoad(b.s, b.s.hosts.get('h1')!);
    expect(kept.classes.get('web')!.map((m) => m.vmName)).to.deep.equal(['c', 'b']);
    expect(plain(kept)).to.deep.equal(plain(recount(b.s, 'h1')));
  });

  it('counts a new configuration on the same host, and a move to another host', () => {
    const b = farm();
    const h1 = b.s.hosts.get('h1')!;
    const before = hostLoad(b.s, h1).memoryBytes;
    const journal = b.s.hostJournal.end;
    // A configuration change as the state machine stores one (vm.update, op.result).
    const a = b.s.vms.get('a')!;
    new Changes(b.s, b.t).vm({ ...a, config: { ...a.config, memoryBytes: 2048 * MIB } });
    expect(hostLoad(b.s, h1).memoryBytes).to.equal(before + 1536 * MIB);
    expect(b.s.hostJournal.since(journal)).to.include('h1');
    expect(plain(hostLoad(b.s, h1))).to.deep.equal(plain(recount(b.s, 'h1')));
    const c = b.s.vms.get('c')!;
    new Changes(b.s, b.t).vm({ ...c, hostId: 'h2' });
    expect(plain(hostLoad(b.s, h1))).to.deep.equal(plain(recount(b.s, 'h1')));
    expect(plain(hostLoad(b.s, b.s.hosts.get('h2')!))).to.deep.equal(plain(recount(b.s, 'h2')));
    expect(hostLoad(b.s, h1).memoryBytes).to.equal(before + 1536 * MIB - 256 * MIB - OVERHEAD);
    expect(b.s.hostJournal.since(journal)).to.include.members(['h1', 'h2']);
  });
});
