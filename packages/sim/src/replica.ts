import { type Logger } from '@hyperfarm/api';
import {
  checkpointHandlers,
  ControllerRunner,
  drainHandlers,
  FarmStateMachine,
  hostHandlers,
  Leadership,
  migrationHandlers,
  networkHandlers,
  NetworkPusher,
  Proposer,
  vmHandlers,
  type FarmContext,
  type RunnerConfig,
  type SchedulerOptions,
} from '@hyperfarm/daemon';
import { RaftNode, Role, SimRng, type SnapshotBySize, type TransportHandlers } from '@hyperfarm/raft';
import type { Scope } from './clock.js';
import type { SimNetwork } from './network.js';
import { SimAgentPort, SimNetworkAgents, type HostDirectory } from './agent-port.js';
import { SimRaftDisk, SimRaftTransport } from './raft-io.js';

/** What the simulator's checks hear from a daemon. */
export interface DaemonWatch {
  /** The Raft node failed for good (or could not start). */
  fatal(daemon: string, err: unknown): void;
  /** The state machine applies the command at `index`. */
  applied(daemon: string, index: number, data: Uint8Array): void;
}

export interface ReplicaConfig {
  /** Ms per Raft tick, and ticks to an election and between heartbeats (RAFT_PROFILES). */
  tickMs: number;
  electionTick: number;
  heartbeatTick: number;
  /** Snapshot and compact the log every this many applied entries, keeping this many. */
  snapshotEvery: number;
  snapshotKeep: number;
  /** Snapshot too by the size of the entries applied since the last one (RaftNode's options). */
  snapshotBySize?: SnapshotBySize;
  requestTimeoutMs: number;
  runner: Omit<RunnerConfig, 'daemonId'>;
  scheduler: SchedulerOptions;
  /**
   * The hosts have virtual networks: the daemon runs its network pusher while it leads and
   * answers the network API (switches, NLB clusters, traffic), both through NetworkService.
   */
  network?: boolean;
}

/**
 * One control daemon, wired as startDaemon wires it: the production RaftNode (its storage a
 * simulated disk that survives crashes, its transport the simulated network, its timers the
 * virtual clock), the farm state machine, proposer, leadership and controller runner, and the
 * ClusterService handlers that clients call. A crash is a kill -9: the incarnation's timers stop
 * and only what reached the disk is left for the next boot.
 */
export class SimDaemon {
  readonly disk: SimRaftDisk;
  scope: Scope | undefined;
  raft: RaftNode | undefined;
  machine = new FarmStateMachine();
  runner: ControllerRunner | undefined;
  handlers: ReturnType<typeof vmHandlers> = {};
  /** What the node answers peers with, once it has started (the server binds after Raft starts). */
  raftHandlers: TransportHandlers | undefined;
  role: Role = Role.Follower;
  leader = '';
  term = 0;
  boots = 0;
  private leadership: Leadership | undefined;
  private network: SimNetworkAgents | undefined;

  constructor(
    readonly id: string,
    private readonly peers: string[],
    private readonly net: SimNetwork,
    private readonly daemons: Map<string, SimDaemon>,
    private readonly hosts: HostDirectory,
    private readonly cfg: ReplicaConfig,
    private readonly logger: Logger,
    private readonly seed: number,
    private readonly ids: () => string,
    private readonly watch: DaemonWatch,
  ) {
    this.disk = new SimRaftDisk(new SimRng(seed * 7 + 1));
  }

  get alive(): boolean {
    return this.scope !== undefined;
  }

  /** Serving: Raft started and the handlers registered (before that, connections are refused). */
  get serving(): boolean {
    return this.raftHandlers !== undefined;
  }

  get appliedIndex(): number {
    return this.raft?.status().applied ?? 0;
  }

