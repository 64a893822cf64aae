import { ApiError, status, type pb } from '@hyperfarm/api';
import type {
  AgentEventSink,
  AgentPort,
  HostDescription,
  HostRef,
  NetworkAgent,
  NetworkAgents,
  VmConfig,
} from '@hyperfarm/daemon';
import type { Scope } from './clock.js';
import type { SimHost } from './host.js';
import type { SimMigrations } from './migration.js';
import type { SimNetwork } from './network.js';

/** The hosts, by id and by address. */
export interface HostDirectory {
  byAddress(address: string): SimHost | undefined;
}

/** The deadlines GrpcAgentPort sets. */
const QUICK_MS = 10_000;
const SLOW_MS = 120_000;

/**
 * The daemon's agent port in the simulation: each call crosses the simulated network to a host
 * and is answered by its engine; WatchEvents is a stream that keeps its order and breaks when
 * the host dies or the link is cut. One per daemon incarnation (its scope dies with it).
 */
export class SimAgentPort implements AgentPort {
  constructor(
    private readonly daemonId: string,
    private readonly scope: Scope,
    private readonly net: SimNetwork,
    private readonly hosts: HostDirectory,
  ) {}

  private call<T>(address: string, deadlineMs: number, fn: (h: SimHost) => T | Promise<T>): Promise<T> {
    const host = this.hosts.byAddress(address);
    if (!host) return Promise.reject(new ApiError(status.UNAVAILABLE, `no host listens at ${address}`));
    return this.net.call(this.scope, this.daemonId, host.id, deadlineMs, () => fn(host));
  }

  describe(address: string): Promise<HostDescription> {
    return this.call(address, 5_000, (h) => h.describe());
  }

  grantLease(host: HostRef, req: { daemonId: string; term: number; durationMs: number }) {
    return this.call(host.address, 2_000, (h) => h.grantLease(req));
  }

  listVms(host: HostRef): Promise<pb.Vm__Output[]> {
    return this.call(host.address, QUICK_MS, (h) => h.listVms());
  }

  watchEvents(ref: HostRef, sink: AgentEventSink): { cancel(): void } {
    const scope = this.scope;
    const net = this.net;
    let done = false;
    let unsubscribe: (() => void) | undefined;
    const stream: { forget?: () => void } = {};
    let lastAt = 0;
    const end = (err?: unknown) => {
      if (done) return;
      done = true;
      unsubscribe?.();
      stream.forget?.();
      sink.closed(err);
    };
    const broken = (why: string) => () => end(new ApiError(status.UNAVAILABLE, why));
    const host = this.hosts.byAddress(ref.address);
    if (!host || !net.connected(this.daemonId, host.id) || !host.alive) {
      scope.set(broken(`cannot reach ${ref.address}`), 2 * net.delay());
      return { cancel: () => (done = true) };
    }
    stream.forget = net.openStream(this.daemonId, host.id, scope, broken('the connection was cut'));
    // The stream opens at the host after one trip, and its messages keep their order.
    const hostScope = host.scope;
    hostScope?.set(() => {
      if (done || host.scope !== hostScope) return;
      unsubscribe = host.watch(
        (ev) => {
          const at = Math.max(lastAt, scope.now() + net.delay());
          lastAt = at;
          scope.set(() => {
            if (!done) sink.event(ev);
          }, at - scope.now());
        },
        () => scope.set(broken('the host went away'), net.delay()),
      );
    }, net.delay());
    return {
      cancel: () => {
        done = true;
        unsubscribe?.();
        stream.forget?.();
      },
    };
  }

  createVm(host: HostRef, vmId: string, config: VmConfig, generation: number, start = false) {
    return this.call(host.address, SLOW_MS, (h) =>
      h.createVm(vmId, config as pb.VmConfig, generation, start),
    );
  }

  changeVmState(host: HostRef, vmId: string, action: pb.VmAction__Output, generation: number) {
    return this.call(host.address, QUICK_MS, (h) => h.changeVmState(vmId, action, generation));
  }

  updateVm(host: HostRef, vmId: string, config: VmConfig, paths: string[], generation: number) {
    return this.call(host.address, SLOW_MS, (h) =>
      h.updateVm(vmId, config as pb.VmConfig, paths, generation),
    );
  }

  deleteVm(host: HostRef, vmId: string, generation: number): Promise<void> {
    return this.call(host.address, SLOW_MS, (h) => h.deleteVm(vmId, generation));
  }

  getVm(host: HostRef, vmId: string) {
    return this.call(host.address, QUICK_MS, (h) => h.getVm(vmId));
  }

