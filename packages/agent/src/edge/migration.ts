import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import {
  ApiError,
  createClient,
  failedPrecondition,
  hyperfarmProto,
  invalidArgument,
  quote,
  status,
  type ClientOptions,
  type pb,
} from '@hyperfarm/api';
import { fillPage, GuestMemory, PAGE_SIZE } from '../engine/memory.js';
import type { IncomingMigration, SnapshotFacts } from '../engine/engine.js';
import { decodeDeviceState } from '../engine/partition.js';
import { stateName } from '../engine/states.js';
import { normalizeConfig } from '../engine/validate.js';
import type { AgentHost } from './agent-host.js';
import { confineDisks } from './disk-files.js';
import { readSavedState } from './saved-state.js';

/** Pages per chunk: 256 × ~4.1 KiB ≈ 1 MiB, well under gRPC's 4 MiB message limit. */
export const PAGES_PER_CHUNK = 256;

interface Sink {
  write(chunk: pb.MigrationChunk): Promise<void>;
}

/** Writes to a grpc-js stream, waiting for 'drain' whenever its buffer is full (flow control). */
function streamSink(
  stream:
    grpc.ClientWritableStream<pb.MigrationChunk> | grpc.ServerWritableStream<unknown, pb.MigrationChunk>,
): Sink {
  return {
    async write(chunk) {
      if (!stream.write(chunk)) await once(stream, 'drain');
    },
  };
}

/** Sends `pages` (ascending page numbers) at their current versions; returns bytes sent. */
async function sendPages(
  sink: Sink,
  memory: GuestMemory,
  pages: readonly number[],
  round: number,
  onChunk?: (bytes: number) => void,
): Promise<number> {
  let bytes = 0;
  for (let i = 0; i < pages.length; i += PAGES_PER_CHUNK) {
    const slice = pages.slice(i, i + PAGES_PER_CHUNK);
    const out: pb.MemoryPage[] = [];
    const zero: number[] = [];
    // One buffer per chunk; each page's bytes are a view into it (serialized on write).
    const block = Buffer.allocUnsafe(slice.length * PAGE_SIZE);
    for (const number of slice) {
      const version = memory.versionOf(number);
      if (version === 0) {
        zero.push(number);
        continue;
      }
      const at = out.length * PAGE_SIZE;
      fillPage(memory.seed, number, version, block, at);
      out.push({ number, version, data: block.subarray(at, at + PAGE_SIZE) });
    }
    await sink.write({ pages: { round, pages: out, zeroPages: zero } });
    const sent = out.length * (PAGE_SIZE + 16) + zero.length * 8;
    bytes += sent;
    onChunk?.(sent);
  }
  if (pages.length === 0) await sink.write({ pages: { round, pages: [], zeroPages: [] } });
  return bytes;
}

export interface MigrateOutOptions {
  vmId: string;
  generation: number;
  targetAddress: string;
  kind: pb.MigrationKind__Output;
  targetGeneration: number;
  maxRounds: number;
  stopCopyThresholdPages: number;
  /** Whether the VM has snapshots (they do not travel: the migration is refused). */
  facts: SnapshotFacts;
  client?: ClientOptions;
}

/**
 * The source's side of a migration. Quick: the VM stops at once (Saving) and its whole state
 * goes in one round. Live: the VM keeps running while rounds of dirty pages go over, until few
 * enough remain (or the round limit), then a short stop-and-copy. The source VM is removed only
 * once the target has verified the hash and runs it; any failure leaves it running here.
 */
