// The agent as a library: its program (startAgent, its configuration) and the engine.
export * from './config.js';
export * from './limits.js';
export * from './server.js';
export * from './engine/engine.js';
export * from './engine/catalog.js';
export * from './engine/states.js';
export { decodeDeviceState } from './engine/partition.js';
