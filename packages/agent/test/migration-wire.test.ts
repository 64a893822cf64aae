import { expect } from 'chai';
import { EncodedMessage, hyperfarmProto, status, type pb } from '@hyperfarm/api';
import { GuestMemory, pageContent } from '../src/engine/memory.js';
import { encodeDeviceState } from '../src/engine/partition.js';
import { normalizeConfig } from '../src/engine/validate.js';
import { Receiver, sendPages, type ReceivedVm } from '../src/edge/migration-wire.js';
import { mib, vmConfig } from './helpers.js';

const DEVICE = encodeDeviceState({
  version: 1,
  vcpus: 2,
  integrationServices: true,
  channels: [],
  nics: [],
  disks: [],
  boots: 1,
});

/** A well-formed stream for a 64 MiB VM with a few written pages, as a source sends it. */
async function stream(): Promise<{ chunks: pb.MigrationChunk__Output[]; memory: GuestMemory }> {
  const memory = new GuestMemory('vm-x', mib(64) / 4096);
  for (const p of [0, 1, 2, 500, 16383]) memory.write(p);
  memory.write(500);
  const chunks: pb.MigrationChunk__Output[] = [];
  const sink = { write: async (c: pb.MigrationChunk | EncodedMessage) => void chunks.push(decode(c)) };
  chunks.push({
    body: 'header',
    header: {
      vmId: 'vm-x',
      config: normalizeConfig(vmConfig('moved', { memoryBytes: mib(64) })),
      generation: 9,
      kind: 'MIGRATION_KIND_QUICK',
      totalPages: memory.totalPages,
      targetState: 'VM_STATE_RUNNING',
      sourceHostId: 'elsewhere',
      dataPort: 0,
      dataToken: Buffer.alloc(0),
    },
  });
  await sendPages(sink, memory, [...memory.residentPageNumbers(), 7], 0, true);
  chunks.push({ body: 'deviceState', deviceState: { data: DEVICE } });
  chunks.push({ body: 'trailer', trailer: { sha256: memory.stateHash(DEVICE), rounds: 0, stoppedAtMs: 0 } });
  return { chunks, memory };
}

/** A sent message as the receiver reads it off the wire: encoded as the server sends it, decoded as the target's client does. */
function decode(c: pb.MigrationChunk | EncodedMessage): pb.MigrationChunk__Output {
  const method = hyperfarmProto().hyperfarm.v1.MigrationService.service.ExportVm;
  const bytes = c instanceof EncodedMessage ? c.bytes : method.responseSerialize(c);
  return method.responseDeserialize(Buffer.from(bytes)) as pb.MigrationChunk__Output;
}

async function receive(chunks: pb.MigrationChunk__Output[], reserved: string[] = []): Promise<ReceivedVm> {
  const r = new Receiver(
    { header: (h) => void reserved.push(h.vmId), now: () => 1_000 },
    { vmId: 'vm-x', generation: 9 },
  );
  for (const c of chunks) {
    const done = await r.take(c);
    if (done) return done;
  }
  throw new Error('no trailer');
}

const failure = (p: Promise<unknown>) =>
  p.then(
    () => ({ code: -1, message: 'no error' }),
    (e: { code: number; message: string }) => e,
  );

