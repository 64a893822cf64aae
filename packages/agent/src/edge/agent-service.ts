import {
  clientStream,
  ApiError,
  invalidArgument,
  serverStream,
  status,
  toServiceError,
  unary,
  unexpectedCause,
  type ClientOptions,
  type pb,
} from '@hyperfarm/api';
import { guestOsList } from '../engine/catalog.js';
import { checkId } from '../engine/validate.js';
import type { AgentHost } from './agent-host.js';
import type { Checkpoints } from './checkpoints.js';
import { adoptOrCreate } from './cluster-adopt.js';
import type { AgentMigrations } from './migration.js';
import type { VmTransfer } from './vm-transfer.js';

const DEFAULT_PAGE_SIZE = 100;
const MAX_PAGE_SIZE = 1000;
/** Most creates in one CreateVms call. */
const MAX_CREATES = 1000;

export interface HostAddressing {
  /** The gRPC address this host answers on, once bound. */
  address(): string;
  /** Transport options for calls to other agents (migration). */
  client?: ClientOptions;
  /**
   * The other hosts of this process (a multi-host agent), by id: a GrantLease to this host may
   * carry their grants too.
   */
  siblings?: () => ReadonlyMap<string, { host: AgentHost; address(): string }>;
}

export function hostInfo(host: AgentHost, address: string): pb.Host {
  const s = host.settings;
  const lease = host.read((e) => e.lease.state());
  const macs = host.read((e) => e.macRange());
  return {
    id: s.id,
    name: s.id,
    address,
    state: lease?.expired ? 'HOST_STATE_DOWN' : 'HOST_STATE_UP',
    capacity: {
      logicalProcessors: s.logicalProcessors,
      memoryBytes: s.memoryBytes,
      rootReserveBytes: s.rootReserveBytes,
      perVmOverheadBytes: s.perVmOverheadBytes,
    },
    usage: host.read((e) => e.usage()),
    limits: s.limits,
    macPoolStart: macs.start,
    macPoolSize: macs.size,
    clusterStorage: host.cluster !== undefined,
  };
}

/** What a brief GrantLease answers of a host: its id and usage, all a leader reads of a renewal. */
export function briefHostInfo(host: AgentHost): pb.Host {
  return { id: host.settings.id, usage: host.read((e) => e.usage()) };
}

/**
 * What a lease answer says of the host's network: the revision it applied last, for the leader's
 * pusher to compare with what it pushed (GrantLeaseResponse.network). Unset while the host has
 * no network yet, as an older agent's answer.
 */
function appliedNetwork(host: AgentHost): pb.AppliedNetwork | null {
  const n = host.network;
  return n ? { revision: n.config().revision } : null;
}

