import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { ApiError, status, TRAILERS } from '@hyperfarm/api';
import { encodeKvCommand, type KvStateMachine } from './kv-state-machine.js';
import type { RaftNode } from './raft-node.js';
import { raftApiError } from './status.js';

/**
 * The key-value store over HTTP/1.1 JSON, for tests and the benchmark:
 *   PUT /kv/:key   body = the value     → 200 {"index", "prev"} once applied on this node
 *   GET /kv/:key   linearizable read    → 200 {"value"} or 404 {"value": null}
 *   GET /status                         → the Raft status
 *   GET /metrics                        → Prometheus text
 * Failures, each with {"error"}; the status says what happened to the request (docs/raft.md):
 *   400  the request is wrong (empty key, command too large): nothing happened
 *   503  nothing happened: no leader, not the leader ("leader", "leaderAddress" name it when
 *        known), a read the leader could not confirm, or the node is stopped; retry
 *   409  the leader dropped the write: it certainly did not take effect; retry
 *   504  the write may or may not have taken effect (timed out, or could not be matched)
 *   500  a bug
 * They follow Raft's one mapping to gRPC statuses (status.ts), code for code.
 */
export function startKvHttp(
  node: RaftNode,
  sm: KvStateMachine,
  registry: Registry,
  address: string,
  /** Where a bug (a 500) is reported, with its stack. */
  logError: (err: unknown) => void = console.error,
): Promise<{ server: Server; address: string }> {
  const server = createServer((req, res) => {
    handle(node, sm, registry, req, res).catch((err: unknown) => {
      logError(err);
      reply(res, 500, { error: String(err) });
    });
  });
  server.keepAliveTimeout = 60_000;
  const host = address.slice(0, address.lastIndexOf(':'));
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () =>
      resolve({ server, address: `${host}:${(server.address() as AddressInfo).port}` }),
    );
  });
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

const HTTP_STATUS: Partial<Record<status, number>> = {
  [status.INVALID_ARGUMENT]: 400,
  [status.UNAVAILABLE]: 503,
  [status.ABORTED]: 409,
  [status.DEADLINE_EXCEEDED]: 504,
  [status.UNKNOWN]: 504,
};

function failure(res: ServerResponse, err: unknown): void {
  const api = raftApiError(err);
  if (!(api instanceof ApiError)) throw err;
  const code = HTTP_STATUS[api.code];
  if (code === undefined) throw err;
  const body: Record<string, string> = { error: api.message };
  if (code === 503) {
    body.leader = api.trailers[TRAILERS.leaderId] ?? '';
    body.leaderAddress = api.trailers[TRAILERS.leaderAddress] ?? '';
  }
  reply(res, code, body);
}

async function handle(
  node: RaftNode,
  sm: KvStateMachine,
  registry: Registry,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = req.url ?? '/';
  if (url.startsWith('/kv/')) {
    const key = decodeURIComponent(url.slice(4));
    if (key === '') return reply(res, 400, { error: 'invalid key: must not be empty' });
    if (req.method === 'PUT') {
      const value = await readBody(req);
      try {
        const { index, result } = await node.propose(encodeKvCommand({ op: 'put', key, value }));
        const { prev } = JSON.parse(new TextDecoder().decode(result)) as { prev: string | null };
        return reply(res, 200, { index, prev });
      } catch (err) {
        return failure(res, err);
      }
    }
    if (req.method === 'GET') {
      try {
        await node.read();
      } catch (err) {
        return failure(res, err);
      }
      const value = sm.get(key);
      return reply(res, value === undefined ? 404 : 200, { value: value ?? null });
    }
    return reply(res, 405, { error: `method ${req.method} not allowed on /kv/:key (use PUT or GET)` });
  }
  if (url === '/status' && req.method === 'GET') return reply(res, 200, node.status());
  if (url === '/metrics' && req.method === 'GET') {
    const text = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType });
    res.end(text);
    return;
  }
  reply(res, 404, { error: `no route for ${req.method} ${url}` });
}
