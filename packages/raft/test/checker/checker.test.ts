import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  checkLinearizable,
  HistoryRecorder,
  kvModel,
  type KvInput,
  type KvOutput,
  type Operation,
  UNKNOWN,
} from '../../src/checker/index.js';
import { Bitset } from '../../src/checker/bitset.js';

type Op = Operation<KvInput, KvOutput>;

const put = (client: number, key: string, value: string, call: number, ret: number): Op => ({
  client,
  input: { op: 'put', key, value },
  call,
  return: ret,
  output: null,
});
const get = (client: number, key: string, value: string | null, call: number, ret: number): Op => ({
  client,
  input: { op: 'get', key },
  call,
  return: ret,
  output: value,
});
const unknownPut = (client: number, key: string, value: string, call: number): Op => ({
  client,
  input: { op: 'put', key, value },
  call,
  return: Infinity,
  output: UNKNOWN,
});
const verdict = (h: Op[]) => checkLinearizable(kvModel, h).verdict;

describe('linearizability checker', () => {
  /** A named history and the verdict the checker must give; one test per case. */
  interface VerdictCase {
    name: string;
    histories: Op[][];
    expected: 'ok' | 'illegal';
  }
  const checkVerdicts = (cases: VerdictCase[]): void => {
    for (const { name, histories, expected } of cases) {
      it(name, () => {
        for (const h of histories) assert.equal(verdict(h), expected);
      });
    }
  };

  checkVerdicts([
    { name: 'accepts an empty history', histories: [[]], expected: 'ok' },
    {
      name: 'accepts sequential writes and reads',
      histories: [
        [put(0, 'x', '1', 0, 1), get(1, 'x', '1', 2, 3), put(0, 'x', '2', 4, 5), get(1, 'x', '2', 6, 7)],
      ],
      expected: 'ok',
    },
    {
      name: 'accepts a read of null before any write',
      histories: [[get(0, 'x', null, 0, 1), put(1, 'x', '1', 2, 3)]],
      expected: 'ok',
    },
    {
      name: 'refuses a stale read: the read starts after a newer write returned',
      histories: [[put(0, 'x', '1', 0, 1), put(0, 'x', '2', 2, 3), get(1, 'x', '1', 4, 5)]],
      expected: 'illegal',
    },
    {
      name: 'refuses a lost write: an acknowledged write is never seen and the old value comes back',
      histories: [
        [put(0, 'x', 'a', 0, 1), get(1, 'x', 'a', 2, 3), put(2, 'x', 'b', 4, 5), get(1, 'x', 'a', 6, 7)],
      ],
      expected: 'illegal',
    },
    {
      name: 'refuses a read of a value nobody wrote',
      histories: [[put(0, 'x', '1', 0, 1), get(1, 'x', '7', 0, 5)]],
      expected: 'illegal',
    },
    {
      // The read overlaps the write: it may see the old or the new value.
      name: 'accepts overlapping operations in either order',
      histories: [
        [put(0, 'x', '1', 0, 1), put(0, 'x', '2', 2, 10), get(1, 'x', '1', 3, 4)],
        [put(0, 'x', '1', 0, 1), put(0, 'x', '2', 2, 10), get(1, 'x', '2', 3, 4)],
      ],
      expected: 'ok',
    },
    {
      // Both writes overlap; one reader sees a then b, the other b then a, at the same times.
      name: 'refuses reads that disagree on the order of two concurrent writes',
      histories: [
        [
          put(0, 'x', 'a', 0, 10),
          put(1, 'x', 'b', 0, 10),
          get(2, 'x', 'a', 11, 12),
          get(3, 'x', 'b', 11, 12),
        ],
      ],
      expected: 'illegal',
    },
    {
      name: 'refuses a new value seen and then the old one, even with overlapping writes',
      histories: [
        [put(0, 'x', 'a', 0, 1), put(1, 'x', 'b', 2, 20), get(2, 'x', 'b', 3, 4), get(3, 'x', 'a', 5, 6)],
      ],
      expected: 'illegal',
    },
  ]);

  describe('operations whose outcome is unknown', () => {
    checkVerdicts([
      {
        name: 'may take effect long after their call',
        histories: [[unknownPut(0, 'x', '1', 0), get(1, 'x', null, 5, 6), get(1, 'x', '1', 100, 101)]],
        expected: 'ok',
      },
      {
        name: 'may never take effect',
        histories: [[unknownPut(0, 'x', '1', 0), get(1, 'x', null, 100, 101)]],
        expected: 'ok',
      },
      {
        name: 'cannot take effect before their call',
        histories: [[get(1, 'x', '1', 0, 1), unknownPut(0, 'x', '1', 5)]],
        expected: 'illegal',
      },
      {
        name: 'cannot take effect twice',
        histories: [
          [
            unknownPut(0, 'x', '1', 0),
            get(1, 'x', '1', 5, 6),
            put(2, 'x', '2', 7, 8),
            get(1, 'x', '1', 9, 10),
          ],
        ],
        expected: 'illegal',
      },
    ]);

    it('covers a cas whose result is unknown', () => {
      const cas: Op = {
        client: 0,
        input: { op: 'cas', key: 'x', expected: '1', value: '2' },
        call: 2,
        return: Infinity,
        output: UNKNOWN,
      };
      assert.equal(verdict([put(1, 'x', '1', 0, 1), cas, get(1, 'x', '2', 5, 6)]), 'ok');
      assert.equal(verdict([put(1, 'x', '3', 0, 1), cas, get(1, 'x', '2', 5, 6)]), 'illegal');
    });
  });

  it('checks append and cas', () => {
    const app = (c: number, v: string, t: number): Op => ({
      client: c,
      input: { op: 'append', key: 'k', value: v },
      call: t,
      return: t + 1,
      output: null,
    });
    const cas = (expected: string | null, value: string, ok: boolean, t: number): Op => ({
      client: 9,
      input: { op: 'cas', key: 'k', expected, value },
      call: t,
      return: t + 1,
      output: ok,
    });
    assert.equal(
      verdict([app(0, 'a', 0), app(1, 'b', 2), get(2, 'k', 'ab', 4, 5), cas('ab', 'z', true, 6)]),
      'ok',
    );
    assert.equal(verdict([app(0, 'a', 0), cas('a', 'z', false, 2)]), 'illegal');
    assert.equal(verdict([cas(null, 'z', true, 0), get(2, 'k', 'z', 2, 3)]), 'ok');
  });

  it('checks keys independently and names the illegal one', () => {
    const h = [
      put(0, 'a', '1', 0, 1),
      get(0, 'a', '1', 2, 3),
      put(0, 'b', '1', 0, 1),
      get(1, 'b', '2', 2, 3),
    ];
    const r = checkLinearizable(kvModel, h);
    assert.equal(r.verdict, 'illegal');
    const bad = r.partitions.find((p) => p.verdict === 'illegal');
    assert.equal(bad?.partition, 'b');
    assert.equal(bad?.operationsDescribed?.length, 2);
    // The deepest order the search found: the put fits, the impossible read does not.
    assert.deepEqual(bad?.longestLinearization, ['client 0 [0, 1] put(b, "1")']);
  });

  /** `writers` fully concurrent writes plus a read of a value none wrote: costly to refute. */
  const concurrentWritesThenImpossibleRead = (writers: number): Op[] => {
    const h: Op[] = [];
    for (let i = 0; i < writers; i++) h.push(put(i, 'x', String(i), 0, 100));
    h.push(get(99, 'x', 'never', 0, 100));
    return h;
  };

  it('gives up with unknown when the step budget runs out', () => {
    // Many concurrent writes and one impossible read: the search must explore many orders.
    const h = concurrentWritesThenImpossibleRead(14);
    assert.equal(checkLinearizable(kvModel, h, { maxSteps: 50 }).verdict, 'unknown');
    assert.equal(checkLinearizable(kvModel, h).verdict, 'illegal');
  });

  it('gives up with unknown when the injected clock passes the timeout', () => {
    const h = concurrentWritesThenImpossibleRead(16);
    let t = 0;
    const r = checkLinearizable(kvModel, h, { timeoutMs: 10, now: () => (t += 5) });
    assert.equal(r.verdict, 'unknown');
  });

  it('refuses a history with a return before its call', () => {
    assert.throws(() => checkLinearizable(kvModel, [put(0, 'x', '1', 5, 1)]), /history\[0\]\.return/);
  });

  describe('Bitset', () => {
    it('gives equal keys to equal sets, also past the chunk size', () => {
      for (const size of [1, 16, 17, 200_000]) {
        const a = new Bitset(size);
        const b = new Bitset(size);
        a.set(size - 1);
        assert.notEqual(a.key(), b.key());
        b.set(size - 1);
        assert.equal(a.key(), b.key());
        assert.ok(a.has(size - 1));
        a.clear(size - 1);
        assert.equal(a.has(size - 1), false);
        assert.notEqual(a.key(), b.key());
      }
    });
  });

  describe('HistoryRecorder', () => {
    it('records completed, failed and abandoned operations', () => {
      const rec = new HistoryRecorder<KvInput, KvOutput>();
      const a = rec.invoke(0, { op: 'put', key: 'x', value: '1' }, 0);
      const b = rec.invoke(1, { op: 'put', key: 'x', value: '2' }, 1);
      const c = rec.invoke(2, { op: 'get', key: 'x' }, 2);
      rec.complete(a, null, 3);
      rec.fail(b);
      rec.abandon(c);
      const ops = rec.operations();
      assert.equal(ops.length, 2);
      assert.equal(ops[1]!.output, UNKNOWN);
      assert.equal(ops[1]!.return, Infinity);
      assert.throws(() => rec.complete(b, null, 4), /operation 1/);
      assert.throws(
        () => rec.complete(rec.invoke(0, { op: 'get', key: 'x' }, 10), null, 9),
        /before its call/,
      );
    });
  });

  describe('properties', () => {
    // Clients run concurrently against one atomic register: each op takes effect at one instant
    // between its call and its return, so the history is linearizable by construction.
    interface StepSpec {
      client: number;
      key: string;
      write: boolean;
      before: number;
      after: number;
    }
    const schedule = fc.array(
      fc.record({
        client: fc.integer({ min: 0, max: 4 }),
        key: fc.constantFrom('a', 'b'),
        write: fc.boolean(),
        before: fc.integer({ min: 0, max: 5 }),
        after: fc.integer({ min: 0, max: 5 }),
      }),
      { minLength: 1, maxLength: 40 },
    );

    function atomicHistory(steps: StepSpec[]): Op[] {
      const store = new Map<string, string>();
      const ops: Op[] = [];
      let t = 0;
      steps.forEach((s, i) => {
        // The effect happens at time t; the call is up to `before` earlier, the return up to `after` later.
        t += 10;
        if (s.write) {
          store.set(s.key, `v${i}`);
          ops.push(put(s.client, s.key, `v${i}`, t - s.before, t + s.after));
        } else {
          ops.push(get(s.client, s.key, store.get(s.key) ?? null, t - s.before, t + s.after));
        }
      });
      return ops;
    }

    it('a sequential atomic register always produces linearizable histories', () => {
      fc.assert(
        fc.property(schedule, (steps) => {
          assert.equal(verdict(atomicHistory(steps)), 'ok');
        }),
        { numRuns: 300, seed: 42 },
      );
    });

    it('injecting a stale read makes the history illegal', () => {
      fc.assert(
        fc.property(schedule, fc.nat(), (steps, pick) => {
          const h = atomicHistory(steps);
          // Find a key written twice; a read after the second write returns the first value.
          const writes = h.filter((o) => o.input.op === 'put');
          for (const w2 of writes) {
            const w1 = writes
              .filter((w) => w.input.key === w2.input.key && w.return < w2.call)
              .at((pick % 3) - 3);
            if (!w1 || w1.input.op !== 'put') continue;
            const last = Math.max(...h.map((o) => o.return));
            h.push(get(7, w2.input.key, w1.input.value, last + 1, last + 2));
            // Only stale if nothing wrote w1's value again after w2, which unique values guarantee.
            assert.equal(verdict(h), 'illegal');
            return;
          }
        }),
        { numRuns: 300, seed: 7 },
      );
    });
  });
});
