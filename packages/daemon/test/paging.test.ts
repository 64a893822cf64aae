import { expect } from 'chai';
import fc from 'fast-check';
import { page, pageInOrder } from '../src/edge/requests.js';
import { SortedKeys } from '../src/fsm/sorted-keys.js';

// The definition: a page is the `size` smallest keys after the token's, in order; following the
// tokens lists every item once, in key order. (Ids are never empty: an empty key is never listed.)
describe('list paging', () => {
  it('pages through every item once, in key order, whatever the order it is kept in', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 6 }), { maxLength: 300 }),
        fc.integer({ min: 1, max: 40 }),
        (ids, size) => {
          const seen: string[] = [];
          let pageToken = '';
          for (let pages = 0; ; pages++) {
            const p = page('vms', ids, (id) => id, { pageSize: size, pageToken });
            expect(p.items.length).to.be.at.most(size);
            // No empty page at the end: a token means there is more.
            if (ids.length > 0) expect(p.items.length).to.be.above(0);
            seen.push(...p.items);
            if (!p.nextPageToken) break;
            expect(p.items.length).to.equal(size);
            pageToken = p.nextPageToken;
            expect(pages).to.be.below(ids.length + 1);
          }
          expect(seen).to.deep.equal([...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
        },
      ),
      { seed: 14, numRuns: 300 },
    );
  });

  it('one page of 100 out of 50,000 is the 100 smallest keys', () => {
    const ids = Array.from(
      { length: 50_000 },
      (_, i) => `vm-${((i * 7919) % 50_000).toString(16).padStart(5, '0')}`,
    );
    const p = page('vms', ids, (id) => id, { pageSize: 100, pageToken: '' });
    expect(p.items).to.deep.equal(
      Array.from({ length: 100 }, (_, i) => `vm-${i.toString(16).padStart(5, '0')}`),
    );
    expect(p.nextPageToken).to.not.equal('');
  });

  it('a list kept in order pages exactly as the definition, with a filter and any page size', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 6 }), { maxLength: 300 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 4 }),
        (ids, size, every) => {
          const keys = new SortedKeys();
          for (const id of ids) keys.add(id);
          // A filter, as ListVms' state: the items whose first character's code is a multiple.
          const wanted = (id: string) => id.charCodeAt(0) % every === 0;
          let token = '';
          for (let pages = 0; pages <= ids.length; pages++) {
            const req = { pageSize: size, pageToken: token };
            const want = page('vms', ids.filter(wanted), (id) => id, req);
            const got = pageInOrder(
              'vms',
              (after) => [...keys.after(after)].filter(wanted),
              (id) => id,
              req,
            );
            expect(got).to.deep.equal(want);
            if (!want.nextPageToken) break;
            token = want.nextPageToken;
          }
        },
      ),
      { seed: 14, numRuns: 300 },
    );
  });

  it('a list kept in order reads one item past its page, not the list', () => {
    let read = 0;
    const items = function* (after: string) {
      for (let i = 0; i < 50_000; i++) {
        const id = `vm-${i.toString(16).padStart(5, '0')}`;
        if (id <= after) continue;
        read++;
        yield id;
      }
    };
    const p = pageInOrder('vms', items, (id) => id, { pageSize: 100, pageToken: '' });
    expect(p.items).to.have.length(100);
    expect(read).to.equal(101);
    expect(() => pageInOrder('vms', items, (id) => id, { pageSize: 1001, pageToken: '' })).to.throw(
      /page_size/,
    );
    expect(() => pageInOrder('vms', items, (id) => id, { pageSize: 10, pageToken: 'bm9wZTp4' })).to.throw(
      /page_token/,
    );
  });
});
