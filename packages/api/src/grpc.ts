import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { unexpectedCause } from './errors.js';
import { faultInjector } from './faults.js';
import { reflectionDefinition, SERVICE_NAMES } from './proto.js';
import { ConfigError } from './runtime/config.js';
import type { Logger } from './runtime/logger.js';
import { serviceDefinition, type ServiceHandlers, type ServiceKind } from './services.js';

/**
 * The one place where gRPC servers and channels are made, so credentials, message limits,
 * keepalive and interceptors are set together. Moving from insecure loopback to mutual TLS is a
 * configuration change: pass `tls` and both sides pick it up.
 */

/** Files for mutual TLS. Each side presents its certificate and checks the peer's against `ca`. */
export interface TlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface TransportOptions {
  /** Mutual TLS; insecure when absent (only for loopback). */
  tls?: TlsFiles | undefined;
  /** Largest message accepted or sent, in bytes. Large transfers are chunked well below it. */
  maxMessageBytes?: number;
  /** Keepalive ping interval on idle connections, in milliseconds. */
  keepaliveMs?: number;
}

/** 4 MiB, gRPC's default: streamed transfers keep each message under it. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const DEFAULT_KEEPALIVE_MS = 10_000;

function channelOptions(opts: TransportOptions): grpc.ChannelOptions {
  const max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  return {
    'grpc.max_receive_message_length': max,
    'grpc.max_send_message_length': max,
    'grpc.keepalive_time_ms': opts.keepaliveMs ?? DEFAULT_KEEPALIVE_MS,
    'grpc.keepalive_timeout_ms': 5_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 1_000,
    'grpc-node.max_session_memory': 64,
  };
}

function serverCredentials(tls: TlsFiles | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    readFileSync(tls.caFile),
    [{ cert_chain: readFileSync(tls.certFile), private_key: readFileSync(tls.keyFile) }],
    true,
  );
}

function channelCredentials(tls: TlsFiles | undefined): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    readFileSync(tls.caFile),
    readFileSync(tls.keyFile),
    readFileSync(tls.certFile),
  );
}

export interface ServerOptions extends TransportOptions {
  /** Where a handler's unexpected exception is logged, with its stack, before it becomes INTERNAL. */
  logger: Logger;
  interceptors?: grpc.ServerInterceptor[];
}

export interface RunningServer {
  server: grpc.Server;
  health: HealthImplementation;
  /** The port actually bound. */
  port: number;
  /** host:port actually bound. */
  address: string;
  /** Finishes in-flight calls for up to `graceMs`, then cancels the rest. */
  shutdown(graceMs?: number): Promise<void>;
}

/**
 * A program's gRPC server before it listens: the program registers every service it offers with
 * `add`, then binds with `listen`. Health checking and reflection are added here, for exactly the
 * services registered.
 */
export interface ServerBuilder {
  add<K extends ServiceKind>(kind: K, handlers: ServiceHandlers[K]): ServerBuilder;
  /** Binds host:port (port 0 picks a free one); health then answers SERVING for "" and each service. */
  listen(address: string): Promise<RunningServer>;
  /**
   * The host:port bound, for a handler that tells callers where it answers (an agent's
   * GetHostInfo). Handlers registered with `add` can ask for it: no call arrives before `listen`
   * has bound. Throws if asked earlier.
   */
  address(): string;
}

/**
 * A response already in its protobuf wire encoding. A server stream that moves bulk data (a
 * migration's memory) encodes each message in place, straight into one buffer, and writes it as
 * this: the server sends the bytes as they are instead of encoding an object, which would copy
 * every byte once more. The reader sees an ordinary message.
 */
export class EncodedMessage {
  constructor(
    readonly bytes: Buffer,
    /** Called once gRPC has copied the bytes into its frame: the buffer may be used again. */
    readonly copied?: () => void,
  ) {}
}

