import { ApiError, EncodedMessage, invalidArgument, quote, status, type pb } from '@hyperfarm/api';
import type { EventEmitter } from 'node:events';
import { fillPages, GuestMemory, holdsPage, MAX_VERSION, PAGE_SIZE } from '../engine/memory.js';
import { decodeDeviceState, type DeviceStateModel } from '../engine/partition.js';
import { normalizeConfig, type VmConfig } from '../engine/validate.js';

/**
 * A migration stream on the wire: how pages are packed and sent, and how the receiving side
 * checks what arrives. The sender writes through a `Sink` that honours flow control and gives up
 * when the reader stops reading; the receiver checks every page's bytes against the (VM, page,
 * version) derivation and the whole against the trailer's hash.
 */

/** Pages per batch: 512 × 4 KiB = 2 MiB, under gRPC's 4 MiB message limit. */
export const PAGES_PER_BATCH = 512;
/** Bytes a packed page costs on the wire: its (number, version) record and its content. */
const PACKED_RECORD = 8;

/** Where a stream's messages go: objects, or batches already in their wire encoding. */
export interface Sink {
  write(chunk: pb.MigrationChunk | EncodedMessage): Promise<void>;
}

/**
 * Writes to a grpc-js stream, waiting for 'drain' whenever its buffer is full (flow control). A
 * wait longer than `idleMs` (the reader is frozen or gone) or the call's end fails the write.
 */
export function streamSink(
  stream: EventEmitter & { write(chunk: pb.MigrationChunk): boolean },
  idleMs: number,
): Sink {
  let ended: Error | undefined;
  const end = (why: string) => () => (ended ??= new ApiError(status.CANCELLED, why));
  stream.once('cancelled', end('the reader cancelled the stream'));
  stream.once('close', end('the stream closed'));
  stream.once('error', end('the stream failed'));
  return {
    async write(chunk) {
      if (ended) throw ended;
      // The server's serializer sends an EncodedMessage's bytes as they are.
      if (stream.write(chunk as pb.MigrationChunk)) return;
      await drained(stream, idleMs, () => ended);
    },
  };
}

/**
 * Resolves on the writer's next 'drain'; fails when it closes (or is cancelled) first, or when
 * the reader took nothing for `idleMs` (frozen or gone).
 */
export function drained(writer: EventEmitter, idleMs: number, ended: () => Error | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      writer.off('drain', ok);
      writer.off('close', closed);
      writer.off('cancelled', closed);
      if (err) reject(err);
      else resolve();
    };
    const ok = () => done();
    const closed = () => done(ended() ?? new ApiError(status.CANCELLED, 'the stream closed'));
    const timer = setTimeout(
      () => done(new ApiError(status.DEADLINE_EXCEEDED, `the reader took no data for ${idleMs} ms`)),
      idleMs,
    );
    writer.once('drain', ok);
    writer.once('close', closed);
    writer.once('cancelled', closed);
  });
}

/**
 * Sends `pages` (ascending) at their current versions, packed, in batches; returns the bytes
 * sent. Written pages go as (number, version) records with their 4 KiB; zero pages as numbers.
 *
 * Each batch is encoded here, straight into the one buffer that goes to gRPC: the page contents
 * are written in place (a copy from the VM's content pool each), with no per-page object, no protobuf encoding
 * of an object and no copy of 2 MiB. Between batches the event loop runs, so the batch before
 * goes out on the socket while the next one is generated.
 */
export async function sendPages(
  sink: Sink,
  memory: GuestMemory,
  pages: readonly number[],
  round: number,
  stopped: boolean,
  onBatch?: (bytes: number, pages: number) => void,
): Promise<number> {
  let bytes = 0;
  const numbers = new Uint32Array(PAGES_PER_BATCH);
  const versions = new Uint32Array(PAGES_PER_BATCH);
  const zero: number[] = [];
  for (let i = 0; i < pages.length || (i === 0 && pages.length === 0); i += PAGES_PER_BATCH) {
    if (i > 0) await new Promise((resolve) => setImmediate(resolve));
    const end = Math.min(pages.length, i + PAGES_PER_BATCH);
    zero.length = 0;
    let count = 0;
    for (let j = i; j < end; j++) {
      const n = pages[j]!;
      const version = memory.versionOf(n);
      if (version === 0) zero.push(n);
      else {
        numbers[count] = n;
        versions[count++] = version;
      }
    }
    const batch = encodeBatch(memory.seed, round, stopped, numbers, versions, count, zero);
    await sink.write(batch);
    const sent = count * (PACKED_RECORD + PAGE_SIZE) + zero.length * 8;
    bytes += sent;
    onBatch?.(sent, end - i);
    if (pages.length === 0) break;
  }
  return bytes;
}

