#!/usr/bin/env node
/**
 * A small replicated key-value server: RaftNode over gRPC for replication, HTTP/1.1 JSON for
 * clients. It exists for the real-process tests and the benchmark; the daemon embeds RaftNode
 * the same way.
 *
 *   node packages/raft/dist/node/kv-server.js --id n1 --listen 127.0.0.1:7001 --http 127.0.0.1:8001 \
 *     --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003 --data-dir /tmp/n1
 */
import { createLogger, createServer, lockDataDir } from '@hyperfarm/api';
import { Command, InvalidArgumentError } from 'commander';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { KvStateMachine } from './kv-state-machine.js';
import { startKvHttp } from './kv-http.js';
import { RAFT_PROFILES, RaftNode, type RaftProfile } from './raft-node.js';

function parsePeers(value: string): Record<string, string> {
  const peers: Record<string, string> = {};
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || eq === part.length - 1) {
      throw new InvalidArgumentError(`invalid peers: '${part}' is not id=host:port`);
    }
    peers[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return peers;
}

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0)
      throw new InvalidArgumentError(`invalid ${name}: must be a positive integer, got '${value}'`);
    return n;
  };
}

function parseProfile(value: string): RaftProfile {
  if (!Object.hasOwn(RAFT_PROFILES, value))
    throw new InvalidArgumentError(
      `invalid raft-profile: '${value}' is not one of ${Object.keys(RAFT_PROFILES).join(', ')}`,
    );
  return value as RaftProfile;
}

const program = new Command('kv-server')
  .requiredOption('--id <id>', 'this node id')
  .requiredOption('--listen <host:port>', 'RaftService gRPC address')
  .requiredOption('--http <host:port>', 'HTTP key-value address')
  .requiredOption('--peers <list>', 'founding members id=host:port,...', parsePeers)
  .requiredOption('--data-dir <dir>', 'folder for the log and snapshots')
  .option('--raft-profile <name>', 'timing profile: default or fast', parseProfile, 'default')
  .option('--tick-ms <ms>', 'milliseconds per Raft tick (overrides the profile)', positiveInt('tick-ms'))
  .option(
    '--election-tick <n>',
    'ticks before an election (overrides the profile)',
    positiveInt('election-tick'),
  )
  .option('--snapshot-every <n>', 'entries between snapshots', positiveInt('snapshot-every'), 100_000)
  .option('--forward', 'forward proposals made on a follower to the leader', false)
  .option('--join', 'join a running cluster instead of founding one', false);

async function main(): Promise<void> {
  const o = program.parse().opts<{
    id: string;
    listen: string;
    http: string;
    peers: Record<string, string>;
    dataDir: string;
    raftProfile: RaftProfile;
    tickMs?: number;
    electionTick?: number;
    snapshotEvery: number;
    forward: boolean;
    join: boolean;
  }>();
  const unlock = lockDataDir(o.dataDir);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const sm = new KvStateMachine();
  const node = await RaftNode.start({
    id: o.id,
    dataDir: o.dataDir,
    peers: o.peers,
    join: o.join,
    stateMachine: sm,
    profile: o.raftProfile,
    ...(o.tickMs ? { tickMs: o.tickMs } : {}),
    ...(o.electionTick ? { electionTick: o.electionTick } : {}),
    snapshotEvery: o.snapshotEvery,
    forwardProposals: o.forward,
    registry,
    onRoleChange: (change) =>
      console.log(JSON.stringify({ event: 'role', at: new Date().toISOString(), id: o.id, ...change })),
    onFatal: (err) => {
      console.error(JSON.stringify({ event: 'fatal', id: o.id, error: String(err) }));
      process.exit(1);
    },
  });
  const logger = createLogger({ program: 'kv-server', id: o.id, level: 'warn' });
  const grpc = await createServer({ logger }).add('raft', node.service).listen(o.listen);
  const http = await startKvHttp(node, sm, registry, o.http);
  console.log(JSON.stringify({ event: 'ready', id: o.id, raft: grpc.address, http: http.address }));
  const shutdown = async (): Promise<void> => {
    http.server.closeAllConnections();
    http.server.close();
    await grpc.shutdown(500);
    await node.stop();
    unlock();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown());
  process.once('SIGINT', () => void shutdown());
}

main().catch((err: unknown) => {
  console.error(JSON.stringify({ event: 'error', error: err instanceof Error ? err.message : String(err) }));
  process.exit(1);
});
