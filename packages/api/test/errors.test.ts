import { expect } from 'chai';
import { ApiError, MAX_STATUS_MESSAGE_CHARS, quote, status } from '../src/index.js';

describe('error messages', () => {
  it('quote: short input whole, long input cut with its length, control characters escaped', () => {
    expect(quote('web-1')).to.equal("'web-1'");
    expect(quote('a'.repeat(64))).to.equal(`'${'a'.repeat(64)}'`);
    expect(quote('a'.repeat(65))).to.equal(`'${'a'.repeat(64)}…' (65 characters)`);
    expect(quote('x', 0)).to.equal("'…' (1 characters)");
    expect(quote('line\nbreak\u0000')).to.equal("'line\\nbreak\\u0000'");
    // Characters, not UTF-16 units: a cut never splits a surrogate pair.
    expect(quote('😀'.repeat(70))).to.equal(`'${'😀'.repeat(64)}…' (70 characters)`);
  });

  it('a status message never grows past the cap, whatever a handler put in it', () => {
    const err = new ApiError(status.FAILED_PRECONDITION, `cannot: ${'z'.repeat(100_000)}`).toServiceError();
    expect(err.details.length).to.be.lessThan(MAX_STATUS_MESSAGE_CHARS + 100);
    expect(err.details).to.match(/… \(message cut at 2048 of 100008 characters\)$/);
  });
});