/** Bytes of `n` as a protobuf varint. */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at++] = n;
  return at;
}

/**
 * One batch as the wire encoding of MigrationChunk { pages: MemoryPages { round, zero_pages,
 * stopped, packed, packed_count } }: the bytes protobuf's encoder produces for those fields, in
 * field order.
 */
function encodeBatch(
  seed: number,
  round: number,
  stopped: boolean,
  numbers: Uint32Array,
  versions: Uint32Array,
  count: number,
  zero: readonly number[],
): EncodedMessage {
  let zeroBytes = 0;
  for (const z of zero) zeroBytes += varintSize(z);
  const packedBytes = count * (PACKED_RECORD + PAGE_SIZE);
  const inner =
    (round > 0 ? 1 + varintSize(round) : 0) +
    (zero.length > 0 ? 1 + varintSize(zeroBytes) + zeroBytes : 0) +
    (stopped ? 2 : 0) +
    (count > 0 ? 1 + varintSize(count) + 1 + varintSize(packedBytes) + packedBytes : 0);
  const total = 1 + varintSize(inner) + inner;
  const room = batchBuffer(total);
  const buf = room.subarray(0, total);
  let at = 0;
  buf[at++] = 0x12; // MigrationChunk.pages, length-delimited
  at = writeVarint(buf, at, inner);
  if (round > 0) {
    buf[at++] = 0x08; // MemoryPages.round
    at = writeVarint(buf, at, round);
  }
  if (zero.length > 0) {
    buf[at++] = 0x1a; // MemoryPages.zero_pages, packed
    at = writeVarint(buf, at, zeroBytes);
    for (const z of zero) at = writeVarint(buf, at, z);
  }
  if (stopped) {
    buf[at++] = 0x20; // MemoryPages.stopped
    buf[at++] = 1;
  }
  if (count > 0) {
    buf[at++] = 0x2a; // MemoryPages.packed
    at = writeVarint(buf, at, packedBytes);
    for (let k = 0; k < count; k++) {
      buf.writeUInt32BE(numbers[k]!, at);
      buf.writeUInt32BE(versions[k]!, at + 4);
      at += PACKED_RECORD;
    }
    fillPages(seed, numbers, versions, count, buf, at);
    at += count * PAGE_SIZE;
    buf[at++] = 0x30; // MemoryPages.packed_count
    writeVarint(buf, at, count);
  }
  return new EncodedMessage(buf, () => reuseBatchBuffer(room));
}

/** The largest encoded batch. */
const BATCH_BUFFER_BYTES = PAGES_PER_BATCH * (PAGE_SIZE + PACKED_RECORD + 5) + 64;
/**
 * Batch buffers gRPC has copied, kept for the next batches: a fresh 2 MiB for every batch cost
 * as much CPU (page faults, garbage collection of external memory) as generating the pages.
 * At most as many as a stream buffers ahead; dropped once no migration has used them for 5 s.
 */
const spare: Buffer[] = [];
const MAX_SPARE = 17;
let dropSpare: NodeJS.Timeout | undefined;

function batchBuffer(size: number): Buffer {
  if (size > BATCH_BUFFER_BYTES) return Buffer.allocUnsafe(size);
  return spare.pop() ?? Buffer.allocUnsafeSlow(BATCH_BUFFER_BYTES);
}

function reuseBatchBuffer(buf: Buffer): void {
  if (buf.length !== BATCH_BUFFER_BYTES || spare.length >= MAX_SPARE) return;
  spare.push(buf);
  dropSpare ??= setTimeout(() => {
    spare.length = 0;
    dropSpare = undefined;
  }, 5_000).unref();
  dropSpare.refresh();
}

/** What a whole, verified migration stream carries. */
export interface ReceivedVm {
  header: pb.MigrationHeader__Output;
  config: VmConfig;
  memory: GuestMemory;
  device: DeviceStateModel;
  sha256: string;
  bytes: number;
  rounds: number;
  /** This host's clock when the first batch sent after the VM stopped arrived (0 if none did). */
  stoppedAtMs: number;
}

