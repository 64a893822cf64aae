import { expect } from 'chai';
import { decodeSnapshot, encodeSnapshot } from '../../src/fsm/snapshot.js';
import {
  DEFAULT_SETTINGS,
  emptyState,
  firstResult,
  rememberResult,
  type FarmState,
} from '../../src/fsm/state.js';

const remember = (s: FarmState, from: number, to: number) => {
  for (let i = from; i < to; i++) rememberResult(s, `r${i}`, { ok: true, n: i });
};

describe('the request window', () => {
  it('keeps the latest request ids, forgetting the oldest one at a time', () => {
    const s = emptyState({ ...DEFAULT_SETTINGS, requestWindow: 3 });
    remember(s, 0, 2);
    expect([...s.requests.keys()]).to.deep.equal(['r0', 'r1']);
    remember(s, 2, 10);
    expect([...s.requests.keys()]).to.deep.equal(['r7', 'r8', 'r9']);
    expect(firstResult(s, 'r6')).to.equal(undefined);
    expect(firstResult(s, 'r7')).to.deep.equal({ ok: true, n: 7 });
  });

  it('forgets the oldest of a restored window, and of one that grew its table many times', () => {
    const s = emptyState({ ...DEFAULT_SETTINGS, requestWindow: 1_000 });
    remember(s, 0, 20_000);
    const kept = [...s.requests.keys()];
    expect(kept).to.have.length(1_000);
    expect(kept[0]).to.equal('r19000');
    expect(kept.at(-1)).to.equal('r19999');
    const restored = decodeSnapshot(encodeSnapshot(s));
    remember(restored, 20_000, 20_002);
    const after = [...restored.requests.keys()];
    expect(after).to.have.length(1_000);
    expect(after[0]).to.equal('r19002');
    expect(after.at(-1)).to.equal('r20001');
    expect(firstResult(restored, 'r19001')).to.equal(undefined);
  });
});
