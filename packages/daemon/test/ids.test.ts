import { expect } from 'chai';
import { newId } from '../src/edge/vms-api.js';

describe('farm ids', () => {
  it('are a prefix and 48 random bits, none repeated across draws of the random pool', () => {
    // 5,000 ids draw the pool of 1,024 ids' bytes again four times: a pool not refilled, or an
    // offset not moved on, repeats ids.
    const ids = Array.from({ length: 5_000 }, () => newId('vm'));
    for (const id of ids) expect(id).to.match(/^vm-[0-9a-f]{12}$/);
    expect(new Set(ids).size).to.equal(ids.length);
  });
});