export async function migrateOut(
  host: AgentHost,
  o: MigrateOutOptions,
  progress: (p: pb.MigrationProgress) => void,
): Promise<pb.MigrationProgress> {
  const kind = o.kind === 'MIGRATION_KIND_UNSPECIFIED' ? 'MIGRATION_KIND_QUICK' : o.kind;
  if (kind !== 'MIGRATION_KIND_QUICK' && kind !== 'MIGRATION_KIND_LIVE')
    throw invalidArgument('kind', 'must be QUICK or LIVE');
  checkAddress('target_address', o.targetAddress);
  const m = await host.mutate((e) => e.migration.out(o.vmId, o.generation, kind, o.facts));
  // A Saved VM moves as its saved state: read back (and checked) from its file, one round.
  let saved: { memory: GuestMemory; deviceState: Buffer } | undefined;
  if (!m.memory) {
    try {
      saved = await readSavedState(host.savedStatePath(m.vmId), m.vmId);
    } catch (err) {
      await host.mutate(() => m.abort((err as Error).message));
      throw err;
    }
  }
  const memory = m.memory ?? saved!.memory;
  const live = kind === 'MIGRATION_KIND_LIVE' && !saved;
  const generation = o.targetGeneration || m.generation + 1;
  const targetState: pb.VmState__Output = saved ? 'VM_STATE_SAVED' : m.state;
  let stoppedAtMs = live ? 0 : host.now();

  const proto = hyperfarmProto().hyperfarm.v1;
  const client = createClient(proto.MigrationService, o.targetAddress, o.client ?? {});
  let call: grpc.ClientWritableStream<pb.MigrationChunk> | undefined;
  try {
    const response = new Promise<pb.ImportVmResponse__Output>((resolve, reject) => {
      call = client.importVm((err, res) => (err ? reject(err) : resolve(res!)));
    });
    response.catch(() => undefined); // observed below; avoid an unhandled rejection meanwhile
    const sink = streamSink(call!);
    let bytes = 0;
    const total = memory.residentPages;
    const report = (phase: pb.MigrationPhase__Output, round: number, remaining: number) =>
      progress({
        phase,
        round,
        bytesTransferred: bytes,
        pagesRemaining: remaining,
        progressPercent: total === 0 ? 100 : Math.min(99, (100 * (total - remaining)) / total),
      });

    await sink.write({
      header: {
        vmId: m.vmId,
        config: m.config,
        generation,
        kind,
        totalPages: memory.totalPages,
        targetState,
        sourceHostId: host.settings.id,
      },
    });
    let round = 0;
    report('MIGRATION_PHASE_TRANSFERRING', round, total);
    const first = memory.residentPageNumbers();
    let sentFirst = 0;
    bytes += await sendPages(sink, memory, first, round, () => {
      sentFirst = Math.min(first.length, sentFirst + PAGES_PER_CHUNK);
      if (sentFirst % (PAGES_PER_CHUNK * 16) === 0)
        report('MIGRATION_PHASE_TRANSFERRING', round, first.length - sentFirst);
    });

    if (live) {
      const maxRounds = o.maxRounds || 10;
      const threshold = o.stopCopyThresholdPages || 256;
      while (round < maxRounds) {
        host.pump(); // let the guest run (and dirty pages) up to now
        if (memory.dirtyPages < threshold) break;
        round++;
        const dirty = memory.takeDirty();
        report('MIGRATION_PHASE_TRANSFERRING', round, dirty.length);
        bytes += await sendPages(sink, memory, dirty, round);
      }
    }

    // Stop-and-copy: the VM stops here; what is still dirty goes with the device state.
    const deviceState = saved ? saved.deviceState : await host.mutate(() => m.freeze());
    // The guest's network state (connections, NLB member) travels with it.
    const network = saved ? undefined : host.network?.handOff(m.vmId);
    if (live) stoppedAtMs = host.now();
    round++;
    const last = memory.takeDirty();
    report('MIGRATION_PHASE_STOP_AND_COPY', round, last.length);
    bytes += await sendPages(sink, memory, last, round);
    if (network) await sink.write({ networkState: network });
    await sink.write({ deviceState: { data: deviceState } });
    const sha256 = memory.stateHash(deviceState);
    // Without the trailer the target installs nothing: send it only if the VM is still ours
    // (a lease expiry meanwhile has turned it off, and the daemon may restart it elsewhere).
    if (!host.read(() => m.active)) {
      throw failedPrecondition(`VM '${m.name}' stopped migrating: ${m.message}`);
    }
    await sink.write({ trailer: { sha256, rounds: round, stoppedAtMs } });
    call!.end();
    const res = await response;
    if (res.sha256 !== sha256)
      throw failedPrecondition(`target verified hash ${quote(res.sha256)}, expected ${sha256}`);
    await host.mutate(() => m.complete(o.targetAddress));
    host.network?.migrationEnded(m.vmId, true);
    const done: pb.MigrationProgress = {
      phase: 'MIGRATION_PHASE_COMPLETED',
      round,
      bytesTransferred: bytes,
      pagesRemaining: 0,
      progressPercent: 100,
      downtimeMs: Math.max(0, Number(res.resumedAtMs) - stoppedAtMs),
      verifiedSha256: res.sha256,
    };
    progress(done);
    host.logger.info(
      { vmId: m.vmId, target: o.targetAddress, kind, rounds: round, bytes, downtimeMs: done.downtimeMs },
      'migrated out',
    );
    return done;
  } catch (err) {
    call?.cancel();
    const reason = (err as Error).message;
    await host.mutate(() => m.abort(reason));
    host.network?.migrationEnded(m.vmId, false);
    host.logger.warn({ vmId: m.vmId, err: reason }, 'migration failed; the VM stays here');
    throw err instanceof ApiError
      ? err
      : new ApiError(status.ABORTED, `migration of VM '${m.name}' failed: ${reason}`);
  } finally {
    client.close();
  }
}

/**
 * The target's side: checks each page's bytes against the (VM, page, version) derivation as it
 * arrives, the whole against the trailer's hash, and only then installs the VM, running.
 */
