import { expect } from 'chai';
import { applyEntry, type FarmEvent } from '../../src/fsm/index.js';
import { EventWindow } from '../../src/fsm/events.js';
import { decodeSnapshot, encodeSnapshot } from '../../src/fsm/snapshot.js';
import { FarmBuilder } from './build.js';
import { vmConfig } from './fixtures.js';

/**
 * The event window keeps its events as columns and the records they announce shared, not
 * copied, and Changes makes the object it is given the stored record: an event read back later
 * must still be the one the change gave, whatever changed since.
 */

/** Events as JSON: the keys in their order, as Watch and a snapshot write them. */
const json = (events: readonly FarmEvent[]) => events.map((e) => JSON.stringify(e));

function farm(): { b: FarmBuilder; seen: FarmEvent[]; seenJson: string[] } {
  const b = new FarmBuilder();
  const seen: FarmEvent[] = [];
  const seenJson: string[] = [];
  const apply = b.apply.bind(b);
  // Every entry's events as they came out of the apply, and their JSON at that moment.
  b.apply = (...commands) => {
    const before = b.s.revision;
    const results = apply(...commands);
    const events = b.s.events.after(before)!;
    seen.push(...events);
    seenJson.push(...json(events));
    return results;
  };
  b.host({ id: 'h1', memGiB: 64 });
  b.vm('a', { name: 'a', memMiB: 512 }, 'h1', { start: true });
  b.report('a', 'OFF');
  b.report('a', 'RUNNING');
  b.must({ type: 'vm.change_state', vmId: 'a', opId: 'stop-a', action: 'VM_ACTION_STOP' });
  b.report('a', 'OFF');
  return { b, seen, seenJson };
}

describe('the event window', () => {
  it('reads back every event as it was announced, after later changes to the same records', () => {
    const { b, seen, seenJson } = farm();
    expect(json(seen), 'the objects handed out did not change since').to.deep.equal(seenJson);
    expect(json(b.s.events.all()), 'the window reads them back the same').to.deep.equal(seenJson);
    // The VM's first version is still what its create announced, not the VM as it is now.
    const created = seen.find((e) => e.kind === 'RESOURCE_KIND_VM')!;
    const now = b.s.vms.get('a')!;
    expect(created.revision).to.be.below(now.revision);
    expect(created.resource.revision).to.equal(created.revision);
    expect(b.s.events.at(created.revision)!.resource).to.deep.equal(created.resource);
    expect((created.resource as typeof now).observed.present).to.equal(false);
    expect(now.observed.present).to.equal(true);
    // Each PUT's record carries the event's revision: one stored record per change.
    for (const e of b.s.events.all())
      if (e.type === 'EVENT_TYPE_PUT') expect(e.resource.revision, e.kind).to.equal(e.revision);
  });

  it("answers an entry's events as the window keeps them", () => {
    const { b } = farm();
    const before = b.s.revision;
    const cmds = [
      {
        type: 'vm.create',
        rid: 'x1',
        t: b.t,
        vmId: 'b',
        opId: 'op-b',
        config: vmConfig({ name: 'b', memMiB: 256 }),
        start: false,
        hostId: '',
      },
    ];
    const { events, results } = applyEntry(b.s, new TextEncoder().encode(JSON.stringify({ v: 1, cmds })));
    expect(results[0], JSON.stringify(results)).to.include({ ok: true });
    expect(events.length).to.be.above(1);
    expect(json(b.s.events.after(before)!)).to.deep.equal(json(events));
    expect(b.s.events.at(events[0]!.revision)).to.deep.equal(events[0]);
    expect(b.s.events.at(b.s.revision + 1)).to.equal(undefined);
  });

  it('drops the oldest beyond its capacity, and resumes only from what it keeps', () => {
    const { b, seenJson } = farm();
    const all = b.s.events.all();
    const w = new EventWindow(3);
    for (const e of all) w.push(e);
    expect(w.size).to.equal(3);
    expect(w.oldestResumable).to.equal(all.at(-4)!.revision);
    expect(json(w.all())).to.deep.equal(seenJson.slice(-3));
    expect(w.after(all.at(-5)!.revision)).to.equal(undefined);
    expect(json(w.after(all.at(-3)!.revision)!)).to.deep.equal(seenJson.slice(-2));
    expect(w.at(all.at(-4)!.revision)).to.equal(undefined);
  });

  it('drops its head in chunks without losing an event (more than 4,096 pushes)', () => {
    const { b } = farm();
    const [put, del] = [b.s.events.all()[0]!, { ...b.s.events.all()[0]!, type: 'EVENT_TYPE_DELETE' }];
    const w = new EventWindow(1_000);
    for (let r = 1; r <= 10_000; r++)
      w.push({ ...(r % 2 ? put : del), revision: r, timeMs: r * 10 } as FarmEvent);
    const kept = w.all();
    expect(kept.map((e) => e.revision)).to.deep.equal(Array.from({ length: 1_000 }, (_, i) => 9_001 + i));
    expect(kept.map((e) => e.type)).to.deep.equal(
      kept.map((e) => (e.revision % 2 ? 'EVENT_TYPE_PUT' : 'EVENT_TYPE_DELETE')),
    );
    expect(kept.every((e) => e.timeMs === e.revision * 10 && e.id === put.id)).to.equal(true);
    expect(w.oldestResumable).to.equal(9_000);
  });

  it('is restored from a snapshot as it was', () => {
    const { b, seenJson } = farm();
    const restored = decodeSnapshot(encodeSnapshot(b.s));
    expect(json(restored.events.all())).to.deep.equal(seenJson);
    expect(restored.events.oldestResumable).to.equal(b.s.events.oldestResumable);
  });
});
