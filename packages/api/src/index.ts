// The contract: generated types and service definitions.
export * from './proto.js';
export * as pb from './generated/pb.js';
export * from './vm-states.js';
export * from './vm-config.js';
export * from './ipv4.js';
export * from './network-config.js';
// gRPC: the one factory for servers and channels, handlers, errors, standard services.
export * from './grpc.js';
export * from './handlers.js';
export * from './errors.js';
export * from './faults.js';
export * from './services.js';
export * from './promise-client.js';
export * from './health.js';
export * from './reflection.js';
// Process runtime shared by the programs and the launcher.
export * from './runtime/config.js';
export * from './runtime/logger.js';
export * from './runtime/metrics.js';
export * from './runtime/lifecycle.js';
export * from './runtime/data-dir.js';
export * from './runtime/ports.js';
export * from './runtime/farm-file.js';
