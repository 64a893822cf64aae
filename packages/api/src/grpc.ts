import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { reflectionDefinition } from './proto.js';
import { ConfigError } from './runtime/config.js';

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

export interface ServiceBinding {
  /** Fully qualified name, for health checking ("hyperfarm.v1.AgentService"). */
  name: string;
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

export interface ServerOptions extends TransportOptions {
  /** host:port to listen on; port 0 picks a free one. */
  address: string;
  services: ServiceBinding[];
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
 * Starts a gRPC server with the given services plus health checking and reflection. Health
 * answers SERVING for "" and every service once bound; callers may flip a service's status.
 */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const server = new grpc.Server({
    ...channelOptions(opts),
    interceptors: opts.interceptors ?? [],
  });
  for (const s of opts.services) server.addService(s.definition, s.implementation);

  const health = new HealthImplementation({ '': 'NOT_SERVING' });
  health.addToServer(server);
  // Reflection lists only what this server answers, so `grpcurl list` tells the truth.
  new ReflectionService(reflectionDefinition(), {
    services: [
      ...opts.services.map((s) => s.name),
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
    ],
  }).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(opts.address, serverCredentials(opts.tls), (err, bound) =>
      err ? reject(err) : resolve(bound),
    );
  });
  health.setStatus('', 'SERVING');
  for (const s of opts.services) health.setStatus(s.name, 'SERVING');

  const host = opts.address.slice(0, opts.address.lastIndexOf(':'));
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
    interceptors: opts.interceptors ?? [],
  });
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
