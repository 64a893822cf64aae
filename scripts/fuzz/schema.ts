/**
 * The API as the fuzzer sees it: every RPC of every hyperfarm service, read from the proto files'
 * descriptors (protobufjs), and the check that a field path names a field of a request.
 */
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { PROTO_FILES, protoRoot } from '@hyperfarm/api';

export interface Rpc {
  /** "AgentService.CreateVm". */
  name: string;
  /** The gRPC method path, "/hyperfarm.v1.AgentService/CreateVm". */
  path: string;
  request: protobuf.Type;
  requestStream: boolean;
  responseStream: boolean;
}

let cached: protobuf.Root | undefined;

/** The hyperfarm proto files, field names as written (snake_case), google types built in. */
export function protoSchema(): protobuf.Root {
  if (cached) return cached;
  const root = new protobuf.Root();
  const dir = protoRoot();
  // Imports of our own files come from the proto folder; google/protobuf/* are protobufjs' own.
  root.resolvePath = (_origin, target) => (target.startsWith('google/') ? target : join(dir, target));
  root.loadSync([...PROTO_FILES], { keepCase: true }).resolveAll();
  cached = root;
  return root;
}

/** Every RPC of the named services ("AgentService", ...). */
export function rpcsOf(services: readonly string[]): Rpc[] {
  const root = protoSchema();
  return services.flatMap((service) => {
    const svc = root.lookupService(`hyperfarm.v1.${service}`);
    return svc.methodsArray.map((m) => ({
      name: `${service}.${m.name}`,
      path: `/hyperfarm.v1.${service}/${m.name}`,
      request: root.lookupType(m.requestType),
      requestStream: Boolean(m.requestStream),
      responseStream: Boolean(m.responseStream),
    }));
  });
}

/**
 * Whether `path` ("config.disks[2].path", "labels['k']", "update_mask.paths[0]") names a field of
 * `type`: each dotted segment a field of the message before it, an index or key only after a
 * repeated or map field.
 */
export function namesField(type: protobuf.Type, path: string): boolean {
  if (path === '') return false;
  let current: protobuf.Type | undefined = type;
  for (const segment of path.split(/\.(?![^[]*\])/)) {
    const m = /^([a-z_][a-z0-9_]*)((?:\[[^\]]*\])*)$/.exec(segment);
    if (!m || !current) return false;
    const field: protobuf.Field | undefined = current.fields[m[1]!];
    if (!field) return false;
    const subscripts = m[2]!;
    const indexed = field.repeated || field.map;
    if (subscripts !== '' && (!indexed || subscripts.split('[').length > 2)) return false;
    const resolved: protobuf.Type | protobuf.Enum | null = field.resolvedType;
    current = resolved instanceof protobuf.Type ? resolved : undefined;
    if (field.map && subscripts === '') current = undefined;
  }
  return true;
}
