import { expect } from 'chai';
import { fuzz } from '../fuzz/fuzz.js';

// The short, seeded run of the request fuzzer (the long one: `npm run fuzz`). Every RPC of a
// fresh daemon and agent gets requests drawn from the proto descriptors; a failure names the
// seed, the request and the answer.
describe('the request fuzzer, short run', function () {
  this.timeout(120_000);

  it('finds no INTERNAL, no crash, no file outside the data folders, and fields named by every INVALID_ARGUMENT', async () => {
    const lines: string[] = [];
    const report = await fuzz({ seed: 20261201, count: 400, log: (l) => lines.push(l) });
    expect(report.sent).to.be.greaterThan(300);
    expect(report.failures, lines.filter((l) => l.startsWith('FAIL')).join('\n')).to.deep.equal([]);
  });
});
