import { setImmediate as nextTurn } from 'node:timers/promises';
import {
  createLogger,
  createServer,
  enableFaults,
  lockDataDir,
  startMetricsServer,
  withUnimplemented,
  writeJsonAtomic,
  type Logger,
  type RunningServer,
} from '@hyperfarm/api';
import { RaftNode, Role, type SnapshotBySize } from '@hyperfarm/raft';
import { join } from 'node:path';
import type { DaemonConfig } from './config.js';
import { checkpointHandlers } from './edge/checkpoints-api.js';
import { drainHandlers } from './edge/drain-api.js';
import { ControllerRunner } from './edge/controller-runner.js';
import { startGateway, type Gateway } from './edge/gateway/index.js';
import type { FarmContext } from './edge/farm-context.js';
import { GrpcAgentPort } from './edge/grpc-agent-port.js';
import { haHandlers } from './edge/ha-api.js';
import { hostHandlers } from './edge/hosts-api.js';
import { LiveHosts } from './edge/live-hosts.js';
import { membershipHandlers } from './edge/membership.js';
import { migrationHandlers } from './edge/migrations-api.js';
import { NetworkClients, networkHandlers } from './edge/network-api.js';
import { NetworkPusher } from './edge/network-push.js';
import { operationHandlers, watchEvents } from './edge/operations-api.js';
import { Proposer } from './edge/proposer.js';
import { Leadership } from './edge/leadership.js';
import { clusterClients } from './edge/service-clients.js';
import { realTimers } from './edge/timers.js';
import { vmHandlers } from './edge/vms-api.js';
import { FarmStateMachine } from './fsm/index.js';

/**
 * When the daemon snapshots besides every 100,000 entries (docs/daemon.md, "When a snapshot is
 * taken"). A restart restores the last snapshot and replays the log after it, and a byte of the
 * farm's log costs 10 to 40 times as much to replay as a byte of snapshot to restore (180 to 660
 * against 15 to 20 ns at 50,000 VMs): a log a quarter of the snapshot's size replays in 2 to 10
 * times the restore, and each snapshot is encoded once per at least a quarter of its size of log.
 * At least 8 MiB of log, so a small farm under a stream of updates (bench:console) is not
 * snapshotted every few seconds; at most 64 MiB, about a 50,000-VM farm's snapshot, since the
 * log is held in memory. The farm simulator's large profile snapshots by it too.
 */
export const SNAPSHOT_BY_SIZE: SnapshotBySize = {
  snapshotBytes: 64 * 1024 * 1024,
  snapshotLogRatio: 0.25,
  snapshotMinBytes: 8 * 1024 * 1024,
};

export interface RunningDaemon {
  logger: Logger;
  raft: RaftNode;
  machine: FarmStateMachine;
  grpcAddress: string;
  metricsAddress: string;
  /** http://host:port of the web console, empty when it is off. */
  consoleAddress: string;
  stop(): Promise<void>;
}

/**
 * Starts one control daemon replica. The daemon owns its gRPC server: Raft first (it does not
 * listen), then every service registered, then the server binds. The farm state machine rides
 * on Raft; the controllers run while this replica leads.
 */
