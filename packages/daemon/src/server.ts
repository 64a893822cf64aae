import {
  createLogger,
  hyperfarmProto,
  lockDataDir,
  SERVICE_NAMES,
  startMetricsServer,
  startServer,
  withUnimplemented,
  writeJsonAtomic,
  type Logger,
} from '@hyperfarm/api';
import type { DaemonConfig } from './config.js';

export interface RunningDaemon {
  logger: Logger;
  grpcAddress: string;
  metricsAddress: string;
  stop(): Promise<void>;
}

/** Starts one control daemon replica. */
export async function startDaemon(
  config: DaemonConfig,
  logger = createLogger({ program: 'hyperfarm-daemon', id: config.id, level: config.logLevel }),
): Promise<RunningDaemon> {
  const unlock = lockDataDir(config.dataDir);
  const proto = hyperfarmProto().hyperfarm.v1;
  const metrics = await startMetricsServer(config.metricsAddress, { role: 'daemon', daemon_id: config.id });
  const server = await startServer({
    address: config.grpcAddress,
    tls: config.tls,
    services: [
      {
        name: SERVICE_NAMES.cluster,
        definition: proto.ClusterService.service,
        implementation: withUnimplemented(
          SERVICE_NAMES.cluster,
          proto.ClusterService.service,
          {},
          'the farm state machine',
        ),
      },
      {
        name: SERVICE_NAMES.raft,
        definition: proto.RaftService.service,
        implementation: withUnimplemented(
          SERVICE_NAMES.raft,
          proto.RaftService.service,
          {},
          'Raft, issue #3',
        ),
      },
    ],
  });
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
    grpcAddress: server.address,
    metricsAddress: metrics.address,
    async stop() {
      await server.shutdown();
      await metrics.close();
      unlock();
    },
  };
}