  /** Starts an incarnation from what the disk holds; it serves once RaftNode has started. */
  boot(scope: Scope): void {
    this.boots++;
    this.scope = scope;
    this.role = Role.Follower;
    this.leader = '';
    // RaftNode.start restores it from the disk's snapshot and replays the log into it.
    const machine = new FarmStateMachine();
    this.machine = machine;
    const logger = this.logger;
    const leadership = new Leadership(logger, scope);
    let handlers: TransportHandlers | undefined;
    const started = RaftNode.start({
      id: this.id,
      peers: Object.fromEntries(this.peers.map((p) => [p, p])),
      stateMachine: {
        apply: (data, index, awaited) => {
          this.watch.applied(this.id, index, data);
          return machine.apply(data, index, awaited);
        },
        snapshot: () => machine.snapshot(),
        restore: (data) => machine.restore(data),
      },
      storage: this.disk.open(scope),
      transport: (o) => {
        handlers = o.handlers;
        return new SimRaftTransport(
          this.id,
          scope,
          this.net,
          (id) => this.daemons.get(id)?.raftHandlers,
          o.handlers,
        );
      },
      timers: scope,
      seed: this.seed * 131 + this.boots,
      readSession: `boot-${this.boots}`,
      tickMs: this.cfg.tickMs,
      electionTick: this.cfg.electionTick,
      heartbeatTick: this.cfg.heartbeatTick,
      snapshotEvery: this.cfg.snapshotEvery,
      snapshotKeep: this.cfg.snapshotKeep,
      ...this.cfg.snapshotBySize,
      requestTimeoutMs: this.cfg.requestTimeoutMs,
      forwardProposals: true,
      onRoleChange: (c) => {
        if (this.scope !== scope) return;
        this.role = c.role;
        this.leader = c.leader;
        this.term = c.term;
        leadership.changed(c.role === Role.Leader, c.term);
      },
      onFatal: (err) => this.watch.fatal(this.id, err),
    });
    started.then(
      (raft) => {
        if (this.scope !== scope) return;
        const proposer = new Proposer(raft, machine, logger, { timers: scope, newRid: this.ids });
        const port = new SimAgentPort(this.id, scope, this.net, this.hosts);
        const runner = new ControllerRunner(machine, proposer, port, scope, logger, {
          ...this.cfg.runner,
          daemonId: this.id,
        });
        if (this.cfg.network) {
          // As startDaemon: the pusher leads with the runner.
          const agents = new SimNetworkAgents(this.id, scope, this.net, this.hosts);
          const pusher = new NetworkPusher(machine, proposer, agents, logger, scope, (id) =>
            runner.appliedNetwork(id),
          );
          leadership.attach(raft, {
            start: (term) => {
              runner.start(term);
              pusher.start(term);
            },
            stop: () => {
              runner.stop();
              pusher.stop();
            },
          });
          this.network = agents;
        } else leadership.attach(raft, runner);
        const ctx: FarmContext = {
          raft,
          machine,
          proposer,
          runner,
          port,
          logger,
          scheduler: this.cfg.scheduler,
          timers: scope,
        };
        this.raft = raft;
        this.runner = runner;
        this.leadership = leadership;
        // The migration deadline the daemon's default config gives (0: 30 s plus 1 s per 64 MiB).
        this.handlers = {
          ...vmHandlers(ctx),
          ...hostHandlers(ctx),
          ...migrationHandlers(ctx, { deadlineMs: 0 }),
          ...drainHandlers(ctx, { deadlineMs: 0 }),
          ...checkpointHandlers(ctx),
          ...(this.network ? networkHandlers(ctx, this.network) : {}),
        };
        this.raftHandlers = handlers;
      },
      (err: unknown) => this.watch.fatal(this.id, err),
    );
  }

  /** The process dies: timers, memory and pending requests go; the disk keeps what it synced. */
  crash(): void {
    if (!this.scope) return;
    // The runner's streams to the hosts end with the process (their connections reset).
    this.leadership?.detach();
    this.scope.kill();
    this.scope = undefined;
    this.raft = undefined;
    this.runner = undefined;
    this.leadership = undefined;
    this.raftHandlers = undefined;
    this.handlers = {};
    this.role = Role.Follower;
    this.leader = '';
  }
}