describe('a migration stream on the wire', () => {
  it('arrives whole: every page checked, the hash reproduced, the stop noted on the receiver clock', async () => {
    const { chunks, memory } = await stream();
    const reserved: string[] = [];
    const vm = await receive(chunks, reserved);
    expect(reserved).to.deep.equal(['vm-x']);
    expect(vm.sha256).to.equal(memory.stateHash(DEVICE));
    expect(vm.memory.versionOf(500)).to.equal(2);
    expect(vm.memory.residentPages).to.equal(5);
    expect(vm.stoppedAtMs).to.equal(1_000);
    expect(vm.bytes).to.equal(5 * (4096 + 8) + 8 + DEVICE.length);
  });

  it('refuses a page whose bytes are not its version’s content (DATA_LOSS)', async () => {
    const { chunks } = await stream();
    const packed = chunks[1]!.pages!.packed;
    packed[5 * 8 + 4096 + 100]! ^= 1; // the second page's content
    const err = await failure(receive(chunks));
    expect(err.code).to.equal(status.DATA_LOSS);
    expect(err.message).to.match(/page 1 version 1 arrived with the wrong content/);
  });

  it('refuses a trailer whose hash the pages do not give (DATA_LOSS)', async () => {
    const { chunks } = await stream();
    const t = chunks[3]!.trailer!;
    t.sha256 = t.sha256.replace(/^./, (c) => (c === '0' ? '1' : '0'));
    expect((await failure(receive(chunks))).code).to.equal(status.DATA_LOSS);
  });

  it('refuses parts out of order, pages beyond memory, a packed block of the wrong size, another VM', async () => {
    const { chunks } = await stream();
    const cases: [pb.MigrationChunk__Output[], RegExp][] = [
      [[chunks[1]!], /pages: arrived before the header/],
      [[chunks[0]!, chunks[0]!], /header: sent twice/],
      [[chunks[0]!, chunks[3]!], /trailer: arrived before/],
      [[chunks[0]!, chunks[2]!, chunks[1]!], /pages: arrived after the device state/],
      [
        [
          chunks[0]!,
          { body: 'pages', pages: { ...chunks[1]!.pages!, packed: Buffer.alloc(10), packedCount: 1 } },
        ],
        /pages.packed: 10 bytes do not hold 1 pages/,
      ],
      [
        [
          chunks[0]!,
          {
            body: 'pages',
            pages: { ...chunks[1]!.pages!, packedCount: 0, packed: Buffer.alloc(0), zeroPages: [16384] },
          },
        ],
        /pages.zero_pages: page 16384 is beyond the VM's 16384 pages/,
      ],
      [[{ body: 'header', header: { ...chunks[0]!.header!, vmId: 'vm-y' } }], /header.vm_id: is vm-y/],
      [[{ body: 'header', header: { ...chunks[0]!.header!, generation: 8 } }], /header.generation: is 8/],
      [[{ body: 'header', header: { ...chunks[0]!.header!, totalPages: 3 } }], /header.total_pages/],
    ];
    for (const [parts, message] of cases) {
      const err = await failure(receive(parts));
      expect(err.code, String(message)).to.equal(status.INVALID_ARGUMENT);
      expect(err.message).to.match(message);
    }
  });

  it('checks plain (unpacked) pages the same way', async () => {
    const { chunks, memory } = await stream();
    const plain = memory.residentPageNumbers().map((n) => ({
      number: n,
      version: memory.versionOf(n),
      data: pageContent(memory.seed, n, memory.versionOf(n)),
    }));
    const pages = {
      round: 0,
      pages: plain,
      zeroPages: [],
      stopped: false,
      packed: Buffer.alloc(0),
      packedCount: 0,
    };
    const vm = await receive([chunks[0]!, { body: 'pages', pages }, chunks[2]!, chunks[3]!]);
    expect(vm.sha256).to.equal(memory.stateHash(DEVICE));
    expect(vm.stoppedAtMs).to.equal(0);
    plain[0]!.data[0]! ^= 1;
    expect((await failure(receive([chunks[0]!, { body: 'pages', pages }]))).code).to.equal(status.DATA_LOSS);
  });

  it('encodes each batch in place as exactly the bytes protobuf gives for the same message', async () => {
    // Several batches, page numbers that need 1 to 3 varint bytes, zero pages and a later round.
    const memory = new GuestMemory('vm-x', mib(512) / 4096);
    const pages: number[] = [];
    for (let p = 0; p < 1300; p++) pages.push(p * 97);
    for (const p of pages) if (p % 3 !== 0) memory.write(p);
    memory.write(97);
    const sent: (pb.MigrationChunk | EncodedMessage)[] = [];
    const bytes = await sendPages({ write: async (c) => void sent.push(c) }, memory, pages, 300, true);
    expect(sent).to.have.length(3); // 512 pages a batch
    const serialize = hyperfarmProto().hyperfarm.v1.MigrationService.service.ExportVm.responseSerialize;
    let at = 0;
    let packedPages = 0;
    for (const c of sent) {
      expect(c).to.be.instanceOf(EncodedMessage);
      const batch = pages.slice(at, at + 512);
      at += 512;
      const written = batch.filter((p) => memory.versionOf(p) !== 0);
      packedPages += written.length;
      const packed = Buffer.concat(
        written.flatMap((p) => {
          const rec = Buffer.alloc(8);
          rec.writeUInt32BE(p);
          rec.writeUInt32BE(memory.versionOf(p), 4);
          return [rec];
        }),
      );
      const contents = written.map((p) => pageContent(memory.seed, p, memory.versionOf(p)));
      const expected = serialize({
        pages: {
          round: 300,
          zeroPages: batch.filter((p) => memory.versionOf(p) === 0),
          stopped: true,
          packed: Buffer.concat([packed, ...contents]),
          packedCount: written.length,
        },
      });
      expect(Buffer.compare((c as EncodedMessage).bytes, Buffer.from(expected))).to.equal(0);
    }
    expect(bytes).to.equal(packedPages * (4096 + 8) + (1300 - packedPages) * 8);
  });

  it('names the first wrong page of a batch, wherever it is in the batch', async () => {
    const memory = new GuestMemory('vm-x', mib(64) / 4096);
    for (let p = 0; p < 700; p++) memory.write(p);
    const chunks: pb.MigrationChunk__Output[] = [];
    await sendPages(
      { write: async (c) => void chunks.push(decode(c)) },
      memory,
      memory.residentPageNumbers(),
      0,
      false,
    );
    const second = chunks[1]!.pages!;
    second.packed[second.packedCount * 8 + 150 * 4096 + 4095]! ^= 0x80; // page 512 + 150, last byte
    const { chunks: head } = await stream();
    const err = await failure(receive([head[0]!, ...chunks.map((c) => ({ ...c }))]));
    expect(err.code).to.equal(status.DATA_LOSS);
    expect(err.message).to.match(/page 662 version 1 arrived with the wrong content/);
  });
});
