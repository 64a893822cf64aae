import { fields, loadConfig } from '@hyperfarm/api';
import { isAbsolute } from 'node:path';
import { z } from 'zod';

const MIB = 1024 * 1024;

export const agentConfigSchema = z.object({
  id: fields.id('host id, unique in the farm').default('agent-1'),
  name: z.string().min(1).max(63).optional().describe('display name (defaults to the id)'),
  grpcAddress: fields.address('gRPC listen address host:port (port 0 picks one)').default('127.0.0.1:7100'),
  metricsAddress: fields.address('Prometheus metrics listen address host:port').default('127.0.0.1:9100'),
  dataDir: z
    .string()
    .min(1)
    .default('.hyperfarm/agent-1')
    .describe('folder for VM configuration, disks and saved state'),
  logicalProcessors: z
    .number()
    .int()
    .min(1)
    .max(1024)
    .default(8)
    .describe('logical processors of the simulated host'),
  memoryMib: z
    .number()
    .int()
    .min(512)
    .max(64 * 1024 * 1024)
    .default(32 * 1024)
    .describe('memory of the simulated host, in MiB'),
  rootReserveMib: z
    .number()
    .int()
    .min(0)
    .default(2048)
    .describe('memory kept for the root partition, in MiB'),
  perVmOverheadMib: z
    .number()
    .int()
    .min(0)
    .max(4096)
    .default(32)
    .describe('memory each running VM costs beyond its own, in MiB'),
  mergeThrottleMs: z
    .number()
    .int()
    .min(0)
    .max(10_000)
    .default(0)
    .describe('pause between two blocks of a background snapshot merge, leaving disk I/O to guests'),
  shutdownTimeoutMs: z
    .number()
    .int()
    .min(0)
    .max(60_000)
    .default(5_000)
    .describe(
      'at a clean shutdown, how long guests with the Shut down stop action get to stop before they are turned off (keep it under the launcher grace, 10 s)',
    ),
  limitsProfile: z.enum(['2008', '2012', '2016']).default('2008').describe('per-VM limits profile'),
  macPoolStart: z
    .string()
    .regex(/^00-15-5D(-[0-9A-F]{2}){3}$/, 'expected 00-15-5D-XX-XX-XX (uppercase hex)')
    .default('00-15-5D-00-00-00')
    .describe('first MAC address of the dynamic pool'),
  macPoolSize: z.number().int().min(1).max(65536).default(256).describe('MAC addresses in the dynamic pool'),
  leaseMs: z
    .number()
    .int()
    .min(100)
    .max(600_000)
    .default(10_000)
    .describe('host lease: VMs are turned off after this long without a renewal'),
  clusterStoragePath: z
    .string()
    .refine(isAbsolute, 'expected an absolute path')
    .optional()
    .describe(
      "absolute folder every agent reaches (shared storage) for HA VMs' disks; requests may name disk paths inside it",
    ),
  allowedRoots: z
    .array(z.string().refine(isAbsolute, 'expected absolute paths'))
    .default([])
    .describe(
      'absolute folders outside the data folder that requests may name (disk paths, export and import folders); none by default',
    ),
  migrationDataChannel: z
    .boolean()
    .default(true)
    .describe(
      'move migration memory over a dedicated TCP connection instead of the gRPC stream, as source and as target (off with TLS: the data connection is not encrypted)',
    ),
  migrationDataAddress: fields
    .address(
      "where a migration source listens for its targets' data connections, host:port (default: the gRPC host, port 0 picks one; Hyper-V uses 6600)",
    )
    .optional(),
  tlsCa: z.string().optional().describe('CA certificate file for mutual TLS'),
  tlsCert: z.string().optional().describe('certificate file for mutual TLS'),
  tlsKey: z.string().optional().describe('private key file for mutual TLS'),
  readyFile: z.string().optional().describe('write {pid, grpcAddress, metricsAddress} here once serving'),
  hosts: z
    .number()
    .int()
    .min(1)
    .max(10_000)
    .default(1)
    .describe('host agents to run in this process (multi-host mode when above 1)'),
  idPrefix: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,50}$/, 'expected lowercase letters, digits or dashes')
    .default('agent')
    .describe('multi-host mode: hosts are named <prefix>-1 ... <prefix>-N'),
  logLevel: fields.logLevel(),
  faults: z
    .boolean()
    .default(false)
    .describe(
      'serve FaultService and carry the fault interceptors (drills and tests only; see docs/drills.md)',
    ),
  daemons: z
    .array(fields.address('a control daemon host:port'))
    .default([])
    .describe(
      "control daemons to register this agent's hosts with, host:port, comma separated (none: not registered)",
    ),
});

export type AgentConfig = z.infer<typeof agentConfigSchema> & { memoryBytes: number };

/** Folders outside the data folder that requests may name: cluster storage, then the allowed roots. */
export function allowedRoots(c: Pick<AgentConfig, 'clusterStoragePath' | 'allowedRoots'>): string[] {
  return [...(c.clusterStoragePath ? [c.clusterStoragePath] : []), ...c.allowedRoots];
}

export function loadAgentConfig(argv: readonly string[], env: NodeJS.ProcessEnv): AgentConfig {
  const c = loadConfig({
    program: 'hyperfarm-agent',
    envPrefix: 'HYPERFARM_AGENT',
    schema: agentConfigSchema,
    argv,
    env,
  });
  return { ...c, memoryBytes: c.memoryMib * MIB };
}

export const mib = (n: number): number => n * MIB;