/** Hooks of a receiver: reserve memory once the header is known; hear of each batch. */
export interface ReceiverHooks {
  header(header: pb.MigrationHeader__Output, config: VmConfig): Promise<void> | void;
  batch?(round: number, stopped: boolean, bytes: number): void;
  /** The guest's network state, to be used if the VM is installed here. */
  networkState?(vmId: string, state: Buffer): void;
  now(): number;
}

/**
 * Takes a migration stream message by message, in order, checking everything that crossed the
 * process boundary: the header's shape, each page's bytes against its derivation, the order of
 * the parts, and the whole against the trailer's hash. `take` returns the VM once the trailer
 * has checked out.
 */
export class Receiver {
  private header: pb.MigrationHeader__Output | undefined;
  private config: VmConfig | undefined;
  private memory: GuestMemory | undefined;
  private deviceState: Buffer | undefined;
  private networkState = false;
  private bytes = 0;
  private round = -1;
  private stoppedAtMs = 0;

  constructor(
    private readonly hooks: ReceiverHooks,
    private readonly expect: { vmId?: string; generation?: number } = {},
  ) {}

  async take(chunk: pb.MigrationChunk__Output): Promise<ReceivedVm | undefined> {
    if (chunk.header) await this.takeHeader(chunk.header);
    else if (chunk.pages) this.takePages(chunk.pages);
    else if (chunk.networkState) this.takeNetworkState(chunk.networkState);
    else if (chunk.deviceState) {
      if (!this.memory) throw invalidArgument('device_state', 'arrived before the header');
      this.deviceState = chunk.deviceState.data;
      this.bytes += this.deviceState.length;
      // The memory is whole: hash it while the source hashes its own, not after its trailer.
      this.memory.refreshDigests();
    } else if (chunk.trailer) return this.takeTrailer(chunk.trailer);
    return undefined;
  }

  /** Memory whose pages have arrived so far: hashing it ahead of the end keeps the end short. */
  get memorySoFar(): GuestMemory | undefined {
    return this.memory;
  }

  private async takeHeader(h: pb.MigrationHeader__Output): Promise<void> {
    if (this.header) throw invalidArgument('header', 'sent twice');
    if (this.expect.vmId !== undefined && h.vmId !== this.expect.vmId)
      throw invalidArgument('header.vm_id', `is ${h.vmId}, not the VM asked for (${this.expect.vmId})`);
    if (this.expect.generation !== undefined && h.generation !== this.expect.generation)
      throw invalidArgument(
        'header.generation',
        `is ${h.generation}, not the generation asked for (${this.expect.generation})`,
      );
    const config = normalizeConfig(h.config ?? {});
    if (!IMPORT_STATES.includes(h.targetState))
      throw invalidArgument('header.target_state', 'must be RUNNING, PAUSED or SAVED');
    if (h.totalPages * PAGE_SIZE !== config.memoryBytes) {
      throw invalidArgument(
        'header.total_pages',
        `${h.totalPages} pages do not match memory_bytes ${config.memoryBytes}`,
      );
    }
    await this.hooks.header(h, config);
    this.header = h;
    this.config = config;
    this.memory = new GuestMemory(h.vmId, h.totalPages);
  }

  private takeNetworkState(state: Buffer): void {
    if (!this.header) throw invalidArgument('network_state', 'arrived before the header');
    if (this.deviceState) throw invalidArgument('network_state', 'arrived after the device state');
    if (this.networkState) throw invalidArgument('network_state', 'sent twice');
    this.networkState = true;
    this.hooks.networkState?.(this.header.vmId, state);
    this.bytes += state.length;
  }

