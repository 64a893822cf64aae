export * from './config.js';
export * from './server.js';

// What the farm simulator (packages/sim) runs on a virtual clock, exactly as the daemon runs it:
// the state machine, the scheduler and controllers, the controller runner, the proposer and the
// ClusterService handlers, all behind the agent port and the injected timers.
export * from './fsm/index.js';
export * from './controllers/index.js';
export * from './scheduler/index.js';
export type {
  AgentEventSink,
  AgentPort,
  HostDescription,
  HostRef,
  LeaseAnswer,
  LeasedHost,
} from './edge/agent-port.js';
export { ControllerRunner, type AppliedNetworkReport, type RunnerConfig } from './edge/controller-runner.js';
export type { FarmContext } from './edge/farm-context.js';
export { hostHandlers } from './edge/hosts-api.js';
export { Leadership, type ReadBarrier } from './edge/leadership.js';
export { Proposer, type Ok } from './edge/proposer.js';
export { realTimers, type Timers } from './edge/timers.js';
export { useIdBits, vmHandlers } from './edge/vms-api.js';
export { migrationHandlers, type MigrationApiConfig } from './edge/migrations-api.js';
export { drainHandlers } from './edge/drain-api.js';
export { checkpointHandlers } from './edge/checkpoints-api.js';
export { networkHandlers, type NetworkAgent, type NetworkAgents } from './edge/network-api.js';
export { NetworkPusher } from './edge/network-push.js';
