import type * as grpc from '@grpc/grpc-js';
import {
  ApiError,
  createClient,
  failedPrecondition,
  hyperfarmProto,
  invalidArgument,
  isServiceError,
  status,
  type ClientOptions,
  type pb,
} from '@hyperfarm/api';
import type { IncomingMigration } from '../engine/engine.js';
import type { AgentHost } from './agent-host.js';
import type { Checkpoints } from './checkpoints.js';
import { confineDisks } from './disk-files.js';
import { DataChannelReader, hostOf } from './migration-data.js';
import { checkAddress, checkMigrationId, Receiver, type ReceivedVm } from './migration-wire.js';
import type { MigrationTracker } from './migration-tracker.js';

/**
 * The reading side's HTTP/2 flow-control window: grpc-js honours a large window only on the
 * client, which is why the target pulls. 64 MiB keeps a fast link busy across a round trip.
 */
const FLOW_CONTROL_WINDOW = 64 * 1024 * 1024;
/** Batches are 2 MiB; allow room above gRPC's 4 MiB default. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Defaults of MigrateInRequest. */
const DEFAULT_DEADLINE_MS = 30_000;
const DEADLINE_MS_PER_64_MIB = 1_000;
const DEFAULT_HOLD_MS = 120_000;
const MAX_IDLE_MS = 10_000;
/** Pre-copy batches (2 MiB each) between two passes of hashing what arrived. */
const HASH_EVERY_BATCHES = 32;

interface Pull {
  done: Promise<ReceivedVm>;
  cancel(reason: string): void;
  listeners: Set<(p: pb.MigrationProgress) => void>;
}

interface Held {
  received: ReceivedVm;
  incoming: IncomingMigration;
  timer: NodeJS.Timeout;
}

/**
 * The target's side of migrations: pulls (MigrateIn), holds what arrived whole until the
 * decision, installs on CommitMigration and discards on AbortMigration or when the hold runs out.
 * An import that was not committed never runs: it is never in the engine until the commit.
 */
export class MigrationTarget {
  private readonly pulls = new Map<string, Pull>();
  private readonly held = new Map<string, Held>();
  /** Commits under way: a repeated commit (its first answer was lost) waits for the same one. */
  private readonly committing = new Map<string, Promise<pb.MigrationStatus__Output>>();

  constructor(
    private readonly host: AgentHost,
    private readonly tracker: MigrationTracker,
    private readonly checkpoints: Checkpoints,
    private readonly client: ClientOptions = {},
    /** Ask sources for a data connection (MigrationHeader.data_port). */
    private readonly dataChannel = false,
  ) {}

  /**
   * Pulls the VM and holds it; resolves with the PREPARED report. A repeated call for the same
   * migration (a new leader driving it) joins the pull under way, or answers at once if the VM
   * is held already.
   */
  async migrateIn(req: pb.MigrateInRequest__Output, progress: (p: pb.MigrationProgress) => void) {
    const id = checkMigrationId('migration_id', req.migrationId);
    const held = this.held.get(id);
    if (held) return prepared(held.received);
    let pull = this.pulls.get(id);
    if (!pull) {
      checkRequest(req);
      pull = this.startPull(id, req);
    }
    pull.listeners.add(progress);
    try {
      return prepared(await pull.done);
    } finally {
      pull.listeners.delete(progress);
    }
  }

  private startPull(id: string, req: pb.MigrateInRequest__Output): Pull {
    this.tracker.start(id, req.vmId, 'MIGRATION_ROLE_TARGET', req.targetGeneration);
    const pull: Pull = {
      listeners: new Set(),
      cancel: () => undefined,
      done: undefined as unknown as Promise<ReceivedVm>,
    };
    pull.done = this.receive(id, req, pull).then(
      ({ received, incoming }) => {
        this.hold(id, received, incoming, req.holdMs || DEFAULT_HOLD_MS);
        return received;
      },
      (err: unknown) => {
        const reason = (err as Error).message;
        this.tracker.update(id, { stage: 'MIGRATION_STAGE_ABORTED', message: reason });
        this.host.logger.warn(
          { migration: id, vmId: req.vmId, err: reason },
          'migration in failed; nothing held',
        );
        throw err;
      },
    );
    this.pulls.set(id, pull);
    const forget = () => this.pulls.delete(id);
    pull.done.then(forget, forget);
    return pull;
  }

