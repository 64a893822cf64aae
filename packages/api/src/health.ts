import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { createClient, type ClientOptions } from './grpc.js';

export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

interface HealthClient extends grpc.Client {
  check(
    request: { service: string },
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<{ status: ServingStatus }>,
  ): grpc.ClientUnaryCall;
}

const HealthClientCtor = grpc.makeClientConstructor(
  healthService,
  'grpc.health.v1.Health',
) as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => HealthClient;

/** Asks a server's standard health service for a service's status ("" means the whole server). */
export function checkHealth(
  address: string,
  service = '',
  timeoutMs = 1_000,
  opts: ClientOptions = {},
): Promise<ServingStatus> {
  const client = createClient(HealthClientCtor, address, opts);
  return new Promise((resolve, reject) => {
    client.check({ service }, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res!.status);
    });
  });
}
