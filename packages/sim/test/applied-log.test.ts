import { expect } from 'chai';
import { AppliedLog, type Violation } from '../src/invariants.js';

const bytes = (text: string) => new TextEncoder().encode(text);

describe('AppliedLog: no two daemons apply different commands at one index', () => {
  it('the same command at an index from every daemon, in any order, is no violation', () => {
    const log = new AppliedLog();
    const out: Violation[] = [];
    for (const d of ['d2', 'd1', 'd3'])
      for (let i = 1; i <= 3_000; i++) log.record(d, i, bytes(`cmd ${i}`), 0, out);
    // A daemon that restarts applies its log again.
    for (let i = 1; i <= 3_000; i++) log.record('d1', i, bytes(`cmd ${i}`), 5, out);
    expect(out).to.deep.equal([]);
  });

  it('another command at an index is one, naming both daemons, even far past the first indexes', () => {
    const log = new AppliedLog();
    const out: Violation[] = [];
    log.record('d3', 1, bytes('a'), 0, out);
    log.record('d1', 1, bytes('b'), 7, out);
    log.record('d2', 250_000, bytes('x'), 8, out);
    log.record('d2', 2, bytes('y'), 8, out);
    log.record('d1', 250_000, bytes('x'), 9, out);
    log.record('d3', 250_000, bytes('z'), 9, out);
    expect(out).to.deep.equal([
      {
        property: 'applied-entries-differ',
        time: 7,
        detail: 'daemon d1 applied another command at index 1 than daemon d3 did',
      },
      {
        property: 'applied-entries-differ',
        time: 9,
        detail: 'daemon d3 applied another command at index 250000 than daemon d2 did',
      },
    ]);
  });
});