  /** Reads the source's export to the end, checking every part; the memory is reserved here. */
  private async receive(
    id: string,
    req: pb.MigrateInRequest__Output,
    pull: Pull,
  ): Promise<{ received: ReceivedVm; incoming: IncomingMigration }> {
    const host = this.host;
    const emit = (p: pb.MigrationProgress) => {
      for (const l of pull.listeners) l(p);
    };
    let cancelled: string | undefined;
    let call: grpc.ClientReadableStream<pb.MigrationChunk__Output> | undefined;
    let data: DataChannelReader | undefined;
    pull.cancel = (reason) => {
      cancelled ??= reason;
      call?.cancel();
      data?.close();
    };
    let incoming: IncomingMigration | undefined;
    let idle: NodeJS.Timeout | undefined;
    const client = createClient(hyperfarmProto().hyperfarm.v1.MigrationService, req.sourceAddress, {
      ...this.client,
      maxMessageBytes: MAX_MESSAGE_BYTES,
      channelOptions: { 'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW },
    });
    try {
      let deadline = Date.now() + (req.deadlineMs || DEFAULT_DEADLINE_MS);
      const idleMs = Math.min(MAX_IDLE_MS, Math.max(100, (req.deadlineMs || DEFAULT_DEADLINE_MS) / 2));
      // Every wait is bounded: no message for `idleMs` (a frozen or partitioned source), or the
      // whole pull past its deadline, cancels the call.
      const arm = () => {
        clearTimeout(idle);
        const left = deadline - Date.now();
        idle = setTimeout(
          () =>
            pull.cancel(
              left <= idleMs
                ? 'the transfer did not finish within its deadline'
                : `the source sent nothing for ${idleMs} ms`,
            ),
          Math.max(0, Math.min(idleMs, left)),
        );
      };
      let round = -1;
      let batches = 0;
      let memoryBytes = 0;
      const receiver = new Receiver(
        {
          header: async (h, config) => {
            incoming = await host.mutate((e) => e.migration.in(h.vmId, config, h.generation));
            confineDisks(host.folders, h.vmId, config, 'header.config');
            memoryBytes = config.memoryBytes;
            // Without a deadline of its own, the pull gets 1 s per 64 MiB of memory more.
            if (!req.deadlineMs) deadline += Math.ceil(memoryBytes / 2 ** 26) * DEADLINE_MS_PER_64_MIB;
          },
          batch: (r, stopped, bytes) => {
            const total = this.tracker.get(id)!.bytesTransferred + bytes;
            this.tracker.update(id, { bytesTransferred: total, rounds: r });
            // Hash what has arrived every 64 MiB of a pre-copy round: an idle guest's memory has
            // no second round, and hashing 4 GiB after the stop took 125-200 ms of its downtime.
            if (!stopped && ++batches % HASH_EVERY_BATCHES === 0) receiver.memorySoFar?.refreshDigests();
            if (r === round && !stopped) return;
            // A round is over: hash what arrived while the next one comes, so that the end of
            // the stop-and-copy hashes only its own pages.
            if (r !== round && !stopped) receiver.memorySoFar?.refreshDigests();
            round = r;
            emit({
              phase: stopped ? 'MIGRATION_PHASE_STOP_AND_COPY' : 'MIGRATION_PHASE_TRANSFERRING',
              round: r,
              bytesTransferred: total,
              progressPercent: memoryBytes ? Math.min(99, (100 * total) / memoryBytes) : 0,
            });
          },
          // Kept by the network until the VM appears here (or for a minute, if it never does).
          networkState: (vmId, state) => host.network?.adopt(vmId, state),
          now: () => host.now(),
        },
        { vmId: req.vmId, generation: req.targetGeneration },
      );
      call = client.exportVm(
        {
          vmId: req.vmId,
          generation: req.sourceGeneration,
          migrationId: id,
          kind: req.kind,
          targetGeneration: req.targetGeneration,
          maxRounds: req.maxRounds,
          downtimeLimitMs: req.downtimeLimitMs,
          noAutoConverge: req.noAutoConverge,
          stopCopyThresholdPages: req.stopCopyThresholdPages,
          targetHostId: host.settings.id,
          dataChannel: this.dataChannel,
        },
        { deadline: Date.now() + (req.deadlineMs || 60 * 60_000) },
      );
      const callEnd = watchEnd(call);
      if (cancelled) call.cancel();
      arm();
      let received: ReceivedVm | undefined;
      // Iterated by hand: leaving a for-await loop would destroy the call, which the source
      // watches while it sends over the data connection.
      const messages = (call as AsyncIterable<pb.MigrationChunk__Output>)[Symbol.asyncIterator]();
      for (let next = await messages.next(); !next.done; next = await messages.next()) {
        arm();
        received = await receiver.take(next.value);
        if (received) break;
        const offer = next.value.header;
        if (offer?.dataPort) {
          data = new DataChannelReader(hostOf(req.sourceAddress), offer.dataPort, offer.dataToken);
          if (cancelled) data.close();
          received = await readDataChannel(data, callEnd, async (chunk) => {
            arm();
            return receiver.take(chunk);
          });
          break;
        }
      }
      if (cancelled) throw new ApiError(status.ABORTED, `migration ${id}: ${cancelled}`);
      if (!received) throw invalidArgument('trailer', 'the stream ended before the trailer');
      return { received, incoming: incoming! };
    } catch (err) {
      if (incoming) {
        const m = incoming;
        await host.mutate(() => m.release());
      }
      if (cancelled) throw new ApiError(status.ABORTED, `migration ${id}: ${cancelled}`);
      // A refusal from the source (a stale generation, a VM that cannot move) keeps its status.
      if (err instanceof ApiError || isServiceError(err)) throw err;
      throw new ApiError(status.UNAVAILABLE, `migration ${id}: ${(err as Error).message}`);
    } finally {
      clearTimeout(idle);
      data?.close();
      client.close();
    }
  }

  private hold(id: string, received: ReceivedVm, incoming: IncomingMigration, holdMs: number): void {
    const timer = setTimeout(() => {
      void this.discard(id, `no decision within ${holdMs} ms`);
    }, holdMs);
    timer.unref();
    this.held.set(id, { received, incoming, timer });
    this.tracker.update(id, {
      stage: 'MIGRATION_STAGE_PREPARED',
      sha256: received.sha256,
      bytesTransferred: received.bytes,
      rounds: received.rounds,
    });
    this.host.logger.info(
      { migration: id, vmId: received.header.vmId, bytes: received.bytes, rounds: received.rounds },
      'migration in: verified, held paused until the decision',
    );
  }

  private async discard(id: string, reason: string): Promise<void> {
    const held = this.held.get(id);
    if (!held) return;
    this.held.delete(id);
    clearTimeout(held.timer);
    await this.host.mutate(() => held.incoming.release());
    this.tracker.update(id, { stage: 'MIGRATION_STAGE_ABORTED', message: reason });
    this.host.logger.info(
      { migration: id, vmId: held.received.header.vmId, reason },
      'migration in: discarded',
    );
  }

  /** The decision to commit: the VM held runs here, under the target generation. */
  commit(req: pb.ResolveMigrationRequest__Output): Promise<pb.MigrationStatus__Output> {
    const id = checkMigrationId('migration_id', req.migrationId);
    let pending = this.committing.get(id);
    if (!pending) {
      pending = this.commitNow(id, req).finally(() => this.committing.delete(id));
      this.committing.set(id, pending);
    }
    return pending;
  }

  private async commitNow(
    id: string,
    req: pb.ResolveMigrationRequest__Output,
  ): Promise<pb.MigrationStatus__Output> {
    const held = this.held.get(id);
    if (!held) {
      if (this.committedHere(req)) return this.tracker.status(id);
      const known = this.tracker.get(id);
      throw failedPrecondition(
        `cannot commit migration ${id} here: ${
          this.pulls.has(id)
            ? 'the VM is still arriving'
            : known
              ? `nothing is held (${known.message || 'discarded'})`
              : 'nothing is held (this agent knows nothing of it: it restarted, or never took part)'
        }`,
      );
    }
    const header = held.received.header;
    if (req.targetGeneration !== header.generation)
      throw invalidArgument(
        'target_generation',
        `is ${req.targetGeneration}, but the VM held here comes with generation ${header.generation}`,
      );
    clearTimeout(held.timer);
    this.held.delete(id);
    let runningAtMs: number;
    try {
      runningAtMs = await installMigratedVm(this.host, this.checkpoints, held);
    } catch (err) {
      await this.host.mutate(() => held.incoming.release());
      this.tracker.update(id, { stage: 'MIGRATION_STAGE_ABORTED', message: (err as Error).message });
      throw err;
    }
    const stopped = held.received.stoppedAtMs;
    const downtimeMs = stopped > 0 ? Math.max(0, runningAtMs - stopped) : 0;
    this.tracker.update(id, {
      stage: 'MIGRATION_STAGE_COMMITTED',
      downtimeMs,
      generation: header.generation,
    });
    this.host.logger.info({ migration: id, vmId: header.vmId, downtimeMs }, 'migrated in: running here');
    return this.tracker.status(id);
  }

  private committedHere(req: pb.ResolveMigrationRequest__Output): boolean {
    const e = this.host.engine;
    return e.vms.has(req.vmId) && e.vms.get(req.vmId).status!.generation >= req.targetGeneration;
  }

  /** The decision not to hand over: whatever arrives or is held here is discarded. */
  async abort(req: pb.ResolveMigrationRequest__Output, reason: string): Promise<pb.MigrationStatus__Output> {
    const id = checkMigrationId('migration_id', req.migrationId);
    await this.committing.get(id)?.catch(() => undefined);
    const pull = this.pulls.get(id);
    if (pull) {
      pull.cancel(`aborted: ${reason}`);
      await pull.done.catch(() => undefined);
    }
    if (this.held.has(id)) await this.discard(id, `aborted: ${reason}`);
    else if (this.tracker.get(id)?.stage === 'MIGRATION_STAGE_COMMITTED' || this.committedHere(req)) {
      throw failedPrecondition(`cannot abort migration ${id} here: it was committed and the VM runs here`);
    }
    return this.tracker.status(id);
  }
}

/**
 * Installs a migrated VM on the decision to commit: the one place a migrated VM appears on this
 * host. Its files are claimed first (on cluster storage, under the new generation), its snapshot
 * records taken from the manifest the source keeps beside them, then it runs. Returns this host's
 * clock when the guest ran again here, where the downtime ends (the answer waits on, until the
 * VM's record is on disk).
 */
async function installMigratedVm(host: AgentHost, checkpoints: Checkpoints, held: Held): Promise<number> {
  const { header, memory, device } = held.received;
  const vmId = header.vmId;
  if (host.cluster) {
    await host.cluster.claim(vmId, header.generation, 'take over');
    const manifest = await host.cluster.manifest(vmId);
    if (manifest?.vmId === vmId && manifest.checkpoints.length > 0)
      await checkpoints.adopt(vmId, manifest.checkpoints, manifest.currentId);
  }
  const target = header.targetState === 'VM_STATE_UNSPECIFIED' ? 'VM_STATE_RUNNING' : header.targetState;
  let runningAtMs = 0;
  const vm = await host.mutate(() => {
    const installed = held.incoming.install(memory, device, target);
    runningAtMs = host.now();
    return installed;
  });
  if (!host.cluster) await host.prepareMigratedDisks(vm.id);
  if (target === 'VM_STATE_SAVED') {
    // Answer only once the saved state is on this host's disk: the source deletes its copy.
    await host.settle();
    const now = host.read((e) => e.vms.get(vm.id));
    if (now.status!.state !== 'VM_STATE_SAVED')
      throw new ApiError(status.INTERNAL, `could not write the imported saved state: ${now.status!.message}`);
  }
  return runningAtMs;
}

/**
 * Takes the rest of a stream from its data connection. The source reports a failure on the gRPC
 * call and drops the connection, in either order: a connection that fails is answered with the
 * call's error once the call has ended, so the source's reason (a stale generation, a VM that
 * stopped migrating) reaches the caller rather than "the data connection closed".
 */
async function readDataChannel(
  data: DataChannelReader,
  call: CallEnd,
  take: (chunk: pb.MigrationChunk__Output) => Promise<ReceivedVm | undefined>,
): Promise<ReceivedVm | undefined> {
  call.onError((err) => data.fail(err));
  try {
    for await (const chunk of data) {
      const received = await take(chunk);
      if (received) return received;
    }
    return undefined;
  } catch (err) {
    await call.ended;
    throw call.error ?? err;
  }
}

interface CallEnd {
  /** Resolves once the call has its status (a cancel gives it one at once). */
  ended: Promise<void>;
  error: Error | undefined;
  /** Runs now if the call failed already, else when it fails. */
  onError(listener: (err: Error) => void): void;
}

function watchEnd(call: grpc.ClientReadableStream<pb.MigrationChunk__Output>): CallEnd {
  const end: CallEnd = {
    // grpc-js may emit the status before the error: the status alone says how the call failed.
    ended: new Promise<void>((resolve) =>
      call.on('status', (s: grpc.StatusObject) => {
        if (s.code !== status.OK) end.error ??= new ApiError(s.code, s.details);
        resolve();
      }),
    ),
    error: undefined,
    onError: (listener) => {
      if (end.error) listener(end.error);
      else call.on('error', listener);
    },
  };
  call.on('error', (err: Error) => (end.error ??= err));
  return end;
}

function checkRequest(req: pb.MigrateInRequest__Output): void {
  if (!req.vmId) throw invalidArgument('vm_id', 'is required');
  checkAddress('source_address', req.sourceAddress);
  if (req.targetGeneration <= req.sourceGeneration)
    throw invalidArgument(
      'target_generation',
      `must be above source_generation (${req.sourceGeneration}), not ${req.targetGeneration}`,
    );
  if (!['MIGRATION_KIND_UNSPECIFIED', 'MIGRATION_KIND_QUICK', 'MIGRATION_KIND_LIVE'].includes(req.kind))
    throw invalidArgument('kind', 'must be QUICK or LIVE');
}

function prepared(r: ReceivedVm): pb.MigrationProgress {
  return {
    phase: 'MIGRATION_PHASE_PREPARED',
    round: r.rounds,
    bytesTransferred: r.bytes,
    pagesRemaining: 0,
    progressPercent: 100,
    verifiedSha256: r.sha256,
  };
}
