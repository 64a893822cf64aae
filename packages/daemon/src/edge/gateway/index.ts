import type { Logger, TlsFiles } from '@hyperfarm/api';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import { ClusterCaller } from './cluster-caller.js';
import { DrillReports } from './drill-reports.js';
import type { WatchEvents } from './local-watch.js';
import { PROTOCOL_VERSION } from './protocol.js';
import { DEFAULT_LIMITS, Session, type SessionLimits } from './session.js';
import { StaticFiles } from './static-files.js';

/** The console's built files in this repository (packages/console/dist). */
export const CONSOLE_DIST = fileURLToPath(new URL('../../../../console/dist', import.meta.url));

/** Largest message a browser may send; a request is small, an oversized frame closes the socket. */
const MAX_MESSAGE_BYTES = 256 * 1024;
const PING_MS = 15_000;

export interface GatewayOptions {
  /** host:port to listen on (port 0 picks one). */
  address: string;
  /** The daemon's id, told to each browser. */
  daemonId: string;
  logger: Logger;
  tls?: TlsFiles | undefined;
  /** Folder of the console's built files (default: packages/console/dist). */
  dir?: string;
  limits?: Partial<SessionLimits>;
  /**
   * The folder whose drill reports (`hyperfarm drill run`'s report.json) the console lists
   * (default .hyperfarm/drills, where the runner writes them).
   */
  drillReports?: string;
}

export interface Gateway {
  /** http://host:port of the console. */
  url: string;
  /**
   * Connects the gateway to this daemon's gRPC server, once it listens, for calls, and to its
   * Watch code for the event stream; sockets wait until then.
   */
  attach(grpcAddress: string, watchEvents: WatchEvents): void;
  close(): Promise<void>;
}

/**
 * The web console's gateway (docs/console.md): an HTTP server for the console's files and a
 * WebSocket endpoint at /ws speaking the JSON protocol of ./protocol.ts.
 */
export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const logger = opts.logger;
  const files = new StaticFiles(opts.dir ?? CONSOLE_DIST);
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const drills = new DrillReports(opts.drillReports ?? '.hyperfarm/drills');
  const http = createServer((req, res) => files.handle(req, res));
  const host = opts.address.slice(0, opts.address.lastIndexOf(':'));
  const port = Number(opts.address.slice(opts.address.lastIndexOf(':') + 1));
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, host.replace(/^\[|\]$/g, ''), () => {
      http.off('error', reject);
      resolve();
    });
  });
  const bound = (http.address() as AddressInfo).port;
  const url = `http://${host}:${bound}`;
  if (!files.built)
    logger.warn({ dir: opts.dir ?? CONSOLE_DIST }, 'the console is not built: run npm run build');

  let caller: ClusterCaller | undefined;
  const sessions = new Set<Session>();
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const refuse = (code: number, why: string) => {
      socket.end(`HTTP/1.1 ${code} ${why}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${why}\n`);
    };
    if (new URL(req.url ?? '/', 'http://console').pathname !== '/ws') return refuse(404, 'Not Found');
    if (!caller) return refuse(503, 'the daemon is starting: try again');
    // A web page of another site must not drive the farm through the user's browser: only pages
    // served by this farm's consoles (or clients that are not browsers, which send no Origin).
    const origin = req.headers.origin;
    if (origin && origin !== `http://${req.headers.host}` && !caller.isFarmConsole(origin))
      return refuse(403, `pages from ${origin} may not use this console`);
    const c = caller;
    wss.handleUpgrade(req, socket, head, (ws) => {
      const session = new Session(ws, c, limits, logger, drills);
      sessions.add(session);
      ws.on('close', () => sessions.delete(session));
      session.send({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        daemonId: opts.daemonId,
        consoles: c.knownConsoles(),
      });
      wss.emit('connection', ws, req);
    });
  });
  const alive = new WeakSet<WebSocket>();
  const pinger = setInterval(() => {
    for (const ws of wss.clients) {
      if (!alive.has(ws)) {
        ws.terminate();
        continue;
      }
      alive.delete(ws);
      ws.ping();
    }
  }, PING_MS);
  pinger.unref();
  wss.on('connection', (ws: WebSocket) => {
    alive.add(ws);
    ws.on('pong', () => alive.add(ws));
  });

  return {
    url,
    attach(grpcAddress, watchEvents) {
      const self = { id: opts.daemonId, address: url };
      caller = new ClusterCaller(grpcAddress, opts.tls, self, logger, watchEvents);
    },
    async close() {
      clearInterval(pinger);
      for (const s of sessions) s.close();
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => http.close(() => resolve()));
      caller?.close();
    },
  };
}
