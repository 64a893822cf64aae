import { expect } from 'chai';
import fc from 'fast-check';
import { OrderedIds } from '../src/workload.js';

describe('OrderedIds (the workload picks VMs by their place in the order acknowledged)', () => {
  it('answers what an array with push, splice-by-value and index would, through compactions', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom('push', 'push', 'delete', 'at'), fc.nat(5_000)), {
          maxLength: 4_000,
        }),
        (steps) => {
          const ids = new OrderedIds();
          const model: string[] = [];
          let next = 0;
          for (const [what, n] of steps) {
            if (what === 'push') {
              // Now and then an id already there: added once, where it first came.
              const id = n % 7 === 0 && model.length > 0 ? model[n % model.length]! : `v${next++}`;
              ids.push(id);
              if (!model.includes(id)) model.push(id);
            } else if (what === 'delete' && model.length > 0) {
              const id = model[n % model.length]!;
              ids.delete(id);
              model.splice(model.indexOf(id), 1);
            } else expect(ids.at(n % (model.length + 1))).to.equal(model[n % (model.length + 1)]);
            expect(ids.size).to.equal(model.length);
          }
          expect([...Array(model.length).keys()].map((k) => ids.at(k))).to.deep.equal(model);
        },
      ),
      { numRuns: 60, seed: 20261203 },
    );
  });

  it('compacts once most slots are removed, keeping the order', () => {
    const ids = new OrderedIds();
    for (let i = 0; i < 3_000; i++) ids.push(`v${i}`);
    for (let i = 0; i < 3_000; i += 3) ids.delete(`v${i}`);
    for (let i = 1; i < 3_000; i += 3) ids.delete(`v${i}`);
    expect(ids.size).to.equal(1_000);
    expect([ids.at(0), ids.at(1), ids.at(999), ids.at(1_000)]).to.deep.equal([
      'v2',
      'v5',
      'v2999',
      undefined,
    ]);
  });
});
