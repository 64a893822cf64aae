import {
  createLogger,
  hyperfarmProto,
  lockDataDir,
  SERVICE_NAMES,
  startMetricsServer,
  startServer,
  tlsFromConfig,
  unary,
  withUnimplemented,
  writeJsonAtomic,
  type Logger,
  type pb,
} from '@hyperfarm/api';
import { mib, type AgentConfig } from './config.js';
import { LIMITS_PROFILES } from './limits.js';

export interface RunningAgent {
  logger: Logger;
  grpcAddress: string;
  metricsAddress: string;
  stop(): Promise<void>;
}

/** Starts one host agent: its gRPC server, metrics endpoint and data folder. */
export async function startAgent(
  config: AgentConfig,
  logger = createLogger({ program: 'hyperfarm-agent', id: config.id, level: config.logLevel }),
): Promise<RunningAgent> {
  const unlock = lockDataDir(config.dataDir);
  const proto = hyperfarmProto().hyperfarm.v1;
  const metrics = await startMetricsServer(config.metricsAddress, { role: 'agent', host_id: config.id });

  let grpcAddress = config.grpcAddress;
  const hostInfo = (): pb.Host => ({
    id: config.id,
    name: config.name ?? config.id,
    address: grpcAddress,
    capacity: {
      logicalProcessors: config.logicalProcessors,
      memoryBytes: config.memoryBytes,
      rootReserveBytes: mib(config.rootReserveMib),
      perVmOverheadBytes: mib(config.perVmOverheadMib),
    },
    limits: LIMITS_PROFILES[config.limitsProfile],
    macPoolStart: config.macPoolStart,
    macPoolSize: config.macPoolSize,
  });

  const server = await startServer({
    address: config.grpcAddress,
    tls: tlsFromConfig(config),
    services: [
      {
        name: SERVICE_NAMES.agent,
        definition: proto.AgentService.service,
        implementation: withUnimplemented(
          SERVICE_NAMES.agent,
          proto.AgentService.service,
          { GetHostInfo: unary<pb.GetHostInfoRequest__Output, pb.Host>(() => hostInfo()) },
          'the hypervisor engine, issue #4',
        ),
      },
      {
        name: SERVICE_NAMES.migration,
        definition: proto.MigrationService.service,
        implementation: withUnimplemented(
          SERVICE_NAMES.migration,
          proto.MigrationService.service,
          {},
          'migration endpoints, issue #4',
        ),
      },
    ],
  });
  grpcAddress = server.address;
  logger.info({ grpcAddress, metricsAddress: metrics.address, dataDir: config.dataDir }, 'agent ready');
  if (config.readyFile) {
    writeJsonAtomic(config.readyFile, { pid: process.pid, grpcAddress, metricsAddress: metrics.address });
  }

  return {
    logger,
    grpcAddress,
    metricsAddress: metrics.address,
    async stop() {
      await server.shutdown();
      await metrics.close();
      unlock();
    },
  };
}
