import { expect } from 'chai';
import { makeEngine, vmConfig } from './helpers.js';

/**
 * What the agent persists: the records of the VMs changed since it last asked, and the ids
 * deleted. A change taken once is not taken again, and one made later is not lost.
 */
describe('engine: the changes to persist', () => {
  it('gives each change once, nothing between, and later changes again', () => {
    const e = makeEngine();
    e.vms.create('a', vmConfig('a'));
    e.vms.create('b', vmConfig('b'));
    const first = e.takeChanges();
    expect(first.records.map((r) => r.id)).to.have.members(['a', 'b']);
    expect(first.deleted).to.deep.equal([]);

    // Nothing happened since: nothing to write, as often as it is asked.
    for (let i = 0; i < 3; i++) expect(e.takeChanges()).to.deep.equal({ records: [], deleted: [] });

    e.vms.delete('a');
    e.vms.create('c', vmConfig('c'));
    const second = e.takeChanges();
    expect(second.records.map((r) => r.id)).to.deep.equal(['c']);
    expect(second.deleted).to.deep.equal(['a']);
    expect(e.takeChanges()).to.deep.equal({ records: [], deleted: [] });
  });

  it('hands out an empty answer no caller can change', () => {
    const e = makeEngine();
    const none = e.takeChanges();
    expect(Object.isFrozen(none.records) && Object.isFrozen(none.deleted)).to.equal(true);
    e.vms.create('a', vmConfig('a'));
    expect(e.takeChanges().records.map((r) => r.id)).to.deep.equal(['a']);
  });

  it('says whether anything waits to be taken: effects, events or changes', () => {
    const e = makeEngine();
    const takeAll = () => {
      e.takeEffects();
      e.takeEvents();
      e.takeChanges();
    };
    expect(e.hasOutput()).to.equal(false);
    e.vms.create('a', vmConfig('a'));
    expect(e.hasOutput()).to.equal(true);
    // Each kind on its own keeps it true until it too is taken.
    e.takeEvents();
    expect(e.hasOutput(), 'the changed record').to.equal(true);
    e.takeChanges();
    expect(e.hasOutput()).to.equal(false);
    e.lease.grant('d1', 1, 10_000);
    expect(e.hasOutput(), 'a lease grant leaves nothing').to.equal(false);
    e.vms.delete('a', 0);
    e.takeEvents();
    expect(e.hasOutput(), 'the deleted id').to.equal(true);
    takeAll();
    expect(e.hasOutput()).to.equal(false);
    e.advance(60_000);
    expect(e.hasOutput(), 'the lease ran out: an event').to.equal(true);
    takeAll();
    expect(e.hasOutput()).to.equal(false);
  });
});
