export { GrpcTransport, type TransportHandlers, type TransportOptions } from './grpc-transport.js';
export { messageFromPb, messageToPb } from './convert.js';
export { SNAPSHOT_CHUNK_BYTES } from './snapshot-assembler.js';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
