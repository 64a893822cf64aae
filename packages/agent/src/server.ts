import { join } from 'node:path';
import {
  createLogger,
  createServer,
  enableFaults,
  faultInjector,
  lockDataDir,
  startMetricsServer,
  tlsFromConfig,
  writeJsonAtomic,
  type Logger,
} from '@hyperfarm/api';
import { allowedRoots, mib, type AgentConfig } from './config.js';
import { AgentHost, type AgentHostOptions, type HostSettings } from './edge/agent-host.js';
import { agentServiceImpl, migrationServiceImpl } from './edge/agent-service.js';
import { Checkpoints } from './edge/checkpoints.js';
import { AgentMigrations } from './edge/migration.js';
import { VmTransfer } from './edge/vm-transfer.js';
import { registerAgentMetrics } from './edge/metrics.js';
import { registerWithDaemons } from './edge/registration.js';
import { LIMITS_PROFILES } from './limits.js';
import { FaultyDisk } from './edge/disk.js';
import { AgentNetwork } from './network/edge/agent-network.js';
import { networkServiceImpl, tunnelServiceImpl } from './network/edge/service.js';

export interface RunningAgent {
  logger: Logger;
  grpcAddress: string;
  metricsAddress: string;
  /** Every host this process runs (one unless in multi-host mode). */
  hosts: RunningHost[];
  stop(): Promise<void>;
}

export interface RunningHost {
  id: string;
  grpcAddress: string;
  host: AgentHost;
  network: AgentNetwork;
  stop(): Promise<void>;
}

export function hostSettings(config: AgentConfig, id: string, dataDir: string): HostSettings {
  return {
    id,
    dataDir,
    logicalProcessors: config.logicalProcessors,
    memoryBytes: config.memoryBytes,
    rootReserveBytes: mib(config.rootReserveMib),
    perVmOverheadBytes: mib(config.perVmOverheadMib),
    limits: LIMITS_PROFILES[config.limitsProfile],
    macPoolStart: config.macPoolStart,
    macPoolSize: config.macPoolSize,
    leaseMs: config.leaseMs,
    mergeThrottleMs: config.mergeThrottleMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    allowedRoots: allowedRoots(config),
    ...(config.clusterStoragePath ? { clusterStoragePath: config.clusterStoragePath } : {}),
  };
}

/** Starts one host: its data folder lock, engine, LevelDB and gRPC server. */
export async function startHost(
  config: AgentConfig,
  id: string,
  dataDir: string,
  grpcAddress: string,
  logger: Logger,
  extra: Partial<AgentHostOptions> = {},
  /** The hosts of this process (multi-host mode), this one included once it is started. */
  siblings?: Map<string, { host: AgentHost; address(): string }>,
): Promise<RunningHost> {
  const unlock = lockDataDir(dataDir);
  let host: AgentHost;
  try {
    host = await AgentHost.open({ settings: hostSettings(config, id, dataDir), logger, ...extra });
  } catch (err) {
    unlock();
    throw err;
  }
  // Merges a crash or shutdown interrupted finish before the host serves (those of VMs that were
  // running continue offline: after a restart every VM is Off or Saved).
  const checkpoints = new Checkpoints(host);
  await checkpoints.merges.resumeAll();
  const tls = tlsFromConfig(config);
  const network = new AgentNetwork(host, tls);
  host.network = network;
  // The data connection is plain TCP: with TLS, migrations stay on the (encrypted) gRPC stream.
  let grpcBound = grpcAddress;
  const dataAddress =
    config.migrationDataChannel && !tls
      ? () => config.migrationDataAddress ?? `${grpcBound.slice(0, grpcBound.lastIndexOf(':'))}:0`
      : undefined;
  const migrations = new AgentMigrations(host, checkpoints, tls ? { tls } : {}, dataAddress);
  // Create, register every service, then bind: the agent service asks the server for the address
  // it answers on, which exists once it is bound (before any call can come in).
  const serve = async () => {
    const builder = createServer({ logger, tls });
    builder
      .add(
        'agent',
        agentServiceImpl(
          host,
          {
            address: () => builder.address(),
            ...(tls ? { client: { tls } } : {}),
            ...(siblings ? { siblings: () => siblings } : {}),
          },
          checkpoints,
          new VmTransfer(host, checkpoints),
          migrations,
        ),
      )
      .add('migration', migrationServiceImpl(migrations))
      .add('network', networkServiceImpl(network))
      .add('tunnel', tunnelServiceImpl(network));
    const faults = faultInjector();
    if (faults) builder.add('fault', faults.handlers());
    const server = await builder.listen(grpcAddress);
    grpcBound = server.address;
    return server;
  };
  const server = await serve().catch(async (err: unknown) => {
    await migrations.close();
    await network.stop();
    await host.stop();
    unlock();
    throw err;
  });
  return {
    id,
    grpcAddress: server.address,
    host,
    network,
    async stop() {
      await network.stop();
      await migrations.close();
      await server.shutdown();
      await host.stop();
      unlock();
    },
  };
}