export async function startDaemon(
  config: DaemonConfig,
  logger = createLogger({ program: 'hyperfarm-daemon', id: config.id, level: config.logLevel }),
): Promise<RunningDaemon> {
  const unlock = lockDataDir(config.dataDir);
  // Before any channel or server exists, so every one carries the fault interceptors.
  const faults = config.faults ? enableFaults(config.id) : undefined;
  const metrics = await startMetricsServer(config.metricsAddress, { role: 'daemon', daemon_id: config.id });
  // Snapshots are encoded between other work: at 50,000 VMs one takes seconds of CPU.
  const machine = new FarmStateMachine({ pause: () => nextTurn() });
  const leadership = new Leadership(logger, realTimers);
  const raft = await RaftNode.start({
    id: config.id,
    dataDir: join(config.dataDir, 'raft'),
    peers: Object.fromEntries(config.peers),
    stateMachine: machine,
    registry: metrics.registry,
    forwardProposals: true,
    onRoleChange: (c) => leadership.changed(c.role === Role.Leader, c.term),
    profile: config.raftProfile,
    // The log since the last snapshot is held in memory, and a farm's entries are batches of
    // commands (11 KB each under bench:console): by count alone (100,000) it grew without bound
    // for hours (docs/benchmarks.md, Web console). A restart replays it all.
    ...SNAPSHOT_BY_SIZE,
    // A Ready of the fill's creates and reports took hundreds of ms to apply at 1,000 hosts; the
    // calls that came meanwhile waited for all of it.
    applyBudgetMs: 10,
    ...(config.tls ? { tls: config.tls } : {}),
    // A failed disk or a broken invariant: a replica that cannot trust its log leaves the
    // cluster loudly (its peers carry on) and is restarted from its disk, as etcd does.
    onFatal: (err) => {
      logger.fatal({ err }, 'the Raft node failed and stopped: exiting');
      logger.flush();
      process.exit(1);
    },
  });
  const port = new GrpcAgentPort({ tls: config.tls });
  const proposer = new Proposer(raft, machine, logger);
  const scheduler = { policy: config.placement, vcpuRatio: config.vcpuRatio };
  const runner = new ControllerRunner(
    machine,
    proposer,
    port,
    realTimers,
    logger.child({ component: 'controllers' }),
    {
      daemonId: config.id,
      liveness: {
        intervalMs: config.heartbeatMs,
        suspectAfterMs: config.suspectAfterMs,
        downAfterMs: config.downAfterMs,
      },
      leaseMs: config.hostLeaseMs,
      leaseMarginMs: config.leaseMarginMs,
      scheduler,
      placementBatch: 2_000,
      maxCalls: 256,
      maxMigrationsPerHost: config.maxMigrationsPerHost,
    },
  );
  const net = new NetworkClients({ tls: config.tls });
  const pusher = new NetworkPusher(
    machine,
    proposer,
    net,
    logger.child({ component: 'network' }),
    undefined,
    (id) => runner.appliedNetwork(id),
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
  // Other daemons' ClusterService: the leader, for a follower's forwarded calls.
  const daemons = clusterClients({ tls: config.tls });
  const ctx: FarmContext = {
    raft,
    machine,
    proposer,
    runner,
    liveHosts: new LiveHosts(raft, (id) => runner.live(id), daemons, logger.child({ component: 'hosts' })),
    port,
    logger,
    scheduler,
    consoleAddress: '',
  };
  let server: RunningServer;
  let gateway: Gateway | undefined;
  try {
    const builder = createServer({ logger, tls: config.tls })
      .add('raft', raft.service)
      .add(
        'cluster',
        withUnimplemented(
          'cluster',
          {
            ...membershipHandlers(raft, daemons),
            ...hostHandlers(ctx),
            ...vmHandlers(ctx),
            ...checkpointHandlers(ctx),
            ...operationHandlers(ctx),
            ...migrationHandlers(ctx, { deadlineMs: config.migrationDeadlineMs }),
            ...drainHandlers(ctx, { deadlineMs: config.migrationDeadlineMs }),
            ...haHandlers(ctx),
            ...networkHandlers(ctx, net),
          },
          'not built yet',
        ),
      );
    if (faults) builder.add('fault', faults.handlers());
    server = await builder.listen(config.grpcAddress);
    // After the gRPC server: a port it was given (picked free beforehand) must not be taken by
    // the console's port 0 in between.
    if (config.consoleAddress !== 'off') {
      gateway = await startGateway({
        address: config.consoleAddress,
        daemonId: config.id,
        logger: logger.child({ component: 'console' }),
        tls: config.tls,
        drillReports: config.drillReports,
      });
      ctx.consoleAddress = gateway.url;
      gateway.attach(server.address, (req, sink) => watchEvents(ctx, req, sink));
    }
  } catch (err) {
    await gateway?.close();
    runner.stop();
    daemons.close();
    await raft.stop();
    await metrics.close();
    unlock();
    throw err;
  }
  logger.info(
    {
      grpcAddress: server.address,
      metricsAddress: metrics.address,
      consoleAddress: gateway?.url ?? '',
      dataDir: config.dataDir,
      peers: Object.fromEntries(config.peers),
    },
    'daemon ready',
  );
  if (config.readyFile) {
    writeJsonAtomic(config.readyFile, {
      pid: process.pid,
      grpcAddress: server.address,
      metricsAddress: metrics.address,
      consoleAddress: gateway?.url ?? '',
    });
  }
  return {
    logger,
    raft,
    machine,
    grpcAddress: server.address,
    metricsAddress: metrics.address,
    consoleAddress: gateway?.url ?? '',
    async stop() {
      leadership.detach();
      await gateway?.close();
      await server.shutdown();
      await raft.stop();
      port.close();
      net.close();
      daemons.close();
      await metrics.close();
      unlock();
    },
  };
}
