import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import {
  ApiError,
  createClient,
  hyperfarmProto,
  invalidArgument,
  notFound,
  promiseClient,
  status,
  statusOf,
  type ClientOptions,
  type pb,
} from '@hyperfarm/api';
import type { AgentHost } from './agent-host.js';
import type { Checkpoints } from './checkpoints.js';
import { DataChannelListener } from './migration-data.js';
import { exportMigration, exportSaved } from './migration-source.js';
import { MigrationTarget } from './migration-target.js';
import { MigrationTracker } from './migration-tracker.js';
import { checkAddress, checkMigrationId } from './migration-wire.js';

/** How long MigrateOut keeps asking an unreachable target how the handover ended. */
const RESOLVE_FOR_MS = 60_000;
const QUICK_CALL_MS = 5_000;

/**
 * One host's part in migrations, as source and as target, and the decision it carries out.
 * The decision itself is taken elsewhere: by the daemon, in its log, or for a manual migration
 * (MigrateOut) by this host as the source, after the target said it holds the VM whole.
 */
export class AgentMigrations {
  readonly tracker = new MigrationTracker();
  readonly target: MigrationTarget;
  /** Where targets open data connections to this host as a source; none without a data channel. */
  private readonly dataChannel: DataChannelListener | undefined;

  constructor(
    private readonly host: AgentHost,
    private readonly checkpoints: Checkpoints,
    private readonly client: ClientOptions = {},
    /** host:port to listen on for data connections (bound on first use); unset: no data channel. */
    dataAddress?: () => string,
  ) {
    this.target = new MigrationTarget(host, this.tracker, checkpoints, client, dataAddress !== undefined);
    this.dataChannel = dataAddress && new DataChannelListener(dataAddress, host.logger);
  }

  /** Stops listening for data connections. */
  async close(): Promise<void> {
    await this.dataChannel?.close();
  }

  /** ExportVm: a migration out (with an id), or a copy of a Saved VM's state. */
  async exportVm(
    req: pb.ExportVmRequest__Output,
    stream: grpc.ServerWritableStream<pb.ExportVmRequest__Output, pb.MigrationChunk>,
  ): Promise<void> {
    if (!req.migrationId) return exportSaved(this.host, req, stream);
    const id = this.host.read((e) => e.vms.get(req.vmId)).id;
    const facts = await this.checkpoints.facts(id);
    return exportMigration(this.host, req, stream, this.tracker, facts, this.dataChannel);
  }

  async commit(req: pb.ResolveMigrationRequest__Output): Promise<pb.MigrationStatus__Output> {
    checkMigrationId('migration_id', req.migrationId);
    if (req.role === 'MIGRATION_ROLE_TARGET') return this.target.commit(req);
    requireSource(req);
    // The VM runs on the target now: the copy here goes (its shared files stay).
    await this.drop(
      req.vmId,
      req.targetGeneration,
      `migrated away (${req.migrationId}): it runs on its target`,
    );
    this.host.network?.migrationEnded(req.vmId, true);
    this.settle(req, 'MIGRATION_STAGE_COMMITTED', 'the copy here was dropped');
    return this.tracker.status(req.migrationId);
  }

  async abort(req: pb.ResolveMigrationRequest__Output): Promise<pb.MigrationStatus__Output> {
    checkMigrationId('migration_id', req.migrationId);
    const reason = req.reason || 'aborted';
    if (req.role === 'MIGRATION_ROLE_TARGET') return this.target.abort(req, reason);
    requireSource(req);
    const resumed = await this.host.mutate((e) => e.migration.abort(req.vmId, req.migrationId, reason));
    this.releaseDisks(req.vmId);
    this.host.network?.migrationEnded(req.vmId, false);
    this.settle(req, 'MIGRATION_STAGE_ABORTED', resumed ? `resumed: ${reason}` : reason);
    return this.tracker.status(req.migrationId);
  }

  /**
   * Removes a stale copy (DropStaleVm, or the source's side of a commit): returns the state it
   * was in, undefined if this host has none.
   */
  async drop(vmId: string, generation: number, why: string): Promise<pb.VmState__Output | undefined> {
    const was = await this.host.mutate((e) => e.migration.dropStale(vmId, generation, why));
    this.releaseDisks(vmId);
    if (was !== undefined) await this.checkpoints.forgetVm(vmId);
    return was;
  }

  private releaseDisks(vmId: string): void {
    this.host.frozenDisks.get(vmId)?.();
    this.host.frozenDisks.delete(vmId);
  }

  private settle(req: pb.ResolveMigrationRequest__Output, stage: pb.MigrationStage__Output, message: string) {
    if (!this.tracker.get(req.migrationId))
      this.tracker.start(req.migrationId, req.vmId, 'MIGRATION_ROLE_SOURCE', req.targetGeneration);
    this.tracker.update(req.migrationId, { stage, message });
  }

