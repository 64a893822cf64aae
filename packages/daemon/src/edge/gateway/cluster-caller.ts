import {
  ApiError,
  createClient,
  hyperfarmProto,
  quote,
  status,
  type Logger,
  type pb,
  type TlsFiles,
} from '@hyperfarm/api';
import * as grpc from '@grpc/grpc-js';
import type { ConsoleEndpoint } from './protocol.js';
import { LocalWatch, type WatchEvents } from './local-watch.js';
import { checkMessage, messageRoot } from './request-check.js';

/** Longest a call from the console may take: WaitOperation's own limit, plus a margin. */
const MAX_CALL_MS = 310_000;
const DEFAULT_CALL_MS = 60_000;
/** How often the consoles of the other daemons are looked up again. */
const DISCOVERY_MS = 10_000;

type Callback = (err: grpc.ServiceError | null, response?: unknown) => void;
type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => void;

/**
 * The gateway's way into ClusterService: a gRPC client of this daemon's own server, so a call
 * from the console runs the very handler a gRPC client reaches, with the same validation,
 * errors, leader forwarding and interceptors; and the Watch stream, run in this process by the
 * gRPC Watch's own code (./local-watch.ts). Also keeps the list of every daemon's console, so
 * a browser can move to another daemon when its own dies.
 */
export class ClusterCaller {
  private readonly client: grpc.Client;
  private readonly unary: ReadonlyMap<string, string>;
  private known = new Map<string, string>();
  private discovery: NodeJS.Timeout | undefined;
  private discovering: Promise<ConsoleEndpoint[]> | undefined;

  constructor(
    grpcAddress: string,
    private readonly tls: TlsFiles | undefined,
    private readonly self: ConsoleEndpoint,
    private readonly logger: Logger,
    private readonly watchEvents: WatchEvents,
  ) {
    this.client = createClient(hyperfarmProto().hyperfarm.v1.ClusterService, loopback(grpcAddress), { tls });
    const service = messageRoot().lookupService('hyperfarm.v1.ClusterService');
    this.unary = new Map(
      Object.values(service.methods)
        .filter((m) => !m.requestStream && !m.responseStream)
        .map((m) => [m.name, m.requestType]),
    );
    this.known.set(self.id, self.address);
    this.discovery = setInterval(() => void this.consoles(), DISCOVERY_MS);
    this.discovery.unref();
    void this.consoles();
  }

  /** Calls a unary ClusterService method; rejects with the status the handler answered. */
  call(method: string, request: Record<string, unknown>): Promise<unknown> {
    const requestType = this.unary.get(method);
    if (!requestType)
      return Promise.reject(
        new ApiError(
          status.UNIMPLEMENTED,
          `${quote(method)} is not a ClusterService method the console can call (Watch has its own message)`,
        ),
      );
    try {
      checkMessage(messageRoot().lookupType(requestType), request);
    } catch (err) {
      return Promise.reject(err instanceof ApiError ? err.toServiceError() : err);
    }
    const waitMs = method === 'WaitOperation' ? Number(request.timeoutMs ?? 0) || 30_000 : 0;
    const deadline = Date.now() + Math.min(MAX_CALL_MS, DEFAULT_CALL_MS + waitMs);
    const fn = (this.client as unknown as Record<string, UnaryMethod>)[method]!;
    return new Promise((resolve, reject) => {
      fn.call(this.client, request, new grpc.Metadata(), { deadline }, (err, response) =>
        err ? reject(err) : resolve(response),
      );
    });
  }

  /** ClusterService.Watch, served in this process: a stream of Event messages as a client decodes them. */
  watch(request: { fromRevision: number; kinds: string[] }): LocalWatch {
    return new LocalWatch(this.watchEvents, request, this.logger);
  }

  /**
   * Every daemon's console: each member is asked for its GetClusterStatus.console_address.
   * Members that do not answer keep the address they last gave, so a browser can still try it
   * (and so a page loaded from a daemon now dead is still recognised as the farm's own).
   */
  consoles(): Promise<ConsoleEndpoint[]> {
    this.discovering ??= this.discover().finally(() => (this.discovering = undefined));
    return this.discovering;
  }

  /** The consoles known now, without asking anyone. */
  knownConsoles(): ConsoleEndpoint[] {
    return [...this.known].sort(([a], [b]) => a.localeCompare(b)).map(([id, address]) => ({ id, address }));
  }

  /** Whether `origin` (http://host:port) is the console of a daemon of this farm. */
  isFarmConsole(origin: string): boolean {
    return [...this.known.values()].includes(origin);
  }

  close(): void {
    clearInterval(this.discovery);
    this.client.close();
  }

  private async discover(): Promise<ConsoleEndpoint[]> {
    try {
      const own = (await this.call('GetClusterStatus', {})) as pb.ClusterStatus__Output;
      await Promise.all(
        own.members
          .filter((m) => m.id !== this.self.id && m.address)
          .map(async (m) => {
            const address = await this.askConsole(m.address);
            if (address) this.known.set(m.id, address);
          }),
      );
      for (const id of this.known.keys())
        if (id !== this.self.id && !own.members.some((m) => m.id === id)) this.known.delete(id);
    } catch (err) {
      this.logger.debug({ err }, 'could not list the daemons for their consoles');
    }
    return this.knownConsoles();
  }

  private askConsole(grpcAddress: string): Promise<string | undefined> {
    const client = createClient(hyperfarmProto().hyperfarm.v1.ClusterService, grpcAddress, {
      tls: this.tls,
    });
    return new Promise<string | undefined>((resolve) => {
      client.GetClusterStatus({}, { deadline: Date.now() + 2_000 }, (err, s) =>
        resolve(err ? undefined : s?.consoleAddress || undefined),
      );
    }).finally(() => client.close());
  }
}

/** A wildcard listen address is reached on loopback. */
function loopback(address: string): string {
  return address.replace(/^(0\.0\.0\.0|\[::\]):/, (_m, any: string) =>
    any === '0.0.0.0' ? '127.0.0.1:' : '[::1]:',
  );
}
