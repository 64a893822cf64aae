import { Metadata } from '@grpc/grpc-js';
import type * as grpc from '@grpc/grpc-js';
import {
  ApiError,
  createClient,
  hyperfarmProto,
  promiseClient,
  status,
  statusOf,
  type ClientOptions,
  type pb,
} from '@hyperfarm/api';
import type {
  AgentEventSink,
  AgentPort,
  HostDescription,
  HostRef,
  LeaseAnswer,
  LeasedHost,
} from './agent-port.js';
import { messageType } from './gateway/request-check.js';

type Client = { raw: pb.AgentServiceClient; p: ReturnType<typeof promiseClient<pb.AgentServiceClient>> };

/** Deadlines of agent calls: quick ones, and those that write disks (a create makes its VHDs). */
const QUICK_MS = 10_000;
const SLOW_MS = 120_000;
const PAGE = 1000;
/** Most creates in one CreateVms call to an agent. */
const CREATES_PER_CALL = 1000;

interface QueuedCreate {
  req: pb.AgentCreateVmRequest;
  resolve(vm: pb.Vm__Output): void;
  reject(err: unknown): void;
}

const grantLeaseMethod = () =>
  (hyperfarmProto().hyperfarm.v1.AgentService as unknown as { service: grpc.ServiceDefinition }).service
    .GrantLease as grpc.MethodDefinition<object, LeaseAnswer>;

/** A 64-bit field as protobufjs decodes it: a Long where the long package is loaded. */
const int64 = (v: number | { toNumber(): number }): number => (typeof v === 'number' ? v : v.toNumber());

interface DecodedUsage {
  memoryUsedBytes: number | { toNumber(): number };
  runningVms: number;
  vms: number;
  cpuPercent: number;
}
interface DecodedResult {
  hostId: string;
  expiresAtMs: number | { toNumber(): number };
  host: { id: string; usage: DecodedUsage | null } | null;
  error: string;
  network: { revision: number | { toNumber(): number } } | null;
}
interface DecodedGrant {
  expiresAtMs: number | { toNumber(): number };
  host: { id: string; usage: DecodedUsage | null } | null;
  more: DecodedResult[];
  siblingHostIds: string[];
  network: { revision: number | { toNumber(): number } } | null;
}

/**
 * A brief GrantLease answer read straight from the decoded message: its id, usage, expiry,
 * siblings and applied network, which is all it carries (GrantLeaseRequest.brief). grpc-js's
 * own decoder also converts every message to a plain object with every field's default (a whole
 * Host's per host): the leader reads 1,000 of them a second at 1,000 hosts.
 */
function briefLeaseAnswer(buf: Buffer): LeaseAnswer {
  const m = messageType('GrantLeaseResponse').decode(buf) as unknown as DecodedGrant;
  const usage = (u: DecodedUsage | null): pb.HostUsage__Output | null =>
    u && {
      memoryUsedBytes: int64(u.memoryUsedBytes),
      runningVms: u.runningVms,
      vms: u.vms,
      cpuPercent: u.cpuPercent,
    };
  const host = (h: DecodedGrant['host']): LeasedHost | null => h && { id: h.id, usage: usage(h.usage) };
  const network = (n: DecodedGrant['network']) => n && { revision: int64(n.revision) };
  return {
    expiresAtMs: int64(m.expiresAtMs),
    host: host(m.host),
    more: m.more.map((r) => ({
      hostId: r.hostId,
      expiresAtMs: int64(r.expiresAtMs),
      host: host(r.host),
      error: r.error,
      network: network(r.network),
    })),
    siblingHostIds: m.siblingHostIds,
    network: network(m.network),
  };
}

/** The agent port over gRPC: one channel per agent address, reused. */
export class GrpcAgentPort implements AgentPort {
  private readonly clients = new Map<string, Client>();
  /** Creates asked for in this turn of the event loop, by agent address. */
  private readonly creates = new Map<string, QueuedCreate[]>();
  /** Agents that answered CreateVms UNIMPLEMENTED (an older agent): one CreateVm per VM. */
  private readonly oneByOne = new Set<string>();

  constructor(private readonly options: ClientOptions = {}) {}

