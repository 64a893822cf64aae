import { ConfigError, fields, loadConfig, tlsFromConfig, type TlsFiles } from '@hyperfarm/api';
import { z } from 'zod';

const peer = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}=(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected id=host:port');

export const daemonConfigSchema = z.object({
  id: fields.id('daemon replica id, unique in the cluster').default('daemon-1'),
  grpcAddress: fields.address('gRPC listen address host:port (port 0 picks one)').default('127.0.0.1:7000'),
  metricsAddress: fields.address('Prometheus metrics listen address host:port').default('127.0.0.1:9000'),
  consoleAddress: fields
    .address('web console and its WebSocket listen address host:port (port 0 picks one), or "off"')
    .or(z.literal('off'))
    .default('127.0.0.1:0'),
  drillReports: z
    .string()
    .min(1)
    .default('.hyperfarm/drills')
    .describe('folder of drill reports the web console lists (where `hyperfarm drill run` writes them)'),
  dataDir: z
    .string()
    .min(1)
    .default('.hyperfarm/daemon-1')
    .describe('folder for the Raft log, snapshots and state'),
  peers: z
    .array(peer)
    .default([])
    .describe('initial cluster members as id=host:port, comma separated, this daemon included'),
  tlsCa: z.string().optional().describe('CA certificate file for mutual TLS'),
  tlsCert: z.string().optional().describe('certificate file for mutual TLS'),
  tlsKey: z.string().optional().describe('private key file for mutual TLS'),
  readyFile: z
    .string()
    .optional()
    .describe('write {pid, grpcAddress, metricsAddress, consoleAddress} here once serving'),
  raftProfile: z
    .enum(['default', 'fast'])
    .default('default')
    .describe(
      'Raft timing: default (election after 1-2 s) or fast (150-300 ms: quicker failover, but a 150 ms stall costs an election); see docs/raft.md',
    ),
  logLevel: fields.logLevel(),
  faults: z
    .boolean()
    .default(false)
    .describe(
      'serve FaultService and carry the fault interceptors (drills and tests only; see docs/drills.md)',
    ),
  placement: z
    .enum(['binpack', 'spread'])
    .default('binpack')
    .describe('how placement scores hosts: binpack fills the fullest host that fits, spread the emptiest'),
  vcpuRatio: z
    .number()
    .int()
    .min(1)
    .max(64)
    .default(8)
    .describe('most virtual processors placed per logical processor of a host'),
  livenessProfile: z
    .enum(['default', 'fast'])
    .default('default')
    .describe(
      'host monitor timing: default (Failover Clustering 2008: 1 s heartbeat, Down after 5 missed, a 5 s lease) or fast (250 ms, Down after 4 missed, a 1 s lease); the settings below override one value each',
    ),
  heartbeatMs: z
    .number()
    .int()
    .min(50)
    .max(60_000)
    .optional()
    .describe('the leader grants every host its lease this often (profile: 1000 or 250)'),
  suspectAfterMs: z
    .number()
    .int()
    .min(100)
    .max(600_000)
    .optional()
    .describe('a host whose grants have failed this long is Suspect (profile: 2000 or 500)'),
  downAfterMs: z
    .number()
    .int()
    .min(100)
    .max(600_000)
    .optional()
    .describe('a host whose grants have failed this long is Down (profile: 5000 or 1000)'),
  hostLeaseMs: z
    .number()
    .int()
    .min(0)
    .max(600_000)
    .optional()
    .describe(
      "each grant's lease: a host left without a renewal this long turns its VMs off (profile: 4500 or 1000; 0: the agent's own, 10000)",
    ),
  leaseMarginMs: z
    .number()
    .int()
    .min(0)
    .max(60_000)
    .optional()
    .describe(
      "failover waits this long past the end of a Down host's last lease, for clock drift and a late agent (profile: 500 or 250)",
    ),
  maxMigrationsPerHost: z
    .number()
    .int()
    .min(1)
    .max(64)
    .default(2)
    .describe(
      "migrations a host takes part in at once, as source or target (Hyper-V's MaximumVirtualMachineMigrations)",
    ),
  migrationDeadlineMs: z
    .number()
    .int()
    .min(0)
    .max(3_600_000)
    .default(0)
    .describe(
      "a migration's transfer must end within this, or it rolls back (0: 30 s plus 1 s per 64 MiB of the VM's memory)",
    ),
});

type Timing = 'heartbeatMs' | 'suspectAfterMs' | 'downAfterMs' | 'hostLeaseMs' | 'leaseMarginMs';

/** The host monitor's timings per profile: Failover Clustering 2008's defaults, and a fast one. */
export const LIVENESS_PROFILES: Record<'default' | 'fast', Record<Timing, number>> = {
  default: {
    heartbeatMs: 1_000,
    suspectAfterMs: 2_000,
    downAfterMs: 5_000,
    // The lease ends a margin before the host is Down, so failover restarts its VMs at once then.
    hostLeaseMs: 4_500,
    leaseMarginMs: 500,
  },
  fast: { heartbeatMs: 250, suspectAfterMs: 500, downAfterMs: 1_000, hostLeaseMs: 1_000, leaseMarginMs: 250 },
};

export interface DaemonConfig
  extends Omit<z.infer<typeof daemonConfigSchema>, 'peers' | Timing>, Record<Timing, number> {
  /** Initial members, id to address; this daemon is always among them. */
  peers: Map<string, string>;
  /** Mutual TLS files, when all three are configured. */
  tls: TlsFiles | undefined;
}

export function loadDaemonConfig(argv: readonly string[], env: NodeJS.ProcessEnv): DaemonConfig {
  const c = loadConfig({
    program: 'hyperfarm-daemon',
    envPrefix: 'HYPERFARM_DAEMON',
    schema: daemonConfigSchema,
    argv,
    env,
  });
  const peers = new Map<string, string>();
  for (const p of c.peers) {
    const [id, address] = [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)];
    if (peers.has(id)) throw configError(`peers: member '${id}' is listed twice`);
    peers.set(id, address);
  }
  if (peers.size > 0 && !peers.has(c.id))
    throw configError(`peers: this daemon's id '${c.id}' is not among them`);
  if (peers.size === 0) peers.set(c.id, c.grpcAddress);
  const profile = LIVENESS_PROFILES[c.livenessProfile];
  const timing = {
    heartbeatMs: c.heartbeatMs ?? profile.heartbeatMs,
    suspectAfterMs: c.suspectAfterMs ?? profile.suspectAfterMs,
    downAfterMs: c.downAfterMs ?? profile.downAfterMs,
    hostLeaseMs: c.hostLeaseMs ?? profile.hostLeaseMs,
    leaseMarginMs: c.leaseMarginMs ?? profile.leaseMarginMs,
  };
  if (timing.suspectAfterMs >= timing.downAfterMs)
    throw configError(
      `suspectAfterMs (${timing.suspectAfterMs}) must be below downAfterMs (${timing.downAfterMs})`,
    );
  return { ...c, ...timing, peers, tls: tlsFromConfig(c) };
}

const configError = (m: string) => new ConfigError(`invalid configuration: ${m}`);
