import { expect } from 'chai';
import { Inflights } from '../../src/core/inflights.js';
import { Progress, ProgressState } from '../../src/core/progress.js';

describe('core/inflights', () => {
  it('fills up by count and frees up to an index', () => {
    const inf = new Inflights(3);
    inf.add(1, 10);
    inf.add(2, 10);
    expect(inf.full()).to.equal(false);
    inf.add(5, 10);
    expect(inf.full()).to.equal(true);
    expect(() => inf.add(6, 1)).to.throw(/full/);
    inf.freeLE(2);
    expect(inf.count()).to.equal(1);
    expect(inf.inflightBytes()).to.equal(10);
    inf.freeLE(4);
    expect(inf.count()).to.equal(1);
    inf.freeLE(5);
    expect(inf.count()).to.equal(0);
  });

  it('fills up by bytes when a byte limit is set', () => {
    const inf = new Inflights(100, 25);
    inf.add(1, 10);
    inf.add(2, 10);
    expect(inf.full()).to.equal(false);
    inf.add(3, 10);
    expect(inf.full()).to.equal(true);
    inf.freeLE(1);
    expect(inf.full()).to.equal(false);
  });

  it('keeps working across many add/free cycles (compaction)', () => {
    const inf = new Inflights(8);
    for (let i = 1; i <= 1000; i++) {
      inf.add(i, 1);
      if (i % 4 === 0) inf.freeLE(i - 2);
    }
    expect(inf.count()).to.be.at.most(8);
    inf.freeLE(1000);
    expect(inf.count()).to.equal(0);
  });

  it('refuses a non-increasing index and a bad capacity', () => {
    const inf = new Inflights(4);
    inf.add(5, 1);
    expect(() => inf.add(5, 1)).to.throw(/not above/);
    expect(() => new Inflights(0)).to.throw(/capacity/);
  });
});

describe('core/progress', () => {
  const mk = () => new Progress(6, 2, 0, false);

  it('probe: one append at a time until an answer or a heartbeat', () => {
    const pr = mk();
    expect(pr.state).to.equal(ProgressState.Probe);
    expect(pr.isPaused()).to.equal(false);
    pr.sentEntries(1, 6, 1);
    expect(pr.isPaused()).to.equal(true);
    pr.probeSent = false; // what a heartbeat response does
    expect(pr.isPaused()).to.equal(false);
  });

  it('replicate: optimistic next and an inflight window', () => {
    const pr = mk();
    pr.maybeUpdate(5);
    pr.becomeReplicate();
    expect(pr.next).to.equal(6);
    pr.sentEntries(2, 7, 2);
    expect(pr.next).to.equal(8);
    pr.sentEntries(2, 9, 2);
    expect(pr.isPaused()).to.equal(true);
    expect(pr.maybeUpdate(7)).to.equal(true);
    pr.inflights.freeLE(7);
    expect(pr.isPaused()).to.equal(false);
    expect(pr.maybeUpdate(6)).to.equal(false); // stale
  });

  it('maybeDecrTo: ignores stale rejections, honours the hint in probe', () => {
    const pr = new Progress(10, 4, 0, false);
    // probe: only the rejection of next-1 counts
    expect(pr.maybeDecrTo(5, 3)).to.equal(false);
    expect(pr.maybeDecrTo(9, 3)).to.equal(true);
    expect(pr.next).to.equal(4);
    // never below match+1
    pr.maybeUpdate(2);
    pr.next = 10;
    expect(pr.maybeDecrTo(9, 0)).to.equal(true);
    expect(pr.next).to.equal(3);
    // replicate: a rejection above match falls back to match+1
    pr.becomeReplicate();
    pr.next = 8;
    expect(pr.maybeDecrTo(2, 0)).to.equal(false);
    expect(pr.maybeDecrTo(7, 0)).to.equal(true);
    expect(pr.next).to.equal(3);
  });

  it('snapshot: paused, and probing resumes after the snapshot index', () => {
    const pr = mk();
    pr.becomeSnapshot(20);
    expect(pr.isPaused()).to.equal(true);
    pr.becomeProbe();
    expect(pr.next).to.equal(21);
    pr.becomeSnapshot(20);
    pr.pendingSnapshot = 0; // a failed snapshot
    pr.becomeProbe();
    expect(pr.next).to.equal(pr.match + 1);
  });
});
