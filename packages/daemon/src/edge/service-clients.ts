import type * as grpc from '@grpc/grpc-js';
import {
  createClient,
  hyperfarmProto,
  promiseClient,
  type ClientConstructor,
  type ClientOptions,
  type pb,
  type PromiseClient,
} from '@hyperfarm/api';

/** Clients of one service, one channel per address, with the daemon's TLS settings. */
export class ServiceClients<C extends grpc.Client> {
  private readonly clients = new Map<string, { raw: C; p: PromiseClient<C> }>();

  constructor(
    private readonly service: ClientConstructor<C>,
    private readonly options: ClientOptions = {},
  ) {}

  of(address: string): PromiseClient<C> {
    let c = this.clients.get(address);
    if (!c) {
      const raw = createClient(this.service, address, this.options);
      c = { raw, p: promiseClient(raw) };
      this.clients.set(address, c);
    }
    return c.p;
  }

  close(): void {
    for (const c of this.clients.values()) c.raw.close();
    this.clients.clear();
  }
}

export type ClusterClient = PromiseClient<pb.ClusterServiceClient>;

/** Other daemons' ClusterService: how a follower reaches the leader. */
export const clusterClients = (options: ClientOptions = {}) =>
  new ServiceClients(hyperfarmProto().hyperfarm.v1.ClusterService, options);

export type ClusterClients = ReturnType<typeof clusterClients>;