/** AgentService over one host. */
export function agentServiceImpl(
  host: AgentHost,
  net: HostAddressing,
  checkpoints: Checkpoints,
  transfer: VmTransfer,
  migrations: AgentMigrations,
): pb.AgentServiceHandlers {
  const changeState = async (vmId: string, action: pb.VmAction__Output, generation: number) => {
    // Anything but turning it off uses the VM's files: a stale copy may not.
    if (action !== 'VM_ACTION_TURN_OFF')
      await host.claimFiles(host.read((e) => e.vms.get(vmId)).id, 'change the state of');
    return host.mutate((e) => e.power.change(vmId, action, generation));
  };
  const createVm = async (req: pb.AgentCreateVmRequest__Output): Promise<pb.Vm__Output> => {
    if (!req.config) throw invalidArgument('config', 'is required');
    // Before anything looks for the VM's folder on cluster storage.
    checkId('vm_id', req.vmId);
    const vm = await adoptOrCreate(host, checkpoints, req.vmId, req.config, req.generation);
    if (!req.start) return vm;
    // The create stands whatever the start does: the caller sees the VM as it is and may start
    // it again itself (the daemon's reconciler does), with its own handling of the refusal.
    return changeState(req.vmId, 'VM_ACTION_START', req.generation).catch((err: unknown) => {
      const cause = unexpectedCause(toServiceError(err));
      if (cause !== undefined)
        host.logger.error({ err: cause, vmId: req.vmId }, 'the start after a create failed');
      else host.logger.debug({ err, vmId: req.vmId }, 'the start after a create was refused');
      return vm;
    });
  };
  return {
    GetHostInfo: unary<pb.GetHostInfoRequest__Output, pb.Host>(() => hostInfo(host, net.address())),
    ListGuestOs: unary<pb.ListGuestOsRequest__Output, pb.ListGuestOsResponse>(() => ({
      guestOs: guestOsList(),
    })),
    CreateVm: unary<pb.AgentCreateVmRequest__Output, pb.Vm>((req) => createVm(req)),
    CreateVms: unary<pb.AgentCreateVmsRequest__Output, pb.AgentCreateVmsResponse>(async (req) => {
      if (req.creates.length === 0 || req.creates.length > MAX_CREATES)
        throw invalidArgument('creates', `${req.creates.length} creates: 1 to ${MAX_CREATES} a call`);
      // Each create as its own CreateVm call would go, side by side, and answered on its own.
      const results = await Promise.all(
        req.creates.map((c) =>
          Promise.resolve()
            .then(() => createVm(c))
            .then(
              (vm): pb.AgentCreateVmResult => ({ vm }),
              (err: unknown): pb.AgentCreateVmResult => {
                const e = toServiceError(err);
                return { error: { code: e.code, message: e.details } };
              },
            ),
        ),
      );
      return { results };
    }),
    GetVm: unary<pb.AgentGetVmRequest__Output, pb.Vm>((req) => host.read((e) => e.vms.get(req.vmId))),
    ListVms: unary<pb.AgentListVmsRequest__Output, pb.AgentListVmsResponse>((req) => {
      const size = req.pageSize === 0 ? DEFAULT_PAGE_SIZE : req.pageSize;
      if (size > MAX_PAGE_SIZE) throw invalidArgument('page_size', `at most ${MAX_PAGE_SIZE}`);
      let after = '';
      if (req.pageToken) {
        after = Buffer.from(req.pageToken, 'base64url').toString('utf8');
        if (!after.startsWith('vm:')) throw invalidArgument('page_token', 'not a token this host issued');
        after = after.slice(3);
      }
      const all = host.read((e) => e.vms.list()).filter((v) => v.id > after);
      const vms = all.slice(0, size);
      const more = all.length > size;
      return {
        vms,
        nextPageToken: more ? Buffer.from(`vm:${vms[vms.length - 1]!.id}`).toString('base64url') : '',
      };
    }),
    UpdateVm: unary<pb.AgentUpdateVmRequest__Output, pb.Vm>(async (req) => {
      if (!req.config) throw invalidArgument('config', 'is required');
      const id = host.read((e) => e.vms.get(req.vmId)).id;
      const facts = await checkpoints.facts(id);
      await host.claimFiles(id, 'update');
      return host.updateVm(id, req.config, req.updateMask?.paths ?? [], req.generation, facts);
    }),
    DeleteVm: unary<pb.AgentDeleteVmRequest__Output, pb.AgentDeleteVmResponse>(async (req) => {
      const id = host.read((e) => e.vms.get(req.vmId)).id;
      const facts = await checkpoints.facts(id);
      // Only the owner deletes a VM's files; a stale copy goes with DropStaleVm.
      await host.claimFiles(id, 'delete');
      await host.mutate((e) => e.vms.delete(id, req.generation, facts));
      await checkpoints.forgetVm(id);
      return {};
    }),
    CreateCheckpoint: unary<pb.AgentCreateCheckpointRequest__Output, pb.Checkpoint>((req) =>
      checkpoints.create(req.vmId, req.name, req.generation, req.checkpointId),
    ),
    ListCheckpoints: unary<pb.AgentListCheckpointsRequest__Output, pb.AgentListCheckpointsResponse>(
      async (req) => {
        const id = host.read((e) => e.vms.get(req.vmId)).id;
        const { checkpoints: list, currentId } = await checkpoints.list(id);
        return { checkpoints: list.map((c) => checkpoints.view(c)), currentId };
      },
    ),
    ApplyCheckpoint: unary<pb.AgentApplyCheckpointRequest__Output, pb.Vm>((req) =>
      checkpoints.apply(req.checkpointId, req.generation, req.turnOffFirst, req.saveCurrentFirst),
    ),
    DeleteCheckpoint: unary<pb.AgentDeleteCheckpointRequest__Output, pb.AgentDeleteCheckpointResponse>(
      (req) => checkpoints.delete(req.checkpointId, req.generation, req.subtree),
    ),
    RenameCheckpoint: unary<pb.AgentRenameCheckpointRequest__Output, pb.Checkpoint>((req) =>
      checkpoints.rename(req.checkpointId, req.name, req.generation),
    ),
    GetMerge: unary<pb.GetMergeRequest__Output, pb.Merge>((req) => {
      if (!req.mergeId) throw invalidArgument('merge_id', 'is required');
      return checkpoints.merges.get(req.mergeId);
    }),
    ExportVmToFolder: unary<pb.ExportVmToFolderRequest__Output, pb.ExportVmToFolderResponse>((req) =>
      transfer.exportToFolder(req.vmId, req.folder),
    ),
    ImportVmFromFolder: unary<pb.ImportVmFromFolderRequest__Output, pb.Vm>((req) =>
      transfer.importFromFolder(req.folder, req.vmId, req.name, req.generation),
    ),
    ChangeVmState: unary<pb.AgentChangeVmStateRequest__Output, pb.Vm>((req) =>
      changeState(req.vmId, req.action, req.generation),
    ),
    GetVmStateHash: unary<pb.GetVmStateHashRequest__Output, pb.GetVmStateHashResponse>((req) =>
      host.read((e) => e.vms.stateHash(req.vmId)),
    ),
    GrantLease: unary<pb.GrantLeaseRequest__Output, pb.GrantLeaseResponse>(async (req) => {
      if (!req.daemonId) throw invalidArgument('daemon_id', 'is required');
      const r = host.renewLease(req.daemonId, req.term, req.durationMs);
      const answerHost = req.brief ? briefHostInfo : hostInfo;
      const siblings = net.siblings?.() ?? new Map<string, { host: AgentHost; address(): string }>();
      // Each further host is granted as if called on its own: same daemon, term and rules.
      const more = req.more.map((m): pb.HostLeaseResult => {
        const sib = m.hostId === host.settings.id ? undefined : siblings.get(m.hostId);
        if (!sib)
          return { hostId: m.hostId, error: `host '${m.hostId}' is not served by this agent process` };
        try {
          const g = sib.host.renewLease(req.daemonId, req.term, m.durationMs);
          return {
            hostId: m.hostId,
            expiresAtMs: g.expiresAtMs,
            host: answerHost(sib.host, sib.address()),
            network: appliedNetwork(sib.host),
          };
        } catch (err) {
          return { hostId: m.hostId, error: (err as Error).message || String(err) };
        }
      });
      return {
        expiresAtMs: r.expiresAtMs,
        host: answerHost(host, net.address()),
        more,
        siblingHostIds: [...siblings.keys()].filter((id) => id !== host.settings.id),
        network: appliedNetwork(host),
      };
    }),
    MigrateOut: serverStream<pb.MigrateOutRequest__Output, pb.MigrationProgress>((req, call) =>
      migrations.migrateOut(req, net.address(), (p) => call.write(p)),
    ),
    MigrateIn: serverStream<pb.MigrateInRequest__Output, pb.MigrationProgress>(async (req, call) => {
      call.write(await migrations.target.migrateIn(req, (p) => call.write(p)));
    }),
    CommitMigration: unary<pb.ResolveMigrationRequest__Output, pb.MigrationStatus>((req) =>
      migrations.commit(req),
    ),
    AbortMigration: unary<pb.ResolveMigrationRequest__Output, pb.MigrationStatus>((req) =>
      migrations.abort(req),
    ),
    GetMigrationStatus: unary<pb.GetMigrationStatusRequest__Output, pb.MigrationStatus>((req) => {
      if (!req.migrationId) throw invalidArgument('migration_id', 'is required');
      return migrations.tracker.status(req.migrationId);
    }),
    DropStaleVm: unary<pb.DropStaleVmRequest__Output, pb.DropStaleVmResponse>((req) =>
      migrations.dropStale(req),
    ),
    WatchEvents: serverStream<pb.WatchAgentEventsRequest__Output, pb.AgentEvent>(
      (req, call) =>
        new Promise<void>((resolve) => {
          if (req.initialState) {
            for (const vm of host.read((e) => e.vms.list())) {
              call.write({
                sequence: 0,
                timeMs: host.now(),
                type: 'state_changed',
                vmId: vm.id,
                vm,
                message: 'initial state',
              });
            }
          }
          const unsubscribe = host.onEvent((event) => call.write(event));
          const end = () => {
            unsubscribe();
            resolve();
          };
          call.on('cancelled', end);
          call.on('close', end);
          call.on('error', end);
        }),
    ),
  };
}

export function migrationServiceImpl(migrations: AgentMigrations): pb.MigrationServiceHandlers {
  return {
    ImportVm: clientStream<pb.MigrationChunk__Output, pb.ImportVmResponse>(() => {
      throw new ApiError(
        status.UNIMPLEMENTED,
        'MigrationService.ImportVm is retired: targets pull with ExportVm (AgentService.MigrateIn), and the handover is decided outside them',
      );
    }),
    ExportVm: serverStream<pb.ExportVmRequest__Output, pb.MigrationChunk>((req, call) =>
      migrations.exportVm(req, call),
    ),
  };
}
