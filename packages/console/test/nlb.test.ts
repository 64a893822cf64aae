import { expect } from 'chai';
import { pushPoint, requestsByMember, SERIES_LENGTH, sharePoint } from '../src/nlb.js';
import type { TrafficReport } from '../src/wire.js';

/** The NLB view's share of requests per member, from a traffic run's cumulative counts. */
describe('console: NLB shares', () => {
  const report = (before: Record<string, number>, during: Record<string, number> = {}) =>
    ({
      before: { members: Object.entries(before).map(([vmId, requests]) => ({ vmId, requests })) },
      during: { members: Object.entries(during).map(([vmId, requests]) => ({ vmId, requests })) },
      after: null,
    }) as unknown as TrafficReport;

  it('adds up a member’s requests over the phases, leaving out connections no member took', () => {
    const got = requestsByMember(report({ a: 10, b: 5, '': 3 }, { a: 2 }));
    expect([...got]).to.deep.equal([
      ['a', 12],
      ['b', 5],
    ]);
  });

  it('shares what each member answered between two polls, not since the run began', () => {
    const p = sharePoint(
      1,
      new Map([
        ['a', 130],
        ['b', 60],
      ]),
      new Map([
        ['a', 100],
        ['b', 50],
      ]),
    );
    expect(p.total).to.equal(40);
    expect(p.shares.get('a')).to.equal(0.75);
    expect(p.shares.get('b')).to.equal(0.25);
    // A member that answered nothing in the interval has share 0; an idle interval has none.
    expect(sharePoint(2, new Map([['a', 130]]), new Map([['a', 130]])).shares.size).to.equal(0);
  });

  it('keeps the newest points only', () => {
    let s: ReturnType<typeof pushPoint> = [];
    for (let i = 0; i < SERIES_LENGTH + 5; i++) s = pushPoint(s, sharePoint(i, new Map()));
    expect(s).to.have.length(SERIES_LENGTH);
    expect(s[0]!.at).to.equal(5);
  });
});
