import { expect } from 'chai';
import { applyEntry, encodeEntry } from '../../src/fsm/apply.js';
import { FsmError } from '../../src/fsm/errors.js';
import type { Command } from '../../src/fsm/index.js';
import { emptyState } from '../../src/fsm/state.js';

// A refusal (FsmError) is an answer carried in the command's result: it is built without a
// stack (issue 14: capturing one was about 10 us of each refused command on every replica),
// and building one leaves every other error's stack as it was.

describe('a refusal', () => {
  it('answers its code, message and field, and keeps no stack frames', () => {
    const err = new FsmError('FAILED_PRECONDITION', 'cannot stop VM', 'vm_id');
    expect(err).to.be.instanceOf(Error);
    expect(err.result()).to.deep.equal({
      code: 'FAILED_PRECONDITION',
      message: 'cannot stop VM',
      field: 'vm_id',
    });
    expect(err.stack ?? '').not.to.match(/\n\s+at /);
  });

  it('leaves the stacks of other errors alone', () => {
    const limit = Error.stackTraceLimit;
    const s = emptyState();
    const missing = { type: 'vm.delete', rid: 'r1', t: 1, vmId: 'nope', opId: 'op-1' } as Command;
    expect(applyEntry(s, encodeEntry([missing])).results).to.deep.equal([
      { ok: false, error: { code: 'NOT_FOUND', message: "VM 'nope' not found" } },
    ]);
    expect(Error.stackTraceLimit).to.equal(limit);
    expect(new Error('a bug').stack).to.match(/\n\s+at /);
  });
});
