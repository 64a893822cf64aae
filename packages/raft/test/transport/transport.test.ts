import assert from 'node:assert/strict';
import { messageFromPb, messageToPb } from '../../src/transport/convert.js';
import { GrpcTransport, type TransportHandlers } from '../../src/transport/grpc-transport.js';
import { SnapshotAssembler, snapshotChunks } from '../../src/transport/snapshot-assembler.js';
import { backoffDelay } from '../../src/transport/backoff.js';
import { EntryType, type Message, MessageType } from '../../src/types.js';
import type { pb, RunningServer } from '@hyperfarm/api';
import { message, serveRaft, waitFor } from './helpers.js';

class Inbox implements TransportHandlers {
  received: Message[] = [];
  unreachable: string[] = [];
  snapshots: Array<[string, boolean]> = [];
  onMessages(ms: Message[]): void {
    this.received.push(...ms);
  }
  onUnreachable(peer: string): void {
    this.unreachable.push(peer);
  }
  onSnapshotStatus(peer: string, ok: boolean): void {
    this.snapshots.push([peer, ok]);
  }
}

describe('transport', () => {
  describe('conversion', () => {
    it('keeps every field of a message with entries and snapshot metadata', () => {
      const m = message({
        from: 'n1',
        to: 'n2',
        type: MessageType.Append,
        term: 7,
        logTerm: 6,
        index: 41,
        commit: 40,
        reject: true,
        rejectHint: 12,
        conflictTerm: 5,
        context: new Uint8Array([1, 2, 3]),
        entries: [{ term: 7, index: 42, type: EntryType.ConfChange, data: new Uint8Array([9]) }],
        snapshot: {
          meta: { index: 3, term: 2, conf: { voters: ['n1'], learners: ['n4'] } },
          data: new Uint8Array(),
        },
      });
      const wire = messageToPb(m);
      // Decode as the loader would: enums as names, bytes as Buffers.
      const decoded = messageFromPb({
        ...(wire as Required<typeof wire>),
        type: 'RAFT_MESSAGE_TYPE_APPEND',
        context: Buffer.from(m.context),
        entries: [{ term: 7, index: 42, type: 'RAFT_ENTRY_TYPE_CONF_CHANGE', data: Buffer.from([9]) }],
        snapshot: { index: 3, term: 2, confState: Buffer.from(JSON.stringify(m.snapshot!.meta.conf)) },
      } as pb.RaftMessage__Output);
      assert.deepEqual(decoded, m);
    });

    it('refuses an unknown message type, naming the field', () => {
      assert.throws(
        () =>
          messageFromPb({
            ...(messageToPb(message({ from: 'a', to: 'b' })) as pb.RaftMessage__Output),
            type: 'BOGUS' as never,
          }),
        (err: { field?: string; message: string }) =>
          err.field === 'message.type' &&
          /invalid message\.type: 'BOGUS' is not a known value/.test(err.message),
      );
    });

    it('cuts a snapshot into ordered chunks and reassembles it', () => {
      const data = new Uint8Array(2_500).map((_, i) => i % 251);
      const m = messageToPb(
        message({
          from: 'n1',
          to: 'n2',
          type: MessageType.Snapshot,
          snapshot: { meta: { index: 9, term: 3, conf: { voters: ['n1'], learners: [] } }, data },
        }),
      );
      const chunks = [...snapshotChunks(m, data, 1_000)];
      assert.deepEqual(
        chunks.map((c) => [c.offset, (c.data as Uint8Array).byteLength, c.last]),
        [
          [0, 1000, false],
          [1000, 1000, false],
          [2000, 500, true],
        ],
      );
      const asm = new SnapshotAssembler(10_000);
      let out: Message | undefined;
      for (const c of chunks) {
        out = asm.add({
          message: c.message
            ? ({
                ...(c.message as pb.RaftMessage__Output),
                type: 'RAFT_MESSAGE_TYPE_SNAPSHOT',
                context: Buffer.alloc(0),
                entries: [],
                snapshot: { index: 9, term: 3, confState: Buffer.from('{"voters":["n1"],"learners":[]}') },
              } as pb.RaftMessage__Output)
            : null,
          offset: c.offset as number,
          data: Buffer.from(c.data as Uint8Array),
          last: c.last!,
        });
      }
      assert.deepEqual(out!.snapshot!.data, data);
      assert.equal(out!.snapshot!.meta.index, 9);
    });

    it('refuses a chunk out of order', () => {
      const asm = new SnapshotAssembler(10_000);
      asm.add({
        message: {
          ...(messageToPb(message({ from: 'a', to: 'b' })) as pb.RaftMessage__Output),
          snapshot: { index: 1, term: 1, confState: Buffer.from('{"voters":[],"learners":[]}') },
        },
        offset: 0,
        data: Buffer.alloc(10),
        last: false,
      });
      assert.throws(
        () => asm.add({ message: null, offset: 20, data: Buffer.alloc(10), last: true }),
        /expected 10, got 20/,
      );
    });

    it('backoff grows exponentially, is capped, and jitters within [half, full]', () => {
      const opts = { baseMs: 50, maxMs: 1000 };
      assert.equal(
        backoffDelay(0, opts, () => 1),
        50,
      );
      assert.equal(
        backoffDelay(0, opts, () => 0),
        25,
      );
      assert.equal(
        backoffDelay(3, opts, () => 1),
        400,
      );
      assert.equal(
        backoffDelay(10, opts, () => 1),
        1000,
      );
    });
  });

  describe('over loopback gRPC', function () {
    this.timeout(20_000);
    const open: Array<{ transport: GrpcTransport; server?: RunningServer }> = [];
    afterEach(async () => {
      for (const { transport, server } of open.splice(0)) {
        transport.close();
        await server?.shutdown(500);
      }
    });

    /** A transport and, unless `listen` is false, the gRPC server serving its RaftService. */
    async function node(
      id: string,
      peers: Record<string, string>,
      handlers: TransportHandlers,
      address = '127.0.0.1:0',
    ): Promise<{ transport: GrpcTransport; server: RunningServer }> {
      const transport = new GrpcTransport({ id, peers, handlers });
      const server = await serveRaft(transport, address);
      open.push({ transport, server });
      return { transport, server };
    }

    async function pair(): Promise<{
      a: GrpcTransport;
      b: GrpcTransport;
      bServer: RunningServer;
      inA: Inbox;
      inB: Inbox;
    }> {
      const inA = new Inbox();
      const inB = new Inbox();
      const b = await node('b', {}, inB);
      const a = await node('a', { b: b.server.address }, inA);
      b.transport.addPeer('a', a.server.address);
      return { a: a.transport, b: b.transport, bServer: b.server, inA, inB };
    }

    it('delivers batches both ways, in order', async () => {
      const { a, b, inA, inB } = await pair();
      for (let i = 1; i <= 50; i++)
        a.send([message({ from: 'a', to: 'b', index: i }), message({ from: 'a', to: 'b', index: 1000 + i })]);
      b.send([message({ from: 'b', to: 'a', type: MessageType.AppendResponse, index: 7 })]);
      await waitFor('100 messages at b', () => inB.received.length === 100);
      await waitFor('1 message at a', () => inA.received.length === 1);
      assert.deepEqual(
        inB.received.filter((m) => m.index < 1000).map((m) => m.index),
        Array.from({ length: 50 }, (_, i) => i + 1),
      );
      assert.equal(inA.received[0]!.type, MessageType.AppendResponse);
    });

    it('reports a peer that is down as unreachable and drops what was sent to it', async () => {
      const inA = new Inbox();
      const a = new GrpcTransport({ id: 'a', peers: { b: '127.0.0.1:1' }, handlers: inA });
      open.push({ transport: a });
      await waitFor('b reported unreachable', () => {
        a.send([message({ from: 'a', to: 'b' })]);
        return inA.unreachable.includes('b');
      });
    });

    it('reconnects after the peer restarts on the same address', async () => {
      const { a, b, bServer, inB } = await pair();
      a.send([message({ from: 'a', to: 'b', index: 1 })]);
      await waitFor('first message', () => inB.received.length === 1);
      b.close();
      await bServer.shutdown(500);
      const inB2 = new Inbox();
      await node('b', {}, inB2, bServer.address);
      // Messages sent while the link is down or backing off are dropped; keep sending.
      await waitFor('a message through the new connection', () => {
        a.send([message({ from: 'a', to: 'b', index: 2 })]);
        return inB2.received.length > 0;
      });
      assert.equal(inB2.received[0]!.index, 2);
    });

    it('streams a 3 MiB snapshot in chunks and reports success', async () => {
      const { a, inA, inB } = await pair();
      const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7) % 256);
      a.send([
        message({
          from: 'a',
          to: 'b',
          type: MessageType.Snapshot,
          snapshot: { meta: { index: 100, term: 4, conf: { voters: ['a', 'b'], learners: [] } }, data },
        }),
      ]);
      await waitFor('snapshot delivered', () => inB.received.length === 1);
      await waitFor('snapshot status', () => inA.snapshots.length === 1);
      assert.deepEqual(inA.snapshots, [['b', true]]);
      const got = inB.received[0]!;
      assert.equal(got.snapshot!.meta.index, 100);
      assert.deepEqual(got.snapshot!.meta.conf, { voters: ['a', 'b'], learners: [] });
      assert.ok(Buffer.from(got.snapshot!.data).equals(Buffer.from(data)));
    });

    it('answers UNIMPLEMENTED for forwarding when the node does not serve it', async () => {
      const { a } = await pair();
      await assert.rejects(
        a.forwardPropose('b', new Uint8Array([1]), 2_000),
        /UNIMPLEMENTED|not implemented/,
      );
    });
  });
});
