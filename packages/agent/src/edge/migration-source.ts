import type * as grpc from '@grpc/grpc-js';
import type { Socket } from 'node:net';
import { ApiError, failedPrecondition, invalidArgument, status, type pb } from '@hyperfarm/api';
import { Convergence } from '../engine/converge.js';
import type { OutgoingMigration, SnapshotFacts } from '../engine/engine.js';
import type { GuestMemory } from '../engine/memory.js';
import type { AgentHost } from './agent-host.js';
import { socketSink, type DataChannelListener, type DataSink } from './migration-data.js';
import { checkMigrationId, sendPages, streamSink, type Sink } from './migration-wire.js';
import type { MigrationTracker } from './migration-tracker.js';
import { readSavedState } from './saved-state.js';

/** Longest wait for the reader to take data before the stream is given up. */
const MAX_IDLE_MS = 10_000;
/** Defaults of a live migration (QEMU's downtime limit is 300 ms; ours aims lower). */
export const DEFAULT_MAX_ROUNDS = 30;
export const DEFAULT_DOWNTIME_LIMIT_MS = 30;

type ExportStream = grpc.ServerWritableStream<pb.ExportVmRequest__Output, pb.MigrationChunk>;

/** How long the reader may leave the stream idle: half of what its deadline leaves, at most 10 s. */
function idleLimit(stream: ExportStream): number {
  const deadline = stream.getDeadline();
  const left = deadline instanceof Date ? deadline.getTime() - Date.now() : Infinity;
  return Math.max(100, Math.min(MAX_IDLE_MS, left / 2));
}

/**
 * The source's side of a migration, as the target pulls it (ExportVm with a migration id).
 * Quick: the VM stops at once and its whole state goes in one round. Live: rounds of dirty
 * pages go while it runs (throttled if they do not converge), then it stops for a short final
 * copy. Its disks are quiesced and closed before the trailer goes, so the target opens them
 * whole. From the moment the trailer is handed to the stream the copy here stays frozen until
 * the handover decision (CommitMigration or AbortMigration); a failure before that moment lets
 * the VM go on here, since the target cannot hold it whole.
 */
export async function exportMigration(
  host: AgentHost,
  req: pb.ExportVmRequest__Output,
  stream: ExportStream,
  tracker: MigrationTracker,
  facts: SnapshotFacts,
  dataChannel?: DataChannelListener,
): Promise<void> {
  const id = checkMigrationId('migration_id', req.migrationId);
  const kind = req.kind === 'MIGRATION_KIND_UNSPECIFIED' ? 'MIGRATION_KIND_QUICK' : req.kind;
  if (kind !== 'MIGRATION_KIND_QUICK' && kind !== 'MIGRATION_KIND_LIVE')
    throw invalidArgument('kind', 'must be QUICK or LIVE');
  const vmId = host.read((e) => e.vms.get(req.vmId)).id;
  await host.claimFiles(vmId, 'migrate');
  const m = await host.mutate((e) =>
    e.migration.out(vmId, req.generation, kind, facts, id, host.folders.shared),
  );
  if (req.targetGeneration <= m.generation) {
    await host.mutate(() => m.abandon('bad target generation'));
    throw invalidArgument(
      'target_generation',
      `must be above the VM's generation ${m.generation}, not ${req.targetGeneration}`,
    );
  }
  tracker.start(id, m.vmId, 'MIGRATION_ROLE_SOURCE', m.generation);
  let releaseDisks: (() => void) | undefined;
  const opened = new Opened(stream, req.dataChannel ? dataChannel : undefined);
  try {
    const sent = await sendState(host, m, req, opened, tracker, (release) => (releaseDisks = release));
    await opened.finish();
    tracker.update(id, { stage: 'MIGRATION_STAGE_FROZEN', ...sent });
    host.logger.info(
      { vmId: m.vmId, migration: id, target: req.targetHostId, kind, ...sent },
      'migration: final state handed over; holding the VM frozen until the decision',
    );
  } catch (err) {
    opened.fail();
    const reason = (err as Error).message;
    if (m.handedOver) {
      // The target may hold the VM whole: only the decision may move it now.
      host.logger.warn(
        { vmId: m.vmId, migration: id, err: reason },
        'migration stream failed after the hand-over',
      );
      tracker.update(id, {
        stage: 'MIGRATION_STAGE_FROZEN',
        message: `stream failed after the hand-over: ${reason}`,
      });
    } else {
      releaseDisks?.();
      releaseDisks = undefined;
      await host.mutate(() => m.abandon(reason));
      host.network?.migrationEnded(m.vmId, false);
      tracker.update(id, { stage: 'MIGRATION_STAGE_ABORTED', message: reason });
      host.logger.warn({ vmId: m.vmId, migration: id, err: reason }, 'migration failed; the VM stays here');
    }
    throw err instanceof ApiError
      ? err
      : new ApiError(status.ABORTED, `migration of VM '${m.name}' failed: ${reason}`);
  } finally {
    // Held until the decision: CommitMigration drops the VM, AbortMigration lets its I/O go on.
    if (releaseDisks) host.frozenDisks.set(m.vmId, releaseDisks);
  }
}

/**
 * Where a migration stream goes after its header: the gRPC stream, or the data connection the
 * header offers when the target asked for one and this host has a listener.
 */
class Opened {
  private socket: Socket | undefined;
  private data: DataSink | undefined;
  private readonly idleMs: number;

  constructor(
    private readonly stream: ExportStream,
    private readonly dataChannel: DataChannelListener | undefined,
  ) {
    this.idleMs = idleLimit(stream);
  }

