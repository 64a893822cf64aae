import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { processAlive, readFarmFile } from '@hyperfarm/api';
import { ProcessFarm } from '../farm/process-farm.js';
import { NetnsNetwork } from '../farm/network.js';
import type { Plan } from './format.js';

/**
 * The processes a drill acts on: daemons by id, hosts by the drill's names. Either a farm the
 * runner starts (ProcessFarm, in its own folder) or a running one it attaches to (the launcher's
 * farm.json), which it can kill processes of but not start them again.
 */
export interface DrillFarm {
  readonly endpoints: string[];
  readonly daemons: Map<string, string>;
  /** The drill's host name -> the farm's host id. */
  hostId(name: string): string;
  /** The farm's host id -> the drill's name (ids of hosts the drill does not name stay). */
  hostName(id: string): string;
  hostNames(): string[];
  /** The gRPC address of the agent serving a host now. */
  hostAddress(name: string): string;
  running(id: string): boolean;
  killAgent(name: string): Promise<void>;
  restartAgent(name: string): Promise<void>;
  killDaemon(id: string): Promise<void>;
  startDaemon(id: string): void;
  /** Stops what the runner started; `keep` leaves its folder (logs, data). */
  stop(keep: boolean): Promise<void>;
  /** Where the processes' logs are. */
  readonly logs: string;
  /**
   * In network namespaces: cuts every link of these processes (daemon ids, host names) at the
   * link layer, and brings them all back. Absent on loopback, where FaultService cuts links.
   */
  cutLinks?(names: string[]): Promise<void>;
  healLinks?(): Promise<void>;
}

/**
 * The daemon flags of a drill's timing (docs/ha.md: the liveness profiles). The fast one's 1 s
 * leases come with Raft's fast profile: an election after the leader's death must end, and the
 * new leader grant again, within a lease, or every host fences itself (docs/drills.md).
 */
export function daemonArgs(plan: Plan): string[] {
  return ['--liveness-profile', plan.timing, ...(plan.timing === 'fast' ? ['--raft-profile', 'fast'] : [])];
}

export async function startOwnFarm(
  plan: Plan,
  dir: string,
  opts: { netns?: boolean } = {},
): Promise<DrillFarm> {
  mkdirSync(dir, { recursive: true });
  const netns = opts.netns ? new NetnsNetwork() : undefined;
  const farm = await ProcessFarm.start({
    daemons: plan.daemons,
    daemonArgs: daemonArgs(plan),
    dir,
    ...(netns ? { network: netns } : {}),
  });
  const addresses = new Map<string, string>();
  const cluster = join(farm.dir, 'cluster');
  const agentArgs = (h: Plan['hosts'][number]) => [
    '--memory-mib',
    String(h.memoryMib),
    '--logical-processors',
    String(h.cpus),
    ...(plan.clusterStorage ? ['--cluster-storage-path', cluster] : []),
  ];
  try {
    await Promise.all(
      plan.hosts.map(async (h) => {
        const [served] = await farm.startAgent(h.name, 1, agentArgs(h));
        addresses.set(h.name, served!.grpcAddress);
      }),
    );
  } catch (err) {
    await farm.stop(true);
    throw err;
  }
  return {
    endpoints: farm.endpoints,
    daemons: farm.daemonAddresses,
    logs: join(farm.dir, 'logs'),
    hostId: (n) => n,
    hostName: (id) => id,
    hostNames: () => plan.hosts.map((h) => h.name),
    hostAddress: (n) => addresses.get(n)!,
    running: (id) => farm.running(id),
    killAgent: (n) => farm.kill(n),
    async restartAgent(n) {
      await farm.kill(n);
      const [served] = await farm.restartAgent(n);
      addresses.set(n, served!.grpcAddress);
    },
    killDaemon: (id) => farm.kill(id),
    startDaemon: (id) => farm.startDaemon(id),
    stop: (keep) => farm.stop(keep),
    ...(netns ? { cutLinks: (names: string[]) => netns.cut(names), healLinks: () => netns.heal() } : {}),
  };
}

/**
 * A farm `npm start` runs, from its farm.json: the drill's hosts are the farm's agents in order.
 * Killing uses the pids the launcher wrote; nothing is restarted.
 */
export function attachFarm(plan: Plan, dataDir: string): DrillFarm {
  const file = readFarmFile(dataDir);
  if (!file) throw new Error(`no running farm in ${dataDir} (no farm.json): start one with \`npm start\``);
  const daemons = new Map(
    file.processes.filter((p) => p.role === 'daemon').map((p) => [p.id, p.grpcAddress]),
  );
  const agents = file.processes.filter((p) => p.role === 'agent');
  if (agents.length < plan.hosts.length)
    throw new Error(
      `the drill needs ${plan.hosts.length} hosts; the farm in ${dataDir} has ${agents.length}`,
    );
  if (daemons.size !== plan.daemons)
    throw new Error(`the drill needs ${plan.daemons} daemons; the farm in ${dataDir} has ${daemons.size}`);
  const toId = new Map(plan.hosts.map((h, i) => [h.name, agents[i]!.id]));
  const toName = new Map([...toId].map(([n, id]) => [id, n]));
  const proc = (id: string) => file.processes.find((p) => p.id === id)!;
  const kill = async (id: string) => {
    const { pid } = proc(id);
    if (processAlive(pid)) process.kill(pid, 'SIGKILL');
    while (processAlive(pid)) await new Promise((r) => setTimeout(r, 20));
  };
  const cannot = (what: string) => {
    throw new Error(`${what}: an attached farm's processes are not started again by the drill runner`);
  };
  return {
    endpoints: [...daemons.values()],
    daemons,
    logs: join(dataDir, 'logs'),
    hostId: (n) => toId.get(n) ?? n,
    hostName: (id) => toName.get(id) ?? id,
    hostNames: () => plan.hosts.map((h) => h.name),
    hostAddress: (n) => proc(toId.get(n)!).grpcAddress,
    running: (id) => processAlive(proc(toId.get(id) ?? id).pid),
    killAgent: (n) => kill(toId.get(n)!),
    restartAgent: async (n) => cannot(`restart ${n}`),
    killDaemon: kill,
    startDaemon: (id) => cannot(`start ${id}`),
    stop: async () => undefined,
  };
}
