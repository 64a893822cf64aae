import { hyperfarmProto } from '@hyperfarm/api';

/** A method of a service definition, as grpc-js loads it: how its messages cross the wire. */
interface MethodDefinition {
  originalName: string;
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): unknown;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}

type ServiceName = 'ClusterService' | 'NetworkService';

const services = new Map<ServiceName, Record<string, MethodDefinition>>();

function methods(service: ServiceName): Record<string, MethodDefinition> {
  let m = services.get(service);
  if (!m) {
    const v1 = hyperfarmProto().hyperfarm.v1 as unknown as Record<
      ServiceName,
      { service: Record<string, MethodDefinition> }
    >;
    m = v1[service].service;
    services.set(service, m);
  }
  return m;
}

/** A method by its name in the service (GetNlbState) or in a promise client (getNlbState). */
export function wireMethod(service: ServiceName, name: string): { name: string; def: MethodDefinition } {
  const all = methods(service);
  const key = all[name] ? name : Object.keys(all).find((k) => all[k]!.originalName === name);
  if (!key) throw new Error(`${service} has no method ${name}`);
  return { name: key, def: all[key]! };
}

/**
 * A request and its answer as they would arrive over gRPC: encoded and decoded again, so the
 * handlers see what the real ones do (every field present, defaults filled, 64-bit numbers as
 * the loader gives them) and nothing is shared between the two sides.
 */
export const overWire = {
  request: (def: MethodDefinition, req: unknown): unknown =>
    def.requestDeserialize(def.requestSerialize(req)),
  response: (def: MethodDefinition, res: unknown): unknown =>
    def.responseDeserialize(def.responseSerialize(res)),
};