  /** Sends the header; returns the sink for the rest. */
  async open(header: pb.MigrationHeader): Promise<Sink> {
    const control = streamSink(this.stream, this.idleMs);
    if (!this.dataChannel) {
      await control.write({ header });
      return control;
    }
    const offer = await this.dataChannel.offer(this.idleMs);
    const gone = () => offer.withdraw('the stream ended before the data connection opened');
    this.stream.once('cancelled', gone);
    this.stream.once('close', gone);
    try {
      await control.write({ header: { ...header, dataPort: offer.port, dataToken: offer.token } });
      this.socket = await offer.connection;
    } finally {
      this.stream.off('cancelled', gone);
      this.stream.off('close', gone);
    }
    return (this.data = socketSink(this.socket, this.idleMs, this.stream));
  }

  /** The trailer is written: the export ends once it has gone out on the data connection. */
  async finish(): Promise<void> {
    await this.data?.finish();
  }

  fail(): void {
    this.socket?.destroy();
  }
}

async function sendState(
  host: AgentHost,
  m: OutgoingMigration,
  req: pb.ExportVmRequest__Output,
  opened: Opened,
  tracker: MigrationTracker,
  disksHeld: (release: () => void) => void,
): Promise<{ bytesTransferred: number; rounds: number; throttlePercent: number; sha256: string }> {
  // A Saved VM moves as its saved state: read back (and checked) from its file, one round.
  let saved: { memory: GuestMemory; deviceState: Buffer } | undefined;
  if (!m.memory) saved = await readSavedState(host.savedStatePath(m.vmId), m.vmId);
  const memory = m.memory ?? saved!.memory;
  const live = m.kind === 'MIGRATION_KIND_LIVE' && !saved;
  let bytes = 0;
  const progress = (round: number, throttlePercent: number) =>
    tracker.update(m.id, { bytesTransferred: bytes, rounds: round, throttlePercent });

  const sink = await opened.open({
    vmId: m.vmId,
    config: m.config,
    generation: req.targetGeneration,
    kind: m.kind,
    totalPages: memory.totalPages,
    targetState: saved ? 'VM_STATE_SAVED' : m.state,
    sourceHostId: host.settings.id,
  });
  let round = 0;
  const stoppedNow = !live && !saved;
  let started = performance.now();
  bytes += await sendPages(sink, memory, memory.residentPageNumbers(), round, stoppedNow, () =>
    progress(round, 0),
  );
  const conv = new Convergence({
    downtimeLimitMs: req.downtimeLimitMs || DEFAULT_DOWNTIME_LIMIT_MS,
    maxRounds: req.maxRounds || DEFAULT_MAX_ROUNDS,
    autoConverge: !req.noAutoConverge,
    thresholdPages: req.stopCopyThresholdPages,
  });
  if (live) {
    let roundBytes = bytes;
    for (;;) {
      host.pump(); // the guest runs (and dirties pages) up to now
      const now = performance.now();
      const { stop } = conv.afterRound(round, {
        bytes: roundBytes,
        ms: now - started,
        dirtyPages: memory.dirtyPages,
      });
      if (conv.throttle > 0) await host.mutate(() => m.throttle(conv.throttle));
      if (stop) break;
      round++;
      started = now;
      roundBytes = await sendPages(sink, memory, memory.takeDirty(), round, false);
      bytes += roundBytes;
      progress(round, conv.throttle);
    }
    // Hash what is hashed already while the guest still runs: the stop-and-copy then hashes
    // only what its last round touched.
    memory.refreshDigests();
  }

  // Stop-and-copy: the VM stops here; what is still dirty goes with the device state.
  const deviceState = saved ? saved.deviceState : host.change(() => m.freeze());
  if (live) {
    round++;
    bytes += await sendPages(sink, memory, memory.takeDirty(), round, true);
  }
  // The guest's network state (connections, NLB member) travels with it; the network here keeps
  // it until the decision, to give it back if the VM stays.
  const network = saved ? undefined : host.network?.handOff(m.vmId);
  if (network) {
    await sink.write({ networkState: network });
    bytes += network.length;
  }
  await sink.write({ deviceState: { data: deviceState } });
  bytes += deviceState.length;
  // The guest's disk writes are over and its files closed, so the target opens them whole.
  if (!saved) disksHeld(await host.quiesceDisks(m.vmId));
  const sha256 = memory.stateHash(deviceState);
  // Without the trailer the target holds nothing whole: send it only if the VM is still ours (a
  // lease expiry meanwhile has turned it off, and the daemon may restart it elsewhere).
  if (!host.change(() => m.handOver()))
    throw failedPrecondition(`VM '${m.name}' stopped migrating: ${m.message}`);
  await sink.write({ trailer: { sha256, rounds: round, stoppedAtMs: saved ? 0 : host.now() } });
  progress(round, conv.throttle);
  return { bytesTransferred: bytes, rounds: round, throttlePercent: conv.throttle, sha256 };
}

/** The copy side of ExportVm (no migration id): a Saved VM's whole state, without changing it. */
export async function exportSaved(
  host: AgentHost,
  req: pb.ExportVmRequest__Output,
  stream: ExportStream,
): Promise<void> {
  const vm = await host.mutate((e) => e.migration.exportSaved(req.vmId, req.generation));
  const { memory, deviceState } = await readSavedState(host.savedStatePath(vm.id), vm.id);
  const sink = streamSink(stream, idleLimit(stream));
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
  await sendPages(sink, memory, memory.residentPageNumbers(), 0, false);
  await sink.write({ deviceState: { data: deviceState } });
  await sink.write({ trailer: { sha256: memory.stateHash(deviceState), rounds: 0, stoppedAtMs: 0 } });
}