  /**
   * MigrateOut: a migration this host drives by itself, for manual use without a daemon. The
   * target pulls the VM; once it holds it whole, this host decides to commit and tells it. If
   * the answer is lost, it asks the target how the handover ended before doing anything with
   * its own copy: it resumes only once the target cannot run the VM (it refused the commit, or
   * holds nothing), and drops its copy once the target runs it.
   */
  async migrateOut(
    req: pb.MigrateOutRequest__Output,
    selfAddress: string,
    progress: (p: pb.MigrationProgress) => void,
  ): Promise<void> {
    checkAddress('target_address', req.targetAddress);
    const id = req.migrationId
      ? checkMigrationId('migration_id', req.migrationId)
      : `mig-${randomBytes(6).toString('hex')}`;
    const vm = this.host.read((e) => e.vms.get(req.vmId));
    // Refused here before the target is bothered: a VM that cannot leave (its state, snapshots).
    const facts = await this.checkpoints.facts(vm.id);
    this.host.read((e) => e.migration.check(vm.id, req.generation, facts, this.host.folders.shared));
    const generation = req.generation || vm.status!.generation;
    const resolve = {
      migrationId: id,
      vmId: vm.id,
      targetGeneration: req.targetGeneration || generation + 1,
    };
    const agent = createClient(hyperfarmProto().hyperfarm.v1.AgentService, req.targetAddress, this.client);
    const p = promiseClient(agent);
    try {
      try {
        await new Promise<void>((done, fail) => {
          const call = agent.migrateIn({
            ...resolve,
            sourceAddress: selfAddress,
            sourceGeneration: req.generation,
            kind: req.kind,
            maxRounds: req.maxRounds,
            downtimeLimitMs: req.downtimeLimitMs,
            stopCopyThresholdPages: req.stopCopyThresholdPages,
          });
          call.on('data', (m: pb.MigrationProgress__Output) => {
            if (m.phase !== 'MIGRATION_PHASE_PREPARED') progress(m);
          });
          call.on('error', fail);
          call.on('end', () => done());
        });
      } catch (err) {
        // Not held whole on the target: it is told to discard (a discarded import never runs,
        // even if this message is lost), and the VM goes on here.
        const reason = (err as { details?: string }).details ?? (err as Error).message;
        await p
          .abortMigration({ ...resolve, role: 'MIGRATION_ROLE_TARGET', reason }, { timeoutMs: QUICK_CALL_MS })
          .catch(() => undefined);
        await this.abort({ ...resolve, role: 'MIGRATION_ROLE_SOURCE', reason });
        throw err;
      }
      const committed = await this.commitTarget(p, resolve);
      if (!committed.ok) {
        await this.abort({ ...resolve, role: 'MIGRATION_ROLE_SOURCE', reason: committed.why });
        throw new ApiError(
          status.ABORTED,
          `migration ${id}: the target did not take the VM: ${committed.why}`,
        );
      }
      await this.commit({ ...resolve, role: 'MIGRATION_ROLE_SOURCE', reason: '' });
      const s = committed.status;
      progress({
        phase: 'MIGRATION_PHASE_COMPLETED',
        round: s.rounds,
        bytesTransferred: s.bytesTransferred,
        pagesRemaining: 0,
        progressPercent: 100,
        downtimeMs: s.downtimeMs,
        verifiedSha256: s.sha256,
      });
    } finally {
      agent.close();
    }
  }

  /**
   * Tells the target to commit until its answer is known: committed, or refused for good (it
   * holds nothing, so it can never run the VM). An answer that stays unknown leaves the VM frozen
   * here, and says so: only the target knows whether it runs it.
   */
  private async commitTarget(
    target: ReturnType<typeof promiseClient<pb.AgentServiceClient>>,
    resolve: { migrationId: string; vmId: string; targetGeneration: number },
  ): Promise<{ ok: true; status: pb.MigrationStatus__Output } | { ok: false; why: string }> {
    const deadline = Date.now() + RESOLVE_FOR_MS;
    let delay = 100;
    for (;;) {
      try {
        const s = await target.commitMigration(
          { ...resolve, role: 'MIGRATION_ROLE_TARGET', reason: '' },
          { timeoutMs: QUICK_CALL_MS },
        );
        return { ok: true, status: s };
      } catch (err) {
        const code = statusOf(err);
        const why = (err as { details?: string }).details ?? String(err);
        if (code === status.FAILED_PRECONDITION || code === status.INVALID_ARGUMENT)
          return { ok: false, why };
        if (Date.now() > deadline) {
          throw new ApiError(
            status.UNAVAILABLE,
            `migration ${resolve.migrationId}: the target did not confirm the handover (${why}); the VM stays frozen here until CommitMigration or AbortMigration resolves it`,
          );
        }
        this.host.logger.warn(
          { migration: resolve.migrationId, err: why },
          'commit unconfirmed; asking again',
        );
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(2_000, delay * 2);
      }
    }
  }

  /** DropStaleVm. */
  async dropStale(req: pb.DropStaleVmRequest__Output): Promise<pb.DropStaleVmResponse> {
    if (!req.vmId) throw invalidArgument('vm_id', 'is required');
    if (req.generation < 1)
      throw invalidArgument('generation', 'must be the generation the farm gives the VM now');
    const was = await this.drop(
      req.vmId,
      req.generation,
      `dropped as stale: the farm runs it elsewhere under generation ${req.generation}`,
    );
    if (was === undefined) throw notFound('VM', req.vmId);
    return { was };
  }
}

function requireSource(req: pb.ResolveMigrationRequest__Output): void {
  if (req.role !== 'MIGRATION_ROLE_SOURCE') throw invalidArgument('role', 'must be SOURCE or TARGET');
  if (!req.vmId) throw invalidArgument('vm_id', 'is required');
  if (req.targetGeneration < 1) throw invalidArgument('target_generation', 'is required');
}
