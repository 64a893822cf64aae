import { expect } from 'chai';
import { drainOf, type FarmState, type OperationRecord } from '../../src/fsm/index.js';
import { decodeSnapshot, encodeSnapshot } from '../../src/fsm/snapshot.js';
import { FarmBuilder } from './build.js';

/** What drainOf must answer, worked out the long way: the unfinished drain operation on the host. */
function drainByScan(s: FarmState, hostId: string): OperationRecord | undefined {
  return [...s.operations.values()].find(
    (o) => !o.done && o.params.kind === 'host.drain' && o.params.hostId === hostId,
  );
}

describe('the drain under way on a host', () => {
  function farm(): FarmBuilder {
    const b = new FarmBuilder();
    for (const id of ['h1', 'h2', 'h3']) b.host({ id, memGiB: 64 });
    for (let i = 0; i < 4; i++)
      b.vm(`v${i}`, { name: `v${i}`, memMiB: 512 }, i < 2 ? 'h1' : 'h2', { start: true }).report(
        `v${i}`,
        'RUNNING',
      );
    return b;
  }
  const drain = (b: FarmBuilder, hostId: string, opId: string, vms: string[]) =>
    b.apply({
      type: 'host.drain',
      hostId,
      opId,
      moves: vms.map((vmId) => ({
        migrationId: `m-${opId}-${vmId}`,
        opId: `mop-${opId}-${vmId}`,
        vmId,
        targetHostId: 'h3',
        kind: 'MIGRATION_KIND_QUICK' as const,
      })),
      stranded: [],
      deadlineMs: 60_000,
    });
  const expectAgrees = (s: FarmState) => {
    for (const h of ['h1', 'h2', 'h3']) expect(drainOf(s, h), h).to.equal(drainByScan(s, h));
  };

  it('is the drain operation until it ends, on its host only, and the same after a restore', () => {
    const b = farm();
    expectAgrees(b.s);
    const [r] = drain(b, 'h1', 'd1', ['v0', 'v1']);
    expect(r).to.deep.include({ ok: true });
    expect(drainOf(b.s, 'h1')?.id).to.equal('d1');
    expect(drainOf(b.s, 'h2')).to.equal(undefined);
    expectAgrees(b.s);
    // Asked again, the drain under way answers: still one drain on the host.
    drain(b, 'h1', 'd2', ['v0']);
    expect(drainOf(b.s, 'h1')?.id).to.equal('d1');
    expect(b.s.operations.has('d2')).to.equal(false);

    // A replica restored from a snapshot rebuilds it (the snapshot carries operations only).
    const bytes = encodeSnapshot(b.s);
    expect(Buffer.from(bytes).toString()).not.to.include('"drains"');
    const restored = decodeSnapshot(bytes);
    expect(drainOf(restored, 'h1')?.id).to.equal('d1');
    expectAgrees(restored);

    // Stopped: no drain under way, here and on the restored copy going on from the same point.
    const copy = b.restoredCopy(restored);
    for (const x of [b, copy]) {
      x.must({ type: 'host.undrain', hostId: 'h1' });
      expect(drainOf(x.s, 'h1')).to.equal(undefined);
      expect(x.s.operations.get('d1')?.done).to.equal(true);
      expectAgrees(x.s);
    }
  });

  it('ends with a drain that had nothing to move, and a new drain of the host is found', () => {
    const b = farm();
    drain(b, 'h3', 'empty', []);
    expect(b.s.operations.get('empty')?.done).to.equal(true);
    expect(drainOf(b.s, 'h3')).to.equal(undefined);
    b.must({ type: 'host.undrain', hostId: 'h3' });
    drain(b, 'h2', 'd3', ['v2']);
    expect(drainOf(b.s, 'h2')?.id).to.equal('d3');
    expectAgrees(b.s);
  });
});
