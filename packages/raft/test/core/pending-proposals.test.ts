import assert from 'node:assert/strict';
import { PendingProposals } from '../../src/core/pending-proposals.js';

/**
 * Log Matching (Raft §5.3): two entries with the same index and term are the same entry. So the
 * entry applied at a proposal's index is that proposal exactly when its term is the proposal's.
 */
describe('PendingProposals: matching applied entries to proposals', () => {
  const waiter = (term: number, name: string) => ({ term, name });

  it('the entry at the index with the same term is the proposal', () => {
    const p = new PendingProposals<{ term: number; name: string }>();
    p.add(7, waiter(3, 'a'));
    assert.deepEqual(p.applied({ index: 7, term: 3 }), { waiter: waiter(3, 'a'), taken: true });
    assert.equal(p.applied({ index: 7, term: 3 }), undefined, 'answered once');
  });

  it('a proposer waits for the entry only at its index with its term', () => {
    const p = new PendingProposals<{ term: number; name: string }>();
    const w = waiter(3, 'a');
    p.add(7, w);
    assert.equal(p.awaits({ index: 7, term: 3 }), true);
    assert.equal(p.awaits({ index: 7, term: 4 }), false, 'another leader overwrote it');
    assert.equal(p.awaits({ index: 8, term: 3 }), false, 'proposed elsewhere');
    assert.equal(p.size, 1, 'asking takes nothing');
    p.cancel(7, w);
    assert.equal(p.awaits({ index: 7, term: 3 }), false, 'timed out');
  });

  it('another term at the index: a new leader overwrote it', () => {
    const p = new PendingProposals<{ term: number; name: string }>();
    p.add(7, waiter(3, 'a'));
    assert.deepEqual(p.applied({ index: 7, term: 4 }), { waiter: waiter(3, 'a'), taken: false });
  });

  it('a snapshot takes every proposal at or below its index, and no other', () => {
    const p = new PendingProposals<{ term: number; name: string }>();
    for (const i of [4, 5, 6]) p.add(i, waiter(1, `w${i}`));
    assert.deepEqual(
      p.replacedThrough(5).map((w) => w.name),
      ['w4', 'w5'],
    );
    assert.equal(p.size, 1);
  });

  it('a timed-out waiter is forgotten only if it still holds its index', () => {
    const p = new PendingProposals<{ term: number; name: string }>();
    const old = waiter(1, 'old');
    const next = waiter(2, 'new');
    p.add(9, old);
    p.add(9, next); // this node led again and proposed at the same index
    p.cancel(9, old);
    assert.equal(p.applied({ index: 9, term: 2 })?.waiter, next);
  });
});
