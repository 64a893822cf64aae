import * as grpc from '@grpc/grpc-js';
import { createClient, type ClientOptions } from './grpc.js';
import { standardDefinition } from './proto.js';

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  errorResponse?: { errorMessage: string };
}

interface ReflectionClient extends grpc.Client {
  serverReflectionInfo(): grpc.ClientDuplexStream<{ listServices: string }, ReflectionResponse>;
}

let ctor:
  | (new (address: string, creds: grpc.ChannelCredentials, opts?: grpc.ChannelOptions) => ReflectionClient)
  | undefined;

function reflectionClientCtor() {
  if (!ctor) {
    const loaded = grpc.loadPackageDefinition(standardDefinition()) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: typeof ctor } } };
    };
    ctor = loaded.grpc.reflection.v1.ServerReflection;
  }
  return ctor!;
}

/** The services a server lists through gRPC server reflection (v1). */
export function listServices(
  address: string,
  timeoutMs = 2_000,
  opts: ClientOptions = {},
): Promise<string[]> {
  const client = createClient(reflectionClientCtor(), address, opts);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      call.cancel();
      reject(new Error(`reflection on ${address} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const call = client.serverReflectionInfo();
    call.on('data', (res: ReflectionResponse) => {
      clearTimeout(timer);
      call.end();
      client.close();
      if (res.errorResponse) reject(new Error(res.errorResponse.errorMessage));
      else resolve((res.listServicesResponse?.service ?? []).map((s) => s.name).sort());
    });
    call.on('error', (err) => {
      clearTimeout(timer);
      client.close();
      reject(err);
    });
    call.write({ listServices: '' });
  });
}
