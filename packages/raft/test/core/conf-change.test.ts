import { expect } from 'chai';
import { ConfChangeType } from '../../src/types.js';
import { applyToConf, checkConfChange } from '../../src/core/conf-change.js';
import { decodeConfChange, encodeConfChange } from '../../src/core/entries.js';
import { RaftArgumentError } from '../../src/core/errors.js';

describe('core/conf-change', () => {
  const conf = { voters: ['a', 'b', 'c'], learners: ['d'] };

  it('applies each kind of change, one server at a time', () => {
    expect(applyToConf(conf, { type: ConfChangeType.AddVoter, node: 'e' })).to.deep.equal({
      voters: ['a', 'b', 'c', 'e'],
      learners: ['d'],
    });
    expect(applyToConf(conf, { type: ConfChangeType.AddLearner, node: 'e' })).to.deep.equal({
      voters: ['a', 'b', 'c'],
      learners: ['d', 'e'],
    });
    expect(applyToConf(conf, { type: ConfChangeType.PromoteLearner, node: 'd' })).to.deep.equal({
      voters: ['a', 'b', 'c', 'd'],
      learners: [],
    });
    expect(applyToConf(conf, { type: ConfChangeType.RemoveNode, node: 'b' })).to.deep.equal({
      voters: ['a', 'c'],
      learners: ['d'],
    });
  });

  it('applying tolerates repeats (a restart replays entries)', () => {
    const once = applyToConf(conf, { type: ConfChangeType.AddVoter, node: 'e' });
    expect(applyToConf(once, { type: ConfChangeType.AddVoter, node: 'e' })).to.deep.equal(once);
    expect(applyToConf(conf, { type: ConfChangeType.RemoveNode, node: 'zz' })).to.deep.equal(conf);
    // no demotion by AddLearner
    expect(applyToConf(conf, { type: ConfChangeType.AddLearner, node: 'a' })).to.deep.equal(conf);
  });

  it('refuses what makes no sense, naming the field', () => {
    expect(() => checkConfChange(conf, { type: ConfChangeType.AddLearner, node: 'a' })).to.throw(
      RaftArgumentError,
      /demotion/,
    );
    expect(() =>
      checkConfChange({ voters: ['a'], learners: [] }, { type: ConfChangeType.RemoveNode, node: 'a' }),
    ).to.throw(RaftArgumentError, /last voter/);
    expect(() => checkConfChange(conf, { type: ConfChangeType.RemoveNode, node: 'd' })).to.not.throw();
  });

  it('round-trips through the log encoding and refuses garbage', () => {
    const cc = { type: ConfChangeType.AddVoter, node: 'e', address: '10.0.0.5:7000' };
    expect(decodeConfChange(encodeConfChange(cc))).to.deep.equal(cc);
    expect(() => decodeConfChange(new TextEncoder().encode('{"type":1}'))).to.throw(
      RaftArgumentError,
      /confChange.node/,
    );
    expect(() => decodeConfChange(new TextEncoder().encode('{"type":1,"node":"x","address":5}'))).to.throw(
      RaftArgumentError,
      /address/,
    );
  });
});
