import type * as grpc from '@grpc/grpc-js';
import { unimplemented, toServiceError } from './errors.js';
import type * as pb from './generated/pb.js';
import { hyperfarmProto, SERVICE_NAMES } from './proto.js';

/** Each hyperfarm service's handlers, typed by the code generated from its proto. */
export interface ServiceHandlers {
  cluster: pb.ClusterServiceHandlers;
  agent: pb.AgentServiceHandlers;
  migration: pb.MigrationServiceHandlers;
  raft: pb.RaftServiceHandlers;
  network: pb.NetworkServiceHandlers;
  tunnel: pb.TunnelServiceHandlers;
  fault: pb.FaultServiceHandlers;
}

export type ServiceKind = keyof ServiceHandlers & keyof typeof SERVICE_NAMES;

/** A service's grpc-js definition, from the loaded protos. */
export function serviceDefinition(kind: ServiceKind): grpc.ServiceDefinition {
  const v1 = hyperfarmProto().hyperfarm.v1 as unknown as Record<string, { service: grpc.ServiceDefinition }>;
  return v1[SERVICE_NAMES[kind].slice('hyperfarm.v1.'.length)]!.service;
}

/**
 * Fills every method of a service that `implemented` does not provide with a handler that
 * answers UNIMPLEMENTED and says so, never made-up data.
 */
export function withUnimplemented<K extends ServiceKind>(
  kind: K,
  implemented: Partial<ServiceHandlers[K]>,
  plannedIn: string,
): ServiceHandlers[K] {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(serviceDefinition(kind))) {
    const given = (implemented as grpc.UntypedServiceImplementation)[method];
    if (given) {
      impl[method] = given;
      continue;
    }
    const error = toServiceError(unimplemented(`${SERVICE_NAMES[kind]}.${method}`, plannedIn));
    impl[method] = ((call: unknown, callback?: grpc.sendUnaryData<unknown>) => {
      if (!def.responseStream) callback!(error);
      else (call as grpc.ServerWritableStream<unknown, unknown>).emit('error', error);
    }) as grpc.UntypedHandleCall;
  }
  return impl as ServiceHandlers[K];
}
