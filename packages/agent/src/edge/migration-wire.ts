import { ApiError, invalidArgument, quote, status, type pb } from '@hyperfarm/api';
import type { EventEmitter } from 'node:events';
import { fillPage, GuestMemory, MAX_VERSION, PAGE_SIZE } from '../engine/memory.js';
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

export interface Sink {
  write(chunk: pb.MigrationChunk): Promise<void>;
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
      if (stream.write(chunk)) return;
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error) => {
          clearTimeout(timer);
          stream.off('drain', ok);
          stream.off('close', closed);
          stream.off('cancelled', closed);
          if (err) reject(err);
          else resolve();
        };
        const ok = () => done();
        const closed = () => done(ended ?? new ApiError(status.CANCELLED, 'the stream closed'));
        const timer = setTimeout(
          () => done(new ApiError(status.DEADLINE_EXCEEDED, `the reader took no data for ${idleMs} ms`)),
          idleMs,
        );
        stream.once('drain', ok);
        stream.once('close', closed);
        stream.once('cancelled', closed);
      });
    },
  };
}

/**
 * Sends `pages` (ascending) at their current versions, packed, in batches; returns the bytes
 * sent. Written pages go as (number, version) records with their 4 KiB; zero pages as numbers.
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
  for (let i = 0; i < pages.length || (i === 0 && pages.length === 0); i += PAGES_PER_BATCH) {
    const slice = pages.slice(i, i + PAGES_PER_BATCH);
    const zero: number[] = [];
    let count = 0;
    for (const n of slice) if (memory.versionOf(n) !== 0) count++;
    const head = count * PACKED_RECORD;
    const packed = Buffer.allocUnsafe(head + count * PAGE_SIZE);
    let k = 0;
    for (const n of slice) {
      const version = memory.versionOf(n);
      if (version === 0) {
        zero.push(n);
        continue;
      }
      packed.writeUInt32BE(n, k * PACKED_RECORD);
      packed.writeUInt32BE(version, k * PACKED_RECORD + 4);
      fillPage(memory.seed, n, version, packed, head + k * PAGE_SIZE);
      k++;
    }
    await sink.write({ pages: { round, packed, packedCount: count, zeroPages: zero, stopped, pages: [] } });
    const sent = packed.length + zero.length * 8;
    bytes += sent;
    onBatch?.(sent, slice.length);
    if (pages.length === 0) break;
  }
  return bytes;
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
  private readonly expected = Buffer.alloc(PAGE_SIZE);

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
      const head = p.packedCount * PACKED_RECORD;
      if (p.packed.length !== head + p.packedCount * PAGE_SIZE)
        throw invalidArgument('pages.packed', `${p.packed.length} bytes do not hold ${p.packedCount} pages`);
      for (let k = 0; k < p.packedCount; k++) {
        const number = p.packed.readUInt32BE(k * PACKED_RECORD);
        const version = p.packed.readUInt32BE(k * PACKED_RECORD + 4);
        const at = head + k * PAGE_SIZE;
        this.install(memory, 'pages.packed', number, version, p.packed.subarray(at, at + PAGE_SIZE));
      }
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
    if (!Number.isSafeInteger(version) || version < 1 || version > MAX_VERSION)
      throw invalidArgument(field, `page ${number}: version ${version} is not 1 to ${MAX_VERSION}`);
    fillPage(memory.seed, number, version, this.expected);
    if (!this.expected.equals(data)) {
      throw new ApiError(
        status.DATA_LOSS,
        `page ${number} version ${version} arrived with the wrong content`,
      );
    }
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
