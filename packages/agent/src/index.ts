// The agent as a library: its program (startAgent, its configuration) and the engine.
export * from './config.js';
export * from './limits.js';
export * from './server.js';
export * from './engine/engine.js';
export * from './engine/catalog.js';
export * from './engine/states.js';
export { decodeDeviceState } from './engine/partition.js';
// What the farm simulator (packages/sim) runs of a migration, as the agent runs it: the guest
// memory model the pages travel in, the live copy's convergence rules and the tracker that
// GetMigrationStatus answers from.
export { GuestMemory } from './engine/memory.js';
export { Convergence } from './engine/converge.js';
export { MigrationTracker } from './edge/migration-tracker.js';
// What the farm simulator runs of a host's network, as the agent runs it: the network beside the
// engine (switches, NLB members, traffic) with its timers and tunnels given by the simulator,
// and its NetworkService handlers.
export {
  AgentNetwork,
  type AgentNetworkIo,
  type FrameLinks,
  type NetworkHostPort,
  type NetworkTimers,
} from './network/edge/agent-network.js';
export { networkServiceImpl } from './network/edge/service.js';
export { decodeFrame, encodeFrame } from './network/codec.js';
export type { Frame } from './network/frame.js';
export type { NlbMemberStatus } from './network/nlb/member.js';
