import { expect } from 'chai';
import fc from 'fast-check';
import { committedIndex, majority, quorumActive, voteResult } from '../../src/core/quorum.js';

describe('core/quorum', () => {
  it('majority of n voters', () => {
    expect([1, 2, 3, 4, 5].map(majority)).to.deep.equal([1, 2, 2, 3, 3]);
  });

  it('committedIndex is the index a majority holds', () => {
    const m = (o: Record<string, number>) => (id: string) => o[id];
    expect(committedIndex(['a', 'b', 'c'], m({ a: 5, b: 4, c: 1 }))).to.equal(4);
    expect(committedIndex(['a', 'b', 'c'], m({ a: 5 }))).to.equal(0);
    expect(committedIndex(['a', 'b', 'c', 'd'], m({ a: 5, b: 4, c: 3, d: 2 }))).to.equal(3);
    expect(committedIndex(['a'], m({ a: 7 }))).to.equal(7);
    expect(committedIndex([], m({}))).to.equal(0);
  });

  it('committedIndex: a majority holds it and no larger index has a majority (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(100), { minLength: 1, maxLength: 7 }), (matches) => {
        const ids = matches.map((_, i) => `n${i}`);
        const ci = committedIndex(ids, (id) => matches[Number(id.slice(1))]);
        const q = majority(matches.length);
        expect(matches.filter((x) => x >= ci).length).to.be.at.least(q);
        expect(matches.filter((x) => x >= ci + 1).length).to.be.below(q);
      }),
    );
  });

  it('voteResult: won, lost, pending', () => {
    const v = (o: Record<string, boolean>) => new Map(Object.entries(o));
    expect(voteResult(['a', 'b', 'c'], v({ a: true }))).to.equal('pending');
    expect(voteResult(['a', 'b', 'c'], v({ a: true, b: true }))).to.equal('won');
    expect(voteResult(['a', 'b', 'c'], v({ a: true, b: false }))).to.equal('pending');
    expect(voteResult(['a', 'b', 'c'], v({ a: true, b: false, c: false }))).to.equal('lost');
    expect(voteResult(['a', 'b', 'c', 'd'], v({ a: true, b: true, c: false }))).to.equal('pending');
    expect(voteResult(['a', 'b', 'c', 'd'], v({ a: true, b: false, c: false }))).to.equal('lost');
    // votes of non-voters (learners, removed nodes) do not count
    expect(voteResult(['a', 'b', 'c'], v({ a: true, x: true, y: true }))).to.equal('pending');
  });

  it('quorumActive', () => {
    expect(quorumActive(['a', 'b', 'c'], (id) => id === 'a')).to.equal(false);
    expect(quorumActive(['a', 'b', 'c'], (id) => id !== 'c')).to.equal(true);
  });
});
