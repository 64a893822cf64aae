import {
  createLogger,
  createServer,
  lockDataDir,
  startMetricsServer,
  withUnimplemented,
  writeJsonAtomic,
  type Logger,
  type RunningServer,
} from '@hyperfarm/api';
import { RaftNode, type StateMachine } from '@hyperfarm/raft';
import { join } from 'node:path';
import type { DaemonConfig } from './config.js';
import { membershipHandlers } from './membership.js';

export interface RunningDaemon {
  logger: Logger;
  raft: RaftNode;
  grpcAddress: string;
  metricsAddress: string;
  stop(): Promise<void>;
}

/**
 * The replicated state until the farm state machine exists: nothing beyond Raft's own
 * membership, which Raft keeps itself. Every farm command answers UNIMPLEMENTED meanwhile.
 */
const membershipOnly: StateMachine = {
  apply: () => new Uint8Array(),
  snapshot: () => new Uint8Array(),
  restore: () => undefined,
};

/**
 * Starts one control daemon replica. The daemon owns its gRPC server: Raft first (it does not
 * listen), then every service registered, then the server binds.
 */
export async function startDaemon(
  config: DaemonConfig,
  logger = createLogger({ program: 'hyperfarm-daemon', id: config.id, level: config.logLevel }),
): Promise<RunningDaemon> {
  const unlock = lockDataDir(config.dataDir);
  const metrics = await startMetricsServer(config.metricsAddress, { role: 'daemon', daemon_id: config.id });
  const raft = await RaftNode.start({
    id: config.id,
    dataDir: join(config.dataDir, 'raft'),
    peers: Object.fromEntries(config.peers),
    stateMachine: membershipOnly,
    registry: metrics.registry,
    forwardProposals: true,
    ...(config.tls ? { tls: config.tls } : {}),
    // A failed disk or a broken invariant: a replica that cannot trust its log leaves the
    // cluster loudly (its peers carry on) and is restarted from its disk, as etcd does.
    onFatal: (err) => {
      logger.fatal({ err }, 'the Raft node failed and stopped: exiting');
      logger.flush();
      process.exit(1);
    },
  });
  let server: RunningServer;
  try {
    server = await createServer({ logger, tls: config.tls })
      .add('raft', raft.service)
      .add(
        'cluster',
        withUnimplemented('cluster', membershipHandlers(raft, { tls: config.tls }), 'the farm state machine'),
      )
      .listen(config.grpcAddress);
  } catch (err) {
    await raft.stop();
    await metrics.close();
    unlock();
    throw err;
  }
  logger.info(
    {
      grpcAddress: server.address,
      metricsAddress: metrics.address,
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
    });
  }
  return {
    logger,
    raft,
    grpcAddress: server.address,
    metricsAddress: metrics.address,
    async stop() {
      await server.shutdown();
      await raft.stop();
      await metrics.close();
      unlock();
    },
  };
}