  private takePages(p: pb.MemoryPages__Output): void {
    const memory = this.memory;
    if (!memory) throw invalidArgument('pages', 'arrived before the header');
    if (this.deviceState) throw invalidArgument('pages', 'arrived after the device state');
    if (p.round < this.round)
      throw invalidArgument('pages.round', `round ${p.round} after round ${this.round}`);
    this.round = p.round;
    if (p.stopped && this.stoppedAtMs === 0) this.stoppedAtMs = this.hooks.now();
    let bytes = 0;
    for (const page of p.pages) {
      this.install(memory, 'pages.pages', page.number, page.version, page.data);
      bytes += page.data.length + 16;
    }
    if (p.packedCount > 0 || p.packed.length > 0) {
      const count = p.packedCount;
      const head = count * PACKED_RECORD;
      if (p.packed.length !== head + count * PAGE_SIZE)
        throw invalidArgument('pages.packed', `${p.packed.length} bytes do not hold ${count} pages`);
      const numbers = new Uint32Array(count);
      const versions = new Uint32Array(count);
      for (let k = 0; k < count; k++) {
        numbers[k] = p.packed.readUInt32BE(k * PACKED_RECORD);
        versions[k] = p.packed.readUInt32BE(k * PACKED_RECORD + 4);
        checkPage(memory, 'pages.packed', numbers[k]!);
        checkVersion('pages.packed', numbers[k]!, versions[k]!);
      }
      // Each page compared in place with its derivation: no copy, nothing regenerated.
      for (let k = 0; k < count; k++) {
        if (!holdsPage(memory.seed, numbers[k]!, versions[k]!, p.packed, head + k * PAGE_SIZE))
          throw wrongContent(numbers[k]!, versions[k]!);
      }
      for (let k = 0; k < count; k++) memory.install(numbers[k]!, versions[k]!);
      bytes += p.packed.length;
    }
    for (const z of p.zeroPages) {
      checkPage(memory, 'pages.zero_pages', z);
      memory.install(z, 0);
      bytes += 8;
    }
    this.bytes += bytes;
    this.hooks.batch?.(p.round, p.stopped, bytes);
  }

  private install(memory: GuestMemory, field: string, number: number, version: number, data: Buffer): void {
    checkPage(memory, field, number);
    checkVersion(field, number, version);
    if (data.length !== PAGE_SIZE || !holdsPage(memory.seed, number, version, data))
      throw wrongContent(number, version);
    memory.install(number, version);
  }

  private takeTrailer(t: pb.MigrationTrailer__Output): ReceivedVm {
    const { header, config, memory, deviceState } = this;
    if (!header || !config || !memory || !deviceState)
      throw invalidArgument('trailer', 'arrived before the header, pages and device state');
    const sha256 = memory.stateHash(deviceState);
    if (sha256 !== t.sha256) {
      throw new ApiError(
        status.DATA_LOSS,
        `state hash mismatch: computed ${sha256}, the source sent ${quote(t.sha256)}`,
      );
    }
    return {
      header,
      config,
      memory,
      device: decodeDeviceState(deviceState, 'device_state.data'),
      sha256,
      bytes: this.bytes,
      rounds: Math.max(0, this.round),
      stoppedAtMs: this.stoppedAtMs,
    };
  }
}

/** The VM states an import may leave a VM in (unspecified: Running). */
const IMPORT_STATES: readonly pb.VmState__Output[] = [
  'VM_STATE_UNSPECIFIED',
  'VM_STATE_RUNNING',
  'VM_STATE_PAUSED',
  'VM_STATE_SAVED',
];

function checkVersion(field: string, number: number, version: number): void {
  if (!Number.isSafeInteger(version) || version < 1 || version > MAX_VERSION)
    throw invalidArgument(field, `page ${number}: version ${version} is not 1 to ${MAX_VERSION}`);
}

function wrongContent(number: number, version: number): ApiError {
  return new ApiError(status.DATA_LOSS, `page ${number} version ${version} arrived with the wrong content`);
}

function checkPage(memory: GuestMemory, field: string, page: number): void {
  if (!Number.isSafeInteger(page) || page < 0 || page >= memory.totalPages)
    throw invalidArgument(field, `page ${page} is beyond the VM's ${memory.totalPages} pages`);
}

/** host:port, as grpc-js dials it. */
export function checkAddress(field: string, address: string): void {
  if (!address) throw invalidArgument(field, 'is required');
  if (
    !/^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/.test(address) ||
    Number(address.split(':').pop()) > 65535
  )
    throw invalidArgument(field, 'must be host:port');
}

const MIGRATION_ID = /^[A-Za-z0-9._-]{1,128}$/;

export function checkMigrationId(field: string, id: string): string {
  if (!MIGRATION_ID.test(id))
    throw invalidArgument(field, "must be 1 to 128 letters, digits, '-', '_' or '.'");
  return id;
}
