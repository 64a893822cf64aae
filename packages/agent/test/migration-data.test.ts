import { expect } from 'chai';
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { createLogger, EncodedMessage, status, type pb } from '@hyperfarm/api';
import {
  DataChannelListener,
  DataChannelReader,
  socketSink,
  TOKEN_BYTES,
} from '../src/edge/migration-data.js';

/**
 * The migration data connection on its own: who the listener lets in, and the messages that
 * cross it, exactly as written, batches included.
 */

const logger = createLogger({ program: 't', id: 'data', level: 'silent' });

/** Resolves when the socket is closed by the other side (or with the bytes it sent first). */
function closedBy(socket: net.Socket): Promise<Buffer> {
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  socket.on('error', () => undefined);
  return new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(got))));
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
}

describe('migration data connection', () => {
  let listener: DataChannelListener;
  beforeEach(() => {
    listener = new DataChannelListener(() => '127.0.0.1:0', logger);
  });
  afterEach(() => listener.close());

  it('hands a connection to the migration whose token it presents, and only once', async () => {
    const offer = await listener.offer(5_000);
    expect(offer.token.length).to.equal(TOKEN_BYTES);
    const first = await connect(offer.port);
    first.write(offer.token);
    const accepted = await offer.connection;
    accepted.write('pages');
    expect(await new Promise<string>((r) => first.once('data', (d: Buffer) => r(d.toString())))).to.equal(
      'pages',
    );
    // The same token again: the migration has its connection, the token is spent.
    const again = await connect(offer.port);
    const closed = closedBy(again);
    again.write(offer.token);
    expect((await closed).length).to.equal(0);
    first.destroy();
    accepted.destroy();
  });

  it('closes a connection with a wrong token, or with no token in time', async () => {
    const offer = await listener.offer(5_000);
    const wrong = Buffer.from(offer.token);
    wrong[0]! ^= 1;
    const s = await connect(offer.port);
    const closed = closedBy(s);
    s.write(wrong);
    expect((await closed).length).to.equal(0);
    // The migration still waits for its own target.
    const right = await connect(offer.port);
    right.write(offer.token);
    (await offer.connection).destroy();
    right.destroy();
  });

  it('stops accepting a token once the wait is over or withdrawn', async () => {
    const late = await listener.offer(50);
    const err = await late.connection.catch((e: unknown) => e);
    expect((err as { code: number }).code).to.equal(status.DEADLINE_EXCEEDED);
    const s = await connect(late.port);
    const closed = closedBy(s);
    s.write(late.token);
    await closed;

    const gone = await listener.offer(5_000);
    gone.withdraw('the stream ended');
    expect(((await gone.connection.catch((e: unknown) => e)) as Error).message).to.equal('the stream ended');
  });

  it('carries messages and encoded batches whole and in order', async () => {
    const offer = await listener.offer(5_000);
    const reader = new DataChannelReader('127.0.0.1', offer.port, offer.token);
    const source = await offer.connection;
    const stream = new EventEmitter();
    const sink = socketSink(source, 5_000, stream);
    // A batch as the source encodes it in place (MemoryPages{round: 3, packed_count: 2}).
    const packed = Buffer.alloc(6 * 1024 * 1024, 0xab);
    // The inner length: round (2 bytes) + packed (tag, 4-byte length, bytes) + count (2 bytes).
    const inner = 2 + 1 + 4 + packed.length + 2;
    const header = Buffer.from([0x12, ...varint(inner), 0x08, 0x03, 0x2a, ...varint(packed.length)]);
    let reused = 0;
    const sent = Buffer.concat([header, packed, Buffer.from([0x30, 0x02])]);
    await sink.write({ header: { vmId: 'vm-1', totalPages: 5 } });
    for (let i = 0; i < 3; i++) await sink.write(new EncodedMessage(sent, () => reused++));
    await sink.write({ trailer: { sha256: 'ab', rounds: 3 } });
    // The export ends: grpc-js then reports 'cancelled' on its stream, finished or not. Written
    // data must still arrive whole (it was cut when the sink closed the connection on it).
    const exportStream = stream;
    const finished = sink.finish();
    exportStream.emit('cancelled');
    const got: pb.MigrationChunk__Output[] = [];
    for await (const chunk of reader) {
      if (chunk.pages) {
        expect(chunk.pages.round).to.equal(3);
        expect(chunk.pages.packedCount).to.equal(2);
        expect(chunk.pages.packed.equals(packed)).to.equal(true);
      }
      got.push(chunk);
    }
    expect(got.map((c) => c.body)).to.deep.equal(['header', 'pages', 'pages', 'pages', 'trailer']);
    expect(got[0]!.header!.vmId).to.equal('vm-1');
    expect(got[4]!.trailer!.sha256).to.equal('ab');
    await finished;
    // Each batch buffer is given back once the socket has written it.
    expect(reused).to.equal(3);
  });

  it('fails the reading when the connection ends inside a message or a message is too large', async () => {
    for (const bytes of [Buffer.from([0, 0, 1, 0, 0x12, 0x02]), Buffer.from([0x7f, 0, 0, 0])]) {
      const offer = await listener.offer(5_000);
      const reader = new DataChannelReader('127.0.0.1', offer.port, offer.token);
      const source = await offer.connection;
      source.end(bytes);
      const err = await (async () => {
        for await (const _ of reader) void _;
      })().catch((e: unknown) => e);
      expect((err as { code: number }).code).to.equal(status.INVALID_ARGUMENT);
      expect((err as Error).message).to.match(/ended inside a message|above/);
    }
  });
});

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
