import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { NotLeaderError, ProposalDroppedError, RaftArgumentError } from '../core/errors.js';
import { RequestTimeoutError } from './errors.js';
import { encodeKvCommand, type KvStateMachine } from './kv-state-machine.js';
import type { RaftNode } from './raft-node.js';

/**
 * The key-value store over HTTP/1.1 JSON, for tests and the benchmark:
 *   PUT /kv/:key   body = the value     → 200 {"index", "prev"} once applied on this node
 *   GET /kv/:key   linearizable read    → 200 {"value"} or 404 {"value": null}
 *   GET /status                         → the Raft status
 *   GET /metrics                        → Prometheus text
 * A node that is not the leader answers 503 {"error", "leader"} so the client can go there.
 */
export function startKvHttp(
  node: RaftNode,
  sm: KvStateMachine,
  registry: Registry,
  address: string,
): Promise<{ server: Server; address: string }> {
  const server = createServer((req, res) => {
    handle(node, sm, registry, req, res).catch((err: unknown) => reply(res, 500, { error: String(err) }));
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

function failure(res: ServerResponse, err: unknown): void {
  if (err instanceof NotLeaderError) reply(res, 503, { error: err.message, leader: err.leader });
  else if (err instanceof RequestTimeoutError) reply(res, 504, { error: err.message });
  else if (err instanceof ProposalDroppedError) reply(res, 409, { error: err.message });
  else if (err instanceof RaftArgumentError) reply(res, 400, { error: err.message });
  else reply(res, 500, { error: err instanceof Error ? err.message : String(err) });
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