export async function importVm(
  host: AgentHost,
  chunks: AsyncIterable<pb.MigrationChunk__Output>,
): Promise<pb.ImportVmResponse> {
  let incoming: IncomingMigration | undefined;
  let header: pb.MigrationHeader__Output | undefined;
  let memory: GuestMemory | undefined;
  let deviceState: Buffer | undefined;
  let bytes = 0;
  const expected = Buffer.alloc(PAGE_SIZE);
  try {
    for await (const chunk of chunks) {
      if (chunk.header) {
        if (header) throw invalidArgument('header', 'sent twice');
        header = chunk.header;
        const config = normalizeConfig(header.config ?? {});
        const target = header.targetState;
        if (!IMPORT_STATES.includes(target))
          throw invalidArgument('header.target_state', 'must be RUNNING, PAUSED or SAVED');
        if (header.totalPages * PAGE_SIZE !== config.memoryBytes) {
          throw invalidArgument(
            'header.total_pages',
            `${header.totalPages} pages do not match memory_bytes ${config.memoryBytes}`,
          );
        }
        const h = header;
        incoming = await host.mutate((e) => e.migration.in(h.vmId, config, h.generation));
        confineDisks(host.folders, h.vmId, config, 'header.config');
        memory = new GuestMemory(header.vmId, header.totalPages);
      } else if (chunk.pages) {
        if (!memory) throw invalidArgument('pages', 'arrived before the header');
        for (const p of chunk.pages.pages) {
          checkPage(memory, 'pages.pages.number', p.number);
          fillPage(memory.seed, p.number, p.version, expected);
          if (!expected.equals(p.data)) {
            throw new ApiError(
              status.DATA_LOSS,
              `page ${p.number} version ${p.version} arrived with the wrong content`,
            );
          }
          memory.install(p.number, p.version);
          bytes += p.data.length + 16;
        }
        for (const z of chunk.pages.zeroPages) {
          checkPage(memory, 'pages.zero_pages', z);
          memory.install(z, 0);
          bytes += 8;
        }
      } else if (chunk.networkState) {
        if (!header) throw invalidArgument('network_state', 'arrived before the header');
        host.network?.adopt(header.vmId, chunk.networkState);
        bytes += chunk.networkState.length;
      } else if (chunk.deviceState) {
        deviceState = chunk.deviceState.data;
        bytes += deviceState.length;
      } else if (chunk.trailer) {
        if (!memory || !incoming || !deviceState)
          throw invalidArgument('trailer', 'arrived before the header, pages and device state');
        const sha256 = memory.stateHash(deviceState);
        if (sha256 !== chunk.trailer.sha256) {
          throw new ApiError(
            status.DATA_LOSS,
            `state hash mismatch: computed ${sha256}, the source sent ${quote(chunk.trailer.sha256)}`,
          );
        }
        const target =
          header!.targetState === 'VM_STATE_UNSPECIFIED' ? 'VM_STATE_RUNNING' : header!.targetState;
        const device = decodeDeviceState(deviceState, 'device_state.data');
        const mem = memory;
        const m = incoming;
        const vm = await host.mutate(() => m.install(mem, device, target));
        await host.prepareMigratedDisks(vm.id);
        if (target === 'VM_STATE_SAVED') {
          // Answer only once the saved state is on this host's disk: the source deletes its copy.
          await host.settle();
          const now = host.read((e) => e.vms.get(vm.id));
          if (now.status!.state !== 'VM_STATE_SAVED') {
            throw new ApiError(
              status.INTERNAL,
              `could not write the imported saved state: ${now.status!.message}`,
            );
          }
        }
        host.logger.info(
          { vmId: vm.id, from: header!.sourceHostId, bytes, state: stateName(vm.status!.state) },
          'migrated in',
        );
        return { vmId: vm.id, sha256, bytesReceived: bytes, resumedAtMs: host.now() };
      }
    }
    throw invalidArgument('trailer', 'the stream ended before the trailer');
  } finally {
    if (incoming) {
      const m = incoming;
      await host.mutate(() => m.release());
    }
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
function checkAddress(field: string, address: string): void {
  if (!address) throw invalidArgument(field, 'the target agent address is required');
  if (
    !/^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/.test(address) ||
    Number(address.split(':').pop()) > 65535
  )
    throw invalidArgument(field, 'must be host:port');
}

/** The pull side: a Saved VM's whole state as chunks, without changing it. */
export async function exportVm(
  host: AgentHost,
  req: pb.ExportVmRequest__Output,
  stream: grpc.ServerWritableStream<pb.ExportVmRequest__Output, pb.MigrationChunk>,
): Promise<void> {
  const vm = await host.mutate((e) => e.migration.exportSaved(req.vmId, req.generation));
  const { memory, deviceState } = await readSavedState(host.savedStatePath(vm.id), vm.id);
  const sink = streamSink(stream);
  await sink.write({
    header: {
      vmId: vm.id,
      config: vm.config,
      generation: vm.status!.generation,
      kind: 'MIGRATION_KIND_QUICK',
      totalPages: memory.totalPages,
      targetState: vm.status!.state,
      sourceHostId: host.settings.id,
    },
  });
  await sendPages(sink, memory, memory.residentPageNumbers(), 0);
  await sink.write({ deviceState: { data: deviceState } });
  await sink.write({ trailer: { sha256: memory.stateHash(deviceState), rounds: 0, stoppedAtMs: 0 } });
}
