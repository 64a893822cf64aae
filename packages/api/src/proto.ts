import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import type { ProtoGrpcType as AgentProto } from './generated/agent.js';
import type { ProtoGrpcType as ClusterProto } from './generated/cluster.js';
import type { ProtoGrpcType as FaultProto } from './generated/fault.js';
import type { ProtoGrpcType as MigrationProto } from './generated/migration.js';
import type { ProtoGrpcType as NetworkProto } from './generated/network.js';
import type { ProtoGrpcType as RaftProto } from './generated/raft.js';

/** The proto files of the public API, in the order they are loaded. */
export const PROTO_FILES = [
  'hyperfarm/v1/common.proto',
  'hyperfarm/v1/cluster.proto',
  'hyperfarm/v1/agent.proto',
  'hyperfarm/v1/migration.proto',
  'hyperfarm/v1/raft.proto',
  'hyperfarm/v1/network.proto',
  'hyperfarm/v1/fault.proto',
] as const;

/**
 * How messages are decoded everywhere. These must match the flags of `npm run gen` so the
 * generated `__Output` types describe what handlers actually receive. 64-bit integers become
 * `number`: every 64-bit field in the API (bytes, milliseconds, indexes, revisions) stays below
 * 2^53, and numbers spare every caller a Long or string conversion.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** The folder holding `hyperfarm/v1/*.proto`: the repository's, or the copy shipped in the package. */
export function protoRoot(): string {
  const candidates = [
    fileURLToPath(new URL('../../../proto', import.meta.url)),
    fileURLToPath(new URL('../proto', import.meta.url)),
  ];
  const found = candidates.find((dir) => existsSync(`${dir}/hyperfarm/v1/common.proto`));
  if (!found) throw new Error(`hyperfarm proto files not found; looked in ${candidates.join(', ')}`);
  return found;
}

let cachedDefinition: protoLoader.PackageDefinition | undefined;

/** The package definition of every hyperfarm service, loaded once per process. */
export function packageDefinition(): protoLoader.PackageDefinition {
  cachedDefinition ??= protoLoader.loadSync([...PROTO_FILES], {
    ...LOADER_OPTIONS,
    includeDirs: [protoRoot()],
  });
  return cachedDefinition;
}

export type HyperfarmProto = AgentProto &
  ClusterProto &
  MigrationProto &
  RaftProto &
  NetworkProto &
  FaultProto;

let cachedProto: HyperfarmProto | undefined;

/** Service constructors and message types, typed by the generated code. */
export function hyperfarmProto(): HyperfarmProto {
  cachedProto ??= grpc.loadPackageDefinition(packageDefinition()) as unknown as HyperfarmProto;
  return cachedProto;
}

/** Fully qualified names of the services every hyperfarm server may offer. */
export const SERVICE_NAMES = {
  cluster: 'hyperfarm.v1.ClusterService',
  agent: 'hyperfarm.v1.AgentService',
  migration: 'hyperfarm.v1.MigrationService',
  raft: 'hyperfarm.v1.RaftService',
  network: 'hyperfarm.v1.NetworkService',
  tunnel: 'hyperfarm.v1.TunnelService',
  fault: 'hyperfarm.v1.FaultService',
} as const;

/**
 * Every hyperfarm message and service, plus the standard health and reflection services, for the
 * reflection service: one entry per list of file descriptors. proto-loader gives every type of a
 * load the same list of all that load's files, and the reflection service decodes the list of
 * each entry it is given (and again for v1alpha): with every type given, each program's start
 * decoded every file some hundreds of times, 1.8 s of an agent's CPU. Reflection reads nothing
 * else from the entries.
 */
export function reflectionDefinition(): protoLoader.PackageDefinition {
  const out: protoLoader.PackageDefinition = {};
  const lists = new Set<unknown>();
  for (const [name, def] of Object.entries({ ...packageDefinition(), ...standardDefinition() })) {
    const files = (def as { fileDescriptorProtos?: unknown }).fileDescriptorProtos;
    if (!Array.isArray(files) || lists.has(files)) continue;
    lists.add(files);
    out[name] = def;
  }
  return out;
}

let cachedStandard: protoLoader.PackageDefinition | undefined;

/** grpc.health.v1 and grpc.reflection.v1, from the protos their packages ship. */
export function standardDefinition(): protoLoader.PackageDefinition {
  if (!cachedStandard) {
    const require = createRequire(import.meta.url);
    const reflectionProtoDir = join(
      dirname(require.resolve('@grpc/reflection/package.json')),
      'build',
      'proto',
    );
    cachedStandard = protoLoader.loadSync([healthProtoPath, 'grpc/reflection/v1/reflection.proto'], {
      includeDirs: [reflectionProtoDir],
    });
  }
  return cachedStandard;
}
