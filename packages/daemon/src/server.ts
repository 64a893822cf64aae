import {
  createLogger,
  hyperfarmProto,
  lockDataDir,
  SERVICE_NAMES,
  startMetricsServer,
  withUnimplemented,
  writeJsonAtomic,
  type Logger,
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

/** Starts one control daemon replica: Raft and ClusterService on one gRPC server. */
export async function startDaemon(
  config: DaemonConfig,
  logger = createLogger({ program: 'hyperfarm-daemon', id: config.id, level: config.logLevel }),
): Promise<RunningDaemon> {
  const unlock = lockDataDir(config.dataDir);
  const proto = hyperfarmProto().hyperfarm.v1;
  const metrics = await startMetricsServer(config.metricsAddress, { role: 'daemon', daemon_id: config.id });
  // ClusterService rides on the server Raft starts, so each daemon has one gRPC address.
  let raft: RaftNode | undefined = undefined;
  raft = await RaftNode.start({
    id: config.id,
    dataDir: join(config.dataDir, 'raft'),
    listen: config.grpcAddress,
    peers: Object.fromEntries(config.peers),
    stateMachine: membershipOnly,
    registry: metrics.registry,
    forwardProposals: true,
    ...(config.tls ? { tls: config.tls } : {}),
    services: [
      {
        name: SERVICE_NAMES.cluster,
        definition: proto.ClusterService.service,
        implementation: withUnimplemented(
          SERVICE_NAMES.cluster,
          proto.ClusterService.service,
          membershipHandlers(() => raft),
          'the farm state machine',
        ),
      },
    ],
  });
  logger.info(
    {
      grpcAddress: raft.address,
      metricsAddress: metrics.address,
      dataDir: config.dataDir,
      peers: Object.fromEntries(config.peers),
    },
    'daemon ready',
  );
  if (config.readyFile) {
    writeJsonAtomic(config.readyFile, {
      pid: process.pid,
      grpcAddress: raft.address,
      metricsAddress: metrics.address,
    });
  }
  return {
    logger,
    raft,
    grpcAddress: raft.address,
    metricsAddress: metrics.address,
    async stop() {
      await raft.stop();
      await metrics.close();
      unlock();
    },
  };
}
