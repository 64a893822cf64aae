import { expect } from 'chai';
import { IdQueue } from '../../src/fsm/state.js';

describe('IdQueue', () => {
  it('gives the ids back oldest first, across the chunks it drops, then undefined', () => {
    const q = new IdQueue(['a', 'b']);
    expect(q.shift()).to.equal('a');
    q.push('c');
    expect(q.length).to.equal(2);
    const got: string[] = [];
    // Past the 4,096 taken at which it drops the taken ids, pushing as it goes.
    for (let i = 0; i < 20_000; i++) {
      q.push(`x${i}`);
      got.push(q.shift()!);
    }
    expect(got.slice(0, 3)).to.deep.equal(['b', 'c', 'x0']);
    expect(got.at(-1)).to.equal('x19997');
    expect(q.length).to.equal(2);
    expect([q.shift(), q.shift(), q.shift()]).to.deep.equal(['x19998', 'x19999', undefined]);
    expect(q.length).to.equal(0);
  });
});
