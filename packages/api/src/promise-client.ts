import * as grpc from '@grpc/grpc-js';

/**
 * A promise view of a generated client's unary methods: `await p.getHostInfo({})`.
 * TypeScript infers from the last overload of each method, which for unary methods is
 * `(argument, callback)`; streaming methods do not match and are left out.
 */
export type PromiseClient<C> = {
  [K in keyof C as C[K] extends UnaryLast<infer _Req, infer _Res> ? K : never]: C[K] extends UnaryLast<
    infer Req,
    infer Res
  >
    ? (request: Req, options?: CallOptions) => Promise<Res>
    : never;
};

type UnaryLast<Req, Res> = (argument: Req, callback: grpc.requestCallback<Res>) => grpc.ClientUnaryCall;

export interface CallOptions {
  /** Milliseconds from now until the call fails with DEADLINE_EXCEEDED. */
  timeoutMs?: number;
  metadata?: grpc.Metadata;
  /**
   * Wait, within the deadline, for the channel to connect rather than fail at once: a channel to
   * an address a stopped process used before may share its subchannel, still backing off.
   */
  waitForReady?: boolean;
}

export function promiseClient<C extends grpc.Client>(client: C): PromiseClient<C> {
  return new Proxy({} as PromiseClient<C>, {
    get(_target, prop: string | symbol) {
      const method = (client as unknown as Record<string | symbol, unknown>)[prop];
      if (typeof method !== 'function') return undefined;
      return (request: unknown, options: CallOptions = {}) =>
        new Promise((resolve, reject) => {
          const callOptions: grpc.CallOptions = {};
          if (options.timeoutMs !== undefined) callOptions.deadline = Date.now() + options.timeoutMs;
          const metadata = options.metadata ?? new grpc.Metadata();
          if (options.waitForReady) metadata.setOptions({ waitForReady: true });
          (method as (...args: unknown[]) => unknown).call(
            client,
            request,
            metadata,
            callOptions,
            (err: grpc.ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res)),
          );
        });
    },
  });
}