/** The service with every response serializer taking an EncodedMessage as it is. */
function passEncoded(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(definition)) {
    const serialize = method.responseSerialize;
    out[name] = {
      ...method,
      responseSerialize: (value: unknown) => {
        if (!(value instanceof EncodedMessage)) return serialize(value as never);
        // grpc-js copies the returned bytes into its frame before anything else runs.
        if (value.copied) queueMicrotask(value.copied);
        return value.bytes;
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

/** Creates a gRPC server with the shared credentials, limits and interceptors. */
export function createServer(opts: ServerOptions): ServerBuilder {
  const server = new grpc.Server({
    ...channelOptions(opts),
    // With faults enabled (drills and tests only), the fault interceptor sees every call first.
    interceptors: [...withFaults((f) => f.serverInterceptor()), ...(opts.interceptors ?? [])],
  });
  const names: string[] = [];
  let running: RunningServer | undefined;
  const builder: ServerBuilder = {
    add(kind, handlers) {
      const definition = passEncoded(serviceDefinition(kind));
      server.addService(definition, logUnexpected(definition, handlers, opts.logger));
      names.push(SERVICE_NAMES[kind]);
      return builder;
    },
    listen: async (address) => (running = await listen(server, names, address, opts)),
    address() {
      if (!running) throw new Error('the gRPC server is not bound yet');
      return running.address;
    },
  };
  return builder;
}

async function listen(
  server: grpc.Server,
  names: string[],
  address: string,
  opts: ServerOptions,
): Promise<RunningServer> {
  const health = new HealthImplementation({ '': 'NOT_SERVING' });
  health.addToServer(server);
  // Reflection lists only what this server answers, so `grpcurl list` tells the truth.
  reflectionFor(names).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, serverCredentials(opts.tls), (err, bound) =>
      err ? reject(err) : resolve(bound),
    );
  });
  health.setStatus('', 'SERVING');
  for (const name of names) health.setStatus(name, 'SERVING');

  const host = address.slice(0, address.lastIndexOf(':'));
  faultInjector()?.addAddress(`${host}:${port}`);
  return {
    server,
    health,
    port,
    address: `${host}:${port}`,
    shutdown: (graceMs = 2_000) =>
      new Promise<void>((resolve) => {
        health.setStatus('', 'NOT_SERVING');
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

/**
 * Wraps each handler so that an unexpected exception, which the handler adapters turn into
 * INTERNAL (see toServiceError), is logged with its stack and the method. Every service of
 * every program is registered here, so none can turn an exception into INTERNAL silently.
 */
function logUnexpected(
  definition: grpc.ServiceDefinition,
  handlers: grpc.UntypedServiceImplementation,
  logger: Logger,
): grpc.UntypedServiceImplementation {
  const wrapped: grpc.UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(definition)) {
    const handler = handlers[method] as ((call: unknown, callback?: unknown) => void) | undefined;
    if (!handler) continue;
    const report = (err: unknown): void => {
      const cause = unexpectedCause(err);
      if (cause !== undefined)
        logger.error({ err: cause, method: def.path }, 'unexpected error in a handler');
    };
    wrapped[method] = (
      def.responseStream
        ? (call: NodeJS.EventEmitter) => {
            // Stream handlers report their status by emitting 'error' on the call.
            call.on('error', report);
            handler(call);
          }
        : (call: unknown, callback: grpc.sendUnaryData<unknown>) =>
            handler(call, (err: grpc.ServerErrorResponse | null, ...rest: unknown[]) => {
              if (err) report(err);
              (callback as (...args: unknown[]) => void)(err, ...rest);
            })
    ) as grpc.UntypedHandleCall;
  }
  return wrapped;
}

/** Anything with the constructor shape grpc-js gives generated service clients. */
export type ClientConstructor<C> = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => C;

export interface ClientOptions extends TransportOptions {
  interceptors?: grpc.Interceptor[];
  /** Extra channel options, merged over the shared ones (e.g. reconnect backoff for Raft peers). */
  channelOptions?: grpc.ChannelOptions;
}

/** Makes a client for one service, with the shared credentials, limits and interceptors. */
export function createClient<C>(ctor: ClientConstructor<C>, address: string, opts: ClientOptions = {}): C {
  return new ctor(address, channelCredentials(opts.tls), {
    ...channelOptions(opts),
    ...opts.channelOptions,
    interceptors: [...(opts.interceptors ?? []), ...withFaults((f) => f.clientInterceptor(address))],
  });
}

function withFaults<T>(make: (f: NonNullable<ReturnType<typeof faultInjector>>) => T): T[] {
  const f = faultInjector();
  return f ? [make(f)] : [];
}

/** TLS files from a program's flat config: all three or none. */
export function tlsFromConfig(c: {
  tlsCa?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
}): TlsFiles | undefined {
  if (!c.tlsCa && !c.tlsCert && !c.tlsKey) return undefined;
  if (!c.tlsCa || !c.tlsCert || !c.tlsKey) {
    throw new ConfigError('invalid configuration: mutual TLS needs all of tlsCa, tlsCert and tlsKey');
  }
  return { caFile: c.tlsCa, certFile: c.tlsCert, keyFile: c.tlsKey };
}

const reflections = new Map<string, ReflectionService>();

/**
 * One reflection service per set of services, shared by the servers that answer the same ones:
 * building it decodes every file descriptor (about 0.2 s of CPU), which a multi-host agent paid
 * once per host (a minute of CPU for 250 hosts). It holds no per-server state.
 */
function reflectionFor(names: readonly string[]): ReflectionService {
  const services = [...names, 'grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection'];
  const key = services.join(',');
  let r = reflections.get(key);
  if (!r) reflections.set(key, (r = new ReflectionService(reflectionDefinition(), { services })));
  return r;
}