  // Snapshots (packages/sim/src/checkpoints.ts).
  private snapshots(h: SimHost) {
    if (!h.checkpoints)
      throw new ApiError(status.UNIMPLEMENTED, 'this simulated host has no cluster storage');
    return h.checkpoints;
  }
  createCheckpoint(host: HostRef, vmId: string, checkpointId: string, name: string, generation: number) {
    return this.call(host.address, SLOW_MS, (h) =>
      this.snapshots(h).create(vmId, checkpointId, name, generation),
    );
  }
  applyCheckpoint(
    host: HostRef,
    checkpointId: string,
    opts: { turnOffFirst: boolean; saveCurrentFirst: boolean },
    generation: number,
  ): Promise<pb.Vm__Output> {
    return this.call(host.address, SLOW_MS, (h) => this.snapshots(h).apply(checkpointId, opts, generation));
  }
  deleteCheckpoint(host: HostRef, checkpointId: string, subtree: boolean, generation: number) {
    return this.call(host.address, SLOW_MS, (h) =>
      this.snapshots(h).delete(checkpointId, subtree, generation),
    );
  }
  renameCheckpoint(host: HostRef, checkpointId: string, name: string, generation: number) {
    return this.call(host.address, QUICK_MS, (h) => this.snapshots(h).rename(checkpointId, name, generation));
  }
  listCheckpoints(host: HostRef, vmId: string): Promise<pb.AgentListCheckpointsResponse__Output> {
    return this.call(host.address, QUICK_MS, (h) => this.snapshots(h).list(vmId));
  }

  // The migration calls (issue 10): the target pulls from the source (packages/sim/src/migration.ts).
  migrateIn(
    host: HostRef,
    req: pb.MigrateInRequest,
    progress: (p: pb.MigrationProgress__Output) => void,
  ): { done: Promise<pb.MigrationProgress__Output>; cancel(): void } {
    const deadline = (req.deadlineMs ?? 0) + (req.holdMs ?? 0) + SLOW_MS;
    const scope = this.scope;
    const done = this.call(host.address, deadline, (h) => {
      const m = h.migrations;
      if (!m) throw new ApiError(status.UNIMPLEMENTED, 'this simulated host has no migrations');
      // Progress reports travel back on the stream, in order.
      return m.migrateIn(req, (p) => scope.set(() => progress(p), this.net.delay()));
    });
    return { done, cancel: () => undefined };
  }
  commitMigration(host: HostRef, req: pb.ResolveMigrationRequest): Promise<pb.MigrationStatus__Output> {
    return this.call(host.address, SLOW_MS, (h) => this.migrations(h).commit(req));
  }
  abortMigration(host: HostRef, req: pb.ResolveMigrationRequest): Promise<pb.MigrationStatus__Output> {
    return this.call(host.address, QUICK_MS, (h) => this.migrations(h).abort(req));
  }
  getMigrationStatus(host: HostRef, migrationId: string): Promise<pb.MigrationStatus__Output> {
    return this.call(host.address, QUICK_MS, (h) => this.migrations(h).status(migrationId));
  }
  private migrations(h: SimHost): SimMigrations {
    if (!h.migrations) throw new ApiError(status.UNIMPLEMENTED, 'this simulated host has no migrations');
    return h.migrations;
  }
  dropStaleVm(host: HostRef, vmId: string, generation: number): Promise<void> {
    return this.call(host.address, QUICK_MS, (h) => h.dropStaleVm(vmId, generation));
  }

  close(): void {}
}

/**
 * The daemon's NetworkService clients in the simulation: each call crosses the simulated network
 * to the host and is answered by the agent's own handlers on its AgentNetwork, with the deadline
 * the daemon gives it.
 */
export class SimNetworkAgents implements NetworkAgents {
  constructor(
    private readonly daemonId: string,
    private readonly scope: Scope,
    private readonly net: SimNetwork,
    private readonly hosts: HostDirectory,
  ) {}

  of(address: string): NetworkAgent {
    return new Proxy({} as NetworkAgent, {
      // Not a thenable: `then` is no NetworkService method.
      get: (_t, method: string) =>
        method === 'then'
          ? undefined
          : (req: unknown, opts?: { timeoutMs?: number }) => {
              const host = this.hosts.byAddress(address);
              if (!host)
                return Promise.reject(new ApiError(status.UNAVAILABLE, `no host listens at ${address}`));
              return this.net.call(this.scope, this.daemonId, host.id, opts?.timeoutMs ?? QUICK_MS, () =>
                host.networkRequest(method, req),
              );
            },
    });
  }
}
