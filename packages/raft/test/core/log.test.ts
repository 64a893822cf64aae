import { expect } from 'chai';
import { CompactedError, EntryType, UnavailableError } from '../../src/types.js';
import { MemoryStorage, SnapshotOutOfDateError } from '../../src/core/memory-storage.js';
import { RaftLog } from '../../src/core/raft-log.js';
import { entry, enc } from './helpers.js';

function logWith(terms: number[]): RaftLog {
  const s = new MemoryStorage();
  s.append(terms.map((t, i) => entry(i + 1, t)));
  return new RaftLog(s);
}

describe('core/memory-storage', () => {
  it('appends, overwrites a tail, and refuses a gap', () => {
    const s = new MemoryStorage();
    s.append([entry(1, 1), entry(2, 1), entry(3, 1)]);
    s.append([entry(2, 2)]);
    expect(s.lastIndex()).to.equal(2);
    expect(s.term(2)).to.equal(2);
    expect(() => s.append([entry(4, 2)])).to.throw(/gap/);
  });

  it('compacts, and answers CompactedError/UnavailableError at the edges', () => {
    const s = new MemoryStorage();
    s.append([1, 2, 3, 4, 5].map((i) => entry(i, 1, `v${i}`)));
    s.compact(3);
    expect(s.firstIndex()).to.equal(4);
    expect(s.term(3)).to.equal(1);
    expect(() => s.term(2)).to.throw(CompactedError);
    expect(() => s.term(6)).to.throw(UnavailableError);
    expect(() => s.entries(3, 5)).to.throw(CompactedError);
    expect(s.entries(4, 6).map((e) => e.index)).to.deep.equal([4, 5]);
    expect(() => s.compact(2)).to.throw(CompactedError);
    // entries already compacted are skipped on append
    s.append([entry(3, 1), entry(4, 1), entry(5, 1), entry(6, 1)]);
    expect(s.lastIndex()).to.equal(6);
  });

  it('entries respects maxBytes but returns at least one entry', () => {
    const s = new MemoryStorage();
    s.append([entry(1, 1, 'aaaa'), entry(2, 1, 'bbbb'), entry(3, 1, 'cccc')]);
    expect(s.entries(1, 4, 8).length).to.equal(2);
    expect(s.entries(1, 4, 1).length).to.equal(1);
    expect(s.entries(1, 4).length).to.equal(3);
  });

  it('snapshots: create, apply, and refuse an older one', () => {
    const s = new MemoryStorage();
    s.append([entry(1, 1), entry(2, 2), entry(3, 2)]);
    const snap = s.createSnapshot(2, { voters: ['a'], learners: [] }, enc('state'));
    expect(snap.meta).to.deep.equal({ index: 2, term: 2, conf: { voters: ['a'], learners: [] } });
    expect(() => s.createSnapshot(1, { voters: ['a'], learners: [] }, enc(''))).to.throw(
      SnapshotOutOfDateError,
    );
    const t = new MemoryStorage();
    t.applySnapshot(snap);
    expect(t.firstIndex()).to.equal(3);
    expect(t.lastIndex()).to.equal(2);
    expect(t.initialState().conf.voters).to.deep.equal(['a']);
    expect(() => t.applySnapshot(snap)).to.throw(SnapshotOutOfDateError);
  });
});