/**
 * With faults enabled, every disk answers ENOSPC to writes while FaultService's FillStorage has
 * marked the storage full (a drill's "fill a disk").
 */
function faultOptions(): Partial<AgentHostOptions> {
  const faults = faultInjector();
  if (!faults) return {};
  return {
    wrapDisk: (_vm, _index, disk) => {
      const d = new FaultyDisk(disk);
      const follow = (full: boolean) => (d.fault = full ? 'full' : undefined);
      follow(faults.isStorageFull);
      faults.onStorage(follow);
      return d;
    },
  };
}

/** The gRPC address of the i-th host (0-based): port 0 stays 0, a fixed port counts up. */
function addressFor(base: string, i: number): string {
  const at = base.lastIndexOf(':');
  const port = Number(base.slice(at + 1));
  return port === 0 ? base : `${base.slice(0, at)}:${port + i}`;
}

/**
 * Starts the agent program: one host, or with `hosts` above 1 that many hosts in this process,
 * each with its own id (<idPrefix>-1...), data folder (<dataDir>/<id>) and gRPC port, sharing
 * one metrics endpoint.
 */
export async function startAgent(
  config: AgentConfig,
  logger = createLogger({ program: 'hyperfarm-agent', id: config.id, level: config.logLevel }),
): Promise<RunningAgent> {
  // Before any channel or server exists, so every one carries the fault interceptors.
  if (config.faults) enableFaults(config.id);
  const multi = config.hosts > 1;
  const metrics = await startMetricsServer(config.metricsAddress, {
    role: 'agent',
    host_id: multi ? config.idPrefix : config.id,
  });
  const hosts: RunningHost[] = [];
  const siblings = new Map<string, { host: AgentHost; address(): string }>();
  registerAgentMetrics(metrics.registry, () => hosts.map((h) => h.host));
  try {
    for (let i = 0; i < config.hosts; i++) {
      const id = multi ? `${config.idPrefix}-${i + 1}` : config.id;
      const dataDir = multi ? join(config.dataDir, id) : config.dataDir;
      const hostLogger = multi ? logger.child({ host: id }) : logger;
      const h = await startHost(
        config,
        id,
        dataDir,
        addressFor(config.grpcAddress, i),
        hostLogger,
        faultOptions(),
        multi ? siblings : undefined,
      );
      hosts.push(h);
      siblings.set(h.id, { host: h.host, address: () => h.grpcAddress });
    }
  } catch (err) {
    for (const h of hosts) await h.stop();
    await metrics.close();
    throw err;
  }
  const grpcAddress = hosts[0]!.grpcAddress;
  logger.info(
    { grpcAddress, hosts: hosts.length, metricsAddress: metrics.address, dataDir: config.dataDir },
    'agent ready',
  );
  if (config.readyFile) {
    writeJsonAtomic(config.readyFile, {
      pid: process.pid,
      grpcAddress,
      metricsAddress: metrics.address,
      hosts: hosts.map((h) => ({ id: h.id, grpcAddress: h.grpcAddress })),
    });
  }
  const tls = tlsFromConfig(config);
  const registration = registerWithDaemons(
    config.daemons,
    hosts.map((h) => ({
      id: h.id,
      address: h.grpcAddress,
      registered: (answer) =>
        void h.host
          .mutate((e) => e.adoptMacRange(answer.macPoolStart, answer.macPoolSize))
          .catch((err: unknown) =>
            logger.error({ err, host: h.id }, 'could not take the MAC range the farm gave'),
          ),
    })),
    logger,
    tls ? { tls } : {},
  );
  return {
    logger,
    grpcAddress,
    metricsAddress: metrics.address,
    hosts,
    async stop() {
      registration.stop();
      await Promise.all(hosts.map((h) => h.stop()));
      await metrics.close();
    },
  };
}