  private client(address: string): Client {
    let c = this.clients.get(address);
    if (!c) {
      const raw = createClient(hyperfarmProto().hyperfarm.v1.AgentService, address, this.options);
      c = { raw, p: promiseClient(raw) };
      this.clients.set(address, c);
    }
    return c;
  }

  async describe(address: string): Promise<HostDescription> {
    const c = this.client(address).p;
    const [host, catalog] = await Promise.all([
      c.getHostInfo({}, { timeoutMs: 5_000 }),
      c.listGuestOs({}, { timeoutMs: 5_000 }),
    ]);
    return { host, guests: catalog.guestOs };
  }

  grantLease(
    host: HostRef,
    req: {
      daemonId: string;
      term: number;
      durationMs: number;
      more?: { hostId: string; durationMs: number }[];
      brief?: boolean;
    },
  ): Promise<LeaseAnswer> {
    if (!req.brief) return this.client(host.address).p.grantLease(req, { timeoutMs: 2_000 });
    const raw = this.client(host.address).raw;
    const method = grantLeaseMethod();
    return new Promise((resolve, reject) => {
      raw.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        briefLeaseAnswer,
        req,
        new Metadata(),
        { deadline: Date.now() + 2_000 },
        (err, answer) => (err ? reject(err) : resolve(answer!)),
      );
    });
  }

  async listVms(host: HostRef): Promise<pb.Vm__Output[]> {
    const vms: pb.Vm__Output[] = [];
    let pageToken = '';
    do {
      const page = await this.client(host.address).p.listVms(
        { pageSize: PAGE, pageToken },
        { timeoutMs: QUICK_MS },
      );
      vms.push(...page.vms);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return vms;
  }

  watchEvents(host: HostRef, sink: AgentEventSink): { cancel(): void } {
    const call: grpc.ClientReadableStream<pb.AgentEvent__Output> = this.client(host.address).raw.watchEvents({
      initialState: true,
    });
    let ended = false;
    const end = (err?: unknown) => {
      if (ended) return;
      ended = true;
      sink.closed(err);
    };
    call.on('data', (e: pb.AgentEvent__Output) => sink.event(e));
    call.on('error', (err) => end(err));
    call.on('end', () => end());
    return {
      cancel: () => {
        ended = true;
        call.cancel();
      },
    };
  }

  /**
   * The creates asked of one agent in a turn of the event loop go in one CreateVms call (the
   * reconciler asks for hundreds at once after a large CreateVms of the farm's): each is answered
   * on its own, as a CreateVm call of its own would be. An agent too old for CreateVms gets one
   * CreateVm call per VM.
   */
  createVm(
    host: HostRef,
    vmId: string,
    config: pb.VmConfig,
    generation: number,
    start = false,
  ): Promise<pb.Vm__Output> {
    const req = { vmId, config, generation, start };
    if (this.oneByOne.has(host.address)) return this.createOne(host.address, req);
    return new Promise((resolve, reject) => {
      let queue = this.creates.get(host.address);
      if (!queue) {
        this.creates.set(host.address, (queue = []));
        setImmediate(() => this.sendCreates(host.address));
      }
      queue.push({ req, resolve, reject });
    });
  }

  private createOne(address: string, req: pb.AgentCreateVmRequest): Promise<pb.Vm__Output> {
    return this.client(address).p.createVm(req, { timeoutMs: SLOW_MS });
  }

  private sendCreates(address: string): void {
    const queue = this.creates.get(address) ?? [];
    this.creates.delete(address);
    const one = (q: QueuedCreate) => this.createOne(address, q.req).then(q.resolve, q.reject);
    if (queue.length === 1) return void one(queue[0]!);
    for (let i = 0; i < queue.length; i += CREATES_PER_CALL) {
      const part = queue.slice(i, i + CREATES_PER_CALL);
      this.client(address)
        .p.createVms({ creates: part.map((q) => q.req) }, { timeoutMs: SLOW_MS })
        .then(
          ({ results }) =>
            part.forEach((q, k) => {
              const r = results[k];
              if (r?.vm) q.resolve(r.vm);
              else
                q.reject(new ApiError(r?.error?.code ?? status.INTERNAL, r?.error?.message ?? 'no answer'));
            }),
          (err: unknown) => {
            if (statusOf(err) !== status.UNIMPLEMENTED) return part.forEach((q) => q.reject(err));
            this.oneByOne.add(address);
            part.forEach(one);
          },
        );
    }
  }

  changeVmState(host: HostRef, vmId: string, action: pb.VmAction, generation: number) {
    return this.client(host.address).p.changeVmState({ vmId, action, generation }, { timeoutMs: QUICK_MS });
  }

  updateVm(host: HostRef, vmId: string, config: pb.VmConfig, paths: string[], generation: number) {
    return this.client(host.address).p.updateVm(
      { vmId, config, updateMask: { paths }, generation },
      { timeoutMs: SLOW_MS },
    );
  }

  async deleteVm(host: HostRef, vmId: string, generation: number): Promise<void> {
    await this.client(host.address).p.deleteVm({ vmId, generation }, { timeoutMs: SLOW_MS });
  }

  async dropStaleVm(host: HostRef, vmId: string, generation: number): Promise<void> {
    await this.client(host.address).p.dropStaleVm({ vmId, generation }, { timeoutMs: QUICK_MS });
  }

  getVm(host: HostRef, vmId: string) {
    return this.client(host.address).p.getVm({ vmId }, { timeoutMs: QUICK_MS });
  }

  async createCheckpoint(
    host: HostRef,
    vmId: string,
    checkpointId: string,
    name: string,
    generation: number,
  ) {
    await this.client(host.address).p.createCheckpoint(
      { vmId, checkpointId, name, generation },
      { timeoutMs: SLOW_MS },
    );
  }

  applyCheckpoint(
    host: HostRef,
    checkpointId: string,
    opts: { turnOffFirst: boolean; saveCurrentFirst: boolean },
    generation: number,
  ) {
    return this.client(host.address).p.applyCheckpoint(
      { checkpointId, generation, ...opts },
      { timeoutMs: SLOW_MS },
    );
  }

  async deleteCheckpoint(host: HostRef, checkpointId: string, subtree: boolean, generation: number) {
    await this.client(host.address).p.deleteCheckpoint(
      { checkpointId, subtree, generation },
      { timeoutMs: SLOW_MS },
    );
  }

  async renameCheckpoint(host: HostRef, checkpointId: string, name: string, generation: number) {
    await this.client(host.address).p.renameCheckpoint(
      { checkpointId, name, generation },
      { timeoutMs: QUICK_MS },
    );
  }

  listCheckpoints(host: HostRef, vmId: string) {
    return this.client(host.address).p.listCheckpoints({ vmId }, { timeoutMs: QUICK_MS });
  }

  migrateIn(
    host: HostRef,
    req: pb.MigrateInRequest,
    progress: (p: pb.MigrationProgress__Output) => void,
  ): { done: Promise<pb.MigrationProgress__Output>; cancel(): void } {
    // The whole pull is bounded by the target's own deadline; this one is a backstop.
    const deadline = Date.now() + (req.deadlineMs ?? 0) + (req.holdMs ?? 0) + SLOW_MS;
    const call: grpc.ClientReadableStream<pb.MigrationProgress__Output> = this.client(
      host.address,
    ).raw.migrateIn(req, { deadline });
    const done = new Promise<pb.MigrationProgress__Output>((resolve, reject) => {
      let last: pb.MigrationProgress__Output | undefined;
      call.on('data', (m: pb.MigrationProgress__Output) => {
        last = m;
        progress(m);
      });
      call.on('error', reject);
      call.on('end', () =>
        last?.phase === 'MIGRATION_PHASE_PREPARED'
          ? resolve(last)
          : reject(new ApiError(status.UNAVAILABLE, 'the target ended MigrateIn without PREPARED')),
      );
    });
    return { done, cancel: () => call.cancel() };
  }

  commitMigration(host: HostRef, req: pb.ResolveMigrationRequest) {
    return this.client(host.address).p.commitMigration(req, { timeoutMs: SLOW_MS });
  }

  abortMigration(host: HostRef, req: pb.ResolveMigrationRequest) {
    return this.client(host.address).p.abortMigration(req, { timeoutMs: QUICK_MS });
  }

  getMigrationStatus(host: HostRef, migrationId: string) {
    return this.client(host.address).p.getMigrationStatus({ migrationId }, { timeoutMs: QUICK_MS });
  }

  close(): void {
    for (const c of this.clients.values()) c.raw.close();
    this.clients.clear();
  }
}