describe('core/raft-log', () => {
  it('maybeAppend: consistency check, conflict truncation, commit', () => {
    const log = logWith([1, 1, 2]);
    expect(log.maybeAppend(3, 1, 3, [])).to.equal(undefined); // term mismatch at 3
    expect(log.maybeAppend(4, 2, 3, [])).to.equal(undefined); // beyond the end
    expect(log.maybeAppend(2, 1, 2, [entry(3, 3), entry(4, 3)])).to.equal(4);
    expect(log.lastIndex()).to.equal(4);
    expect(log.term(3)).to.equal(3);
    expect(log.committed).to.equal(2);
    // a stale, shorter append does not truncate matching entries
    expect(log.maybeAppend(2, 1, 4, [entry(3, 3)])).to.equal(3);
    expect(log.lastIndex()).to.equal(4);
    expect(log.committed).to.equal(3); // min(leader commit, last new index)
  });

  it('refuses to overwrite committed entries', () => {
    const log = logWith([1, 1, 2]);
    log.commitTo(3);
    expect(() => log.maybeAppend(2, 1, 3, [entry(3, 3)])).to.throw(/committed/);
  });

  it('findConflictByTerm skips a whole term', () => {
    const log = logWith([1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
    expect(log.findConflictByTerm(10, 3)).to.deep.equal({ index: 3, term: 1 });
    expect(log.findConflictByTerm(10, 5)).to.deep.equal({ index: 7, term: 5 });
    expect(log.findConflictByTerm(10, 6)).to.deep.equal({ index: 10, term: 6 });
    expect(log.findConflictByTerm(10, 0)).to.deep.equal({ index: 0, term: 0 });
  });

  it('isUpToDate compares last term, then last index', () => {
    const log = logWith([1, 2, 2]);
    expect(log.isUpToDate(3, 2)).to.equal(true);
    expect(log.isUpToDate(2, 2)).to.equal(false);
    expect(log.isUpToDate(1, 3)).to.equal(true);
    expect(log.isUpToDate(9, 1)).to.equal(false);
  });

  it('maybeCommit only commits entries of the given term (Figure 8)', () => {
    const log = logWith([1, 2, 3]);
    expect(log.maybeCommit(2, 3)).to.equal(false);
    expect(log.committed).to.equal(0);
    expect(log.maybeCommit(3, 3)).to.equal(true);
    expect(log.committed).to.equal(3);
  });

  it('slices across stable and unstable parts with a size limit', () => {
    const s = new MemoryStorage();
    s.append([entry(1, 1, 'aa'), entry(2, 1, 'bb')]);
    const log = new RaftLog(s);
    log.append([entry(3, 1, 'cc'), entry(4, 1, 'dd')]);
    expect(log.slice(1, 5).map((e) => e.index)).to.deep.equal([1, 2, 3, 4]);
    expect(log.slice(2, 5, 4).map((e) => e.index)).to.deep.equal([2, 3]);
    expect(log.slice(1, 5, 3).map((e) => e.index)).to.deep.equal([1]);
    expect(log.unstableEntries().map((e) => e.index)).to.deep.equal([3, 4]);
    log.stableTo(3, 1);
    expect(log.unstableEntries().map((e) => e.index)).to.deep.equal([4]);
    // a stale stableTo (term mismatch after an overwrite) is ignored
    log.append([entry(4, 2)]);
    log.stableTo(4, 1);
    expect(log.unstableEntries().map((e) => e.term)).to.deep.equal([2]);
  });

  it('next committed entries go from applied+1 to committed', () => {
    const log = logWith([1, 1, 1, 1]);
    log.commitTo(3);
    expect(log.nextCommittedEntries().map((e) => e.index)).to.deep.equal([1, 2, 3]);
    log.appliedTo(2);
    expect(log.nextCommittedEntries().map((e) => e.index)).to.deep.equal([3]);
    expect(() => log.appliedTo(4)).to.throw(/applied index/);
    expect(() => log.commitTo(9)).to.throw(/beyond the last index/);
  });

  it('restore from a snapshot replaces the log', () => {
    const log = logWith([1, 1]);
    log.restore({ meta: { index: 10, term: 3, conf: { voters: ['a'], learners: [] } }, data: enc('x') });
    expect(log.firstIndex()).to.equal(11);
    expect(log.lastIndex()).to.equal(10);
    expect(log.term(10)).to.equal(3);
    expect(log.committed).to.equal(10);
    expect(() => log.term(5)).to.throw(CompactedError);
    expect(log.nextCommittedEntries()).to.deep.equal([]);
    void EntryType;
  });
});
