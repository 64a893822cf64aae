import assert from 'node:assert/strict';
import { KvStateMachine } from '../../src/node/kv-state-machine.js';
import { decodeSnapshotEnvelope, encodeSnapshotEnvelope } from '../../src/node/snapshot-envelope.js';

describe('snapshot envelope', () => {
  it('carries the addresses and the application data', () => {
    const app = new Uint8Array([1, 2, 3, 250]);
    const env = decodeSnapshotEnvelope(encodeSnapshotEnvelope({ addresses: { n1: 'h:1', n2: 'h:2' }, app }));
    assert.deepEqual(env.addresses, { n1: 'h:1', n2: 'h:2' });
    assert.deepEqual(env.app, app);
  });

  it('reads the application data in place, without a copy', () => {
    const app = new Uint8Array(1024).map((_, i) => i % 251);
    const data = encodeSnapshotEnvelope({ addresses: { n1: 'h:1' }, app });
    const env = decodeSnapshotEnvelope(data);
    assert.equal(env.app.buffer, data.buffer);
    assert.equal(env.app.byteOffset + env.app.byteLength, data.byteOffset + data.byteLength);
    assert.deepEqual(env.app, app);
  });

  it('reads the empty bootstrap snapshot as no addresses and no data', () => {
    assert.deepEqual(decodeSnapshotEnvelope(new Uint8Array()), { addresses: {}, app: new Uint8Array() });
  });

  it('refuses a header that overruns the data', () => {
    const bad = Buffer.alloc(8);
    bad.writeUInt32BE(100, 0);
    assert.throws(() => decodeSnapshotEnvelope(bad), /header of 100 bytes overruns/);
  });

  it('round-trips the key-value state machine through snapshot and restore', () => {
    const a = new KvStateMachine();
    const enc = new TextEncoder();
    a.apply(enc.encode(JSON.stringify({ op: 'put', key: 'x', value: '1' })), 1);
    const prev = a.apply(enc.encode(JSON.stringify({ op: 'put', key: 'x', value: '2' })), 2);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(prev)), { prev: '1' });
    const b = new KvStateMachine();
    b.restore(a.snapshot());
    assert.equal(b.get('x'), '2');
    b.restore(new Uint8Array());
    assert.equal(b.get('x'), undefined);
  });
});
