import { expect } from 'chai';
import { mergeLive } from '../src/live.js';
import type { Host } from '../src/wire.js';

const host = (id: string, cpuPercent: number, lastHeartbeatMs: number): Host =>
  ({ id, usage: { cpuPercent }, lastHeartbeatMs }) as unknown as Host;

/** The hosts' live figures: a card is drawn again only when its own host's changed. */
describe('console: hosts live figures', () => {
  it('keeps the object of an unchanged host, and the whole map when nothing changed', () => {
    const first = mergeLive(new Map(), [host('a', 12.5, 1000), host('b', 0, 1000)]);
    expect(first.get('a')).to.deep.equal({ cpuPercent: 12.5, lastHeartbeatMs: 1000 });
    expect(mergeLive(first, [host('a', 12.5, 1000), host('b', 0, 1000)])).to.equal(first);

    const second = mergeLive(first, [host('a', 12.5, 1000), host('b', 3, 2000)]);
    expect(second).to.not.equal(first);
    expect(second.get('a')).to.equal(first.get('a'));
    expect(second.get('b')).to.deep.equal({ cpuPercent: 3, lastHeartbeatMs: 2000 });
  });

  it('forgets a host the farm no longer lists', () => {
    const first = mergeLive(new Map(), [host('a', 1, 1), host('b', 1, 1)]);
    const second = mergeLive(first, [host('a', 1, 1)]);
    expect([...second.keys()]).to.deep.equal(['a']);
  });
});
