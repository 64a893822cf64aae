import { expect } from 'chai';
import { decodeSnapshot, encodeSnapshot } from '../../src/fsm/index.js';
import { SortedKeys } from '../../src/fsm/sorted-keys.js';
import { FarmBuilder } from './build.js';

/** A small seeded generator (the walks must be the same every run); its high bits, the low ones cycle short. */
function seeded(seed: number): (n: number) => number {
  return (n) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), Math.floor((seed / 2 ** 31) * n));
}

// From the definition: the keys in JavaScript's string order (as list paging compares them).
const ordered = (keys: Iterable<string>) => [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

describe('SortedKeys', () => {
  it('agrees with a sorted copy of a set after every add and delete (a seeded walk past many block splits)', () => {
    const next = seeded(3);
    const keys = new SortedKeys();
    const model = new Set<string>();
    let most = 0;
    const key = () => `vm-${next(4000).toString(16)}`;
    for (let step = 0; step < 7000; step++) {
      let k = key();
      // Adds outweigh deletes at first (blocks split), then deletes of held keys do (blocks empty).
      const adding = next(10) < (step < 4000 ? 8 : 2);
      if (!adding && step >= 4000 && model.size > 0) k = [...model][next(model.size)]!;
      if (adding) expect(keys.add(k), `add ${k}`).to.equal(!model.has(k) && !!model.add(k));
      else expect(keys.delete(k), `delete ${k}`).to.equal(model.delete(k));
      expect(keys.size).to.equal(model.size);
      most = Math.max(most, model.size);
      if (step % 250 === 0) {
        const all = ordered(model);
        expect([...keys.after('')]).to.deep.equal(all);
        // After a key held, one not held, one below all and one above all.
        for (const after of [k, key(), 'a', 'vm-~']) {
          const want = all.filter((x) => x > after);
          expect([...keys.after(after)], `after ${after}`).to.deep.equal(want);
        }
      }
    }
    // Enough keys for several blocks to split, and then to empty.
    expect(most).to.be.above(2000);
    expect(model.size).to.be.below(most / 2);
    keys.clear();
    expect([...keys.after('')]).to.deep.equal([]);
    expect(keys.size).to.equal(0);
  });
});

describe("the farm's VM ids in order, kept as VMs come and go", () => {
  it('equal the sorted ids of the VMs after every create and delete (a seeded walk), and after a restore', () => {
    const hosts = Array.from({ length: 10 }, (_, i) => `h${i}`);
    const b = new FarmBuilder();
    for (const id of hosts) b.host({ id, memGiB: 256 });
    const next = seeded(17);
    const live: string[] = [];
    for (let step = 0; step < 1500; step++) {
      if (live.length < 5 || next(10) < 7) {
        const id = `vm-${next(1 << 20).toString(36)}-${step}`;
        // Placed or waiting for a host: both are listed.
        b.vm(id, { name: id, memMiB: 64 }, next(3) === 0 ? hosts[next(hosts.length)] : undefined);
        live.push(id);
      } else {
        const id = live.splice(next(live.length), 1)[0]!;
        b.must({ type: 'vm.delete', vmId: id, opId: `del-${step}` });
        // A placed VM's delete waits for its host: its report that the VM is gone.
        if (b.s.vms.get(id)?.hostId) b.report(id, 'OFF', { present: false });
      }
      expect([...b.s.vmIds.after('')], `step ${step}`).to.deep.equal(ordered(b.s.vms.keys()));
    }
    // Deletes did take VMs out (placed ones once their host reported them gone).
    expect(b.s.vms.size).to.equal(live.length);
    expect(live.length).to.be.below(1200);
    const restored = decodeSnapshot(encodeSnapshot(b.s));
    expect([...restored.vmIds.after('')]).to.deep.equal(ordered(b.s.vms.keys()));
  });
});
