import type * as grpc from '@grpc/grpc-js';
import { unimplemented, toServiceError } from './errors.js';

/**
 * Fills every method of a service that `implemented` does not provide with a handler that
 * answers UNIMPLEMENTED and says so, never made-up data.
 */
export function withUnimplemented(
  serviceName: string,
  definition: grpc.ServiceDefinition,
  implemented: Partial<grpc.UntypedServiceImplementation>,
  plannedIn: string,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(definition)) {
    const given = implemented[method];
    if (given) {
      impl[method] = given;
      continue;
    }
    const error = toServiceError(unimplemented(`${serviceName}.${method}`, plannedIn));
    impl[method] = ((call: unknown, callback?: grpc.sendUnaryData<unknown>) => {
      if (!def.responseStream) callback!(error);
      else (call as grpc.ServerWritableStream<unknown, unknown>).emit('error', error);
    }) as grpc.UntypedHandleCall;
  }
  return impl;
}
